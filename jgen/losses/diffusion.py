r"""Training objectives of diffusion models: DDPM's simple / variational / hybrid losses and
its full variational bound, the continuous-time score-SDE loss, EDM's preconditioned
denoising loss, and classifier-free guidance.

All objectives are pure functions over a raw network
``model_fn(params, x_t [B, ...], time [B], labels [B, ...] | None) -> out`` and return
``(per-example loss [B], aux)``, aux a dict of named per-example terms (STYLE practice 4);
reduce them in one place (e.g. `jgen.losses.elbo.masked_mean`). The parametrisation of the
output (:math:`\varepsilon`, :math:`x_0`, v or the score) is converted through
`jgen.sde.parametrization`, and the forward processes come from `jgen.sde`.

What the network receives as its time input (nothing is rescaled anywhere in this module;
a network that wants another scale, e.g. :math:`999\,t` for a sinusoidal embedding tuned to
DDPM step indices, rescales inside its own ``model_fn``):

- DDPM (`ddpm_loss`, `ddpm_vlb_terms`): the 0-based step index :math:`n \in \{0..N-1\}` as
  int32 [B]; index n is the paper's step :math:`t = n + 1`, with
  :math:`x_n = \sqrt{\bar\alpha_n}x_0 + \sqrt{1-\bar\alpha_n}\varepsilon` (`DiscreteSchedule.marginal`).
- score SDE (`sde_loss`): the continuous time :math:`t \in [t_\epsilon, T]`, float [B].
- EDM (`edm_precondition`): :math:`c_{noise} = \tfrac14\log\sigma`, float [B].

References:
  Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models. NeurIPS.
    https://arxiv.org/abs/2006.11239 (Eqs. 5, 7, 12, 14; discretized decoder Sec. 3.3.)
  Nichol, A. & Dhariwal, P. (2021). Improved Denoising Diffusion Probabilistic Models. ICML.
    https://arxiv.org/abs/2102.09672 (learned variance Eq. 15, hybrid loss Eq. 16.)
  Song, Y., Sohl-Dickstein, J., Kingma, D. P., Kumar, A., Ermon, S. & Poole, B. (2021).
    Score-Based Generative Modeling through Stochastic Differential Equations. ICLR.
    https://arxiv.org/abs/2011.13456 (Eq. 7; code `losses.py::get_sde_loss_fn`.)
  Song, Y., Durkan, C., Murray, I. & Ermon, S. (2021). Maximum Likelihood Training of
    Score-Based Diffusion Models. NeurIPS. https://arxiv.org/abs/2101.09258 (likelihood
    weighting :math:`\lambda(t) = g(t)^2`, Theorem 1.)
  Karras, T., Aittala, M., Aila, T. & Laine, S. (2022). Elucidating the Design Space of
    Diffusion-Based Generative Models. NeurIPS. https://arxiv.org/abs/2206.00364 (Table 1,
    Eq. 8; code `training/networks.py::EDMPrecond`, `training/loss.py::EDMLoss`.)
  Ho, J. & Salimans, T. (2022). Classifier-Free Diffusion Guidance.
    https://arxiv.org/abs/2207.12598 (Algorithms 1-2, Eq. 6.)
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jgen.sde.parametrization import PREDICTIONS, target, to_score, to_x0
from jgen.sde.schedules import DiscreteSchedule
from jgen.sde.sde import LinearSDE, _expand
from jgen.typing import Array, Params, PRNGKey

# model_fn(params, x_t [B, ...], time [B], labels [B, ...] or None) -> out [B, ...]
ModelFn = Callable[[Params, Array, Array, Array | None], Array]
# denoiser(params, x [B, ...], sigma [B], labels) -> D(x) [B, ...], the x0 estimate
DenoiserFn = Callable[..., Array]

DDPM_PREDICTIONS = ("eps", "x0", "v")
LOSS_TYPES = ("simple", "vlb", "hybrid")
FIXED_VARIANCES = ("large", "small")
DECODERS = ("discretized", "gaussian")
HYBRID_WEIGHT = 1e-3  # Nichol & Dhariwal's lambda in L_hybrid = L_simple + lambda L_vlb


# -- shared checks and small pieces -------------------------------------------------------

def _choice(value, choices, name: str, who: str) -> None:
    if value not in choices:
        raise ValueError(f"{who}: unknown {name} {value!r}; choose one of {choices}.")


def _check_x0(x0, who: str) -> Array:
    x0 = jnp.asarray(x0)
    if x0.ndim < 2 or not jnp.issubdtype(x0.dtype, jnp.floating):
        raise ValueError(f"{who}: x0 must be a floating batch [B, ...] with at least one event axis; got shape "
                         f"{list(x0.shape)}, dtype {x0.dtype}. Use x[:, None] for scalar data and "
                         "x.astype(jnp.float32) for integer images (scaled to [-1, 1]).")
    return x0


def _check_labels(labels, batch: int, who: str):
    if labels is None:
        return None
    labels = jnp.asarray(labels)
    if labels.ndim == 0 or labels.shape[0] != batch:
        raise ValueError(f"{who}: labels must have one entry per example, shape [B, ...] with B = {batch}; got "
                         f"shape {list(labels.shape)}. Pass labels=None for an unconditional model.")
    return labels


def _check_schedule(schedule, who: str) -> DiscreteSchedule:
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"{who}: schedule must be a jgen.sde.schedules.DiscreteSchedule (e.g. "
                        f"get_schedule('linear', 1000)); got {type(schedule).__name__}.")
    return schedule


def _check_out(out: Array, x: Array, learned_variance: bool, who: str) -> tuple[Array, Array | None]:
    """Splits a network output into (mean part, variance interpolation v or None)."""
    if not learned_variance:
        if out.shape != x.shape:
            raise ValueError(f"{who}: model_fn must return an output shaped like x {list(x.shape)}; got "
                             f"{list(out.shape)}.")
        return out, None
    want = x.shape[:-1] + (2 * x.shape[-1],)
    if out.shape != want:
        raise ValueError(f"{who}: with learned_variance=True the network outputs twice the channels on the last "
                         f"axis (mean part, then v): expected {list(want)}, got {list(out.shape)}.")
    c = x.shape[-1]
    return out[..., :c], out[..., c:]


def _sum_event(v: Array) -> Array:
    return jnp.sum(jnp.reshape(v, (v.shape[0], -1)), axis=1)


def _mean_event(v: Array) -> Array:
    return jnp.mean(jnp.reshape(v, (v.shape[0], -1)), axis=1)


def _event_size(x: Array) -> int:
    return math.prod(x.shape[1:])


def gaussian_kl(mean1: Array, log_var1: Array, mean2: Array, log_var2: Array) -> Array:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal N(m_1, e^{l_1}) \,\|\, \mathcal N(m_2, e^{l_2}))`
    = :math:`\tfrac12(e^{d} - 1 - d + (m_1 - m_2)^2 e^{-l_2})` with :math:`d = l_1 - l_2`, in nats
    (written with expm1 so that nearly equal variances, as in DDPM's late steps, keep precision)."""
    d = log_var1 - log_var2
    return 0.5 * (jnp.expm1(d) - d + (mean1 - mean2) ** 2 * jnp.exp(-log_var2))


