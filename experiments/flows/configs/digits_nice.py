"""NICE (additive couplings, a learned diagonal scaling) on the embedded 8x8 digits
(64-d, uniformly dequantized 8-bit pixels; NLL reported as the discrete-data bound
in bits/dim).

Four additive couplings with alternating even/odd masks and small MLP conditioners,
as in Dinh et al. (2015) but sized for the 1,497 training digits (large flows
overfit them; see `digits_realnvp.py`), a standard normal base instead of the
paper's logistic, and the logit trick of the rest of the flow family. Measured
(CPU, seed 0): 4.54 bits/dim on the test split after the 2,000 steps (digits_realnvp:
4.4).

Variants: `digits_nice.py` and `digits_nice.py:tiny`.
"""

from jgen.config import base_config, tiny_training
from jgen.families.flow import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="digits", model=model_config(architecture="nice", num_layers=4, hidden=(32, 32)))
    config.data.preprocess = "dequantize_uniform"
    config.data.eval_preprocess = "dequantize_uniform"
    config.train.batch_size = 64
    config.train.num_steps = 2000
    config.train.eval_every = 0
    config.optim.grad_clip_norm = 10.0
    config.eval.iwae_k = ()
    if variant == "tiny":
        tiny_training(config)
        config.model.num_layers = 2
        config.model.hidden = (8,)
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of flows/digits_nice; use ':tiny' or none.")
    return config
