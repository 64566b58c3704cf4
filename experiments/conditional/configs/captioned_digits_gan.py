"""A conditional GAN of the captioned digits (24x24x1, `data.name = "captioned_digits"`,
pixels on [-1, 1]): a DCGAN generator G(z, c) that reads z concatenated with the
condition's embedding, and a projection discriminator D(x, c) = psi(phi(x)) +
<V vec(c), phi(x)> (Miyato & Koyama 2018). Each player owns its condition encoder
(`jgen.conditioning.ConditionEncoder`: for captions a small transformer text encoder),
trained by its own loss. The non-saturating loss, Adam 2e-4 (b1 = 0.5), a generator EMA.
`jgen sample` draws G(z, c) given c (the captions of the test split's first examples
unless `--condition` is given); `jgen eval` reports the critic's mean outputs.

Variants (joined with "_", e.g. `:vector_cpu`):
  condition: (default) `tokens` (the caption), `vector` (the 13-d attribute vector),
    `label` (the digit class, through the family's label path);
  size: (default) 64 base channels, 20k steps; `cpu` (16 channels, batch 64, 1500
    steps, generator EMA 0.99); `tiny` (MLP players, a one-layer text encoder, 20
    steps: seconds, for the smoke test).
"""

from jgen.config import base_config, split_variant, tiny_training
from jgen.families.gan import model_config, training_defaults

KINDS = ("tokens", "vector", "label")
SIZES = ("cpu", "tiny")


def get_config(variant: str | None = None):
    v = split_variant(variant, "conditional/captioned_digits_gan", "':vector_cpu', ':tiny'", condition=KINDS, size=SIZES)
    kind, size = v["condition"] or "tokens", v["size"]

    m = model_config(architecture="dcgan", objective="non_saturating", features=64, latent_dim=64)
    m.condition.kind = kind
    m.condition.embed_dim = 64
    config = base_config(dataset="captioned_digits", model=m)
    training_defaults(config)
    config.data.cache = True
    config.train.batch_size = 64
    config.train.num_steps = 20_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.train.eval_every = 0
    config.sample.num = 64
    if size == "cpu":
        m.features = 16
        config.train.num_steps = 1500
        config.train.ema_decay = 0.99
        config.train.log_every = 50
        config.train.save_every = 250
        config.sample.num = 36
    elif size == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        m.architecture = "mlp"
        m.g_hidden = m.d_hidden = (32,)
        m.latent_dim = 8
        m.condition.embed_dim, m.condition.text_layers, m.condition.text_heads = 16, 1, 2
        config.train.ema_decay = 0.0
        config.sample.num = 4
    return config
