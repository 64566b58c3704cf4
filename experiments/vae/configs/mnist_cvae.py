"""Conditional VAE on dynamically binarized MNIST: encoder and decoder both see
the one-hot digit label; sample a class with `jgen sample --label 3`.

Variants: `mnist_cvae.py` and `mnist_cvae.py:tiny`.
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.vae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(conditional=True))
    mnist_benchmark_training(config, num_steps=30_000)
    config.eval.iwae_k = (1, 10, 100, 1000)
    if variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.model.encoder_hidden = (32,)
        config.model.decoder_hidden = (32,)
        config.model.latent_dim = 4
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist_cvae; use ':tiny' or none.")
    return config
