"""A conditional VAE (CVAE, Sohn et al. 2015) of the captioned digits (24x24x1,
`data.name = "captioned_digits"`, dynamically binarized): a conv encoder q(z|x, c) and
decoder p(x|z, c) (two stride-2 stages each way, 32/64 channels, a 32-d latent,
Bernoulli pixels) that both receive the condition's embedding
(`jgen.conditioning.ConditionEncoder`, trained jointly: for captions a small transformer
text encoder), concatenated to the encoder's features and to z. Condition dropout
p_uncond = 0.1 (the model also learns p(x)). `jgen eval` reports the ELBO and IWAE-k
bounds on -log p(x | c); `jgen sample` decodes prior draws z ~ N(0, I) given c (the
captions of the test split's first examples unless `--condition` is given).

Variants (joined with "_", e.g. `:vector_tiny`):
  condition: (default) `tokens` (the caption), `vector` (the 13-d attribute vector:
    one-hot digit, centre row/column, size), `label` (the digit class, one-hot, the
    family's original CVAE path);
  size: (default) 20k steps, batch 128; `cpu` (batch 64, 3000 steps: minutes on a
    2-core CPU); `tiny` (an MLP VAE and a one-layer text encoder, 20 steps: seconds,
    for the smoke test).
"""

from jgen.config import base_config, split_variant, tiny_training
from jgen.families.vae import model_config

KINDS = ("tokens", "vector", "label")
SIZES = ("cpu", "tiny")


def get_config(variant: str | None = None):
    v = split_variant(variant, "conditional/captioned_digits_vae", "':vector', ':tiny'", condition=KINDS, size=SIZES)
    kind, size = v["condition"] or "tokens", v["size"]

    m = model_config(architecture="conv", conv_channels=(32, 64), conv_hidden=256, latent_dim=32)
    m.condition.kind = kind
    m.condition.p_uncond = 0.1
    m.condition.embed_dim = 64
    config = base_config(dataset="captioned_digits", model=m)
    config.data.cache = True
    config.optim.schedule = "cosine"
    config.train.batch_size = 128
    config.train.num_steps = 20_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.train.eval_every = 5000
    config.train.eval_examples = 400
    config.eval.iwae_k = (1, 10, 100)
    config.eval.iwae_chunk = 100
    config.sample.num = 64
    if size == "cpu":
        m.conv_channels, m.conv_hidden = (16, 32), 128
        config.train.batch_size = 64
        config.train.num_steps = 3000
        config.train.log_every = 100
        config.train.save_every = 500
        config.train.eval_every = 1000
        config.train.eval_examples = 200
        config.sample.num = 36
    elif size == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        m.architecture = "mlp"
        m.encoder_hidden = m.decoder_hidden = (32,)
        m.latent_dim = 4
        m.condition.embed_dim, m.condition.text_layers, m.condition.text_heads = 16, 1, 2
        config.optim.schedule = "constant"
        config.eval.iwae_k = ()  # the ELBO only: one compile less in the smoke test
        config.sample.num = 4
    return config
