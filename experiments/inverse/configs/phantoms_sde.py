"""A score-SDE diffusion prior on 64x64 random-ellipse CT phantoms (`data.name="phantoms"`,
`jgen.inverse.phantom_dataset`: 10,000 procedural training phantoms from a fixed seed,
1,000 held-out test phantoms from another), for sparse-view CT with
`experiments/inverse/ct_sparse_view.py` and `jgen solve --task ct`.

VP SDE, epsilon prediction, a 4-level U-Net (64 -> 32 -> 16 -> 8, attention at 8x8) of
32 base channels with one residual block per level, batch 32, Adam 1e-3 after 500 warm-up
steps with cosine decay, EMA 0.999; sampled with DPM-Solver++(2M), 50 steps.

Variants: `phantoms_sde.py` (20,000 steps), `:cpu` (16 base channels, 6,000 steps, for a
few hours on a 2-core CPU), `:tiny` (16x16 phantoms, a small MLP, 20 steps, for tests).
"""

from jgen.config import base_config
from jgen.families.diffusion import model_config, tiny_variant, training_defaults


def get_config(variant: str | None = None):
    config = base_config(dataset="phantoms", model=model_config(formulation="sde", sde="vp",
                                                                sampler="dpm_solver_pp_2m", sample_steps=50))
    training_defaults(config)
    m = config.model
    m.ch, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.num_groups, m.dropout = 32, (1, 2, 2, 2), 1, (8,), 8, 0.0
    config.data.cache = True
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 500
    config.optim.schedule = "cosine"
    config.train.batch_size = 32
    config.train.num_steps = 20_000
    config.train.log_every = 100
    config.train.save_every = 1000
    config.train.eval_every = 0
    config.eval.batch_size = 32
    config.sample.num = 16
    if variant == "cpu":
        m.ch = 16
        config.train.num_steps = 6000
    elif variant == "tiny":
        tiny_variant(config)
        config.data.name = "phantoms16"
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of inverse/phantoms_sde; use ':cpu', ':tiny' or none.")
    return config
