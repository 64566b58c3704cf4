r"""DPM-Solver++(2M): a second-order multistep solver of the diffusion ODE in
log-SNR time with a data-prediction (x0) model (Lu et al. 2022, Algorithm 2).

For a Gaussian perturbation :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon` (any
`jgen.sde.LinearSDE`: VP and sub-VP, or VE with :math:`\alpha = 1`), write
:math:`\lambda_t = \log(\alpha_t/\sigma_t)` (half the log-SNR, decreasing in t). In
terms of the denoiser :math:`x_\theta(x, t) \approx E[x_0 \mid x_t = x]` the
probability-flow ODE has the exact solution (variation of constants; Lu et al.
2022b, Eq. 8)

.. math::
    x_t = \frac{\sigma_t}{\sigma_s} x_s
          + \sigma_t \int_{\lambda_s}^{\lambda_t} e^{\lambda}\,
            x_\theta(x_{t_\lambda}, t_\lambda)\,d\lambda,

whose linear part is integrated exactly; only :math:`x_\theta` is approximated.
Freezing it over a step gives the first-order update (DDIM), and a linear
extrapolation through the previous step's evaluation gives the second-order
multistep update, one evaluation per step:

.. math::
    h_i = \lambda_{t_i} - \lambda_{t_{i-1}},\quad r_i = h_{i-1}/h_i,\quad
    D_i = \big(1 + \tfrac{1}{2r_i}\big)\,x_\theta(\tilde x_{i-1}, t_{i-1})
          - \tfrac{1}{2r_i}\,x_\theta(\tilde x_{i-2}, t_{i-2}),\\
    \tilde x_i = \frac{\sigma_{t_i}}{\sigma_{t_{i-1}}}\tilde x_{i-1}
          - \alpha_{t_i}\big(e^{-h_i} - 1\big) D_i,

with :math:`D_1 = x_\theta(\tilde x_0, t_0)` for the first step (no history yet). It
is a second-order method in the step size :math:`h` (global error :math:`O(h^2)`).

References:
  Lu, C., Zhou, Y., Bao, F., Chen, J., Li, C. & Zhu, J. (2022). DPM-Solver++: Fast
    Solver for Guided Sampling of Diffusion Probabilistic Models.
    https://arxiv.org/abs/2211.01095 (Algorithm 2, Eqs. 8-9.)
  Lu, C., Zhou, Y., Bao, F., Chen, J., Li, C. & Zhu, J. (2022). DPM-Solver: A Fast ODE
    Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps. NeurIPS.
    https://arxiv.org/abs/2206.00927 (the log-SNR time steps, Sec. 3.3.)
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.sde.sde import LinearSDE, _expand
from jgen.typing import Array, PRNGKey

# x0_fn(x [B, ...], t [B]) -> x0_hat [B, ...]
X0Fn = Callable[[Array, Array], Array]

TIME_SCHEDULES = ("logsnr", "uniform")
_BISECTION_STEPS = 64  # halvings of [t_end, T]: below float64 resolution


class DPMSolverInfo(NamedTuple):
    """Statistics of one DPM-Solver++(2M) solve.

    Attributes:
      nfe: evaluations of `x0_fn`, exactly ``num_steps`` (int32 scalar).
      ts: the time steps :math:`T = t_0 > t_1 > \\dots > t_M = t_{end}`, [num_steps + 1].
    """

    nfe: Array
    ts: Array


def half_logsnr(sde: LinearSDE, t: Array) -> Array:
    r""":math:`\lambda_t = \log\alpha_t - \log\sigma_t` of the SDE's marginal, per time [B]."""
    alpha, sigma = sde.marginal(t)
    return jnp.log(alpha) - jnp.log(sigma)


def _times_of_logsnr(sde: LinearSDE, lam: Array, t_lo: Array, t_hi: Array) -> Array:
    """Inverts the decreasing lambda(t) on [t_lo, t_hi] by bisection, elementwise [M]."""

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        early = half_logsnr(sde, mid) > lam  # lambda(mid) too large: the root is later
        return jnp.where(early, mid, lo), jnp.where(early, hi, mid)

    lo, hi = jnp.full_like(lam, t_lo), jnp.full_like(lam, t_hi)
    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, halve, (lo, hi))
    return 0.5 * (lo + hi)