def _log_diff_ndtr(lo: Array, hi: Array) -> Array:
    """log(Phi(hi) - Phi(lo)) for lo < hi, computed on the side of the axis away from the tail."""
    flip = (lo + hi) > 0  # both in the upper tail: use Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
    a, b = jnp.where(flip, -hi, lo), jnp.where(flip, -lo, hi)
    log_b = jax.scipy.special.log_ndtr(b)
    log_a = jax.scipy.special.log_ndtr(a)
    return log_b + jnp.log(-jnp.expm1(jnp.minimum(log_a - log_b, 0.0)))


def discretized_gaussian_log_prob(x: Array, mean: Array, log_scale: Array, *, num_bins: int = 256) -> Array:
    r"""Elementwise log-probability of Ho et al.'s (2020, Sec. 3.3) discretized Gaussian decoder.

    Data on :math:`\{-1, -1 + \Delta, \dots, 1\}` with :math:`\Delta = 2/(K - 1)` (K = `num_bins`,
    256 for 8-bit images) gets the Gaussian mass of its bin
    :math:`[x - \Delta/2, x + \Delta/2]`, with the outermost edges moved to :math:`\mp\infty`
    so the K masses sum to one:

    .. math:: p(x) = \Phi\Big(\tfrac{x^+ - \mu}{s}\Big) - \Phi\Big(\tfrac{x^- - \mu}{s}\Big).

    Args:
      x: data on the grid in [-1, 1], any shape.
      mean, log_scale: the Gaussian's mean and log standard deviation, broadcasting with x.
      num_bins: K.

    Returns:
      log p(x) elementwise, in nats (sum over the event for a per-example value).
    """
    half = 1.0 / (num_bins - 1)
    inv = jnp.exp(-log_scale)
    lo = jnp.where(x < -1.0 + half, -jnp.inf, (x - half - mean) * inv)
    hi = jnp.where(x > 1.0 - half, jnp.inf, (x + half - mean) * inv)
    return _log_diff_ndtr(lo, hi)


def _gaussian_log_prob(x: Array, mean: Array, log_var: Array) -> Array:
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * jnp.exp(-log_var))


# -- DDPM ---------------------------------------------------------------------------------

