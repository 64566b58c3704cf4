"""Real NVP (multi-scale, ResNet coupling networks) on 8-bit MNIST, uniformly
dequantized; the NLL is the discrete-data bound in bits/dim (import MNIST first:
`jgen data import mnist --from ../shared/data/mnist`).

Three scales on 28x28x1 (28 -> 14 -> 7): per scale 3 checkerboard couplings, a
squeeze, 3 channel couplings and half the channels factored out; 4 checkerboard
couplings at the last scale (Dinh et al. 2017, Section 3.6), each coupling followed
by a data-initialised ActNorm. Sized for one accelerator.

Variants: `mnist_realnvp.py` (default), `mnist_realnvp.py:cpu` (a small model for a 2-core CPU)
and `mnist_realnvp.py:tiny` (smoke tests).
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.flow import model_config


def get_config(variant: str | None = None):
    model = model_config(architecture="realnvp", num_levels=3, num_steps=3, width=64, num_blocks=4)
    config = base_config(dataset="mnist", model=model)
    config.data.preprocess = "dequantize_uniform"
    config.data.eval_preprocess = "dequantize_uniform"
    mnist_benchmark_training(config, num_steps=50_000)
    config.train.batch_size = 64
    config.optim.schedule = "warmup_cosine"
    config.optim.warmup_steps = 1000
    config.optim.grad_clip_norm = 100.0
    config.eval.iwae_k = ()
    if variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.optim.warmup_steps = 2
        config.model.num_levels = 1
        config.model.num_steps = 1
        config.model.width = 4
        config.model.num_blocks = 0
    elif variant == "cpu":
        # What a 2-core CPU can train in ~20 minutes (see README: Results).
        config.model.num_levels = 2
        config.model.num_steps = 2
        config.model.width = 16
        config.model.num_blocks = 1
        config.train.num_steps = 3000
        config.optim.warmup_steps = 200
        config.train.log_every = 100
        config.train.save_every = 1000
        config.train.eval_every = 0
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of flows/mnist_realnvp; use ':cpu', ':tiny' or none.")
    return config