def dpm_solver_time_steps(sde: LinearSDE, num_steps: int, t_end, *, time_schedule: str = "logsnr",
                          dtype=None) -> Array:
    r"""The decreasing time steps :math:`t_0 = T > \dots > t_M = t_{end}`, [num_steps + 1].

    "logsnr" spaces :math:`\lambda_t` uniformly (Lu et al. 2022a, Sec. 3.3; recommended
    for few steps), inverting :math:`\lambda(t)` by bisection on device so any SDE
    with a monotone :math:`\alpha/\sigma` works; "uniform" spaces t uniformly.
    """
    if time_schedule not in TIME_SCHEDULES:
        raise ValueError(
            f"dpm_solver_time_steps: unknown time_schedule {time_schedule!r}; choose one of "
            f"{TIME_SCHEDULES}."
        )
    dtype = jnp.result_type(float) if dtype is None else dtype
    T, t_end = jnp.asarray(sde.T, dtype), jnp.asarray(t_end, dtype)
    frac = jnp.arange(num_steps + 1, dtype=dtype) / num_steps
    if time_schedule == "uniform":
        return T + frac * (t_end - T)
    lam_T, lam_end = (half_logsnr(sde, jnp.reshape(t, (1,)))[0] for t in (T, t_end))
    ts = _times_of_logsnr(sde, lam_T + frac * (lam_end - lam_T), t_end, T)
    return ts.at[0].set(T).at[-1].set(t_end)  # the end points exactly


def _check_sde(sde):
    if not isinstance(sde, LinearSDE):
        raise TypeError(
            "dpm_solver_pp_2m_sample: sde must be a jgen.sde LinearSDE (VESDE, VPSDE, "
            f"SubVPSDE); received {sde!r} of type {type(sde).__name__}."
        )


def _check(sde, num_steps, t_end, time_schedule, shape, x_T):
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(
            "dpm_solver_pp_2m_sample: num_steps must be a positive Python int (static, so "
            f"each step count compiles once); received {num_steps!r}."
        )
    if time_schedule not in TIME_SCHEDULES:
        raise ValueError(
            f"dpm_solver_pp_2m_sample: unknown time_schedule {time_schedule!r}; choose one "
            f"of {TIME_SCHEDULES}."
        )
    if not 0.0 < float(t_end) < float(sde.T):
        raise ValueError(
            f"dpm_solver_pp_2m_sample: t_end must lie in (0, T = {sde.T}); received "
            f"{t_end!r}. The default is sde.t_min."
        )
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(
            f"dpm_solver_pp_2m_sample: shape must be [B, ...] (a batch axis first); received "
            f"{shape}. For one D-dim sample use (1, D)."
        )
    if x_T is not None and tuple(x_T.shape) != shape:
        raise ValueError(
            f"dpm_solver_pp_2m_sample: x_T has shape {tuple(x_T.shape)} but shape is {shape}; "
            "they must agree."
        )
    return shape