def _ddpm_tables(schedule: DiscreteSchedule) -> dict[str, Array]:
    r"""Per-step constants [N] of the posterior q(x_{n-1} | x_n, x_0) and the reverse variances.

    The posterior variance :math:`\tilde\beta` is 0 at the first step; as in Ho et al.'s code its log
    is "clipped" there to :math:`\log\tilde\beta_2`. The "large" variance is :math:`\beta_n` at every
    step, the decoder's included (Ho et al.'s code uses :math:`\tilde\beta_2` for the decoder in both
    modes, which helps 8-bit likelihoods slightly but keeps the continuous-data bound from
    tightening as N grows)."""
    b, a, ab, ab_prev = schedule.betas, schedule.alphas, schedule.alphas_cumprod, schedule.alphas_cumprod_prev
    post = schedule.posterior_variance()
    first = post[1:2] if schedule.num_steps > 1 else b[:1]
    return {
        "coef_x0": b * jnp.sqrt(ab_prev) / (1.0 - ab),  # Ho et al. Eq. 7
        "coef_xt": (1.0 - ab_prev) * jnp.sqrt(a) / (1.0 - ab),
        "log_small": jnp.log(jnp.concatenate([first, post[1:]])),  # log beta_tilde (clipped)
        "log_large": jnp.log(b),  # log beta
    }


def _prior_kl(schedule: DiscreteSchedule, x0: Array) -> Array:
    """L_T = KL(q(x_N | x_0) || N(0, I)) per example [B]."""
    ab = schedule.alphas_cumprod[-1]
    mean = jnp.sqrt(ab) * x0
    log_var = jnp.broadcast_to(jnp.log1p(-ab), x0.shape)
    return _sum_event(gaussian_kl(mean, log_var, jnp.zeros_like(x0), jnp.zeros_like(x0)))


def _vlb_term(tables, schedule, x0, x_n, n, mean_out, v, *, prediction, fixed_variance, decoder) -> Array:
    r"""The bound's term at 0-based step n, per example [B] (nats): the decoder NLL
    :math:`-\log p(x_0 \mid x_1)` where n = 0, else :math:`\mathrm{KL}(q(x_{n-1}|x_n, x_0)\,\|\,p(x_{n-1}|x_n))`."""
    alpha, sigma = schedule.marginal(n)
    x0_hat = to_x0(mean_out, x_n, alpha, sigma, prediction)
    c0, ct = _expand(tables["coef_x0"][n], x0), _expand(tables["coef_xt"][n], x0)
    log_small = _expand(tables["log_small"][n], x0)
    if v is not None:  # Improved DDPM Eq. 15: log Sigma = v log beta + (1 - v) log beta_tilde
        log_var = v * _expand(tables["log_large"][n], x0) + (1.0 - v) * log_small
    else:
        log_var = jnp.broadcast_to(_expand(tables[f"log_{fixed_variance}"][n], x0), x0.shape)
    model_mean = c0 * x0_hat + ct * x_n
    true_mean = c0 * x0 + ct * x_n
    kl = _sum_event(gaussian_kl(true_mean, jnp.broadcast_to(log_small, x0.shape), model_mean, log_var))
    if decoder == "discretized":
        log_p = discretized_gaussian_log_prob(x0, model_mean, 0.5 * log_var)
    else:
        log_p = _gaussian_log_prob(x0, model_mean, log_var)
    return jnp.where(n == 0, -_sum_event(log_p), kl)


def _ddpm_checks(who, x0, schedule, prediction, learned_variance, fixed_variance, decoder, labels):
    x0 = _check_x0(x0, who)
    _check_schedule(schedule, who)
    _choice(prediction, DDPM_PREDICTIONS, "prediction", who)
    _choice(fixed_variance, FIXED_VARIANCES, "fixed_variance", who)
    _choice(decoder, DECODERS, "decoder", who)
    if not isinstance(learned_variance, bool):
        raise TypeError(f"{who}: learned_variance must be True or False; got {learned_variance!r}.")
    return x0, _check_labels(labels, x0.shape[0], who)


