"""Glow on 8-bit MNIST, uniformly dequantized; the NLL is the discrete-data bound
in bits/dim (import MNIST first: `jgen data import mnist --from ../shared/data/mnist`).

L = 2 levels of K = 16 steps, each step actnorm -> invertible 1x1 convolution (LU) ->
affine coupling, with Glow's 3-layer coupling network (3x3 conv, 1x1 conv,
zero-initialised 3x3 conv; 128 channels); a squeeze at each level (28 -> 14 -> 7,
so L = 3 does not fit 28x28 images) and half the channels factored out between
levels (Kingma & Dhariwal 2018). The ActNorms are initialised from the first
training batch. Samples are drawn at temperature 0.7 (the paper's samples use
0.7; set model.temperature=1.0 for the model's own distribution). Sized for one
accelerator.

Variants: `mnist_glow.py` (default), `mnist_glow.py:cpu` (a small model for a 2-core CPU)
and `mnist_glow.py:tiny` (smoke tests).
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.flow import model_config


def get_config(variant: str | None = None):
    model = model_config(architecture="glow", num_levels=2, num_steps=16, width=128, num_blocks=0,
                         temperature=0.7)
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
        config.model.num_steps = 2
        config.model.width = 8
    elif variant == "cpu":
        # What a 2-core CPU can train in ~20 minutes (see README: Results).
        config.model.num_steps = 4
        config.model.width = 32
        config.train.num_steps = 6000
        config.optim.warmup_steps = 200
        config.train.log_every = 100
        config.train.save_every = 1000
        config.train.eval_every = 0
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of flows/mnist_glow; use ':cpu', ':tiny' or none.")
    return config