def dpm_solver_pp_2m_sample(
    key: PRNGKey | None,
    x0_fn: X0Fn,
    shape: tuple[int, ...],
    *,
    sde: LinearSDE,
    num_steps: int,
    t_end: float | None = None,
    time_schedule: str = "logsnr",
    x_T: Array | None = None,
) -> tuple[Array, DPMSolverInfo]:
    r"""DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2) from T to `t_end`.

    The first step is the first-order update (Algorithm 2, line 4); the other
    ``num_steps - 1`` are second-order multistep updates in one `lax.fori_loop`,
    each reusing the previous step's evaluation, so ``nfe == num_steps``. The
    returned sample is :math:`\tilde x_{t_M}` at :math:`t_M = t_{end}` (no final
    denoising step).

    Args:
      key: PRNG key for the prior draw `sde.prior_sample`; unused (may be None) when
        `x_T` is given.
      x0_fn: ``(x [B, ...], t [B]) -> x0_hat [B, ...]``, the data prediction; from a
        score network, ``to_x0(score_fn(x, t), x, *sde.marginal(t), "score")``.
      shape: the sample shape [B, ...] (static).
      sde: the `LinearSDE` whose marginal :math:`(\alpha_t, \sigma_t)` defines
        :math:`\lambda_t` (VP, sub-VP; VE with :math:`\alpha = 1`).
      num_steps: M >= 1 steps (static Python int).
      t_end: the final time in (0, T), default `sde.t_min`.
      time_schedule: "logsnr" (default; uniform in :math:`\lambda`) or "uniform" in t
        (see `dpm_solver_time_steps`).
      x_T: optional starting point [shape]; default a prior draw in JAX's default float.

    Returns:
      ``(samples [shape], DPMSolverInfo(nfe, ts))``.

    Raises:
      ValueError: `num_steps` not a positive int, an unknown `time_schedule`, `t_end`
        outside (0, T), a `shape` without a batch axis, or an `x_T` of another shape.
      TypeError: an `sde` that is not a `LinearSDE`.

    Example:
      >>> sde = VPSDE()
      >>> x0_fn = lambda x, t: to_x0(net.apply(params, x, t), x, *sde.marginal(t), "eps")
      >>> x, info = jax.jit(lambda k: dpm_solver_pp_2m_sample(
      ...     k, x0_fn, (16, 32, 32, 3), sde=sde, num_steps=20))(key)  # info.nfe == 20

    References:
      Lu et al. (2022b), Algorithm 2. https://arxiv.org/abs/2211.01095
    """
    _check_sde(sde)
    t_end = sde.t_min if t_end is None else t_end
    shape = _check(sde, num_steps, t_end, time_schedule, shape, x_T)
    if x_T is None:
        if key is None:
            raise ValueError(
                "dpm_solver_pp_2m_sample: key is None and x_T is None; pass a PRNG key for the prior draw "
                "or the starting point x_T."
            )
        x = sde.prior_sample(key, shape, jnp.result_type(float))
    else:
        x = jnp.asarray(x_T)
    dtype, batch = x.dtype, shape[0]

    ts = dpm_solver_time_steps(sde, num_steps, t_end, time_schedule=time_schedule, dtype=dtype)
    alphas, sigmas = sde.marginal(ts)  # [M + 1] each
    lams = jnp.log(alphas) - jnp.log(sigmas)
    x0_at = lambda x, i: x0_fn(x, jnp.full((batch,), ts[i], dtype))

    def update(i, x, d):
        """Line 9: the exact linear part plus exp-weighted D, from t_i to t_{i+1}."""
        h = lams[i + 1] - lams[i]
        return (sigmas[i + 1] / sigmas[i]) * x - alphas[i + 1] * jnp.expm1(-h) * d

    # Lines 3-4: the first step is first order (DPM-Solver++(1), i.e. DDIM).
    d0 = x0_at(x, 0)
    x = update(0, x, d0)

    def multistep(i, carry):
        """Lines 7-10: a second-order step from t_i to t_{i+1}, one new evaluation."""
        x, d_prev = carry
        d = x0_at(x, i)
        r = (lams[i] - lams[i - 1]) / (lams[i + 1] - lams[i])
        d_lin = (1.0 + 0.5 / r) * d - (0.5 / r) * d_prev
        return update(i, x, d_lin), d

    x, _ = jax.lax.fori_loop(1, num_steps, multistep, (x, d0))
    return x, DPMSolverInfo(nfe=jnp.asarray(num_steps, jnp.int32), ts=ts)


def x0_from_score(score_fn: Callable[[Array, Array], Array], sde: LinearSDE) -> X0Fn:
    r"""Tweedie's data prediction :math:`x_\theta = (x + \sigma_t^2 s(x, t))/\alpha_t` from a
    score ``score_fn(x, t [B])`` of the SDE's marginal :math:`p_t`."""

    def x0_fn(x, t):
        alpha, sigma = sde.marginal(t)
        return (x + _expand(sigma ** 2, x) * score_fn(x, t)) / _expand(alpha, x)

    return x0_fn
