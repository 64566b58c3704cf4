r"""Hamiltonian Monte Carlo (HMC) over a batch of independent chains.

HMC samples a density :math:`\pi(x) \propto e^{\log\pi(x)}` by simulating the
Hamiltonian :math:`H(x, p) = -\log\pi(x) + \tfrac12\|p\|^2` with the leapfrog
integrator from a fresh Gaussian momentum, then accepting the end point with the
Metropolis probability :math:`\min(1, e^{-\Delta H})`. Leapfrog is reversible and
volume preserving, so the correction makes every transition leave :math:`\pi`
exactly invariant whatever the step size (Neal 2011, Sec. 5.3.2).

Every function works on C independent chains at once: positions have shape
[C, ...] and ``log_prob_fn(x) -> [C]`` returns one log-density per chain, chain c
depending on ``x[c]`` only (so the gradient of the summed log-density is the
per-chain gradient). The pieces follow the optax pattern: ``hmc_init`` /
``hmc_step`` over an ``HMCState``, ``step_size_adapt_init`` /
``step_size_adapt_update`` over a ``StepSizeAdaptState``, and ``hmc_sample``
composes them in one ``lax.scan``.

References:
  Duane, S., Kennedy, A. D., Pendleton, B. J. & Roweth, D. (1987). Hybrid Monte
    Carlo. Physics Letters B 195(2).
  Neal, R. M. (2011). MCMC using Hamiltonian dynamics. Handbook of Markov Chain
    Monte Carlo, ch. 5. https://arxiv.org/abs/1206.1901
  Wu, Y., Burda, Y., Salakhutdinov, R. & Grosse, R. (2017). On the Quantitative
    Analysis of Decoder-Based Generative Models. ICLR.
    https://arxiv.org/abs/1611.04273 (the step-size rule of
    `step_size_adapt_update`.)
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jgen.typing import Array, PRNGKey

# log_prob_fn(x [C, ...]) -> [C], chains independent.
LogProbFn = Callable[[Array], Array]


class HMCState(NamedTuple):
    """State of C HMC chains.

    Attributes:
      position: current positions, [C, ...].
      log_prob: ``log_prob_fn(position)``, [C] (cached: a step needs it and its grad).
      grad: gradient of ``log_prob`` with respect to ``position``, [C, ...] (cached).
      num_steps: number of transitions taken, int32 [].
      mean_accept_prob: running mean over the transitions taken of each chain's
        Metropolis acceptance probability, [C].
    """

    position: Array
    log_prob: Array
    grad: Array
    num_steps: Array
    mean_accept_prob: Array


class HMCInfo(NamedTuple):
    """Per-chain diagnostics of one HMC transition, each [C].

    Attributes:
      accept_prob: the Metropolis probability :math:`\\min(1, e^{-\\Delta H})`.
      accepted: whether the proposal was accepted (bool).
      energy_change: :math:`\\Delta H = H(x', p') - H(x, p)`; +inf for a divergent
        (non-finite) proposal, which is then always rejected.
    """

    accept_prob: Array
    accepted: Array
    energy_change: Array


class StepSizeAdaptState(NamedTuple):
    """Per-chain step sizes being adapted toward a target acceptance rate.

    Attributes:
      step_size: current step size of each chain, [C].
      avg_accept_prob: exponential moving average of each chain's acceptance
        probability, [C].
    """

    step_size: Array
    avg_accept_prob: Array


def _check_position(fn: str, x: Array) -> Array:
    x = jnp.asarray(x)
    if x.ndim < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{fn}: positions must be a floating array of shape [C, ...] (one row per "
            f"chain); received shape {x.shape} and dtype {x.dtype}. For a single chain "
            "of a D-dim target pass x[None] (shape [1, D]); cast integers with "
            "x.astype(jnp.float32)."
        )
    return x


def _expand(v: Array, x: Array) -> Array:
    """[C] -> [C, 1, ..., 1] so it broadcasts against x [C, ...] at equal rank."""
    return v.reshape(v.shape + (1,) * (x.ndim - 1))


def _per_chain_step_size(fn: str, step_size, x: Array) -> Array:
    """A scalar or [C] step size as a [C] array in x's dtype."""
    eps = jnp.asarray(step_size, x.dtype)
    if eps.ndim == 0:
        return jnp.broadcast_to(eps, x.shape[:1])
    if eps.shape != x.shape[:1]:
        raise ValueError(
            f"{fn}: step_size must be a scalar or one value per chain, shape "
            f"{x.shape[:1]}, for positions of shape {x.shape}; received shape "
            f"{eps.shape}."
        )
    return eps


