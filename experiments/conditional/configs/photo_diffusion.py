"""Image-conditional diffusion on real colour photo patches (16x16x3, `data.name =
"photo_patches"`): super-resolution, colorization and inpainting as conditional
generation. The condition is a measurement of the training image itself, made on the
fly (`jgen.conditioning.spec.measure`): 2x2 average pooling (`superres:2`, 8x8 -> 16x16),
the luma (`colorize`), or the image with a random box hidden plus the mask (`inpaint`).
`jgen.conditioning.ConditionEncoder` lifts it to 16x16 and the U-Net takes it as extra
input channels. A VP score SDE (Song et al. 2021), eps prediction, condition dropout
p_uncond = 0.1, classifier-free guidance weight `model.guidance_scale` = 0 (plain
conditional sampling; raise it to sharpen), DPM-Solver++(2M) with 20 steps; `jgen eval`
reports the probability-flow ODE bound on -log p(x | y).

Variants: `superres` (the default), `colorize`, `inpaint`, each optionally with a size
joined by "_": `cpu` (a 32-channel U-Net, one residual block per level, batch 64, 2000
steps: ~20-30 min on a busy 2-core CPU) or `tiny` (an MLP, 20 steps: seconds, for the smoke
test); e.g. `:superres_cpu`, `:colorize_cpu`, `:inpaint_cpu`, `:tiny` (= superres_tiny).
"""

from jgen.config import base_config, split_variant, tiny_training
from jgen.families.diffusion import model_config, training_defaults

OPERATORS = {"superres": "superres:2", "colorize": "colorize", "inpaint": "inpaint"}
SIZES = ("cpu", "tiny")


def get_config(variant: str | None = None):
    v = split_variant(variant, "conditional/photo_diffusion", "':colorize_cpu', ':tiny'", task=tuple(OPERATORS),
                      size=SIZES)
    op, size = OPERATORS[v["task"] or "superres"], v["size"]

    m = model_config(formulation="sde", sde="vp", prediction="eps", sampler="dpm_solver_pp_2m", sample_steps=20,
                     ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8,), dropout=0.1, num_groups=16,
                     guidance_scale=0.0)
    m.condition.kind = "image"
    m.condition.operator = op
    m.condition.p_uncond = 0.1
    config = base_config(dataset="photo_patches", model=m)
    training_defaults(config)
    config.data.cache = True
    config.optim.schedule = "cosine"
    config.train.batch_size = 64
    config.train.num_steps = 50_000
    config.train.log_every = 500
    config.train.save_every = 5000
    config.sample.num = 64
    if size == "cpu":
        m.ch, m.num_res_blocks, m.num_groups, m.dropout = 32, 1, 8, 0.0
        config.train.batch_size = 64
        config.train.num_steps = 2000
        config.optim.learning_rate = 1e-3
        config.optim.warmup_steps = 100
        config.train.ema_decay = 0.995
        config.train.log_every = 100
        config.train.save_every = 500
        config.eval.batch_size = 52
        config.train.eval_examples = 208
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
        m.condition.embed_dim = 16
        m.sample_steps = 4
        m.ode_rtol = m.ode_atol = 1e-2
    return config
