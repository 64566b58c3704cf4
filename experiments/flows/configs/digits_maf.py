"""MAF (MADE conditioners, alternating orderings) on the embedded 8x8 digits
(64-d, dequantized 8-bit pixels; NLL reported as the discrete-data bound).

Variants:
  `digits_maf.py`              uniform dequantization;
  `digits_maf.py:variational`  Flow++ variational dequantization (a conditional
                               coupling flow q(u | x) trained jointly);
  `digits_maf.py:conditional`  class-conditional p(x | y) (`jgen sample --label 3`);
  `digits_maf.py:tiny`         smoke test (conditional and variational at once).
"""

from jgen.config import base_config, tiny_training
from jgen.families.flow import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="digits", model=model_config(architecture="maf", num_layers=4, hidden=(64,)))
    config.data.preprocess = "dequantize_uniform"
    config.data.eval_preprocess = "dequantize_uniform"
    config.train.batch_size = 64
    config.train.num_steps = 2000
    config.train.eval_every = 0
    config.optim.grad_clip_norm = 10.0
    config.eval.iwae_k = ()
    if variant == "variational":
        config.model.dequantization = "variational"
        config.model.dequant_layers = 2
        config.model.dequant_hidden = (64,)
    elif variant == "conditional":
        config.model.conditional = True
    elif variant == "tiny":
        tiny_training(config)
        config.model.num_layers = 2
        config.model.hidden = (8,)
        config.model.conditional = True
        config.model.dequantization = "variational"
        config.model.dequant_layers = 1
        config.model.dequant_hidden = (8,)
        config.eval.iwae_k = ()
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of flows/digits_maf; use ':variational', ':conditional', "
                         "':tiny' or none.")
    return config