def _kinetic(p: Array) -> Array:
    """Per-chain kinetic energy 0.5 |p|^2 (unit mass matrix), [C]."""
    return 0.5 * jnp.sum(jnp.square(p), axis=tuple(range(1, p.ndim)))


def log_prob_and_grad(log_prob_fn: LogProbFn, x: Array) -> tuple[Array, Array]:
    """Per-chain log-density [C] and its gradient [C, ...], via `jax.grad` of the sum.

    The sum's gradient is the per-chain gradient because chain c depends on x[c]
    only. Raises ValueError (at trace time) if `log_prob_fn` does not return [C].
    """

    def summed(x):
        lp = log_prob_fn(x)
        if jnp.shape(lp) != x.shape[:1]:
            raise ValueError(
                f"log_prob_fn must return one log-density per chain, shape "
                f"{x.shape[:1]}, for positions of shape {x.shape}; it returned shape "
                f"{jnp.shape(lp)}. Sum over the event axes inside log_prob_fn, e.g. "
                "jnp.sum(..., axis=-1) (or use a jgen.distributions *_log_prob)."
            )
        return jnp.sum(lp), lp

    (_, lp), g = jax.value_and_grad(summed, has_aux=True)(x)
    return lp, g


def leapfrog(
    log_prob_fn: LogProbFn,
    x: Array,
    p: Array,
    step_size,
    num_steps: int,
    *,
    log_prob: Array | None = None,
    grad: Array | None = None,
) -> tuple[Array, Array, Array, Array]:
    r"""`num_steps` leapfrog (velocity Verlet) steps of size `step_size` for every chain.

    One step with :math:`\epsilon` = `step_size` (Neal 2011, eq. 5.18-5.20):

    .. math::
        p \leftarrow p + \tfrac{\epsilon}{2}\nabla\log\pi(x),\quad
        x \leftarrow x + \epsilon\, p,\quad
        p \leftarrow p + \tfrac{\epsilon}{2}\nabla\log\pi(x).

    The map :math:`(x, p) \mapsto (x', p')` is volume preserving and reversible
    (negating :math:`p'` and integrating again returns to :math:`(x, -p)`), and the
    energy error after a fixed time :math:`\epsilon L` is :math:`O(\epsilon^2)`.
    Each step costs one gradient; the gradient at the end point is returned so
    that the next call can reuse it.

    Args:
      log_prob_fn: ``x [C, ...] -> [C]``, chains independent.
      x: positions, [C, ...].
      p: momenta, same shape as `x`.
      step_size: a scalar or a per-chain array [C].
      num_steps: number of leapfrog steps L (a Python int or traced int).
      log_prob: optional cached ``log_prob_fn(x)`` [C]; give it with `grad`.
      grad: optional cached gradient at `x`; computed if either is None.

    Returns:
      ``(x', p', log_prob_fn(x'), grad at x')``.

    Raises:
      ValueError: if `x` is not [C, ...], `step_size` is neither a scalar nor [C],
        or `log_prob_fn` does not return [C].

    References:
      Neal, R. M. (2011). MCMC using Hamiltonian dynamics, Sec. 5.2.3.
    """
    x = _check_position("leapfrog", x)
    eps = _expand(_per_chain_step_size("leapfrog", step_size, x), x)
    if log_prob is None or grad is None:
        log_prob, grad = log_prob_and_grad(log_prob_fn, x)

    def step(_, carry):
        x, p, _, g = carry
        p = p + 0.5 * eps * g  # half kick
        x = x + eps * p  # drift
        lp, g = log_prob_and_grad(log_prob_fn, x)
        p = p + 0.5 * eps * g  # half kick
        return x, p, lp, g

    return jax.lax.fori_loop(0, num_steps, step, (x, p, log_prob, grad))


def hmc_init(log_prob_fn: LogProbFn, x: Array) -> HMCState:
    """Starts C chains at `x` [C, ...], caching the log-density and its gradient."""
    x = _check_position("hmc_init", x)
    lp, g = log_prob_and_grad(log_prob_fn, x)
    return HMCState(
        position=x,
        log_prob=lp,
        grad=g,
        num_steps=jnp.zeros((), jnp.int32),
        mean_accept_prob=jnp.zeros(x.shape[:1], x.dtype),
    )


