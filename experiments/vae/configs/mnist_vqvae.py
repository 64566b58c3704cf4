"""VQ-VAE on dynamically binarized MNIST: 28x28 -> 7x7 codes from a 64-entry
codebook of 16-d codes, EMA codebook updates, Bernoulli decoder. `jgen eval`
reports reconstruction NLL and error, codebook perplexity and usage.

Variants: `mnist_vqvae.py` and `mnist_vqvae.py:tiny`.
"""

from jgen.config import base_config, tiny_training
from jgen.families.vqvae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(num_codes=64, code_dim=16, ema=True))
    config.data.cache = True
    config.optim.learning_rate = 3e-4
    config.train.num_steps = 10_000
    config.train.log_every = 250
    config.train.save_every = 2500
    config.eval.iwae_k = ()
    if variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.model.num_codes = 8
        config.model.code_dim = 4
        config.model.hidden_channels = 8
        config.model.res_channels = 4
        config.model.num_res_blocks = 1
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist_vqvae; use ':tiny' or none.")
    return config
