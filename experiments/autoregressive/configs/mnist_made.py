"""MADE (784-1000-1000-784 masked MLP with a direct connection) on dynamically
binarized MNIST; exact test NLL on the fixed-seed binarization of the test set.

Variants:
  `mnist_made.py`           one natural (raster) ordering, fixed connectivity;
  `mnist_made.py:ensemble`  order- and connectivity-agnostic training over 32
                            masks; eval = the exact likelihood of the 32-mask ensemble;
  `mnist_made.py:tiny`      smoke test.
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.autoregressive import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="made", made_hidden=(1000, 1000)))
    mnist_benchmark_training(config, num_steps=60_000)
    config.eval.iwae_k = ()
    config.sample.num = 16
    if variant == "ensemble":
        config.model.num_masks = 32
        config.model.order_agnostic = True
    elif variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.data.name = "digits"  # 8x8: 64 sampling steps instead of 784
        config.eval.iwae_k = ()
        config.sample.num = 2
        config.model.made_hidden = (16,)
        config.model.num_masks = 2
        config.model.order_agnostic = True
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of autoregressive/mnist_made; use ':ensemble', ':tiny' or none.")
    return config