def hmc_step(
    log_prob_fn: LogProbFn,
    key: PRNGKey,
    state: HMCState,
    *,
    step_size,
    num_leapfrog: int,
) -> tuple[HMCState, HMCInfo]:
    """One HMC transition per chain (Neal 2011, Fig. 2), leaving `log_prob_fn` invariant.

    1. Draw a momentum :math:`p \\sim N(0, I)`.
    2. Integrate `num_leapfrog` leapfrog steps from the current position.
    3. Accept the end point with probability :math:`\\min(1, e^{-\\Delta H})`,
       otherwise stay; the proposal's momentum is discarded either way.

    Args:
      log_prob_fn: ``x [C, ...] -> [C]``, the (unnormalised) target, chains independent.
      key: a PRNG key (fold the step number in for a chain of steps).
      state: the chains' `HMCState` (its cached log_prob/grad must be of this
        `log_prob_fn`).
      step_size: a scalar or per-chain [C] leapfrog step size.
      num_leapfrog: leapfrog steps per transition.

    Returns:
      ``(new_state, info)``, `info` an `HMCInfo` with per-chain accept_prob,
      accepted and energy_change.
    """
    x0 = state.position
    key_p, key_u = jax.random.split(key)
    p0 = jax.random.normal(key_p, x0.shape, x0.dtype)
    x1, p1, lp1, g1 = leapfrog(
        log_prob_fn, x0, p0, step_size, num_leapfrog, log_prob=state.log_prob, grad=state.grad
    )
    # Metropolis correction on the energy change; NaN/inf proposals are rejected.
    delta = (_kinetic(p1) - lp1) - (_kinetic(p0) - state.log_prob)
    delta = jnp.where(jnp.isfinite(delta), delta, jnp.inf)
    log_accept = jnp.minimum(0.0, -delta)
    accept_prob = jnp.exp(log_accept)
    accepted = jnp.log(jax.random.uniform(key_u, x0.shape[:1], x0.dtype)) < log_accept

    n = state.num_steps + 1
    new_state = HMCState(
        position=jnp.where(_expand(accepted, x0), x1, x0),
        log_prob=jnp.where(accepted, lp1, state.log_prob),
        grad=jnp.where(_expand(accepted, x0), g1, state.grad),
        num_steps=n,
        mean_accept_prob=state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / n,
    )
    return new_state, HMCInfo(accept_prob=accept_prob, accepted=accepted, energy_change=delta)


def step_size_adapt_init(
    step_size, num_chains: int, *, target_accept: float = 0.65, dtype=None
) -> StepSizeAdaptState:
    """Per-chain step sizes [num_chains] starting at `step_size`, average acceptance at target."""
    eps = jnp.asarray(step_size, dtype)
    eps = jnp.broadcast_to(eps, (num_chains,)) if eps.ndim == 0 else eps
    if eps.shape != (num_chains,):
        raise ValueError(
            f"step_size_adapt_init: step_size must be a scalar or shape ({num_chains},) "
            f"(one per chain); received shape {eps.shape}."
        )
    return StepSizeAdaptState(step_size=eps, avg_accept_prob=jnp.full_like(eps, target_accept))


def step_size_adapt_update(
    state: StepSizeAdaptState,
    accept_prob: Array,
    *,
    target_accept: float = 0.65,
    decay: float = 0.9,
    increase: float = 1.02,
    decrease: float = 0.98,
    min_step_size: float = 1e-4,
    max_step_size: float = float("inf"),
) -> StepSizeAdaptState:
    """Multiplicative per-chain step-size rule of Wu et al. (2017), after Neal's BDMC code.

    Each chain keeps an exponential moving average `a` of its acceptance
    probability (``a <- decay * a + (1 - decay) * accept_prob``) and multiplies its
    step size by `increase` when ``a > target_accept``, by `decrease` otherwise,
    clipped to ``[min_step_size, max_step_size]``. The defaults (0.9, 1.02, 0.98) are
    Wu et al.'s; a factor of 10 in step size takes about 115 updates.

    Adapting from a chain's own history makes its transitions depend on its past,
    which breaks the exact invariance of the chain: adapt during burn-in only
    (as `hmc_sample` does), or accept the (small, in practice negligible) bias as
    annealed importance sampling usually does.

    Args:
      state: the current `StepSizeAdaptState`.
      accept_prob: this transition's per-chain acceptance probability, [C].
      target_accept: the acceptance rate aimed at (0.65 is near-optimal for HMC,
        Neal 2011 Sec. 5.4.4).
      decay: smoothing of the moving average, in [0, 1).
      increase, decrease: multiplicative factors (> 1 and < 1).
      min_step_size, max_step_size: clipping bounds.

    Returns:
      The updated `StepSizeAdaptState`.

    References:
      Wu, Y., Burda, Y., Salakhutdinov, R. & Grosse, R. (2017). On the Quantitative
        Analysis of Decoder-Based Generative Models. ICLR.
    """
    avg = decay * state.avg_accept_prob + (1.0 - decay) * accept_prob
    eps = state.step_size * jnp.where(avg > target_accept, increase, decrease).astype(avg.dtype)
    return StepSizeAdaptState(step_size=jnp.clip(eps, min_step_size, max_step_size), avg_accept_prob=avg)


