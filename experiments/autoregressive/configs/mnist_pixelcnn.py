"""PixelCNN (type-A 7x7 masked conv, 7 residual blocks of type-B 3x3 convs, 64 channels) on dynamically binarized MNIST; exact test NLL on the fixed-seed
binarization of the test set.

Variants: `mnist_pixelcnn.py`, `mnist_pixelcnn.py:conditional` (class-conditional:
`jgen sample --label 3`), and `mnist_pixelcnn.py:tiny`.
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.autoregressive import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="pixelcnn", channels=64, num_layers=7))
    mnist_benchmark_training(config, num_steps=60_000)
    config.eval.iwae_k = ()
    config.sample.num = 16
    if variant == "conditional":
        config.model.conditional = True
    elif variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.data.name = "digits"  # 8x8: 64 sampling steps instead of 784
        config.eval.iwae_k = ()
        config.sample.num = 2
        config.model.channels = 4
        config.model.num_layers = 1
        config.model.first_kernel_size = 3
        config.model.conditional = True
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of autoregressive/mnist_pixelcnn; use ':conditional', ':tiny' or none.")
    return config
