"""A deep energy-based model on MNIST (Du & Mordatch 2019): a conv energy network (28x28 ->
14x14 -> 7x7, swish, global pooling), contrastive divergence with 40 SGLD steps per
training step from a 10,000-sample replay buffer (5% restarted from noise), the energy
regulariser alpha = 1, Adam 1e-4 (b1 = 0). `jgen sample` runs 200 SGLD steps from noise;
`jgen eval` reports the energies of test images and of samples (no likelihood).

Variants: `mnist_ebm.py`, `:cpu` (what a 2-core CPU trains in ~10 minutes; the README's
sample grid): an MLP energy 784-512-512-1 (the conv net's input gradients, 20 per step for
SGLD, cost ~3 s per step there, the MLP ~0.1 s), batch 64, 3,000 steps, and *short-run*
chains (Nijkamp et al. 2019, https://arxiv.org/abs/1904.09770): every step's negatives are
40 SGLD steps from fresh noise (`reinit_prob = 1`), and `jgen sample` runs the same chain
for 80 steps. Its SGLD step is Du & Mordatch's, x -= 10 grad E with noise std 0.005
(h = 20), because with the default h = 2 the MLP energy's small input gradients leave the
chains as noise. The energy regulariser is alpha = 0.01, not 1: a chain of K steps
x -= s grad E that lowers the energy by dE travels at most sqrt(K s dE) in L2 (Cauchy-
Schwarz on sum_k s |grad E|, with sum_k s |grad E|^2 ~ dE), and alpha caps the CD energy
gap at dE = 1/alpha. With alpha = 1 that is sqrt(40 * 10 * 1) = 20, short of the ~31
between uniform noise and an MNIST digit on [-1, 1] (enough on 8x8 digits, ~9), so the
chains stopped in noise; with alpha = 0.01 (and Adam 5e-4, so the energy scale grows
within the budget) the trained energy puts fresh noise ~8.5 above data (sqrt(40 * 10 *
8.5) = 58) and the chains end on digits. `:tiny` (8x8 digits, a tiny net, 5 SGLD steps,
a buffer of 64, for tests).
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.ebm import model_config, training_defaults


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="conv", features=64, num_stages=2))
    mnist_benchmark_training(config, num_steps=20_000)
    training_defaults(config)  # after the schedule: it turns the in-training likelihood eval off
    config.model.sgld_steps = 40
    config.model.sample_steps = 200
    config.sample.num = 64
    if variant == "cpu":
        config.model.architecture = "mlp"
        config.model.hidden = (512, 512)
        config.model.reinit_prob = 1.0  # short-run chains from noise (no persistent buffer)
        config.model.buffer_size = 64  # = the batch: unused with reinit_prob = 1
        config.model.sgld_steps = 40
        config.model.sample_steps = 80  # longer than training's chains: fewer stuck in noise, cleaner strokes
        config.model.sgld_step_size = 20.0  # drift 10 grad log p
        config.model.sgld_noise_scale = 0.005 / 20.0 ** 0.5  # noise std 0.005
        config.model.alpha = 0.01  # alpha = 1 caps the energy gap at 1: too little for the chains to reach data
        config.optim.learning_rate = 5e-4
        config.train.batch_size = 64
        config.train.num_steps = 3000
        config.train.log_every = 100
        config.train.save_every = 500
    elif variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.data.name = "digits"
        config.model.features = 8
        config.model.num_stages = 1  # 8x8 -> 4x4
        config.model.buffer_size = 64
        config.model.sgld_steps = 5
        config.model.sample_steps = 10
        config.optim.learning_rate = 1e-3
        config.sample.num = 16
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of ebm/mnist_ebm; use ':cpu', ':tiny' or none.")
    return config