def hmc_sample(
    log_prob_fn: LogProbFn,
    key: PRNGKey,
    x0: Array,
    *,
    num_samples: int,
    step_size,
    num_leapfrog: int,
    num_burnin: int = 0,
    adapt_step_size: bool = False,
    target_accept: float = 0.65,
) -> tuple[Array, dict]:
    """Runs C HMC chains from `x0` as one `lax.scan` of burn-in plus sampling steps.

    Args:
      log_prob_fn: ``x [C, ...] -> [C]``, the (unnormalised) target, chains independent.
      key: a PRNG key; step i uses ``fold_in(key, i)``.
      x0: initial positions, [C, ...].
      num_samples: transitions kept after burn-in (a Python int).
      step_size: initial leapfrog step size, scalar or per-chain [C].
      num_leapfrog: leapfrog steps per transition.
      num_burnin: transitions discarded first (a Python int).
      adapt_step_size: if True, adapt each chain's step size during burn-in with
        `step_size_adapt_update` toward `target_accept`, then freeze it, so the
        kept samples come from an exactly invariant chain.
      target_accept: the acceptance rate the adaptation aims at.

    Returns:
      ``(samples, info)``: `samples` [num_samples, C, ...], and `info` a dict with
      "acceptance_rate" [C] (mean acceptance probability over the kept steps),
      "accept_prob" [num_samples, C], "step_size" [C] (the step sizes used for the
      kept steps) and "state" (the final `HMCState`, to continue sampling).

    Note:
      The scan emits the position of every step and burn-in steps are sliced off
      afterwards, so memory is O((num_burnin + num_samples) * C * D).

    Example:
      >>> log_prob = lambda x: -0.5 * jnp.sum(x**2, axis=-1)
      >>> samples, info = hmc_sample(log_prob, jax.random.PRNGKey(0), jnp.zeros((4, 2)),
      ...                            num_samples=100, step_size=0.5, num_leapfrog=5)
      >>> samples.shape
      (100, 4, 2)
    """
    for name, v in (("num_samples", num_samples), ("num_burnin", num_burnin)):
        if not isinstance(v, int) or isinstance(v, bool) or v < (1 if name == "num_samples" else 0):
            raise ValueError(
                f"hmc_sample: {name} must be a Python int (>= 1 for num_samples, >= 0 "
                f"for num_burnin); received {v!r}. Under jax.jit close over it or mark "
                "it static."
            )
    x0 = _check_position("hmc_sample", x0)
    state = hmc_init(log_prob_fn, x0)
    adapt = step_size_adapt_init(
        _per_chain_step_size("hmc_sample", step_size, x0), x0.shape[0], target_accept=target_accept
    )

    def body(carry, i):
        state, adapt = carry
        state, info = hmc_step(
            log_prob_fn, jax.random.fold_in(key, i), state,
            step_size=adapt.step_size, num_leapfrog=num_leapfrog,
        )
        if adapt_step_size:  # static: adapt while i < num_burnin, then freeze
            new = step_size_adapt_update(adapt, info.accept_prob, target_accept=target_accept)
            adapt = jax.tree.map(lambda n, o: jnp.where(i < num_burnin, n, o), new, adapt)
        return (state, adapt), (state.position, info.accept_prob)

    steps = jnp.arange(num_burnin + num_samples)
    (state, adapt), (positions, accept_prob) = jax.lax.scan(body, (state, adapt), steps)
    accept_prob = accept_prob[num_burnin:]
    info = {
        "acceptance_rate": jnp.mean(accept_prob, axis=0),
        "accept_prob": accept_prob,
        "step_size": adapt.step_size,
        "state": state,
    }
    return positions[num_burnin:], info
