r"""The score-based / diffusion family: a U-Net (or an MLP for small images) trained as a
DDPM, a continuous-time score SDE or an EDM denoiser, sampled by any of jgen's compiled
samplers, and evaluated by its likelihood.

`config.model.formulation` picks the objective and the time variable the network sees:

- "ddpm": a discrete DDPM (Ho et al. 2020) with `schedule` ("linear" | "cosine") over
  `num_timesteps` steps, `prediction` ("eps" | "x0" | "v"), `loss_type` ("simple" |
  "vlb" | "hybrid") and optional `learned_variance` (Improved DDPM). The network's time
  input is the 0-based step index. Samplers: "ddpm", "ddim". Evaluation: the full
  variational bound ("VLB", Ho et al.'s discretized decoder) in bits/dim.
- "sde": the continuous-time score-SDE loss (Song et al. 2021) for `sde` = "vp" |
  "subvp" | "ve", with `likelihood_weighting` as an option. The network's time input is
  `time_scale * t` (`time_scale` = 1000 by default, so the sinusoidal embedding sees the
  same range as a DDPM's step indices; named here, not hidden in glue). Samplers: every
  one in `SDE_SAMPLERS` (the SNR adapters of `jgen.sde.adapters` put the one model into
  DDPM/DDIM/EDM/annealed-Langevin coordinates). Evaluation: "ODE", the
  probability-flow likelihood (Hutchinson trace, adaptive Dopri5) with uniform
  dequantization, a bound on the discrete NLL.
- "edm": EDM's preconditioned denoiser and loss (Karras et al. 2022); the network sees
  :math:`c_{noise} = \frac14\log\sigma` (Fourier embedding). It is also a VE-type score
  model, :math:`s(x, \sigma) = (D(x, \sigma) - x)/\sigma^2`, on
  `VESDE(edm_sigma_min, edm_sigma_max)`, so every continuous sampler and the ODE
  likelihood apply too. Samplers: "edm", "edm_stochastic" plus `SDE_SAMPLERS`.

`model.sampler` and `model.sample_steps` choose what `jgen sample` runs (defaults: DDIM
for "ddpm", DPM-Solver++(2M) for "sde", EDM Heun for "edm"); `jgen bench samplers` runs
them all side by side through `sampler_table`.

Conditioning (`jgen.conditioning`): `model.condition.kind` = "label" | "vector" |
"tokens" | "image" (`model.condition`, see `condition_config`). Kinds "vector",
"tokens" and "image" go through a `ConditionEncoder` inside the network (its embedding
is added to the time embedding; an image condition's map is concatenated to the U-Net's
input channels, or flattened into the MLP's input), trained with condition dropout
`model.condition.p_uncond` (the encoder's learned null condition). Class labels
(`model.condition.kind="label"`, or the older `model.conditional=True` with its
`model.p_uncond`) keep the network's label-embedding path (null label = `num_classes`).
Every conditional model samples with classifier-free guidance

    out = (1 + w) out(x, c) - w out(x, null),    w = model.guidance_scale

(Ho & Salimans 2022; w = 0 is plain conditional sampling, exactly: the null evaluation is
skipped). `ModelSpec.sample(params, key, num, condition, *, guidance_scale=None)`,
`SamplerFns.run(name, params, key, num, steps, condition, *, guidance_scale=None)` and
`SamplerFns.forward(params, x, condition, *, guidance_scale=None)` take the raw condition
(see `jgen.conditioning.spec`) and an optional per-call w (None: `model.guidance_scale`),
so a script sweeps w on one built model::

    spec = build(config, info)
    draw = jax.jit(lambda c, w: spec.sample(params, key, num, c, guidance_scale=w))
    grids = {w: draw(condition, jnp.float32(w)) for w in (0.0, 1.0, 3.0)}  # one compile

(a traced w compiles once for all w, and w = 0 then equals unguided sampling up to float
rounding; a Python w compiles once per value, and a Python 0 is the unguided sampler bit
for bit). The evaluation (`eval_fn`) is the NLL bound given each example's condition.

Pixels: the data are 8-bit images mapped to [-1, 1] (`data.preprocess="symmetric"`,
x = k / 127.5 - 1); samples come back in [0, 1].

References:
  Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models. NeurIPS.
    https://arxiv.org/abs/2006.11239
  Song, Y., Sohl-Dickstein, J., Kingma, D. P., Kumar, A., Ermon, S. & Poole, B. (2021).
    Score-Based Generative Modeling through Stochastic Differential Equations. ICLR.
    https://arxiv.org/abs/2011.13456
  Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. NeurIPS. https://arxiv.org/abs/2206.00364
  Ho, J. & Salimans, T. (2022). Classifier-Free Diffusion Guidance.
    https://arxiv.org/abs/2207.12598
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from jgen.conditioning.encoder import drop_mask
from jgen.conditioning.spec import (
    check_condition,
    condition_config,
    condition_of,
    default_condition,
    resolve,
)
from jgen.config import tiny_training
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses.diffusion import (
    classifier_free_guidance,
    ddpm_loss,
    ddpm_vlb_terms,
    drop_labels,
    edm_loss,
    edm_precondition,
    sde_loss,
)
from jgen.losses.elbo import masked_mean
from jgen.metrics.ode_likelihood import dequantized_log_prob_bound, ode_log_prob
from jgen.models.diffusion import ScoreMLP, UNet
from jgen.samplers.annealed_langevin import annealed_langevin_sample
from jgen.samplers.ddim import ddim_sample
from jgen.samplers.ddpm import ddpm_sample
from jgen.samplers.dpm_solver import dpm_solver_pp_2m_sample, x0_from_score
from jgen.samplers.edm import edm_sample
from jgen.samplers.ode import probability_flow_sample
from jgen.samplers.pc import pc_sample
from jgen.sde import (
    VESDE,
    geometric_sigmas,
    get_schedule,
    get_sde,
    to_eps,
    to_score,
)
from jgen.sde.adapters import (
    discrete_schedule_from_sde,
    edm_denoiser_from_x0,
    edm_sigma_range,
    eps_fn_from_score,
    time_from_sigma_ratio,
)
from jgen.sde.sde import _expand

FORMULATIONS = ("ddpm", "sde", "edm")
NETWORKS = ("unet", "mlp")
DDPM_SAMPLERS = ("ddpm", "ddim")
SDE_SAMPLERS = ("em", "pc", "ode_euler", "ode_heun", "ode_dopri5", "dpm_solver_pp_2m", "ddim", "ddpm",
                "edm", "edm_stochastic", "annealed_langevin")
DEFAULT_SAMPLER = {"ddpm": "ddim", "sde": "dpm_solver_pp_2m", "edm": "edm"}


def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the diffusion family, with its default."""
    c = ConfigDict()
    c.family = "diffusion"
    c.formulation = "sde"  # see FORMULATIONS
    c.network = "unet"  # "unet" | "mlp" (the MLP flattens the image; for 8x8 digits)
    # U-Net (jgen.models.diffusion.UNet)
    c.ch = 64
    c.ch_mult = (1, 2, 2)
    c.num_res_blocks = 2
    c.attn_resolutions = (7,)
    c.dropout = 0.1
    c.num_groups = 16
    c.embedding = ""  # "" = sinusoidal for ddpm/sde, fourier for edm
    c.mlp_hidden = (512, 512, 512)  # mlp
    # DDPM
    c.schedule = "linear"
    c.num_timesteps = 1000
    c.prediction = "eps"  # ddpm: eps | x0 | v; sde: eps | x0 | v | score
    c.loss_type = "simple"
    c.learned_variance = False
    # score SDE
    c.sde = "vp"
    c.beta_min = 0.1
    c.beta_max = 20.0
    c.sigma_min = 0.01
    c.sigma_max = 50.0
    c.t_min = 1e-3
    c.likelihood_weighting = False
    c.time_scale = 1000.0  # the network sees time_scale * t (sde formulation)
    # EDM
    c.sigma_data = 0.5
    c.p_mean = -1.2
    c.p_std = 1.2
    c.edm_sigma_min = 0.002
    c.edm_sigma_max = 80.0
    c.rho = 7.0
    c.s_churn = 40.0  # edm_stochastic
    # conditioning: model.condition.kind (jgen.conditioning); `conditional=True` is the
    # older spelling of kind "label", with its own label dropout `p_uncond`
    c.condition = condition_config()
    c.conditional = False
    c.p_uncond = 0.1
    c.guidance_scale = 0.0  # classifier-free guidance weight w (0 = plain conditional sampling)
    # sampling and likelihood
    c.sampler = ""  # "" = DEFAULT_SAMPLER[formulation]
    c.sample_steps = 0  # 0 = the sampler's default (see `default_steps`)
    c.eta = 0.0  # ddim
    c.ode_rtol = 1e-5
    c.ode_atol = 1e-5
    for k, v in overrides.items():
        c[k] = v
    return c


