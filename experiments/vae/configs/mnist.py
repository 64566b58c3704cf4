"""MLP VAE on dynamically binarized MNIST (import it first:
`jgen data import mnist --from ../shared/data/mnist`).

The benchmark configuration: a 784-512-512-(2x50) MLP encoder and mirror
decoder with a Bernoulli likelihood, evaluated with the importance-sampled NLL
(K = 5000) on a fixed-seed binarization of the test set.

Variants: `mnist.py` (default) and `mnist.py:tiny` (smoke tests).
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.vae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config())
    mnist_benchmark_training(config, num_steps=60_000)
    config.eval.iwae_k = (1, 10, 100, 5000)
    if variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.model.encoder_hidden = (32,)
        config.model.decoder_hidden = (32,)
        config.model.latent_dim = 4
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist; use ':tiny' or none.")
    return config
