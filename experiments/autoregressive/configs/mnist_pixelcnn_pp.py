"""PixelCNN++-style model (gated resnet blocks, concat_elu, a 5-component
discretized logistic mixture per pixel) on 8-bit MNIST; exact test NLL over the
256 pixel values, reported in bits/dim.

Variants: `mnist_pixelcnn_pp.py` and `mnist_pixelcnn_pp.py:tiny`.
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.autoregressive import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="pixelcnn_pp", channels=64, num_layers=5,
                                                              num_mixtures=5))
    config.data.preprocess = "symmetric"
    config.data.eval_preprocess = "symmetric"
    mnist_benchmark_training(config, num_steps=60_000)
    config.optim.learning_rate = 5e-4
    config.optim.grad_clip_norm = 100.0
    config.eval.iwae_k = ()
    config.sample.num = 16
    if variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.data.name = "digits"  # 8x8: 64 sampling steps instead of 784
        config.eval.iwae_k = ()
        config.sample.num = 2
        config.model.channels = 4
        config.model.num_layers = 1
        config.model.num_mixtures = 2
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of autoregressive/mnist_pixelcnn_pp; use ':tiny' or none.")
    return config
