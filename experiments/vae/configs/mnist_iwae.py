"""IWAE (K = 50 training samples) on dynamically binarized MNIST, with the
MLP architecture of `mnist.py` (Burda et al. 2016).

Variants: `mnist_iwae.py` and `mnist_iwae.py:tiny`.
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.vae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(objective="iwae", iwae_k=50))
    mnist_benchmark_training(config, num_steps=60_000)
    config.eval.iwae_k = (1, 10, 100, 5000)
    if variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.model.encoder_hidden = (32,)
        config.model.decoder_hidden = (32,)
        config.model.latent_dim = 4
        config.model.iwae_k = 5
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist_iwae; use ':tiny' or none.")
    return config
