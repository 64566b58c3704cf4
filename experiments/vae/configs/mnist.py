"""VAE on dynamically binarized MNIST (import it first:
`jgen data import mnist --from ../shared/data/mnist`).

The benchmark configuration: a 784-512-512-(2x50) MLP encoder and mirror
decoder with a Bernoulli likelihood, evaluated with the importance-sampled NLL
(K = 5000) on a fixed-seed binarization of the test set.

Variants: `mnist.py` (default) and `mnist.py:tiny` (smoke tests).
"""

from ml_collections import ConfigDict


def get_config(variant: str | None = None) -> ConfigDict:
    config = ConfigDict()
    config.seed = 0
    config.num_devices = 0

    config.data = ConfigDict()
    config.data.name = "mnist"
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.data_dir = ""  # TFDS default (or $TFDS_DATA_DIR)
    config.data.download = False
    config.data.preprocess = "binarize_dynamic"
    config.data.eval_preprocess = "binarize_static"
    config.data.cache = True  # decode the split into memory once (47 MB)

    config.model = ConfigDict()
    config.model.family = "vae"
    config.model.encoder_hidden = (512, 512)
    config.model.decoder_hidden = (512, 512)
    config.model.latent_dim = 50
    config.model.beta = 1.0

    config.optim = ConfigDict()
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.optim.schedule = "cosine"
    config.optim.warmup_steps = 0
    config.optim.grad_clip_norm = 0.0

    config.train = ConfigDict()
    config.train.batch_size = 128
    config.train.num_steps = 100_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.train.keep_checkpoints = 3
    config.train.ema_decay = 0.0
    config.train.steps_per_call = 1
    config.train.eval_every = 10_000
    config.train.eval_examples = 2000

    config.eval = ConfigDict()
    config.eval.batch_size = 100
    config.eval.iwae_k = (1, 10, 100, 5000)
    config.eval.iwae_chunk = 500

    config.sample = ConfigDict()
    config.sample.num = 64

    if variant == "tiny":
        config.model.encoder_hidden = (32,)
        config.model.decoder_hidden = (32,)
        config.model.latent_dim = 4
        config.train.batch_size = 16
        config.train.num_steps = 20
        config.train.log_every = 10
        config.train.save_every = 10
        config.train.eval_every = 0
        config.eval.batch_size = 16
        config.eval.iwae_k = (1, 10)
        config.eval.iwae_chunk = 10
        config.sample.num = 16
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of vae/mnist; use ':tiny' or none.")
    return config
