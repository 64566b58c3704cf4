"""A conditional normalizing flow p(x | c) of the captioned digits (24x24x1,
`data.name = "captioned_digits"`, uniformly dequantized 8-bit pixels): 8 affine
coupling layers on the flattened 576-pixel image (`model.architecture="coupling_mlp"`,
MLP conditioners of widths (512, 512), half masks with a Reverse between layers), then
the logit trick. The condition is encoded by `jgen.conditioning.ConditionEncoder`
(trained jointly: for captions a small transformer text encoder) and its embedding is
concatenated to every coupling network's input, so log p(x | c) is exact and one
network pass both ways (a coupling flow samples as fast as it evaluates, which is why
it is the default here over MAF's 576 sequential sampling passes). Condition dropout
p_uncond = 0.1 (the flow also models p(x)). `jgen eval` reports the exact NLL given
the caption (uniform dequantization, the discrete-data bound in bits/dim); `jgen
sample` draws given the captions of the test split's first examples unless
`--condition` is given.

Variants (joined with "_", e.g. `:vector_tiny`):
  condition: (default) `tokens` (the caption), `vector` (the 13-d attribute vector),
    `superres` (image kind: the 12x12 average-pooled image, operator "superres:2",
    its map flattened into every conditioner's input);
  architecture: (default) coupling MLP; `maf` (MAF, MADE conditioners with the
    embedding as unmasked context: density in one pass, sampling in 576);
  size: (default) 20k steps, batch 64; `cpu` (smaller nets, 3000 steps: minutes on a
    2-core CPU); `tiny` (2 couplings of 16 units, a one-layer text encoder, 20 steps:
    seconds, for the smoke test).
"""

from jgen.config import base_config, split_variant, tiny_training
from jgen.families.flow import model_config

KINDS = ("tokens", "vector", "superres")
ARCHITECTURES = ("maf",)
SIZES = ("cpu", "tiny")


def get_config(variant: str | None = None):
    v = split_variant(variant, "conditional/captioned_digits_flow", "':vector', ':maf_tiny', ':tiny'",
                      condition=KINDS, architecture=ARCHITECTURES, size=SIZES)
    kind, arch, size = v["condition"] or "tokens", v["architecture"], v["size"]

    m = model_config(architecture=arch or "coupling_mlp", num_layers=8, hidden=(512, 512))
    m.condition.kind = "image" if kind == "superres" else kind
    m.condition.operator = "superres:2" if kind == "superres" else ""
    m.condition.p_uncond = 0.1
    m.condition.embed_dim = 64
    config = base_config(dataset="captioned_digits", model=m)
    config.data.preprocess = "dequantize_uniform"
    config.data.eval_preprocess = "dequantize_uniform"
    config.data.cache = True
    config.optim.schedule = "cosine"
    config.optim.grad_clip_norm = 10.0
    config.train.batch_size = 64
    config.train.num_steps = 20_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.train.eval_every = 5000
    config.train.eval_examples = 400
    config.eval.iwae_k = ()
    config.sample.num = 64
    if size == "cpu":
        m.num_layers, m.hidden = 6, (256,)
        config.train.num_steps = 3000
        config.train.log_every = 100
        config.train.save_every = 500
        config.train.eval_every = 1000
        config.train.eval_examples = 200
        config.sample.num = 36
    elif size == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        m.num_layers, m.hidden = 2, (16,)
        m.condition.embed_dim, m.condition.text_layers, m.condition.text_heads = 8, 1, 1
        config.optim.schedule = "constant"
        config.eval.iwae_k = ()
        config.sample.num = 4
    return config
