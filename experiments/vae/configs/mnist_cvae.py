"""Conditional VAE on dynamically binarized MNIST: encoder and decoder both see
the one-hot digit label; sample a class with `jgen sample --label 3`.

Variants: `mnist_cvae.py` and `mnist_cvae.py:tiny`.
"""

from jgen.config import base_config, tiny_training
from jgen.families.vae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(conditional=True))
    config.data.cache = True
    config.optim.schedule = "cosine"
    config.train.num_steps = 30_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.train.eval_every = 10_000
    config.train.eval_examples = 2000
    config.eval.iwae_k = (1, 10, 100, 1000)
    if variant == "tiny":
        tiny_training(config)
        config.model.encoder_hidden = (32,)
        config.model.decoder_hidden = (32,)
        config.model.latent_dim = 4
        config.train.num_steps = 20
        config.train.save_every = 10
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist_cvae; use ':tiny' or none.")
    return config
