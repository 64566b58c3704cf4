"""Stage 2 of the VQ-VAE recipe on binarized MNIST: an autoregressive prior over the
7x7 code maps (64 codes) of a trained VQ-VAE (stage 1: `mnist_vqvae.py`).

    jgen train --config experiments/vae/configs/mnist_vqvae.py --workdir runs/mnist_vqvae
    jgen train --config experiments/vae/configs/mnist_vqvae_prior.py --workdir runs/mnist_vqvae_prior \\
        --config.model.vqvae_workdir=runs/mnist_vqvae
    jgen sample --workdir runs/mnist_vqvae_prior --num 64 --out samples.png
    jgen eval --workdir runs/mnist_vqvae_prior

The prior is a small Gated PixelCNN (no blind spot) over the one-hot 7x7 code map,
sized to learn in ~10 CPU minutes; `--config.model.prior=transformer` swaps in a
decoder-only transformer over the 49 codes (KV-cache sampling; `model.d_model`,
`model.num_heads`), `pixelcnn` the plain PixelCNN. data.* must match the stage-1
run's (checked).

Variants: `mnist_vqvae_prior.py` and `mnist_vqvae_prior.py:tiny` (on the 8x8 digits:
give it a VQ-VAE trained on digits, e.g. `mnist_vqvae.py:tiny --config.data.name=digits`).
"""

from jgen.config import base_config, tiny_training
from jgen.families.vqvae_prior import model_config


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(prior="gated_pixelcnn", channels=32, num_layers=4,
                                                             first_kernel_size=5))
    config.data.cache = True
    config.optim.learning_rate = 1e-3
    config.optim.schedule = "warmup_cosine"
    config.optim.warmup_steps = 50
    config.train.num_steps = 1200
    config.train.log_every = 100
    config.train.save_every = 500
    config.eval.iwae_k = ()
    if variant == "tiny":
        config.data.name = "digits"
        tiny_training(config, num_steps=20, save_every=10)
        config.optim.warmup_steps = 0
        config.optim.schedule = "constant"
        config.optim.learning_rate = 3e-3
        config.model.channels = 8
        config.model.num_layers = 1
        config.model.first_kernel_size = 3
        config.model.d_model = 16
        config.model.num_heads = 2
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist_vqvae_prior; use ':tiny' or none.")
    return config
