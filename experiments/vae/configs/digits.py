"""VAE on the embedded 8x8 digits (scikit-learn's 1,797 real handwritten digits),
dynamically binarized. The Quickstart's default job: ~30 s on 2 CPU cores.

Variants: `digits.py` (default) and `digits.py:tiny` (seconds; smoke tests).
"""

from jgen.config import base_config, tiny_training
from jgen.families.vae import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="digits",
                         model=model_config(encoder_hidden=(256, 256), decoder_hidden=(256, 256), latent_dim=16))
    config.train.batch_size = 64
    config.train.num_steps = 4000
    config.train.eval_every = 1000
    if variant == "tiny":
        tiny_training(config)
        config.model.encoder_hidden = (32,)
        config.model.decoder_hidden = (32,)
        config.model.latent_dim = 4
        config.train.eval_every = 40
        config.train.eval_examples = 32
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/digits; use ':tiny' or none.")
    return config
