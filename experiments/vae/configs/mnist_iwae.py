"""IWAE (K = 50 training samples) on dynamically binarized MNIST, with the
MLP architecture of `mnist.py` (Burda et al. 2016).

Variants: `mnist_iwae.py` and `mnist_iwae.py:tiny`.
"""

from jgen.config import base_config, tiny_training
from jgen.families.vae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(objective="iwae", iwae_k=50))
    config.data.cache = True
    config.optim.schedule = "cosine"
    config.train.num_steps = 60_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.train.eval_every = 10_000
    config.train.eval_examples = 2000
    config.eval.iwae_k = (1, 10, 100, 5000)
    if variant == "tiny":
        tiny_training(config)
        config.model.encoder_hidden = (32,)
        config.model.decoder_hidden = (32,)
        config.model.latent_dim = 4
        config.model.iwae_k = 5
        config.train.num_steps = 20
        config.train.save_every = 10
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist_iwae; use ':tiny' or none.")
    return config