def ddpm_loss(
    model_fn: ModelFn,
    params: Params,
    key: PRNGKey,
    x0: Array,
    *,
    schedule: DiscreteSchedule,
    prediction: str = "eps",
    loss_type: str = "simple",
    learned_variance: bool = False,
    labels: Array | None = None,
    fixed_variance: str = "large",
    decoder: str = "discretized",
    hybrid_weight: float = HYBRID_WEIGHT,
) -> tuple[Array, dict[str, Array]]:
    r"""DDPM training loss at one uniformly drawn step per example (Ho et al. 2020; Nichol & Dhariwal 2021).

    For each example, :math:`n \sim \mathcal U\{0..N-1\}` (the paper's :math:`t = n + 1`),
    :math:`\varepsilon \sim \mathcal N(0, I)`,
    :math:`x_n = \sqrt{\bar\alpha_n}x_0 + \sqrt{1-\bar\alpha_n}\,\varepsilon`, and the network is
    called as ``model_fn(params, x_n, n, labels)`` with n int32 [B] (the step index itself, not
    rescaled). The losses, per example:

    - ``"simple"``: :math:`L_{simple} = \mathrm{mean}_{dims}\|y - \hat y\|^2` with y the target of
      `prediction` (:math:`\varepsilon` is Ho et al.'s Eq. 14; "x0" and "v" regress
      :math:`x_0` and :math:`v = \sqrt{\bar\alpha}\varepsilon - \sqrt{1-\bar\alpha}x_0`).
    - ``"vlb"``: the bound in bits/dim, estimated without bias from the drawn step:
      :math:`(N\,L_n + L_T) / (D\log 2)`, with :math:`L_n` the KL (or, at n = 0, the decoder
      NLL) of `ddpm_vlb_terms`.
    - ``"hybrid"``: :math:`L_{simple} + \lambda\,(N L_n + L_T)/(D\log2)` with :math:`\lambda` =
      `hybrid_weight` = 0.001 and a stop-gradient on the mean in the VLB part, so the VLB
      trains only the variance (Improved DDPM Eq. 16 and Sec. 3.1; with :math:`\lambda` =
      0.001 this is the official code's ``RESCALED_MSE`` up to the parameter-free :math:`L_T`).

    With ``learned_variance`` the network outputs 2C channels on the last axis: the mean part,
    then v with :math:`\log\Sigma = v\log\beta_n + (1-v)\log\tilde\beta_n` (Improved DDPM Eq. 15,
    v unconstrained as in the paper; the official code maps a [-1, 1] output to (v + 1)/2).
    Otherwise the reverse variance is fixed: ``fixed_variance="large"`` (:math:`\beta_n`) or
    ``"small"`` (:math:`\tilde\beta_n`, which is 0 at the first step and replaced there by
    :math:`\tilde\beta_2`, as in Ho et al.'s code), Ho et al. Sec. 3.2.

    Args:
      model_fn: the raw network, ``model_fn(params, x_n, n, labels) -> out``.
      params: network parameters.
      key: PRNG key for the steps and the noise.
      x0: clean data [B, ...] (on [-1, 1] for the discretized decoder).
      schedule: the `DiscreteSchedule` (e.g. ``get_schedule("linear", 1000)``).
      prediction: "eps", "x0" or "v".
      loss_type: "simple", "vlb" or "hybrid".
      learned_variance: whether the network also outputs v (needs "vlb" or "hybrid").
      labels: conditioning labels [B, ...] passed through to the network, or None.
      fixed_variance: "large" or "small", the reverse variance when it is not learned.
      decoder: L_0's likelihood: "discretized" (8-bit data on [-1, 1], Ho et al.) or "gaussian"
        (a density, for continuous data).
      hybrid_weight: :math:`\lambda` of the hybrid loss.

    Returns:
      (loss [B], aux) with aux holding per-example terms [B]: ``mse`` (:math:`L_{simple}`),
      ``vlb_term`` (:math:`L_n`, nats), ``vlb`` (:math:`N L_n + L_T`, nats; unbiased for
      ``ddpm_vlb_terms(...)["total"]``) and ``vlb_bpd`` (the same in bits/dim).

    Example::

        schedule = get_schedule("linear", 1000)
        fn = lambda p, x, n, y: unet.apply(p, x, n, y, train=True, rngs={"dropout": kd})
        loss, aux = ddpm_loss(fn, params, key, x0, schedule=schedule)
        loss = loss.mean()
    """
    who = "ddpm_loss"
    x0, labels = _ddpm_checks(who, x0, schedule, prediction, learned_variance, fixed_variance, decoder, labels)
    _choice(loss_type, LOSS_TYPES, "loss_type", who)
    if learned_variance and loss_type == "simple":
        raise ValueError(f"{who}: learned_variance=True needs loss_type 'hybrid' or 'vlb' (L_simple gives the "
                         "variance output no gradient); got loss_type='simple'.")
    b, num_steps = x0.shape[0], schedule.num_steps
    key_n, key_eps = jax.random.split(key)
    n = jax.random.randint(key_n, (b,), 0, num_steps, dtype=jnp.int32)
    eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
    alpha, sigma = schedule.marginal(n)
    x_n = _expand(alpha, x0) * x0 + _expand(sigma, x0) * eps
    mean_out, v = _check_out(model_fn(params, x_n, n, labels), x0, learned_variance, who)

    mse = _mean_event((target(x0, eps, alpha, sigma, prediction) - mean_out) ** 2)
    # The VLB part: for the hybrid loss it trains only the variance (stop-gradient on the mean).
    vlb_mean_out = jax.lax.stop_gradient(mean_out) if loss_type == "hybrid" else mean_out
    term = _vlb_term(_ddpm_tables(schedule), schedule, x0, x_n, n, vlb_mean_out, v, prediction=prediction,
                     fixed_variance=fixed_variance, decoder=decoder)
    vlb = num_steps * term + _prior_kl(schedule, x0)
    vlb_bpd = vlb / (_event_size(x0) * math.log(2.0))
    loss = {"simple": lambda: mse, "vlb": lambda: vlb_bpd, "hybrid": lambda: mse + hybrid_weight * vlb_bpd}[loss_type]()
    return loss, {"mse": mse, "vlb_term": term, "vlb": vlb, "vlb_bpd": vlb_bpd}