def default_steps(sampler: str, num_timesteps: int) -> int:
    """Step counts `jgen sample` uses when `model.sample_steps` is 0."""
    return {"ddpm": num_timesteps, "em": 1000, "pc": 500, "ode_euler": 500, "ode_heun": 100, "ode_dopri5": 0,
            "edm": 18, "edm_stochastic": 40, "annealed_langevin": 100, "dpm_solver_pp_2m": 20, "ddim": 50}[sampler]


def sample_with(name: str, key, score_fn, sde, shape, steps: int, *, denoiser_fn=None, sigma_range=None,
                eta: float = 0.0, rtol: float = 1e-5, atol: float = 1e-5, rho: float = 7.0, s_churn: float = 40.0,
                langevin_step_lr: float = 2e-5, langevin_sigma_min: float = 0.01):
    """Runs the continuous-time sampler `name` (one of `SDE_SAMPLERS`) on a score model.

    The config edge's registry of samplers: each name maps to one `jgen.samplers`
    function, and models written as a score on `sde` reach the samplers written in
    other coordinates through `jgen.sde.adapters` (DDPM/DDIM on the SDE's matched
    discrete schedule, EDM and annealed Langevin in VE coordinates
    :math:`x/\\alpha` at noise level :math:`\\sigma/\\alpha`).

    Args:
      name: the sampler (see `SDE_SAMPLERS`).
      key: PRNG key.
      score_fn: ``score_fn(x, t) -> score`` on `sde`'s marginals.
      sde: the forward `LinearSDE`.
      shape: the sample shape [B, ...].
      steps: the step count (for "ode_dopri5": ignored, the tolerances decide; for
        "annealed_langevin": levels = steps // 10, steps // levels per level).
      denoiser_fn: an EDM denoiser ``D(x, sigma)`` to use instead of the adapted score.
      sigma_range: EDM's (sigma_min, sigma_max); default the SDE's range on [t_min, T].
      eta, rtol, atol, rho, s_churn, langevin_step_lr, langevin_sigma_min: the samplers'
        options (DDIM's eta, Dopri5's tolerances, EDM's rho and S_churn, annealed
        Langevin's step size and last level).

    Returns:
      (samples [shape], NFE).
    """
    if name not in SDE_SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {SDE_SAMPLERS}.")
    if name in ("em", "pc"):
        x, info = pc_sample(key, score_fn, shape, sde=sde, num_steps=steps,
                            predictor="euler_maruyama" if name == "em" else "reverse_diffusion",
                            corrector=None if name == "em" else "langevin")
    elif name.startswith("ode_"):
        x, info = probability_flow_sample(key, score_fn, shape, sde=sde, method=name[4:],
                                          num_steps=steps if name != "ode_dopri5" else None,
                                          rtol=rtol, atol=atol, denoise=True)
    elif name == "dpm_solver_pp_2m":
        x, info = dpm_solver_pp_2m_sample(key, x0_from_score(score_fn, sde), shape, sde=sde, num_steps=steps)
    elif name in ("ddim", "ddpm"):
        # The discrete schedule matching the SDE at `steps` times (DDPM) or at 1000 (DDIM's sub-sequence).
        n = steps if name == "ddpm" else max(1000, steps)
        sched = discrete_schedule_from_sde(sde, n)
        eps_fn = eps_fn_from_score(score_fn, sde, n)
        if name == "ddpm":
            x, info = ddpm_sample(key, eps_fn, shape, schedule=sched)
        else:
            x, info = ddim_sample(key, eps_fn, shape, schedule=sched, num_steps=steps, eta=eta)
    elif name in ("edm", "edm_stochastic"):
        lo, hi = sigma_range or edm_sigma_range(sde)
        if denoiser_fn is None:
            denoiser_fn = edm_denoiser_from_x0(x0_from_score(score_fn, sde), sde)
        x, info = edm_sample(key, denoiser_fn, shape, num_steps=steps, sigma_min=lo, sigma_max=hi, rho=rho,
                             s_churn=s_churn if name == "edm_stochastic" else 0.0)
    else:  # annealed_langevin, in VE coordinates through the SNR adapter
        lo, hi = sigma_range or edm_sigma_range(sde)
        levels = max(steps // 10, 2)
        sigmas = geometric_sigmas(levels, max(lo, langevin_sigma_min), hi)

        def ve_score(x, sigma):
            t = time_from_sigma_ratio(sde, sigma)
            alpha = _expand(sde.marginal(t)[0], x)
            return alpha * score_fn(alpha * x, t)
        x, info = annealed_langevin_sample(key, ve_score, shape, sigmas=sigmas,
                                           steps_per_sigma=max(steps // levels, 1), step_lr=langevin_step_lr)
    return x, info.nfe


class SamplerFns(NamedTuple):
    """What `jgen bench samplers` and `sample` need from a configured diffusion model.

    Attributes:
      samplers: names of the samplers this model runs.
      run: ``run(name, params, key, num, steps, condition=None, *, guidance_scale=None) ->
        (x in [-1, 1], nfe)``; traced anew for each (name, num, steps). `condition` is the raw
        condition [num, ...] of a conditional model (class labels default to cycling
        through the classes; other kinds need one); `guidance_scale` overrides
        `model.guidance_scale` (the classifier-free guidance weight w) for this call.
      forward: ``forward(params, x, condition=None, *, guidance_scale=None) -> out``, one
        (guided) network evaluation at a mid-range noise level (the unit of the NFE cost);
        class labels default to zeros.
      image_shape: the data shape.
      condition: the model's `jgen.conditioning.ConditionSpec` (None: unconditional).
    """

    samplers: tuple[str, ...]
    run: Callable
    forward: Callable
    image_shape: tuple[int, ...]
    condition: object | None = None

    def with_condition(self, condition, *, guidance_scale=None) -> "SamplerFns":
        """The same functions with `condition` (and `guidance_scale`) as their defaults, for
        callers that pass neither (e.g. `jgen.bench_samplers.benchmark_samplers`)."""
        run, forward, default, default_scale = self.run, self.forward, condition, guidance_scale

        def run_with(name, params, key, num, steps, condition=None, *, guidance_scale=default_scale):
            condition = default if condition is None else condition
            return run(name, params, key, num, steps, condition, guidance_scale=guidance_scale)

        def forward_with(params, x, condition=None, *, guidance_scale=default_scale):
            condition = default if condition is None else condition
            return forward(params, x, condition, guidance_scale=guidance_scale)
        return self._replace(run=run_with, forward=forward_with)


def _network(m: ConfigDict, image_shape, num_classes: int, out_channels: int, condition=None):
    """(init(key) -> variables, apply(variables, x, time, y, *, key=None) -> out).

    `y` is what the network is conditioned on: None (unconditional), int labels [B] in
    [0, num_classes] (`num_classes` = the null label), or for a `condition` spec the pair
    ``(raw condition [B, ...], drop bool [B])`` (drop = the encoder's null condition).
    """
    if m.network not in NETWORKS:
        raise ValueError(f"Unknown model.network={m.network!r}; use one of {NETWORKS}.")
    embedding = m.embedding or ("fourier" if m.formulation == "edm" else "sinusoidal")
    dim = math.prod(image_shape)

    def split(y):  # -> (labels, cond, drop) for the module
        if condition is None:
            return y, None, None
        if not (isinstance(y, tuple) and len(y) == 2):
            raise ValueError(f"The {condition.kind}-conditional diffusion network takes y = (condition, drop); "
                             f"received {type(y).__name__}.")
        return None, y[0], y[1]

    def example_y():
        if condition is not None:
            return (jnp.zeros((1, *condition.shape), condition.dtype), jnp.zeros((1,), bool))
        return jnp.zeros((1,), jnp.int32) if num_classes else None

    if m.network == "unet":
        module = UNet(ch=int(m.ch), ch_mult=tuple(m.ch_mult), num_res_blocks=int(m.num_res_blocks),
                      attn_resolutions=tuple(m.attn_resolutions), dropout=float(m.dropout), out_ch=out_channels,
                      num_classes=num_classes, condition=condition, embedding=embedding,
                      num_groups=int(m.num_groups))

        def apply(variables, x, time, y, *, key=None):
            train = key is not None and float(m.dropout) > 0
            rngs = {"dropout": key} if train else None
            labels, cond, drop = split(y)
            return module.apply(variables, x, time.astype(jnp.float32), labels, train=train, rngs=rngs,
                                cond=cond, drop=drop)

        def init(key):
            x = jnp.zeros((1, *image_shape), jnp.float32)
            labels, cond, drop = split(example_y())
            return module.init({"params": key}, x, jnp.zeros((1,), jnp.float32), labels, train=False,
                               cond=cond, drop=drop)
    else:
        channels = image_shape[-1]
        module = ScoreMLP(hidden=tuple(m.mlp_hidden), num_classes=num_classes, condition=condition,
                          out_dim=dim * out_channels // channels, embedding=embedding)

        def apply(variables, x, time, y, *, key=None):
            del key
            labels, cond, drop = split(y)
            out = module.apply(variables, x.reshape((x.shape[0], dim)), time.astype(jnp.float32), labels,
                               cond=cond, drop=drop)
            return out.reshape((*x.shape[:-1], x.shape[-1] * out_channels // channels))

        def init(key):
            labels, cond, drop = split(example_y())
            return module.init({"params": key}, jnp.zeros((1, dim), jnp.float32), jnp.zeros((1,), jnp.float32),
                               labels, cond=cond, drop=drop)
    return init, apply


def _check_config(m: ConfigDict, config: ConfigDict) -> None:
    if m.formulation not in FORMULATIONS:
        raise ValueError(f"Unknown model.formulation={m.formulation!r}; use one of {FORMULATIONS}.")
    for key in ("preprocess", "eval_preprocess"):
        if config.data[key] != "symmetric":
            raise ValueError(f"The diffusion family models 8-bit pixels on [-1, 1]: set data.{key}='symmetric' "
                             f"(got {config.data[key]!r}).")
    names = _sampler_names(m)
    sampler = m.sampler or DEFAULT_SAMPLER[m.formulation]
    if sampler not in names:
        raise ValueError(f"model.sampler={sampler!r} is not available for formulation {m.formulation!r}; "
                         f"choose one of {names}.")


def _sampler_names(m: ConfigDict) -> tuple[str, ...]:
    if m.formulation == "ddpm":
        return DDPM_SAMPLERS
    if m.formulation == "edm":
        return SDE_SAMPLERS
    if m.sde == "ve":  # DDPM/DDIM need a variance-preserving coordinate with alpha -> 0
        return tuple(s for s in SDE_SAMPLERS if s not in ("ddim", "ddpm"))
    return SDE_SAMPLERS


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)
    _check_config(m, config)
    image_shape = tuple(info.image_shape)
    num_dims = math.prod(image_shape)
    cond = resolve(config, info)  # None: unconditional
    # Class labels keep the network's label-embedding path (null label = num_classes); the
    # other kinds go through the network's ConditionEncoder with y = (condition, drop).
    num_classes = cond.num_classes if cond is not None and cond.kind == "label" else 0
    encoded = cond if cond is not None and cond.kind != "label" else None
    null_label = num_classes  # the UNet/ScoreMLP's extra embedding row
    # model.conditional=True keeps its model.p_uncond; model.condition.kind uses its own.
    p_uncond = float(m.p_uncond) if bool(m.conditional) else (cond.p_uncond if cond is not None else 0.0)
    learned_variance = m.formulation == "ddpm" and bool(m.learned_variance)
    channels = image_shape[-1]
    init, apply = _network(m, image_shape, num_classes, channels * (2 if learned_variance else 1), encoded)

    def to_pixels(images):
        return jnp.asarray(images, jnp.float32) / 127.5 - 1.0  # data.preprocess="symmetric"

    def network_input(condition, num, who):
        """A raw condition for `num` examples -> the network's y (labels, or (condition, no drop))."""
        if cond is None:
            check_condition(None, condition, num, who=who)
            return None
        if condition is None:
            condition = default_condition(cond, num)  # labels cycle through the classes; others: an error
        condition = check_condition(cond, condition, num, who=who)
        return condition if num_classes else (condition, jnp.zeros((num,), bool))

    def null_of(y):  # the null condition of y = (condition, drop): every example dropped
        return y[0], jnp.ones_like(y[1])

    # -- the objective --------------------------------------------------------------------
    # objective(params, key, x0, y, dropout_key): the network sees y, closed over (the
    # losses' own `labels` argument stays None, so any y pytree passes through).
    if m.formulation == "ddpm":
        schedule = get_schedule(m.schedule, int(m.num_timesteps))

        def objective(params, key, x0, y, dropout_key):
            fn = lambda p, x, n, _: apply(p, x, n, y, key=dropout_key)
            return ddpm_loss(fn, params, key, x0, schedule=schedule, prediction=m.prediction,
                             loss_type=m.loss_type, learned_variance=learned_variance)
        sde = None
    elif m.formulation == "sde":
        kwargs = ({"sigma_min": float(m.sigma_min), "sigma_max": float(m.sigma_max)} if m.sde == "ve"
                  else {"beta_min": float(m.beta_min), "beta_max": float(m.beta_max)})
        sde = get_sde(m.sde, t_min=float(m.t_min), **kwargs)

        def objective(params, key, x0, y, dropout_key):
            fn = lambda p, x, t, _: apply(p, x, float(m.time_scale) * t, y, key=dropout_key)
            return sde_loss(fn, params, key, x0, sde=sde, prediction=m.prediction,
                            likelihood_weighting=bool(m.likelihood_weighting))
    else:
        sde = VESDE(sigma_min=float(m.edm_sigma_min), sigma_max=float(m.edm_sigma_max), t_min=1e-5)

        def objective(params, key, x0, y, dropout_key):
            denoiser = edm_precondition(lambda p, x, c, _: apply(p, x, c, y, key=dropout_key),
                                        sigma_data=float(m.sigma_data))
            return edm_loss(denoiser, params, key, x0, sigma_data=float(m.sigma_data), p_mean=float(m.p_mean),
                            p_std=float(m.p_std))

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The diffusion loss")
        key_loss, key_drop, key_labels = jax.random.split(key, 3)
        b = batch["image"].shape[0]
        if num_classes:
            y = check_condition(cond, condition_of(cond, batch), b, who="The diffusion loss")
            y = drop_labels(key_labels, y, p_uncond=p_uncond, null_label=null_label)
        elif encoded is not None:
            # Condition dropout (Ho & Salimans 2022, Algorithm 1) through the encoder's null condition.
            key_c, key_d = jax.random.split(key_labels)
            c = check_condition(cond, condition_of(cond, batch, key_c), b, who="The diffusion loss")
            y = (c, drop_mask(key_d, b, p_uncond))
        else:
            y = None
        values, aux = objective(params, key_loss, to_pixels(batch["image"]), y, key_drop)
        return masked_mean(values, batch.get("mask")), {"loss": values, **{k: v for k, v in aux.items()
                                                                          if jnp.ndim(v) == 1}}

    # -- the model as each sampler's function ---------------------------------------------
    def network_fn(params, y, scale):
        """out(x, time) of the network guided with weight `scale` (classifier-free guidance;
        a concrete 0 is the plain conditional network), time as the network sees it."""
        if y is None:
            return lambda x, time: apply(params, x, time, None)
        raw = lambda p, x, time, yy: apply(p, x, time, yy)
        if num_classes:
            fn = classifier_free_guidance(raw, scale=scale, null_label=null_label)
        else:
            fn = classifier_free_guidance(raw, scale=scale, null_fn=null_of)
        return lambda x, time: fn(params, x, time, y)

    def score_fn_of(params, y, scale=0.0):
        """score(x, t) on `sde` (sde and edm formulations)."""
        out = network_fn(params, y, scale)
        if m.formulation == "sde":
            def score_fn(x, t):
                alpha, sigma = sde.marginal(t)
                return to_score(out(x, float(m.time_scale) * t), x, alpha, sigma, m.prediction)
            return score_fn
        denoise = edm_denoiser_of(params, y, scale)

        def score_fn(x, t):
            sigma = sde.marginal(t)[1]
            return (denoise(x, sigma) - x) / _expand(sigma ** 2, x)
        return score_fn

    def edm_denoiser_of(params, y, scale):
        """EDM's preconditioned denoiser D(x, sigma) (edm formulation; the others reach
        EDM's samplers through the SNR adapter in `sample_with`)."""
        out = network_fn(params, y, scale)
        d = edm_precondition(lambda p, x, c, _: out(x, c), sigma_data=float(m.sigma_data))
        return lambda x, sigma: d(None, x, sigma)

    def scale_of(guidance_scale):
        return float(m.guidance_scale) if guidance_scale is None else guidance_scale

    def run(name, params, key, num, steps, condition=None, *, guidance_scale=None):
        """Runs sampler `name` for `steps` steps given the raw `condition` [num, ...] with
        guidance weight `guidance_scale` (None: model.guidance_scale); returns (x on [-1, 1], nfe)."""
        if name not in sampler_names:
            raise ValueError(f"Sampler {name!r} is not available for this model; choose one of {sampler_names}.")
        y = network_input(condition, num, f"diffusion sampler {name!r}")
        scale = scale_of(guidance_scale)
        shape = (num, *image_shape)
        steps = int(steps) or default_steps(name, int(m.num_timesteps))
        if m.formulation == "ddpm":
            out = network_fn(params, y, scale)
            eps_fn = lambda x, n: to_eps_ddpm(out(x, n), x, n)
            if name == "ddpm":
                x, info = ddpm_sample(key, eps_fn, shape, schedule=schedule, clip_x0=1.0,
                                      model_var_fn=var_fn(out) if learned_variance else None)
            else:
                x, info = ddim_sample(key, eps_fn, shape, schedule=schedule, num_steps=steps, eta=float(m.eta),
                                      clip_x0=1.0)
            return x, info.nfe
        score_fn = score_fn_of(params, y, scale)
        sigma_range = None if m.formulation == "sde" else (float(m.edm_sigma_min), float(m.edm_sigma_max))
        return sample_with(name, key, score_fn, sde, shape, steps,
                           denoiser_fn=edm_denoiser_of(params, y, scale) if m.formulation == "edm" else None,
                           sigma_range=sigma_range, eta=float(m.eta), rtol=float(m.ode_rtol),
                           atol=float(m.ode_atol), rho=float(m.rho), s_churn=float(m.s_churn))

    def to_eps_ddpm(out, x, n):
        alpha, sigma = schedule.marginal(n)
        mean_part = out[..., :channels] if learned_variance else out
        return to_eps(mean_part, x, alpha, sigma, m.prediction)

    def var_fn(out):
        # Improved DDPM: log var = v log beta + (1 - v) log beta_tilde (Nichol & Dhariwal Eq. 15).
        log_beta = jnp.log(schedule.betas)
        log_tilde = jnp.log(jnp.concatenate([schedule.posterior_variance()[1:2], schedule.posterior_variance()[1:]]))

        def fn(x, n):
            v = out(x, n)[..., channels:]
            return v * _expand(log_beta[n], x) + (1 - v) * _expand(log_tilde[n], x)
        return fn

    sampler_names = _sampler_names(m)
    default = m.sampler or DEFAULT_SAMPLER[m.formulation]

    def sample(params, key, num, condition=None, *, guidance_scale=None):
        x, _ = run(default, params, key, num, int(m.sample_steps), condition, guidance_scale=guidance_scale)
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

    def forward(params, x, condition=None, *, guidance_scale=None):
        b = x.shape[0]
        if num_classes and condition is None:
            condition = jnp.zeros((b,), jnp.int32)
        y = network_input(condition, b, "diffusion forward")
        if m.formulation == "ddpm":
            time = jnp.full((b,), int(m.num_timesteps) // 2, jnp.int32)
        elif m.formulation == "sde":
            time = jnp.full((b,), 0.5 * float(m.time_scale))
        else:
            time = jnp.zeros((b,))
        return network_fn(params, y, scale_of(guidance_scale))(x, time)

    # -- likelihood ---------------------------------------------------------------------
    ode_name, vlb_name = "ODE", f"VLB-{int(m.num_timesteps)}"

    def eval_fn(params, key, batch):
        """The NLL bound given each example's condition (no dropout, no guidance); image
        conditions with random holes (inpaint) draw them from a fixed key."""
        check_image_batch(batch, image_shape, who="The diffusion evaluator")
        b = batch["image"].shape[0]
        y = None
        if cond is not None:
            c = condition_of(cond, batch, jax.random.PRNGKey(0))
            y = network_input(c, b, "The diffusion evaluator")
        k_deq, k_est = jax.random.split(key)
        if m.formulation == "ddpm":
            terms = ddpm_vlb_terms(lambda p, x, n, _: apply(p, x, n, y), params, to_pixels(batch["image"]),
                                   schedule=schedule, key=k_est, prediction=m.prediction,
                                   learned_variance=learned_variance)
            return {vlb_name: terms["total"]}
        # The ODE likelihood of uniformly dequantized pixels y = 2 (k + u) / 256 - 1, a bound on the
        # discrete NLL (Theis et al. 2016): -log P(k) <= -log p(y) - D log(2 / 256).
        u = jax.random.uniform(k_deq, batch["image"].shape)
        pixels = 2.0 * (jnp.asarray(batch["image"], jnp.float32) + u) / 256.0 - 1.0
        log_p, _ = ode_log_prob(score_fn_of(params, y), pixels, sde=sde, key=k_est,
                                trace="hutchinson", rtol=float(m.ode_rtol), atol=float(m.ode_atol),
                                t_start=sde.t_min)
        return {ode_name: -dequantized_log_prob_bound(log_p, num_dims, scale=2.0)}

    spec = ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=num_dims,
                     stochastic=(vlb_name,) if m.formulation == "ddpm" else (ode_name,),
                     num_classes=num_classes, condition=cond)
    return spec._replace(sampler_fns=SamplerFns(sampler_names, run, forward, image_shape, cond))


# -- config helpers (used by experiments/diffusion/configs) ---------------------------------


def training_defaults(config: ConfigDict) -> ConfigDict:
    """What every diffusion config shares: [-1, 1] pixels, Adam 2e-4 with warm-up and
    gradient clipping (Ho et al. 2020), an EMA of the weights for sampling/evaluation."""
    config.data.preprocess = "symmetric"
    config.data.eval_preprocess = "symmetric"
    config.optim.learning_rate = 2e-4
    config.optim.warmup_steps = 1000
    config.optim.grad_clip_norm = 1.0
    config.train.ema_decay = 0.999
    config.eval.iwae_k = ()
    config.eval.batch_size = 50
    config.sample.num = 64
    return config


def tiny_variant(config: ConfigDict) -> ConfigDict:
    """The smoke-test variant: 8x8 digits, a small MLP score network, a few steps."""
    tiny_training(config, num_steps=20, save_every=10)
    config.data.name = "digits"
    config.optim.warmup_steps = 0
    config.optim.learning_rate = 2e-3
    config.train.ema_decay = 0.0
    config.eval.iwae_k = ()
    config.eval.batch_size = 16
    config.sample.num = 4
    m = config.model
    # The MLP network keeps the smoke test cheap (the U-Net has its own tests); the U-Net
    # sizes below apply with --config.model.network=unet.
    m.network, m.mlp_hidden = "mlp", (32, 32)
    m.ch, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.num_groups, m.dropout = 16, (1, 2), 1, (), 4, 0.0
    m.sample_steps = 4
    m.ode_rtol = m.ode_atol = 1e-2
    return config


def sampler_table(config: ConfigDict, info) -> SamplerFns:
    """The `SamplerFns` of a configured diffusion model (for `jgen bench samplers`)."""
    return build(config, info).sampler_fns


__all__ = ["DDPM_SAMPLERS", "DEFAULT_SAMPLER", "FORMULATIONS", "SDE_SAMPLERS", "SamplerFns", "build",
           "default_steps", "model_config", "sample_with", "sampler_table", "tiny_variant", "training_defaults"]
