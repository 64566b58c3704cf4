r"""Probability-flow ODE sampling: a deterministic map from the prior to the data.

Every SDE :math:`dx = f(x, t)\,dt + g(t)\,dw` of `jgen.sde` has an ODE whose solution
has the same marginals :math:`p_t` (Song et al. 2021, Eq. 13),

.. math::
    \frac{dx}{dt} = f(x, t) - \tfrac12 g(t)^2 \nabla_x \log p_t(x),

so integrating it backwards from :math:`x_T \sim p_T` (approximated by the SDE's
prior) to a small :math:`t_{end}` draws from :math:`p_{t_{end}} \approx p_0`, with the
learned (or exact) score in place of :math:`\nabla\log p_t`. The map
:math:`x_T \mapsto x_{t_{end}}` is deterministic: the only randomness is the prior
draw, so the same `x_T` gives the same sample (latent interpolation, likelihoods via
`jgen.metrics.ode_likelihood`).

`probability_flow_sample` integrates it with

- `"euler"`: ``num_steps`` explicit Euler steps, 1 score evaluation (NFE) per step;
- `"heun"`: ``num_steps`` steps of Heun's second-order method (explicit trapezoid),
  2 NFE per step (every step ends at :math:`t > 0`, so none is skipped; compare the
  EDM sampler, whose last step to :math:`\sigma = 0` is an Euler step);
- `"tsit5"`, `"dopri5"`: adaptive 5(4) Runge-Kutta pairs from diffrax with a PID
  step-size controller on device; the NFE comes from diffrax's step statistics.

Fixed steps are uniform in :math:`t` between T and :math:`t_{end}` and run in one
`lax.fori_loop`, so compile time does not depend on ``num_steps``.

References:
  Song, Y., Sohl-Dickstein, J., Kingma, D. P., Kumar, A., Ermon, S. & Poole, B. (2021).
    Score-Based Generative Modeling through Stochastic Differential Equations. ICLR.
    https://arxiv.org/abs/2011.13456 (Eq. 13, Sec. 4.3, Appendix D.)
  Tsitouras, C. (2011). Runge-Kutta pairs of order 5(4) satisfying only the first
    column simplifying assumption. Computers & Mathematics with Applications 62(2).
  Dormand, J. R. & Prince, P. J. (1980). A family of embedded Runge-Kutta formulae.
    J. Comput. Appl. Math. 6(1).
  Kidger, P. (2021). On Neural Differential Equations (diffrax). https://arxiv.org/abs/2202.02435
"""

from collections.abc import Callable
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from jgen.sde.sde import LinearSDE, _expand
from jgen.typing import Array, PRNGKey

# score_fn(x [B, ...], t [B]) -> score [B, ...]
ScoreFn = Callable[[Array, Array], Array]

_FIXED = ("euler", "heun")
# Config-edge map from names to diffrax solvers (the only place strings are resolved).
_ADAPTIVE = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
METHODS = _FIXED + tuple(_ADAPTIVE)
_DEFAULT_INITIAL_STEPS = 100  # adaptive: first step (T - t_end) / 100 unless num_steps given


class ODESampleInfo(NamedTuple):
    """Statistics of one probability-flow solve (int32 scalars).

    Attributes:
      nfe: score evaluations: ``num_steps`` (Euler), ``2 * num_steps`` (Heun),
        ``1 + 6 * num_steps`` (Tsit5 and Dopri5: 7 stages, first-same-as-last, so one
        evaluation up front and 6 per attempted step), plus 1 with ``denoise=True``.
        Adaptive counts are exact except that diffrax recomputes the first stage when
        it retries a rejected *first* step (k more evaluations for k such rejections;
        a small initial step, the default, avoids them).
      num_steps: steps attempted (accepted + rejected).
      num_accepted_steps: steps accepted (all of them for fixed steps).
      num_rejected_steps: steps rejected by the step-size controller (0 for fixed).
    """

    nfe: Array
    num_steps: Array
    num_accepted_steps: Array
    num_rejected_steps: Array


def probability_flow_velocity(score_fn: ScoreFn, sde: LinearSDE, x: Array, t: Array) -> Array:
    r"""The probability-flow ODE's right-hand side :math:`f(x,t) - \frac12 g(t)^2 s(x,t)`.

    Args:
      score_fn: ``(x [B, ...], t [B]) -> score [B, ...]``.
      sde: the forward `LinearSDE`.
      x: state [B, ...].
      t: per-example times [B].

    Returns:
      dx/dt, shape of x.
    """
    return sde.reverse_drift(x, t, score_fn(x, t), probability_flow=True)


