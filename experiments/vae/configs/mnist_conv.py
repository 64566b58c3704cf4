"""Convolutional VAE on dynamically binarized MNIST: two stride-2 conv stages
(32, 64 channels) each way, a 50-d latent, Bernoulli decoder.

Variants: `mnist_conv.py` and `mnist_conv.py:tiny`.
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.vae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="conv", conv_channels=(32, 64),
                                                              conv_hidden=512, latent_dim=50))
    mnist_benchmark_training(config, num_steps=60_000)
    config.eval.iwae_k = (1, 10, 100, 5000)
    if variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.model.conv_channels = (4, 8)
        config.model.conv_hidden = 16
        config.model.latent_dim = 4
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist_conv; use ':tiny' or none.")
    return config
