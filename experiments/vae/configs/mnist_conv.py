"""Convolutional VAE on dynamically binarized MNIST: two stride-2 conv stages
(32, 64 channels) each way, a 50-d latent, Bernoulli decoder.

Variants: `mnist_conv.py` and `mnist_conv.py:tiny`.
"""

from jgen.config import base_config, tiny_training
from jgen.families.vae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="conv", conv_channels=(32, 64),
                                                              conv_hidden=512, latent_dim=50))
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
        config.model.conv_channels = (4, 8)
        config.model.conv_hidden = 16
        config.model.latent_dim = 4
        config.train.num_steps = 20
        config.train.save_every = 10
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist_conv; use ':tiny' or none.")
    return config