def _check_sde(sde, who):
    if not isinstance(sde, LinearSDE):
        raise TypeError(
            f"{who}: sde must be a jgen.sde LinearSDE (VESDE, VPSDE, SubVPSDE); received "
            f"{sde!r} of type {type(sde).__name__}."
        )


def _check_options(method, num_steps, rtol, atol, max_steps, t_end, sde, shape, x_T):
    if method not in METHODS:
        raise ValueError(
            f"probability_flow_sample: unknown method {method!r}; choose one of {METHODS} "
            "(fixed steps: 'euler', 'heun' with num_steps; adaptive: 'tsit5', 'dopri5')."
        )
    if method in _FIXED and num_steps is None:
        raise ValueError(
            f"probability_flow_sample: method={method!r} takes fixed steps and needs "
            "num_steps (a positive Python int); received num_steps=None. E.g. "
            f"probability_flow_sample(key, score_fn, shape, sde=sde, method={method!r}, "
            "num_steps=100), or use an adaptive method ('tsit5', 'dopri5')."
        )
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int)
                                  or num_steps < 1):
        raise ValueError(
            "probability_flow_sample: num_steps must be a positive Python int (static, so "
            f"each step count compiles once); received {num_steps!r}."
        )
    if method in _ADAPTIVE and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                or max_steps < 1):
        raise ValueError(
            f"probability_flow_sample: max_steps must be a positive Python int; received {max_steps!r}."
        )
    if method in _ADAPTIVE and not (rtol > 0 and atol > 0):
        raise ValueError(
            f"probability_flow_sample: rtol and atol must be positive; received rtol={rtol!r}, "
            f"atol={atol!r}."
        )
    if not 0.0 < float(t_end) < float(sde.T):
        raise ValueError(
            f"probability_flow_sample: t_end must lie in (0, T = {sde.T}); received {t_end!r}. "
            "The score is singular at t = 0; the default is sde.t_min."
        )
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(
            "probability_flow_sample: shape must be [B, ...] (a batch axis first); received "
            f"{shape}. For one D-dim sample use (1, D)."
        )
    if x_T is not None and tuple(x_T.shape) != shape:
        raise ValueError(
            f"probability_flow_sample: x_T has shape {tuple(x_T.shape)} but shape is {shape}; "
            "they must agree."
        )
    return shape


