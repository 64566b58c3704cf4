"""A continuous-time score SDE (Song et al. 2021) on MNIST: VP SDE (beta 0.1 -> 20),
epsilon prediction, the same U-Net as `mnist_ddpm.py`; sampled with DPM-Solver++(2M)
(20 steps) and evaluated by the probability-flow ODE likelihood (bits/dim with uniform
dequantization). Every sampler in `jgen.families.diffusion.SDE_SAMPLERS` runs on it
(`jgen bench samplers`).

Variants: `mnist_sde.py`, `:subvp`, `:ve` (sigma 0.01 -> 50), `:likelihood`
(likelihood weighting), `:cpu` (a 32-channel U-Net with one residual block per level,
batch 64, for minutes of CPU training), `:tiny` (8x8 digits, for tests).
"""

from jgen.config import base_config, mnist_benchmark_training
from jgen.families.diffusion import model_config, tiny_variant, training_defaults


def get_config(variant: str | None = None):
    config = base_config(dataset="mnist", model=model_config(formulation="sde", sde="vp",
                                                             sampler="dpm_solver_pp_2m", sample_steps=20))
    mnist_benchmark_training(config, num_steps=100_000)
    training_defaults(config)
    config.train.eval_every = 0
    if variant == "subvp":
        config.model.sde = "subvp"
    elif variant == "ve":
        config.model.sde = "ve"
        config.model.t_min = 1e-5
        config.model.sampler = "pc"
        config.model.sample_steps = 500
    elif variant == "likelihood":
        config.model.likelihood_weighting = True
    elif variant == "cpu":
        # What a 2-core CPU can train in minutes: a 32-channel U-Net, one residual block per level.
        m = config.model
        m.ch, m.num_res_blocks, m.num_groups, m.dropout = 32, 1, 8, 0.0
        config.train.batch_size = 64
        config.optim.learning_rate = 1e-3
        config.optim.warmup_steps = 200
        config.train.ema_decay = 0.995
        config.train.log_every = 100
        config.train.save_every = 500
    elif variant == "tiny":
        tiny_variant(config)
    elif variant not in (None, ""):
        raise ValueError(f"Unknown variant {variant!r} of diffusion/mnist_sde; "
                         "use ':subvp', ':ve', ':likelihood', ':cpu', ':tiny' or none.")
    return config
