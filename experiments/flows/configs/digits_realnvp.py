"""RealNVP-style coupling flow on the embedded 8x8 digits (64-d, uniformly
dequantized 8-bit pixels; NLL reported as the discrete-data bound in bits/dim).

Variants: `digits_realnvp.py` and `digits_realnvp.py:tiny`.
"""

from jgen.config import base_config, tiny_training
from jgen.families.flow import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="digits", model=model_config(num_layers=8, hidden=(256, 256)))
    config.data.preprocess = "dequantize_uniform"
    config.data.eval_preprocess = "dequantize_uniform"
    config.train.batch_size = 64
    config.train.num_steps = 4000
    config.train.eval_every = 0
    config.optim.grad_clip_norm = 10.0
    config.eval.iwae_k = ()
    if variant == "tiny":
        tiny_training(config)
        config.model.num_layers = 2
        config.model.hidden = (16,)
        config.eval.iwae_k = ()
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of flows/digits_realnvp; use ':tiny' or none.")
    return config
