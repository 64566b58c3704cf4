"""EDM (Karras et al. 2022) on MNIST: preconditioned denoiser (sigma_data = 0.5),
log-normal noise levels (P_mean -1.2, P_std 1.2), loss weight (s^2 + sd^2)/(s sd)^2, the
same U-Net with a Fourier embedding of c_noise = log(sigma)/4; sampled with EDM's
deterministic Heun sampler (18 steps, 35 NFE) and evaluated by the ODE likelihood.

Variants: `mnist_edm.py`, `:tiny` (8x8 digits, for tests).
"""

from jgen.config import base_config, mnist_benchmark_training
from jgen.families.diffusion import model_config, tiny_variant, training_defaults


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(formulation="edm", sampler="edm", sample_steps=18))
    mnist_benchmark_training(config, num_steps=100_000)
    training_defaults(config)
    config.train.eval_every = 0
    if variant == "tiny":
        tiny_variant(config)
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of diffusion/mnist_edm; use ':tiny' or none.")
    return config