def ddpm_vlb_terms(
    model_fn: ModelFn,
    params: Params,
    x0: Array,
    *,
    schedule: DiscreteSchedule,
    key: PRNGKey,
    prediction: str = "eps",
    learned_variance: bool = False,
    labels: Array | None = None,
    fixed_variance: str = "large",
    decoder: str = "discretized",
) -> dict[str, Array]:
    r"""The full DDPM variational bound on :math:`-\log p_\theta(x_0)`, per example (Ho et al. Eq. 5).

    .. math::
        L = \underbrace{\mathrm{KL}(q(x_N|x_0)\,\|\,\mathcal N(0, I))}_{L_T}
          + \sum_{t=2}^{N}\underbrace{\mathrm{KL}(q(x_{t-1}|x_t, x_0)\,\|\,p_\theta(x_{t-1}|x_t))}_{L_{t-1}}
          \underbrace{- \log p_\theta(x_0|x_1)}_{L_0},

    with every KL in closed form and each :math:`L_{t-1}` evaluated at one fresh
    :math:`x_t \sim q(x_t|x_0)` (an unbiased one-sample estimate, as in Ho et al.'s evaluation).
    All N network calls run in one `lax.scan`. :math:`L_0` is the discretized Gaussian decoder
    for 8-bit data on [-1, 1] (`discretized_gaussian_log_prob`), or with
    ``decoder="gaussian"`` a Gaussian density for continuous data (then L bounds a density,
    not a probability mass).

    Args:
      model_fn, params, schedule, prediction, learned_variance, labels, fixed_variance,
        decoder: as in `ddpm_loss` (the network is called with 0-based step indices n, int32 [B]).
      x0: data [B, ...].
      key: PRNG key for the N draws of :math:`x_t`.

    Returns:
      A dict of per-example nats [B]: ``prior`` (:math:`L_T`), ``diffusion``
      (:math:`\sum_{t\ge2} L_{t-1}`), ``decoder`` (:math:`L_0`), ``total`` (their sum) and
      ``bits_per_dim`` (total / (D log 2)); plus ``per_step`` [B, N], column n the term of
      0-based step n (column 0 is :math:`L_0`).
    """
    who = "ddpm_vlb_terms"
    x0, labels = _ddpm_checks(who, x0, schedule, prediction, learned_variance, fixed_variance, decoder, labels)
    b, num_steps = x0.shape[0], schedule.num_steps
    tables = _ddpm_tables(schedule)

    def step(carry, inputs):
        index, k = inputs
        n = jnp.full((b,), index, jnp.int32)
        alpha, sigma = schedule.marginal(n)
        x_n = _expand(alpha, x0) * x0 + _expand(sigma, x0) * jax.random.normal(k, x0.shape, x0.dtype)
        mean_out, v = _check_out(model_fn(params, x_n, n, labels), x0, learned_variance, who)
        return carry, _vlb_term(tables, schedule, x0, x_n, n, mean_out, v, prediction=prediction,
                                fixed_variance=fixed_variance, decoder=decoder)

    indices = jnp.arange(num_steps, dtype=jnp.int32)
    _, per_step = jax.lax.scan(step, None, (indices, jax.random.split(key, num_steps)))  # [N, B]
    prior = _prior_kl(schedule, x0)
    decoder_nll = per_step[0]
    diffusion = jnp.sum(per_step[1:], axis=0)
    total = prior + diffusion + decoder_nll
    return {"prior": prior, "diffusion": diffusion, "decoder": decoder_nll, "total": total,
            "bits_per_dim": total / (_event_size(x0) * math.log(2.0)), "per_step": per_step.T}


# -- continuous-time score SDE ------------------------------------------------------------

