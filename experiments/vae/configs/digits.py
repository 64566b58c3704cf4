"""VAE on the embedded 8x8 digits (scikit-learn's 1,797 real handwritten digits),
dynamically binarized. The Quickstart's default job: ~1 minute on 2 CPU cores.

Variants: `digits.py` (default) and `digits.py:tiny` (seconds; smoke tests).
"""

from ml_collections import ConfigDict


def get_config(variant: str | None = None) -> ConfigDict:
    config = ConfigDict()
    config.seed = 0
    config.num_devices = 0  # 0 = every visible device

    config.data = ConfigDict()
    config.data.name = "digits"
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.data_dir = ""
    config.data.download = False
    config.data.preprocess = "binarize_dynamic"
    config.data.eval_preprocess = "binarize_static"
    config.data.cache = False  # decode the split into memory once

    config.model = ConfigDict()
    config.model.family = "vae"
    config.model.encoder_hidden = (256, 256)
    config.model.decoder_hidden = (256, 256)
    config.model.latent_dim = 16
    config.model.beta = 1.0

    config.optim = ConfigDict()
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 0
    config.optim.grad_clip_norm = 0.0

    config.train = ConfigDict()
    config.train.batch_size = 64
    config.train.num_steps = 4000
    config.train.log_every = 100
    config.train.save_every = 1000
    config.train.keep_checkpoints = 3
    config.train.ema_decay = 0.0
    config.train.steps_per_call = 1
    config.train.eval_every = 1000
    config.train.eval_examples = 0

    config.eval = ConfigDict()
    config.eval.batch_size = 100
    config.eval.iwae_k = (1, 10, 100, 1000)
    config.eval.iwae_chunk = 500

    config.sample = ConfigDict()
    config.sample.num = 64

    if variant == "tiny":
        config.model.encoder_hidden = (32,)
        config.model.decoder_hidden = (32,)
        config.model.latent_dim = 4
        config.train.batch_size = 16
        config.train.num_steps = 40
        config.train.log_every = 10
        config.train.save_every = 20
        config.train.eval_every = 40
        config.train.eval_examples = 32
        config.eval.batch_size = 16
        config.eval.iwae_k = (1, 10)
        config.eval.iwae_chunk = 10
        config.sample.num = 16
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/digits; use ':tiny' or none.")
    return config