def probability_flow_sample(
    key: PRNGKey | None,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    *,
    sde: LinearSDE,
    method: str = "euler",
    num_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_end: float | None = None,
    x_T: Array | None = None,
    denoise: bool = False,
    max_steps: int = 4096,
) -> tuple[Array, ODESampleInfo]:
    r"""Draws samples by integrating the probability-flow ODE from T down to `t_end`.

    Fixed steps (``h = (t_{end} - T) / N < 0``, :math:`t_i = T + i h`,
    :math:`v(x, t) = f(x, t) - \frac12 g(t)^2 s(x, t)`):

    .. math::
        \text{Euler:}\quad x_{i+1} = x_i + h\,v(x_i, t_i);\qquad
        \text{Heun:}\quad \tilde x = x_i + h\,v(x_i, t_i),\ \
        x_{i+1} = x_i + \tfrac h2\big(v(x_i, t_i) + v(\tilde x, t_{i+1})\big).

    Adaptive methods solve the same ODE with diffrax (`Tsit5` or `Dopri5`, a
    `PIDController(rtol, atol)`; the error norm is over the whole batch, so the batch
    shares one step size) in a single on-device `lax.while_loop`.

    With ``denoise=True`` a last Tweedie step replaces :math:`x_{t_{end}}` by the
    posterior mean :math:`E[x_0 \mid x_{t_{end}}] = (x + \sigma^2 s(x, t_{end}))/\alpha`
    (Efron 2011; one more NFE), which removes the residual noise of scale
    :math:`\sigma(t_{end})`.

    Args:
      key: PRNG key for the prior draw :math:`x_T \sim` `sde.prior_sample`; unused
        (may be None) when `x_T` is given.
      score_fn: ``(x [B, ...], t [B]) -> score [B, ...]``, an estimate of
        :math:`\nabla_x\log p_t(x)` (e.g. `jgen.sde.to_score` of a network output).
      shape: the sample shape [B, ...] (static).
      sde: the forward `LinearSDE` (VESDE, VPSDE, SubVPSDE) the score belongs to.
      method: "euler" (default), "heun", "tsit5" or "dopri5".
      num_steps: fixed methods: the number of steps (required, a Python int). Adaptive
        methods: optional, sets the first step to (T - t_end) / num_steps (default 100).
      rtol, atol: tolerances of the adaptive methods.
      t_end: the final time in (0, T), default `sde.t_min`.
      x_T: optional starting point [shape]; default a prior draw from `key`. Its dtype
        sets the computation's; otherwise JAX's default float (float64 under x64).
      denoise: apply the final Tweedie denoising step (see above).
      max_steps: adaptive methods: most steps before diffrax raises at runtime.

    Returns:
      ``(samples [shape], ODESampleInfo(nfe, num_steps, num_accepted_steps,
      num_rejected_steps))``.

    Raises:
      ValueError: an unknown `method`, `num_steps` missing or not a positive int for a
        fixed method, non-positive tolerances, `t_end` outside (0, T), a `shape`
        without a batch axis, or an `x_T` of another shape.
      TypeError: an `sde` that is not a `LinearSDE`.

    Example:
      >>> sde = VPSDE()
      >>> score_fn = lambda x, t: to_score(net.apply(params, x, t), x, *sde.marginal(t), "eps")
      >>> sample = jax.jit(functools.partial(probability_flow_sample, score_fn=score_fn,
      ...                  shape=(64, 2), sde=sde, method="heun", num_steps=50))
      >>> x, info = sample(key)  # info.nfe == 100

    References:
      Song et al. (2021), Eq. 13 and Appendix D.1. https://arxiv.org/abs/2011.13456
      Efron, B. (2011). Tweedie's formula and selection bias. JASA 106(496).
    """
    _check_sde(sde, "probability_flow_sample")
    t_end = sde.t_min if t_end is None else t_end
    shape = _check_options(method, num_steps, rtol, atol, max_steps, t_end, sde, shape, x_T)
    if x_T is None:
        if key is None:
            raise ValueError(
                "probability_flow_sample: key is None and x_T is None; pass a PRNG key for the prior draw "
                "or the starting point x_T."
            )
        x = sde.prior_sample(key, shape, jnp.result_type(float))
    else:
        x = jnp.asarray(x_T)
    dtype, batch = x.dtype, shape[0]
    T, t_end = jnp.asarray(sde.T, dtype), jnp.asarray(t_end, dtype)
    velocity = lambda x, t: probability_flow_velocity(score_fn, sde, x, jnp.full((batch,), t, dtype))

    if method in _FIXED:
        h = (t_end - T) / num_steps  # negative: backwards in time

        def euler_step(i, x):
            return x + h * velocity(x, T + i * h)

        def heun_step(i, x):
            t, t_next = T + i * h, T + (i + 1) * h
            v = velocity(x, t)
            v_next = velocity(x + h * v, t_next)  # Euler predictor, then trapezoid
            return x + 0.5 * h * (v + v_next)

        step, per_step = (euler_step, 1) if method == "euler" else (heun_step, 2)
        x = jax.lax.fori_loop(0, num_steps, step, x)
        n = jnp.asarray(num_steps, jnp.int32)
        info = ODESampleInfo(nfe=jnp.asarray(per_step * num_steps, jnp.int32), num_steps=n,
                             num_accepted_steps=n, num_rejected_steps=jnp.zeros((), jnp.int32))
    else:
        solver = _ADAPTIVE[method]()
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: velocity(y, t)),
            solver,
            t0=T,
            t1=t_end,
            dt0=(t_end - T) / (num_steps or _DEFAULT_INITIAL_STEPS),
            y0=x,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
        )
        x = sol.ys[0]
        attempted = jnp.asarray(sol.stats["num_steps"], jnp.int32)
        # Both solvers have 7 stages and are first-same-as-last (the last stage of a step,
        # accepted or not, is the first of the next): 1 evaluation up front, 6 per step.
        stages = len(solver.tableau.c) + 1
        info = ODESampleInfo(
            nfe=1 + (stages - 1) * attempted,
            num_steps=attempted,
            num_accepted_steps=jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32),
            num_rejected_steps=jnp.asarray(sol.stats["num_rejected_steps"], jnp.int32),
        )

    if denoise:
        # Tweedie: E[x_0 | x_t] = (x_t + sigma^2 score) / alpha.
        t = jnp.full((batch,), t_end, dtype)
        alpha, sigma = sde.marginal(t)
        x = (x + _expand(sigma ** 2, x) * score_fn(x, t)) / _expand(alpha, x)
        info = info._replace(nfe=info.nfe + 1)
    return x, info
