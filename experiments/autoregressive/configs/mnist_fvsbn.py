"""FVSBN (a logistic regression per pixel on the pixels before it; 307k parameters) on dynamically binarized MNIST, raster order; exact test NLL on the
fixed-seed binarization of the test set (import MNIST first:
`jgen data import mnist --from ../shared/data/mnist`).

Variants: `mnist_fvsbn.py` and `mnist_fvsbn.py:tiny`.
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.autoregressive import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="fvsbn"))
    mnist_benchmark_training(config, num_steps=60_000)
    config.eval.iwae_k = ()
    config.sample.num = 16
    if variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.data.name = "digits"  # 8x8: 64 sampling steps instead of 784
        config.eval.iwae_k = ()
        config.sample.num = 2
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of autoregressive/mnist_fvsbn; use ':tiny' or none.")
    return config