def sde_loss(
    model_fn: ModelFn,
    params: Params,
    key: PRNGKey,
    x0: Array,
    *,
    sde: LinearSDE,
    prediction: str = "eps",
    likelihood_weighting: bool = False,
    t_eps: float | None = None,
    labels: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    r"""Denoising score matching over the continuous time of a linear SDE (Song et al. 2021, Eq. 7).

    For :math:`t \sim \mathcal U(t_\epsilon, T)` and
    :math:`x_t = \alpha(t)x_0 + \sigma(t)\varepsilon`, with :math:`s_\theta` the score implied by
    the network output (`jgen.sde.parametrization.to_score`),

    .. math::
        \ell = \lambda(t)\,\big\|s_\theta(x_t, t) - \nabla\log p_{0t}(x_t|x_0)\big\|^2
             = \lambda(t)\,\big\|s_\theta(x_t, t) + \varepsilon/\sigma(t)\big\|^2,

    summed over dimensions (score_sde's ``get_sde_loss_fn`` with ``reduce_mean=False``, no
    factor 1/2). :math:`\lambda(t) = \sigma(t)^2` by default, making :math:`\ell =
    \|\sigma s_\theta + \varepsilon\|^2` (for an eps-predicting network, :math:`\|\hat\varepsilon -
    \varepsilon\|^2`); ``likelihood_weighting=True`` uses :math:`\lambda(t) = g(t)^2`, for which
    :math:`\tfrac12(T - t_\epsilon)\,\mathbb E[\ell]` plus prior and entropy terms bounds the
    negative log-likelihood (Song et al. 2021b, Theorem 1).

    The network is called as ``model_fn(params, x_t, t, labels)`` with the continuous time t,
    float [B], not rescaled.

    Args:
      model_fn: the raw network.
      params: network parameters.
      key: PRNG key for t and the noise.
      x0: clean data [B, ...].
      sde: a `jgen.sde.sde.LinearSDE` (VESDE, VPSDE, SubVPSDE).
      prediction: what the network outputs: "eps", "x0", "v" or "score".
      likelihood_weighting: :math:`\lambda = g^2` instead of :math:`\sigma^2`.
      t_eps: smallest time drawn; defaults to ``sde.t_min``.
      labels: conditioning labels [B, ...] or None.

    Returns:
      (loss [B], aux) with aux ``t`` (the drawn times [B]) and ``weight`` (:math:`\lambda(t)` [B]).
    """
    who = "sde_loss"
    x0 = _check_x0(x0, who)
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"{who}: sde must be a jgen.sde.sde.LinearSDE (VESDE, VPSDE, SubVPSDE); got "
                        f"{type(sde).__name__}.")
    _choice(prediction, PREDICTIONS, "prediction", who)
    labels = _check_labels(labels, x0.shape[0], who)
    t_eps = sde.t_min if t_eps is None else t_eps
    if not 0.0 <= float(t_eps) < sde.T:
        raise ValueError(f"{who}: t_eps must lie in [0, T) = [0, {sde.T}); got {t_eps!r}.")
    key_t, key_noise = jax.random.split(key)
    t = jax.random.uniform(key_t, (x0.shape[0],), x0.dtype, minval=t_eps, maxval=sde.T)
    x_t, eps = sde.perturb(key_noise, x0, t)
    alpha, sigma = sde.marginal(t)
    out = _check_out(model_fn(params, x_t, t, labels), x0, False, who)[0]
    score = to_score(out, x_t, alpha, sigma, prediction)
    if likelihood_weighting:
        weight = sde.diffusion(t) ** 2
        loss = weight * _sum_event((score + eps / _expand(sigma, x0)) ** 2)
    else:
        weight = sigma ** 2
        loss = _sum_event((_expand(sigma, x0) * score + eps) ** 2)
    return loss, {"t": t, "weight": weight}


# -- EDM ----------------------------------------------------------------------------------

def edm_scalings(sigma: Array, sigma_data: float = 0.5) -> tuple[Array, Array, Array, Array]:
    r"""EDM's preconditioning coefficients (Karras et al. 2022, Table 1), each shaped like sigma:

    :math:`c_{skip} = \sigma_d^2/(\sigma^2+\sigma_d^2)`,
    :math:`c_{out} = \sigma\sigma_d/\sqrt{\sigma^2+\sigma_d^2}`,
    :math:`c_{in} = 1/\sqrt{\sigma^2+\sigma_d^2}`, :math:`c_{noise} = \tfrac14\log\sigma`."""
    s2 = sigma ** 2 + sigma_data ** 2
    return sigma_data ** 2 / s2, sigma * sigma_data * jax.lax.rsqrt(s2), jax.lax.rsqrt(s2), 0.25 * jnp.log(sigma)


