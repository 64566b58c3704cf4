"""A deep energy-based model on MNIST (Du & Mordatch 2019): a conv energy network (28x28 ->
14x14 -> 7x7, swish, global pooling), contrastive divergence with 40 SGLD steps per
training step from a 10,000-sample replay buffer (5% restarted from noise), the energy
regulariser alpha = 1, Adam 1e-4 (b1 = 0). `jgen sample` runs 200 SGLD steps from noise;
`jgen eval` reports the energies of test images and of samples (no likelihood).

Variants: `mnist_ebm.py`, `:tiny` (8x8 digits, a tiny net, 5 SGLD steps, a buffer of 64,
for tests).
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
    if variant == "tiny":
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
        raise ValueError(f"Unknown variant {variant!r} of ebm/mnist_ebm; use ':tiny' or none.")
    return config
