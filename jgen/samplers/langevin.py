r"""Langevin Monte Carlo over a batch of independent chains: ULA, MALA and an SGLD update.

The overdamped Langevin diffusion :math:`dX = \tfrac12\nabla\log\pi(X)\,dt + dW` has
:math:`\pi` as its stationary law. Its Euler-Maruyama discretisation with step
:math:`h` is the *unadjusted Langevin algorithm* (ULA),

.. math:: x' = x + \tfrac{h}{2}\nabla\log\pi(x) + \sqrt{h}\,z,\qquad z\sim\mathcal N(0, I),

which is biased: its stationary law is not :math:`\pi` but an :math:`O(h)`
perturbation of it. For :math:`\pi = \mathcal N(0, s^2)` ULA is the AR(1) process
:math:`x' = (1 - h/2s^2)x + \sqrt h z`, whose stationary variance is
:math:`s^2/(1 - h/4s^2)` (stable for :math:`h < 4s^2`). The *Metropolis-adjusted
Langevin algorithm* (MALA; Roberts & Tweedie 1996) uses the ULA step as a proposal
:math:`q(x'|x) = \mathcal N(x' ; x + \tfrac h2\nabla\log\pi(x), hI)` and accepts it with
probability

.. math:: \min\Big(1, \frac{\pi(x')\,q(x|x')}{\pi(x)\,q(x'|x)}\Big),

which makes every transition leave :math:`\pi` exactly invariant. (MALA is HMC with one
leapfrog step of size :math:`\sqrt h`; `jgen.samplers.hmc` is the many-step version.)

Conventions follow `jgen.samplers.hmc`: positions are [C, ...], ``log_prob_fn(x) -> [C]``
with chain c depending on ``x[c]`` only, and step sizes are a scalar or one per chain
[C]. ``langevin_init`` / ``ula_step`` / ``mala_step`` are the init/step pair over a
`LangevinState`; ``ula_sample`` / ``mala_sample`` compose them in one ``lax.scan``.
`sgld_step` is the bare update used to sample deep energy-based models (Welling & Teh
2011; Du & Mordatch 2019), with a noise scale and clipping.

References:
  Roberts, G. O. & Tweedie, R. L. (1996). Exponential convergence of Langevin
    distributions and their discrete approximations. Bernoulli 2(4).
    https://doi.org/10.2307/3318418
  Welling, M. & Teh, Y. W. (2011). Bayesian Learning via Stochastic Gradient Langevin
    Dynamics. ICML.
  Du, Y. & Mordatch, I. (2019). Implicit Generation and Modeling with Energy-Based
    Models. NeurIPS. https://arxiv.org/abs/1903.08689 (SGLD with a reduced noise scale
    and clipping, for deep EBMs.)
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.samplers.hmc import (
    LogProbFn,
    _check_position,
    _expand,
    _per_chain_step_size,
    log_prob_and_grad,
)
from jgen.typing import Array, PRNGKey


class LangevinState(NamedTuple):
    """State of C Langevin chains.

    Attributes:
      position: current positions, [C, ...].
      log_prob: ``log_prob_fn(position)``, [C] (cached with its gradient).
      grad: gradient of ``log_prob`` with respect to ``position``, [C, ...].
      num_steps: number of transitions taken, int32 [].
      mean_accept_prob: running mean of each chain's acceptance probability over
        the transitions taken, [C] (all ones for ULA, which accepts every move).
    """

    position: Array
    log_prob: Array
    grad: Array
    num_steps: Array
    mean_accept_prob: Array


class LangevinInfo(NamedTuple):
    """Per-chain diagnostics of one Langevin transition.

    Attributes:
      accept_prob: the Metropolis probability ``min(1, exp(log_accept_ratio))``, [C]
        (1 for ULA).
      accepted: whether the proposal was taken, bool [C] (always True for ULA).
      log_accept_ratio: :math:`\\log\\pi(x') + \\log q(x|x') - \\log\\pi(x) - \\log
        q(x'|x)`, [C]; -inf for a non-finite proposal (0 for ULA).
      proposal: the proposed positions x', [C, ...] (for ULA, the new positions).
    """

    accept_prob: Array
    accepted: Array
    log_accept_ratio: Array
    proposal: Array


def _sum_event(v: Array) -> Array:
    return jnp.sum(v, axis=tuple(range(1, v.ndim)))


def langevin_init(log_prob_fn: LogProbFn, x: Array) -> LangevinState:
    """Starts C chains at `x` [C, ...], caching the log-density and its gradient."""
    x = _check_position("langevin_init", x)
    lp, g = log_prob_and_grad(log_prob_fn, x)
    return LangevinState(
        position=x,
        log_prob=lp,
        grad=g,
        num_steps=jnp.zeros((), jnp.int32),
        mean_accept_prob=jnp.zeros(x.shape[:1], x.dtype),
    )


def _propose(key: PRNGKey, fn: str, state: LangevinState, step_size) -> tuple[Array, Array]:
    """The Langevin proposal x + (h/2) grad + sqrt(h) z and the per-chain h, [C, 1, ...]."""
    x = state.position
    h = _expand(_per_chain_step_size(fn, step_size, x), x)
    z = jax.random.normal(key, x.shape, x.dtype)
    return x + 0.5 * h * state.grad + jnp.sqrt(h) * z, h


def _advance(state: LangevinState, x, lp, g, accept_prob) -> LangevinState:
    n = state.num_steps + 1
    return LangevinState(
        position=x,
        log_prob=lp,
        grad=g,
        num_steps=n,
        mean_accept_prob=state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / n,
    )


def ula_step(
    key: PRNGKey, log_prob_fn: LogProbFn, state: LangevinState, *, step_size
) -> tuple[LangevinState, LangevinInfo]:
    r"""One unadjusted Langevin step per chain: :math:`x' = x + \frac h2\nabla\log\pi(x) + \sqrt h z`.

    Biased (no Metropolis correction): the chain's stationary law differs from `log_prob_fn`
    by :math:`O(h)`; see the module docstring for the Gaussian case.

    Args:
      key: a PRNG key; the noise is ``jax.random.normal(key, position.shape)``.
      log_prob_fn: ``x [C, ...] -> [C]``, the (unnormalised) target, chains independent.
      state: the chains' `LangevinState`.
      step_size: h, a scalar or per-chain [C].

    Returns:
      ``(new_state, info)``; `info` a `LangevinInfo` with accept_prob 1.
    """
    x1, _ = _propose(key, "ula_step", state, step_size)
    lp1, g1 = log_prob_and_grad(log_prob_fn, x1)
    ones = jnp.ones_like(lp1)
    info = LangevinInfo(
        accept_prob=ones,
        accepted=jnp.ones(lp1.shape, bool),
        log_accept_ratio=jnp.zeros_like(lp1),
        proposal=x1,
    )
    return _advance(state, x1, lp1, g1, ones), info


def mala_step(
    key: PRNGKey, log_prob_fn: LogProbFn, state: LangevinState, *, step_size
) -> tuple[LangevinState, LangevinInfo]:
    r"""One MALA transition per chain (Roberts & Tweedie 1996), leaving `log_prob_fn` invariant.

    1. Propose :math:`x' = x + \frac h2\nabla\log\pi(x) + \sqrt h z`.
    2. With :math:`\log q(a|b) = -\|a - b - \frac h2\nabla\log\pi(b)\|^2/2h` (+ const),
       accept with probability :math:`\min(1, e^{r})`,
       :math:`r = \log\pi(x') + \log q(x|x') - \log\pi(x) - \log q(x'|x)`; a non-finite
       :math:`r` (proposal outside the support, overflow) is rejected.

    Args:
      key: a PRNG key.
      log_prob_fn: ``x [C, ...] -> [C]``, the (unnormalised) target, chains independent.
      state: the chains' `LangevinState` (its cached log_prob/grad must be of this
        `log_prob_fn`).
      step_size: h, a scalar or per-chain [C].

    Returns:
      ``(new_state, info)``; `info` a `LangevinInfo` with the per-chain accept_prob,
      accepted, log_accept_ratio and proposal.
    """
    key_z, key_u = jax.random.split(key)
    x0, lp0, g0 = state.position, state.log_prob, state.grad
    x1, h = _propose(key_z, "mala_step", state, step_size)
    lp1, g1 = log_prob_and_grad(log_prob_fn, x1)
    # Gaussian proposal densities in both directions (the normalisers cancel).
    log_q_fwd = -_sum_event(jnp.square(x1 - x0 - 0.5 * h * g0) / (2.0 * h))
    log_q_bwd = -_sum_event(jnp.square(x0 - x1 - 0.5 * h * g1) / (2.0 * h))
    log_ratio = (lp1 + log_q_bwd) - (lp0 + log_q_fwd)
    log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
    accept_prob = jnp.exp(jnp.minimum(0.0, log_ratio))
    accepted = jnp.log(jax.random.uniform(key_u, lp0.shape, lp0.dtype)) < log_ratio

    acc = _expand(accepted, x0)
    new_state = _advance(
        state,
        jnp.where(acc, x1, x0),
        jnp.where(accepted, lp1, lp0),
        jnp.where(acc, g1, g0),
        accept_prob,
    )
    info = LangevinInfo(accept_prob=accept_prob, accepted=accepted, log_accept_ratio=log_ratio, proposal=x1)
    return new_state, info


def _check_counts(fn: str, num_steps, num_burnin, thin) -> None:
    for name, v, lo in (("num_steps", num_steps, 1), ("num_burnin", num_burnin, 0), ("thin", thin, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(
                f"{fn}: {name} must be a Python int >= {lo}; received {v!r}. Under jax.jit "
                "close over it or mark it static."
            )
    if num_steps < thin:
        raise ValueError(
            f"{fn}: num_steps={num_steps} keeps num_steps // thin = 0 samples with "
            f"thin={thin}; pass num_steps >= thin."
        )


def _langevin_sample(fn, step_fn, key, log_prob_fn, x0, step_size, num_steps, num_burnin, thin):
    _check_counts(fn, num_steps, num_burnin, thin)
    x0 = _check_position(fn, x0)
    eps = _per_chain_step_size(fn, step_size, x0)
    state = langevin_init(log_prob_fn, x0)

    def transition(i, carry):
        state, accept_sum = carry
        state, info = step_fn(jax.random.fold_in(key, i), log_prob_fn, state, step_size=eps)
        return state, accept_sum + info.accept_prob

    zeros = jnp.zeros(x0.shape[:1], x0.dtype)
    state, _ = jax.lax.fori_loop(0, num_burnin, transition, (state, zeros))  # burn-in

    def keep(carry, s):  # `thin` transitions, then emit the position
        start = num_burnin + s * thin
        carry = jax.lax.fori_loop(start, start + thin, transition, carry)
        return carry, carry[0].position

    num_kept = num_steps // thin
    (state, accept_sum), samples = jax.lax.scan(keep, (state, zeros), jnp.arange(num_kept))
    info = {"acceptance_rate": accept_sum / (num_kept * thin), "state": state}
    return samples, info


def ula_sample(
    key: PRNGKey,
    log_prob_fn: LogProbFn,
    x0: Array,
    *,
    step_size,
    num_steps: int,
    num_burnin: int = 0,
    thin: int = 1,
) -> tuple[Array, dict]:
    """Runs C unadjusted Langevin chains from `x0` on device (burn-in loop, then one `lax.scan`).

    Args:
      key: a PRNG key; transition i uses ``fold_in(key, i)``.
      log_prob_fn: ``x [C, ...] -> [C]``, the (unnormalised) target, chains independent.
      x0: initial positions, [C, ...].
      step_size: h, a scalar or per-chain [C].
      num_steps: transitions after burn-in (a Python int); every `thin`-th is kept, so
        S = num_steps // thin samples are returned.
      num_burnin: transitions discarded first (a Python int).
      thin: keep one position every `thin` transitions.

    Returns:
      ``(samples, info)``: `samples` [S, C, ...]; `info` a dict with "acceptance_rate"
      [C] (ones) and "state" (the final `LangevinState`, to continue sampling).

    Example:
      >>> log_prob = lambda x: -0.5 * jnp.sum(x**2, axis=-1)
      >>> samples, _ = ula_sample(jax.random.PRNGKey(0), log_prob, jnp.zeros((4, 2)),
      ...                         step_size=0.1, num_steps=100, thin=10)
      >>> samples.shape
      (10, 4, 2)
    """
    return _langevin_sample("ula_sample", ula_step, key, log_prob_fn, x0, step_size, num_steps, num_burnin, thin)


def mala_sample(
    key: PRNGKey,
    log_prob_fn: LogProbFn,
    x0: Array,
    *,
    step_size,
    num_steps: int,
    num_burnin: int = 0,
    thin: int = 1,
) -> tuple[Array, dict]:
    """Runs C MALA chains from `x0` on device (burn-in loop, then one `lax.scan`).

    Arguments as `ula_sample`. Returns ``(samples [S, C, ...], info)`` with
    "acceptance_rate" [C], each chain's mean Metropolis acceptance probability over the
    num_steps kept-phase transitions (about 0.57 is optimal in high dimension; Roberts &
    Rosenthal 1998), and "state", the final `LangevinState`.
    """
    return _langevin_sample("mala_sample", mala_step, key, log_prob_fn, x0, step_size, num_steps, num_burnin, thin)


def sgld_step(
    key: PRNGKey,
    x: Array,
    grad_fn: Callable[[Array], Array],
    *,
    step_size,
    noise_scale: float = 1.0,
    clip=None,
) -> Array:
    r"""One stochastic-gradient Langevin update, as used to sample deep EBMs.

    .. math::
        x' = \operatorname{clip}\Big(x + \tfrac h2\, g(x) + \sqrt h\,\lambda\, z\Big),
        \qquad z = \texttt{jax.random.normal(key, x.shape)},

    with :math:`g = \nabla_x\log p = -\nabla_x E` given by `grad_fn` and noise scale
    :math:`\lambda`. With :math:`\lambda = 1` and no clipping this is exactly a ULA step;
    :math:`\lambda < 1` samples (approximately, for small h) the sharpened density
    :math:`p^{1/\lambda^2}`, the usual compromise for image EBMs (Du & Mordatch 2019 use
    a much smaller noise than :math:`\sqrt h`). For :math:`p = \mathcal N(0, s^2)` the
    stationary variance is :math:`\lambda^2 s^2/(1 - h/4s^2)`.

    Args:
      key: a PRNG key.
      x: current samples, a floating array [B, ...].
      grad_fn: ``x -> grad log p(x)``, same shape as `x` (e.g.
        ``jax.grad(lambda x: -energy(x).sum())``).
      step_size: h > 0, a scalar or per-example [B].
      noise_scale: :math:`\lambda`, the multiplier of the injected noise.
      clip: None, a float c (clamp to [-c, c]) or a pair (low, high): the new samples
        are clamped to this range (e.g. the data range [-1, 1] of images).

    Returns:
      The updated samples, same shape and dtype as `x`.

    Raises:
      ValueError: if `x` is not a floating [B, ...] array, `grad_fn` returns another
        shape, or `clip` is not None / a number / a (low, high) pair.
    """
    x = _check_position("sgld_step", x)
    h = _expand(_per_chain_step_size("sgld_step", step_size, x), x)
    g = grad_fn(x)
    if jnp.shape(g) != x.shape:
        raise ValueError(
            f"sgld_step: grad_fn must return the gradient of log p with the shape of x, "
            f"{x.shape}; it returned shape {jnp.shape(g)}."
        )
    z = jax.random.normal(key, x.shape, x.dtype)
    x = x + 0.5 * h * g + jnp.sqrt(h) * noise_scale * z
    if clip is None:
        return x
    if isinstance(clip, (tuple, list)) and len(clip) == 2:
        low, high = clip
    elif isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip > 0:
        low, high = -clip, clip
    else:
        raise ValueError(
            f"sgld_step: clip must be None, a positive number c (clamp to [-c, c]) or a "
            f"pair (low, high); received {clip!r}."
        )
    return jnp.clip(x, low, high)