def edm_precondition(raw_fn: ModelFn, *, sigma_data: float = 0.5) -> DenoiserFn:
    r"""Wraps a raw network :math:`F_\theta` into EDM's denoiser (Karras et al. 2022, Eq. 7, Table 1):

    .. math:: D_\theta(x; \sigma) = c_{skip}(\sigma)\,x + c_{out}(\sigma)\,F_\theta\big(c_{in}(\sigma)\,x;\ c_{noise}(\sigma)\big),

    with the coefficients of `edm_scalings`, so the network's input and its effective training
    target have unit variance at every noise level.

    Args:
      raw_fn: ``raw_fn(params, c_in x, c_noise [B], labels) -> F`` (F shaped like x).
      sigma_data: the data standard deviation :math:`\sigma_d`.

    Returns:
      ``denoiser(params, x [B, ...], sigma [B], labels=None) -> D(x) [B, ...]``, an estimate of
      :math:`\mathbb E[x_0 \mid x_0 + \sigma\varepsilon = x]`. Samplers take
      ``lambda x, s: denoiser(params, x, s, labels)``.
    """
    if not sigma_data > 0:
        raise ValueError(f"edm_precondition: sigma_data must be > 0; got {sigma_data!r}.")

    def denoiser(params: Params, x: Array, sigma: Array, labels: Array | None = None) -> Array:
        who = "edm_precondition denoiser"
        sigma = jnp.asarray(sigma, x.dtype)
        if sigma.shape != x.shape[:1]:
            raise ValueError(f"{who}: sigma must be per-example, shape [B] = [{x.shape[0]}]; got shape "
                             f"{list(sigma.shape)}. Use jnp.full((B,), sigma) for one noise level.")
        labels = _check_labels(labels, x.shape[0], who)
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, sigma_data)
        f = _check_out(raw_fn(params, _expand(c_in, x) * x, c_noise, labels), x, False, who)[0]
        return _expand(c_skip, x) * x + _expand(c_out, x) * f

    return denoiser


