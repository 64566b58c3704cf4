"""A Conditional (Gated) PixelCNN p(x | c) of the captioned digits (24x24x1,
`data.name = "captioned_digits"`, dynamically binarized; exact test NLL on the
fixed-seed binarization): 10 gated layers of 64 channels, vertical and horizontal
stacks (no blind spot). The condition is encoded by `jgen.conditioning.ConditionEncoder`
(trained jointly: for captions a small transformer text encoder) into an embedding s
that every layer adds as a bias V^T s (van den Oord et al. 2016, Eq. 4); an image
condition also adds a location-dependent bias W * m from its map m through 1x1
convolutions (Eq. 5). Condition dropout p_uncond = 0.1 (the model also learns p(x)).
`jgen eval` reports the exact -log p(x | c); `jgen sample` draws ancestrally (576
network passes in one compiled loop) given the captions of the test split's first
examples unless `--condition` is given.

Variants (joined with "_", e.g. `:inpaint_tiny`):
  condition: (default) `tokens` (the caption), `vector` (the 13-d attribute vector),
    `inpaint` (image kind, operator "inpaint": the image with a random box hidden and
    the mask; samples complete the hidden box, and the model learns to copy the
    observed pixels, which it sees through the map);
  size: (default) 30k steps, batch 64; `cpu` (5 layers of 32 channels, 3000 steps);
    `tiny` (one layer of 4 channels, a one-layer text encoder, 20 steps: seconds, for
    the smoke test).
"""

from jgen.config import base_config, split_variant, tiny_training
from jgen.families.autoregressive import model_config

KINDS = ("tokens", "vector", "inpaint")
SIZES = ("cpu", "tiny")


def get_config(variant: str | None = None):
    v = split_variant(variant, "conditional/captioned_digits_pixelcnn", "':inpaint', ':tiny'", condition=KINDS, size=SIZES)
    kind, size = v["condition"] or "tokens", v["size"]

    m = model_config(architecture="gated_pixelcnn", channels=64, num_layers=10)
    m.condition.kind = "image" if kind == "inpaint" else kind
    m.condition.operator = "inpaint" if kind == "inpaint" else ""
    m.condition.p_uncond = 0.1
    m.condition.embed_dim = 64
    config = base_config(dataset="captioned_digits", model=m)
    config.data.cache = True
    config.optim.schedule = "cosine"
    config.train.batch_size = 64
    config.train.num_steps = 30_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.train.eval_every = 10_000
    config.train.eval_examples = 400
    config.eval.iwae_k = ()
    config.sample.num = 16
    if size == "cpu":
        m.channels, m.num_layers = 32, 5
        config.train.num_steps = 3000
        config.train.log_every = 100
        config.train.save_every = 500
        config.train.eval_every = 1000
        config.train.eval_examples = 200
        config.sample.num = 9
    elif size == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        m.channels, m.num_layers, m.first_kernel_size = 4, 1, 3
        m.condition.embed_dim, m.condition.text_layers, m.condition.text_heads = 8, 1, 1
        config.optim.schedule = "constant"
        config.eval.iwae_k = ()
        config.sample.num = 2
    return config
