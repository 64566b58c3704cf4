"""ImageGPT-style causal transformer over the 784 binarized MNIST pixels as
tokens (plus a beginning-of-sequence token), pre-LayerNorm, 4 layers of width
128; exact test NLL on the fixed-seed binarization of the test set. Sampling
uses the key-value cache.

Variants: `mnist_transformer.py`, `mnist_transformer.py:conditional`
(class-conditional: `jgen sample --label 3`), and `mnist_transformer.py:tiny`.
"""

from jgen.config import base_config, mnist_benchmark_training, tiny_training
from jgen.families.autoregressive import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(architecture="transformer", d_model=128, num_heads=4,
                                                              num_layers=4))
    mnist_benchmark_training(config, num_steps=60_000)
    config.optim.learning_rate = 3e-4
    config.optim.warmup_steps = 1000
    config.optim.grad_clip_norm = 1.0
    config.eval.iwae_k = ()
    config.sample.num = 16
    if variant == "conditional":
        config.model.conditional = True
    elif variant == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.data.name = "digits"  # 8x8: 64 sampling steps instead of 784
        config.eval.iwae_k = ()
        config.sample.num = 2
        config.model.d_model = 16
        config.model.num_heads = 2
        config.model.num_layers = 1
        config.model.conditional = True
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of autoregressive/mnist_transformer; "
                         "use ':conditional', ':tiny' or none.")
    return config
