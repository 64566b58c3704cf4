r"""Exact log-likelihoods of score-based models through the probability-flow ODE, and
the bits/dim of 8-bit images under uniform dequantisation.

The probability-flow ODE :math:`dx/dt = v(x, t) = f(x, t) - \frac12 g(t)^2
\nabla_x\log p_t(x)` (Song et al. 2021, Eq. 13) transports :math:`p_{t_0}` to
:math:`p_T`, so by the instantaneous change of variables (Chen et al. 2018;
Grathwohl et al. 2019)

.. math::
    \log p_{t_0}(x(t_0)) = \log p_T(x(T)) + \int_{t_0}^{T} \nabla\cdot v(x(t), t)\,dt,

solved forward from :math:`x(t_0) = x` jointly with the divergence integral, with the
SDE's prior in place of :math:`p_T` (Song et al. 2021, Appendix D.2). With a learned
score this is the likelihood of the model defined by the ODE; with the exact score of
:math:`p_t` it is exactly :math:`\log p_{t_0}(x)` up to the prior mismatch
:math:`\log p_T - \log \pi` (tiny for the standard SDEs) and the solver tolerance.

`ode_log_prob` runs the solve on device through `jgen.bijectors.cnf.ContinuousFlow`
(diffrax; an exact divergence from D Jacobian-vector products, or Hutchinson's
one-probe estimate). `dequantized_bits_per_dim` turns a continuous density on the
model's data scale into the bits/dim bound for integer pixels.

References:
  Song, Y., Sohl-Dickstein, J., Kingma, D. P., Kumar, A., Ermon, S. & Poole, B. (2021).
    Score-Based Generative Modeling through Stochastic Differential Equations. ICLR.
    https://arxiv.org/abs/2011.13456 (Eq. 13, Appendix D.2.)
  Chen, R. T. Q., Rubanova, Y., Bettencourt, J. & Duvenaud, D. (2018). Neural Ordinary
    Differential Equations. NeurIPS. https://arxiv.org/abs/1806.07366 (Theorem 1.)
  Grathwohl, W., Chen, R. T. Q., Bettencourt, J., Sutskever, I. & Duvenaud, D. (2019).
    FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models.
    ICLR. https://arxiv.org/abs/1810.01367 (Hutchinson's trace estimator.)
  Theis, L., van den Oord, A. & Bethge, M. (2016). A note on the evaluation of
    generative models. ICLR. https://arxiv.org/abs/1511.01844 (uniform dequantisation.)
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.bijectors.cnf import ContinuousFlow
from jgen.metrics.likelihood import bits_per_dim
from jgen.samplers.ode import probability_flow_velocity
from jgen.sde.sde import LinearSDE
from jgen.typing import Array, PRNGKey

# score_fn(x [B, ...], t [B]) -> score [B, ...]
ScoreFn = Callable[[Array, Array], Array]

METHODS = ("euler", "heun", "bosh3", "tsit5", "dopri5", "dopri8")
_FIXED = ("euler", "heun")
TRACES = ("hutchinson", "exact")
NOISES = ("rademacher", "gaussian")
_DEFAULT_INITIAL_STEPS = 100  # adaptive: first step (T - t_start) / 100 unless num_steps given


class ODELikelihoodInfo(NamedTuple):
    """Details of one likelihood solve.

    Attributes:
      nfe: evaluations of the augmented dynamics (each one score evaluation plus one
        vector-Jacobian product, Hutchinson, or D Jacobian-vector products, exact),
        from diffrax's step count; see `jgen.bijectors.cnf.CNFStats.nfe`.
      num_steps, num_accepted_steps, num_rejected_steps: the solver's step counts.
      prior_log_prob: :math:`\\log\\pi(x(T))`, [B].
      delta_log_prob: :math:`\\int_{t_0}^T \\nabla\\cdot v\\,dt`, [B] (so
        ``log_prob = prior_log_prob + delta_log_prob``).
      x_T: the ODE's end point :math:`x(T)` (the latent code), [B, ...].
    """

    nfe: Array
    num_steps: Array
    num_accepted_steps: Array
    num_rejected_steps: Array
    prior_log_prob: Array
    delta_log_prob: Array
    x_T: Array


def _check(x, sde, trace, hutchinson_noise, method, rtol, atol, t_start, num_steps, key):
    who = "ode_log_prob"
    for name, value, allowed in (("trace", trace, TRACES),
                                 ("hutchinson_noise", hutchinson_noise, NOISES),
                                 ("method", method, METHODS)):
        if value not in allowed:
            raise ValueError(f"{who}: unknown {name} {value!r}; choose one of {allowed}.")
    if method in _FIXED and num_steps is None:
        raise ValueError(
            f"{who}: method={method!r} takes fixed steps and needs num_steps (a positive "
            "Python int); received num_steps=None. Use an adaptive method such as "
            "'dopri5' for likelihoods accurate to a tolerance."
        )
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int)
                                  or num_steps < 1):
        raise ValueError(f"{who}: num_steps must be a positive Python int; received {num_steps!r}.")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"{who}: rtol and atol must be positive; received rtol={rtol!r}, atol={atol!r}.")
    if isinstance(t_start, jax.Array) or not 0.0 < float(t_start) < float(sde.T):
        raise ValueError(
            f"{who}: t_start must be a Python float in (0, T = {sde.T}); received {t_start!r}. "
            "The default is sde.t_min."
        )
    if trace == "hutchinson" and key is None:
        raise ValueError(
            f"{who}: trace='hutchinson' needs key, the PRNG key of the trace estimator's "
            "noise; received key=None. Pass a key (a fresh one per evaluation), or use "
            "trace='exact' (D Jacobian-vector products per evaluation, for small D)."
        )
    x = jnp.asarray(x)
    if x.ndim < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{who}: x must be a floating batch [B, ...]; received shape {x.shape} and dtype "
            f"{x.dtype}. For one example use x[None]; map integer pixels to the model's "
            "scale first (see dequantized_bits_per_dim)."
        )
    return x


def ode_log_prob(
    score_fn: ScoreFn,
    x: Array,
    *,
    sde: LinearSDE,
    key: PRNGKey | None = None,
    trace: str = "hutchinson",
    hutchinson_noise: str = "rademacher",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_start: float | None = None,
    num_steps: int | None = None,
    max_steps: int = 4096,
    prior_log_prob_fn: Callable[[Array], Array] | None = None,
) -> tuple[Array, ODELikelihoodInfo]:
    r"""Log-density :math:`\log p_{t_0}(x)` [B] of a score model via the probability-flow ODE.

    Solves, from :math:`t_0` = `t_start` up to T, the augmented ODE

    .. math::
        \frac{d}{dt}\begin{bmatrix} x \\ \ell \end{bmatrix} =
        \begin{bmatrix} v(x, t) \\ \nabla\cdot v(x, t) \end{bmatrix},\qquad
        v(x, t) = f(t)\,x - \tfrac12 g(t)^2 s(x, t),

    from :math:`(x, 0)`, and returns :math:`\log\pi(x(T)) + \ell(T)` with
    :math:`\pi` = `sde.prior_log_prob` (or `prior_log_prob_fn`). The divergence is
    exact (`trace="exact"`: D Jacobian-vector products per evaluation, for small D) or
    Hutchinson's :math:`\epsilon^\top (\partial v/\partial x)\,\epsilon` with one probe
    per example drawn from `key` and held over the solve (`trace="hutchinson"`, the
    default; unbiased up to the adaptive step control's dependence on the noisy
    :math:`\ell`, a bias of the order of the tolerances; average several keys).

    **The score must act per example**: row i of ``score_fn(x, t)`` may depend on
    ``x[i]`` only (no batch statistics), because per-example divergences are read off
    batched Jacobian products.

    Args:
      score_fn: ``(x [B, ...], t [B]) -> score [B, ...]``.
      x: data on the model's scale, floating [B, ...].
      sde: the `LinearSDE` the score belongs to.
      key: PRNG key of Hutchinson's probes (required for `trace="hutchinson"`).
      trace: "hutchinson" (default) or "exact".
      hutchinson_noise: "rademacher" (default, lower variance) or "gaussian".
      method: a diffrax solver: "dopri5" (default), "tsit5", "dopri8", "bosh3"
        (adaptive), or "euler", "heun" (fixed steps; need `num_steps`).
      rtol, atol: the adaptive solver's tolerances on :math:`(x, \ell)`, shared by the
        batch (one step size for all examples).
      t_start: the start time :math:`t_0 \in (0, T)`, a Python float (default
        `sde.t_min`); the result is the density of the marginal at :math:`t_0`.
      num_steps: fixed methods: the number of steps; adaptive: sets the first step to
        (T - t_start) / num_steps (default 100).
      max_steps: most adaptive steps before diffrax raises at runtime.
      prior_log_prob_fn: optional ``x_T [B, ...] -> [B]`` replacing
        `sde.prior_log_prob` (e.g. the exact marginal :math:`\log p_T` in tests).

    Returns:
      ``(log_prob [B], ODELikelihoodInfo)`` with log-densities in nats on the scale of
      `x`. For bits/dim of 8-bit images use `dequantized_bits_per_dim`.

    Raises:
      ValueError: an unknown `trace`, `hutchinson_noise` or `method`, a fixed method
        without `num_steps`, bad tolerances, `t_start` outside (0, T) or not a Python
        float, a Hutchinson trace without `key`, or `x` not a floating [B, ...] batch.
      TypeError: an `sde` that is not a `LinearSDE`.

    Example:
      >>> score_fn = lambda x, t: to_score(net.apply(params, x, t), x, *sde.marginal(t), "eps")
      >>> log_p, info = jax.jit(lambda k, x: ode_log_prob(score_fn, x, sde=sde, key=k))(key, x)

    References:
      Song et al. (2021), Appendix D.2. https://arxiv.org/abs/2011.13456
      Grathwohl et al. (2019). https://arxiv.org/abs/1810.01367
    """
    if not isinstance(sde, LinearSDE):
        raise TypeError(
            "ode_log_prob: sde must be a jgen.sde LinearSDE (VESDE, VPSDE, SubVPSDE); received "
            f"{sde!r} of type {type(sde).__name__}."
        )
    t_start = sde.t_min if t_start is None else t_start
    x = _check(x, sde, trace, hutchinson_noise, method, rtol, atol, t_start, num_steps, key)
    shape, batch, dtype = x.shape, x.shape[0], x.dtype

    def vector_field(t, z):
        """v(x, t) on the flattened state z [B, D] (t a scalar from diffrax)."""
        xs = jnp.reshape(z, shape)
        tb = jnp.full((batch,), t, dtype)
        v = probability_flow_velocity(score_fn, sde, xs, tb)
        return jnp.reshape(v, (batch, -1)).astype(dtype)

    flow = ContinuousFlow(
        vector_field,
        noise_key=key if trace == "hutchinson" else None,
        t0=float(t_start),
        t1=float(sde.T),
        solver=method,
        adaptive=method not in _FIXED,
        rtol=rtol,
        atol=atol,
        num_steps=num_steps or _DEFAULT_INITIAL_STEPS,
        max_steps=max_steps,
        trace=trace,
        hutchinson_noise=hutchinson_noise,
    )
    sol = flow.solve(jnp.reshape(x, (batch, -1)))
    x_T = jnp.reshape(sol.y, shape)
    prior = (sde.prior_log_prob if prior_log_prob_fn is None else prior_log_prob_fn)(x_T)
    info = ODELikelihoodInfo(
        nfe=sol.stats.nfe,
        num_steps=sol.stats.num_steps,
        num_accepted_steps=sol.stats.num_accepted_steps,
        num_rejected_steps=sol.stats.num_rejected_steps,
        prior_log_prob=prior,
        delta_log_prob=sol.log_det,
        x_T=x_T,
    )
    return prior + sol.log_det, info


def dequantized_log_prob_bound(log_prob_y: Array, num_dims: int, *, scale: float = 2.0,
                               num_levels: int = 256) -> Array:
    r"""The discrete log-likelihood bound :math:`\log p(y) + D\log(a/K)` for one draw.

    A density :math:`p` on :math:`y = a(k + u)/K + b` gives integer data :math:`k`
    the probability :math:`P(k) = \int_{[0,1)^D} p(y(u))\,(a/K)^D\,du`, and Jensen's
    inequality gives :math:`\log P(k) \ge E_u[\log p(y)] + D\log(a/K)`
    (Theis et al. 2016). This adds the log-volume term to a (Monte-Carlo) value of
    :math:`\log p(y)`.

    Args:
      log_prob_y: :math:`\log p(y)` in nats, any shape.
      num_dims: D, the number of dimensions of each example.
      scale: a, the width of the data range (2 for [-1, 1], 1 for [0, 1]).
      num_levels: K, the number of integer levels (256 for 8 bits).

    Returns:
      The bound, shape of `log_prob_y`.
    """
    return log_prob_y + num_dims * math.log(scale / num_levels)


def dequantized_bits_per_dim(
    key: PRNGKey,
    log_prob_fn: Callable[[PRNGKey, Array], Array],
    pixels: Array,
    *,
    scale: float = 2.0,
    shift: float = -1.0,
    num_levels: int = 256,
    num_samples: int = 1,
) -> Array:
    r"""Bits/dim of integer pixels under uniform dequantisation, per example [B].

    Maps integer pixels :math:`k \in \{0, \dots, K-1\}^D` to the model's data scale by
    :math:`y = a\,(k + u)/K + b`, :math:`u \sim U[0, 1)^D`, and returns

    .. math::
        \text{bits/dim} = -\frac{\hat E_u[\log p(y)] + D\log(a/K)}{D\ln 2}
        \ \ge\ -\frac{\log P(k)}{D \ln 2},

    an upper bound on the discrete model's bits/dim (`dequantized_log_prob_bound`),
    with :math:`\hat E_u` the mean over `num_samples` draws of u.

    **Scale convention.** jgen's images are in [0, 1] (`jgen.data.to_unit_interval`),
    but diffusion models usually work on [-1, 1]: the defaults ``scale=2, shift=-1``
    give :math:`y = 2(k+u)/256 - 1 \in [-1, 1)`, and the bound is
    :math:`-\log p(y)/(D\ln 2) + 7` (score_sde's "offset 7"); a model on [0, 1] takes
    ``scale=1, shift=0`` and the offset is 8. A density uniform on the data range
    scores exactly 8 bits/dim for either.

    Args:
      key: PRNG key; draw s uses `fold_in(key, s)`, split into the dequantisation
        noise's key and the key passed to `log_prob_fn`.
      log_prob_fn: ``(key, y [B, ...]) -> log p(y) [B]`` in nats, e.g.
        ``lambda k, y: ode_log_prob(score_fn, y, sde=sde, key=k)[0]``.
      pixels: integer pixels [B, ...] in 0..num_levels-1 (values are not checked
        under jit).
      scale, shift: a and b of the map to the model's scale.
      num_levels: K (256 for 8-bit data).
      num_samples: draws of u per example (static Python int >= 1), run one after
        another (`lax.map`).

    Returns:
      Bits/dim per example, [B].

    Raises:
      TypeError: non-integer `pixels` (map [0, 1] floats back with
        ``jnp.round(x * 255).astype(jnp.int32)``).
      ValueError: `pixels` without a batch axis, or bad `scale`/`num_levels`/`num_samples`.
    """
    pixels = jnp.asarray(pixels)
    if not jnp.issubdtype(pixels.dtype, jnp.integer):
        raise TypeError(
            "dequantized_bits_per_dim: pixels must be integers in 0..num_levels-1; received "
            f"dtype {pixels.dtype}. For images in [0, 1] pass "
            "jnp.round(x * 255).astype(jnp.int32)."
        )
    if pixels.ndim < 2:
        raise ValueError(
            f"dequantized_bits_per_dim: pixels must be a batch [B, ...]; received shape "
            f"{pixels.shape}. For one image use pixels[None]."
        )
    if not scale > 0 or isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(
            "dequantized_bits_per_dim: need scale > 0 and an int num_levels >= 2; received "
            f"scale={scale!r}, num_levels={num_levels!r}."
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(
            f"dequantized_bits_per_dim: num_samples must be a positive Python int; received {num_samples!r}."
        )
    num_dims = math.prod(pixels.shape[1:])
    dtype = jnp.result_type(float)
    k = pixels.astype(dtype)

    def one_draw(s):
        noise_key, model_key = jax.random.split(jax.random.fold_in(key, s))
        u = jax.random.uniform(noise_key, pixels.shape, dtype)
        y = scale * (k + u) / num_levels + shift
        return dequantized_log_prob_bound(log_prob_fn(model_key, y), num_dims, scale=scale,
                                          num_levels=num_levels)

    bound = jnp.mean(jax.lax.map(one_draw, jnp.arange(num_samples)), axis=0)  # [B]
    return bits_per_dim(-bound, num_dims)