def edm_loss(
    denoiser: DenoiserFn,
    params: Params,
    key: PRNGKey,
    x0: Array,
    *,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    labels: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    r"""EDM's denoising loss (Karras et al. 2022, Eq. 8 and Table 1), per example.

    .. math::
        \ln\sigma \sim \mathcal N(P_{mean}, P_{std}^2),\quad
        \ell = \lambda(\sigma)\,\|D_\theta(x_0 + \sigma\varepsilon; \sigma) - x_0\|^2,\quad
        \lambda(\sigma) = \frac{\sigma^2 + \sigma_d^2}{(\sigma\sigma_d)^2},

    summed over dimensions (NVlabs/edm ``EDMLoss`` returns it unreduced per element). With the
    preconditioned denoiser this is :math:`\|F_\theta - F_{target}\|^2`, a unit-weight loss on
    the raw network's output.

    Args:
      denoiser: ``denoiser(params, x, sigma [B], labels) -> D(x)``, e.g. from `edm_precondition`.
      params: network parameters.
      key: PRNG key for sigma and the noise.
      x0: clean data [B, ...].
      sigma_data, p_mean, p_std: :math:`\sigma_d`, :math:`P_{mean}`, :math:`P_{std}` (EDM's defaults).
      labels: conditioning labels [B, ...] or None.

    Returns:
      (loss [B], aux) with aux ``sigma`` (the drawn noise levels [B]) and ``weight``
      (:math:`\lambda(\sigma)` [B]).
    """
    who = "edm_loss"
    x0 = _check_x0(x0, who)
    labels = _check_labels(labels, x0.shape[0], who)
    if not (sigma_data > 0 and p_std > 0):
        raise ValueError(f"{who}: sigma_data and p_std must be > 0; got sigma_data={sigma_data!r}, p_std={p_std!r}.")
    key_sigma, key_noise = jax.random.split(key)
    sigma = jnp.exp(p_mean + p_std * jax.random.normal(key_sigma, (x0.shape[0],), x0.dtype))
    weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    noise = _expand(sigma, x0) * jax.random.normal(key_noise, x0.shape, x0.dtype)
    d = denoiser(params, x0 + noise, sigma, labels)
    return weight * _sum_event((d - x0) ** 2), {"sigma": sigma, "weight": weight}


# -- classifier-free guidance -------------------------------------------------------------

def drop_labels(key: PRNGKey, labels: Array, *, p_uncond: float, null_label) -> Array:
    r"""Replaces each example's label by `null_label` with probability `p_uncond` (Ho & Salimans
    2022, Algorithm 1), so one network learns the conditional and the unconditional model.

    Args:
      key: PRNG key for the drops.
      labels: labels [B, ...] (class indices [B], or one-hot / embeddings [B, ...]).
      p_uncond: drop probability in [0, 1] (0.1-0.2 in the paper).
      null_label: the "no label" value, a scalar or an array shaped like one example's label
        (e.g. K, the extra row of a K-class embedding table).

    Returns:
      Labels of the same shape and dtype, each example either kept or entirely null.
    """
    who = "drop_labels"
    if not isinstance(p_uncond, jax.core.Tracer) and not 0.0 <= float(p_uncond) <= 1.0:
        raise ValueError(f"{who}: p_uncond is a probability and must lie in [0, 1]; got {p_uncond!r}.")
    labels = jnp.asarray(labels)
    if labels.ndim == 0:
        raise ValueError(f"{who}: labels must be a batch [B, ...]; got a scalar. Use labels[None].")
    null = jnp.broadcast_to(jnp.asarray(null_label, labels.dtype), labels.shape)
    drop = jax.random.bernoulli(key, p_uncond, labels.shape[:1])
    return jnp.where(_expand(drop, labels), null, labels)


def guided(model_out_cond: Array, model_out_uncond: Array, scale) -> Array:
    r"""Classifier-free guidance combination (Ho & Salimans 2022, Eq. 6):

    .. math:: \tilde\varepsilon = (1 + w)\,\varepsilon(x, c) - w\,\varepsilon(x),

    with guidance weight w = `scale` (a scalar or per-example [B]): w = 0 is the conditional
    model, w > 0 strengthens the condition. (The other common convention,
    :math:`\varepsilon(x) + s(\varepsilon(x, c) - \varepsilon(x))`, is this with s = 1 + w.)
    The combination is affine, so it applies unchanged to eps, score, x0 or v outputs at a
    fixed :math:`x_t`.
    """
    scale = jnp.asarray(scale, model_out_cond.dtype)
    if scale.ndim == 1:
        scale = _expand(scale, model_out_cond)
    elif scale.ndim > 1:
        raise ValueError(f"guided: scale must be a scalar or per-example [B]; got shape {list(scale.shape)}.")
    return (1.0 + scale) * model_out_cond - scale * model_out_uncond


def _is_exact_zero(scale) -> bool:
    """Whether `scale` is a concrete scalar 0 (a Python / NumPy number or an untraced 0-d array)."""
    if isinstance(scale, (bool, jax.core.Tracer)):
        return False
    if isinstance(scale, (int, float, np.number)) or (hasattr(scale, "shape") and np.ndim(scale) == 0):
        return float(scale) == 0.0
    return False


def classifier_free_guidance(model_fn: ModelFn, *, scale, null_label=None, null_fn: Callable | None = None) -> ModelFn:
    r"""A guided model function for sampling (Ho & Salimans 2022, Algorithm 2).

    Returns ``guided_fn(params, x, t, labels)`` that evaluates ``model_fn`` on the labels and on
    the null condition in one batched call (2B examples) and combines them with `guided`:
    :math:`(1 + w)\,\text{out}(x, c) - w\,\text{out}(x, \varnothing)`, w = `scale`.

    A concrete scale of exactly 0 (a Python/NumPy number, or an untraced 0-d array) skips
    the null evaluation: ``guided_fn`` is then the conditional model itself, bit for bit,
    also inside a compiled sampler (where the graph :math:`(1 + 0)c - 0u` could be fused and
    rounded differently). A traced scale (e.g. ``jnp.float32(w)`` passed through `jit`, to
    sweep w without recompiling) always takes the 2B path.

    Args:
      model_fn: a conditional network trained with condition dropout (`drop_labels`, or
        `jgen.conditioning.drop_mask`).
      scale: the guidance weight w (0 = conditional sampling), a scalar or per-example [B].
      null_label: the label value used for the unconditional model (labels an array [B, ...]).
      null_fn: instead of `null_label`, ``null_fn(labels) -> null labels`` for conditions that
        are pytrees with a leading batch axis on every leaf, e.g. the ``(condition, drop)``
        pairs of `jgen.families.diffusion` whose null is ``(condition, all True)``.
    """
    if (null_label is None) == (null_fn is None):
        raise ValueError("classifier_free_guidance: give exactly one of null_label= (a label value) or null_fn= "
                         "(labels -> null labels).")
    exact_zero = _is_exact_zero(scale)

    def guided_fn(params: Params, x: Array, t: Array, labels) -> Array:
        who = "classifier_free_guidance"
        if labels is None:
            raise ValueError(f"{who}: the guided model needs labels [B, ...]; got None.")
        b = x.shape[0]
        if null_fn is None:
            labels = _check_labels(labels, b, who)
            null = jnp.broadcast_to(jnp.asarray(null_label, labels.dtype), labels.shape)
        else:
            for leaf in jax.tree_util.tree_leaves(labels):
                _check_labels(leaf, b, who)
            null = None if exact_zero else null_fn(labels)
        if exact_zero:
            return model_fn(params, x, t, labels)
        both = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([c, u]), labels, null)
        out = model_fn(params, jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
        return guided(out[:b], out[b:], scale)

    return guided_fn


__all__ = [
    "DDPM_PREDICTIONS", "DECODERS", "FIXED_VARIANCES", "HYBRID_WEIGHT", "LOSS_TYPES", "classifier_free_guidance",
    "ddpm_loss", "ddpm_vlb_terms", "discretized_gaussian_log_prob", "drop_labels", "edm_loss", "edm_precondition",
    "edm_scalings", "gaussian_kl", "guided", "sde_loss",
]
