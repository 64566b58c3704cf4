"""Conv VAE on 8-bit MNIST with a discretized logistic mixture decoder (5
components per pixel): a discrete likelihood on the 256 pixel values, so the
NLL is in nats per image and bits/dim on the raw 8-bit data.

Variants: `mnist_dlm.py` and `mnist_dlm.py:tiny`.
"""

from jgen.config import base_config, tiny_training
from jgen.families.vae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="conv", conv_channels=(32, 64),
                                                              conv_hidden=512, latent_dim=32,
                                                              likelihood="dlogistic_mixture", num_mixtures=5))
    config.data.preprocess = "symmetric"  # pixels -> [-1, 1] bin centres
    config.data.eval_preprocess = "symmetric"
    config.data.cache = True
    config.optim.schedule = "cosine"
    config.train.num_steps = 30_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.eval.iwae_k = (1, 10, 100)
    if variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.model.conv_channels = (4, 8)
        config.model.conv_hidden = 16
        config.model.latent_dim = 4
        config.model.num_mixtures = 2
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist_dlm; use ':tiny' or none.")
    return config
