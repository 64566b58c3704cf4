"""DDPM (Ho et al. 2020) on MNIST: a 3-level U-Net (28 -> 14 -> 7, attention at 7x7),
linear betas over 1000 steps, epsilon prediction and the simple loss; sampled with DDIM
(50 steps) and evaluated with the full variational bound (1000 network calls per image).

Variants: `mnist_ddpm.py`, `:cosine` (cosine schedule, v-prediction), `:hybrid`
(learned variances, the Improved-DDPM hybrid loss), `:conditional` (classifier-free
guidance, weight 1), `:tiny` (8x8 digits, for tests).
"""

from jgen.config import base_config, mnist_benchmark_training
from jgen.families.diffusion import model_config, tiny_variant, training_defaults


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(formulation="ddpm", sampler="ddim", sample_steps=50))
    mnist_benchmark_training(config, num_steps=100_000)
    training_defaults(config)
    config.train.eval_every = 0
    if variant == "cosine":
        config.model.schedule = "cosine"
        config.model.prediction = "v"
    elif variant == "hybrid":
        config.model.learned_variance = True
        config.model.loss_type = "hybrid"
    elif variant == "conditional":
        config.model.conditional = True
        config.model.guidance_scale = 1.0
    elif variant == "tiny":
        tiny_variant(config)
        config.model.num_timesteps = 40
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of diffusion/mnist_ddpm; "
                         "use ':cosine', ':hybrid', ':conditional', ':tiny' or none.")
    return config
