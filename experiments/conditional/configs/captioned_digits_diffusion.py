"""A text-conditional diffusion model of the captioned digits (24x24x1, `data.name =
"captioned_digits"`): a continuous-time VP score SDE (Song et al. 2021) with an
eps-predicting U-Net whose time embedding receives the caption's embedding (a small
transformer text encoder, `jgen.conditioning.ConditionEncoder`, trained jointly),
condition dropout p_uncond = 0.1, and classifier-free guidance (Ho & Salimans 2022)
with weight `model.guidance_scale` = 1 when sampling (DPM-Solver++(2M), 20 steps).
`jgen eval` reports the probability-flow ODE bound on -log p(x | caption).

Variants (joined with "_", e.g. `:vector_cpu`):
  condition: (default) `tokens` (the caption), `vector` (the 13-d attribute vector:
    one-hot digit, centre row/column, size), `label` (the digit class, through the
    network's label embedding);
  size: (default) a 64-channel U-Net, 50k steps; `cpu` (a 32-channel U-Net with one
    residual block per level, batch 32, 1800 steps: ~30 min on a busy 2-core CPU);
    `tiny` (an MLP score network and a one-layer text encoder, 20 steps: seconds, for
    the smoke test).

Sample with a caption (`jgen.data.captioned_digits.tokenize`), e.g.
`jgen sample --workdir W --condition "text=a big 3 in the top left"`, or sweep
the guidance weight from a script with `spec.sampler_fns.run(..., guidance_scale=w)`.
"""

from jgen.config import base_config, split_variant, tiny_training
from jgen.families.diffusion import model_config, training_defaults

KINDS = ("tokens", "vector", "label")
SIZES = ("cpu", "tiny")


def get_config(variant: str | None = None):
    v = split_variant(variant, "conditional/captioned_digits_diffusion", "':vector_cpu', ':tiny'", condition=KINDS, size=SIZES)
    kind, size = v["condition"] or "tokens", v["size"]

    m = model_config(formulation="sde", sde="vp", prediction="eps", sampler="dpm_solver_pp_2m", sample_steps=20,
                     ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(6,), dropout=0.1, num_groups=16,
                     guidance_scale=1.0)
    m.condition.kind = kind
    m.condition.p_uncond = 0.1
    m.condition.embed_dim = 64
    config = base_config(dataset="captioned_digits", model=m)
    training_defaults(config)
    config.data.cache = True
    config.optim.schedule = "cosine"
    config.train.batch_size = 64
    config.train.num_steps = 50_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.sample.num = 64
    if size == "cpu":
        # A 32-channel U-Net, one residual block per level, attention at 6x6 only.
        m.ch, m.num_res_blocks, m.num_groups, m.dropout = 32, 1, 8, 0.0
        m.condition.text_layers = 2
        config.train.batch_size = 32
        config.train.num_steps = 1800
        config.optim.learning_rate = 1e-3
        config.optim.warmup_steps = 100
        config.train.ema_decay = 0.995
        config.train.log_every = 100
        config.train.save_every = 500
        config.eval.batch_size = 50
        config.train.eval_examples = 200
        config.sample.num = 36
    elif size == "tiny":
        tiny_training(config, num_steps=20, save_every=10)
        config.optim.warmup_steps = 0
        config.optim.learning_rate = 2e-3
        config.train.ema_decay = 0.0
        config.eval.iwae_k = ()
        config.eval.batch_size = 16
        config.sample.num = 4
        m.network, m.mlp_hidden = "mlp", (32, 32)
        m.condition.embed_dim, m.condition.text_layers, m.condition.text_heads = 16, 1, 2
        m.sample_steps = 4
        m.ode_rtol = m.ode_atol = 1e-2
    return config
