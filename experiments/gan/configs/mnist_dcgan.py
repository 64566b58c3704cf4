"""DCGAN (Radford et al. 2016) on MNIST: 28x28 transposed-conv generator, conv
discriminator, the non-saturating loss, Adam 2e-4 (b1 = 0.5), an EMA of the generator.

Variants: `mnist_dcgan.py`, `:wgan_gp` (WGAN-GP, 5 critic steps per generator step,
lambda = 10, Adam 1e-4 b1 = 0 b2 = 0.9 as in Gulrajani et al.), `:hinge`,
`:conditional` (projection discriminator; `jgen sample --label k`), `:sngan` (SN-GAN,
Miyato et al. 2018: the hinge loss with every discriminator layer spectrally normalised,
one power iteration per critic step; Adam 2e-4, b1 = 0.5, b2 = 0.999, their setting C
for the standard CNN, n_critic = 1), `:cpu` (what a 2-core CPU trains in ~10 minutes: 16
base channels instead of 64 -- the transposed convolutions make the full width ~13 s per
step there --, batch 64, 1,500 steps, a generator EMA of 0.99, whose ~100-step window
suits a run this short; the README's sample grid), `:tiny` (8x8 digits with MLP players,
for tests).
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.gan import model_config, training_defaults


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="dcgan", objective="non_saturating"))
    mnist_benchmark_training(config, num_steps=20_000)
    training_defaults(config)
    config.train.eval_every = 0
    config.sample.num = 64
    if variant == "wgan_gp":
        config.model.objective = "wgan_gp"
        config.model.n_critic = 5
        config.train.batch_size = 320  # 5 critic batches of 64
        config.optim.learning_rate = 1e-4
        config.optim.b1 = 0.0
        config.optim.b2 = 0.9
    elif variant == "hinge":
        config.model.objective = "hinge"
    elif variant == "sngan":
        config.model.objective = "hinge"
        config.model.spectral_norm = True
    elif variant == "cpu":
        config.model.features = 16
        config.train.batch_size = 64
        config.train.num_steps = 1500
        config.train.ema_decay = 0.99
        config.train.log_every = 50
        config.train.save_every = 250
    elif variant == "conditional":
        config.model.conditional = True
    elif variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.data.name = "digits"
        config.model.architecture = "mlp"
        config.model.g_hidden = config.model.d_hidden = (32,)
        config.model.latent_dim = 8
        config.model.n_critic = 2
        config.train.ema_decay = 0.0
        config.sample.num = 16
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of gan/mnist_dcgan; use ':wgan_gp', ':hinge', "
                         "':sngan', ':conditional', ':cpu', ':tiny' or none.")
    return config
