r"""Rejection sampling from an unnormalised density under a known envelope.

Given a target :math:`\tilde p(x) = Z_p\, p(x)` known up to its normaliser, a
normalised proposal :math:`q` that can be sampled and evaluated, and a constant
:math:`M` with :math:`M q(x) \ge \tilde p(x)` everywhere, draw :math:`x \sim q` and
:math:`u \sim U(0, 1)` and accept x when :math:`u\,M q(x) \le \tilde p(x)`. Accepted
points are exact, independent draws from p, and each proposal is accepted with
probability

.. math:: \Pr(\text{accept}) = \int q(x)\frac{\tilde p(x)}{M q(x)}\,dx = \frac{Z_p}{M}.

The sampler works on device: every round of a `lax.while_loop` draws a batch of
proposals, accepts some, and writes them into a fixed-size output buffer, until the
buffer is full or `max_rounds` rounds have run. If any proposal has
:math:`\tilde p(x) > M q(x)` the envelope is wrong and the output is *not* exact; this
is always detected (see `rejection_sample`'s Raises).

References:
  von Neumann, J. (1951). Various techniques used in connection with random digits.
    National Bureau of Standards Applied Mathematics Series 12.
  Robert, C. P. & Casella, G. (2004). Monte Carlo Statistical Methods, 2nd ed., Sec. 2.3.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jgen.typing import Array, PRNGKey


def rejection_sample(
    key: PRNGKey,
    log_target_fn: Callable[[Array], Array],
    proposal_sample_fn: Callable[[PRNGKey, int], Array],
    proposal_log_prob_fn: Callable[[Array], Array],
    log_m,
    num: int,
    *,
    max_rounds: int,
    batch_size: int | None = None,
    check_envelope: bool = True,
    envelope_atol: float = 1e-5,
) -> tuple[Array, dict]:
    r"""`num` exact draws from :math:`p \propto e^{\text{log\_target\_fn}}` by rejection from q.

    Round r draws `batch_size` proposals :math:`x_i \sim q` and accepts those with
    :math:`\log u_i < \log\tilde p(x_i) - \log M - \log q(x_i)`; accepted points fill
    the output rows in order. Accepted points beyond `num` are dropped (which does not
    bias the kept ones: each accepted point is an independent draw from p).

    Args:
      key: a PRNG key; round r uses ``fold_in(key, r)``.
      log_target_fn: ``x [N, ...] -> [N]``, :math:`\log\tilde p`, unnormalised (-inf
        outside the support).
      proposal_sample_fn: ``(key, n) -> x [n, ...]``, draws from q.
      proposal_log_prob_fn: ``x [N, ...] -> [N]``, :math:`\log q`, normalised.
      log_m: :math:`\log M`, a scalar with :math:`M q \ge \tilde p` everywhere.
      num: number of samples wanted (a Python int).
      max_rounds: the most rounds to run (a Python int); with acceptance rate a the
        expected number needed is about ``num / (a * batch_size)``.
      batch_size: proposals per round (a Python int; default `num`).
      check_envelope: if True (default), an envelope violation raises when the
        result is concrete and poisons the samples with NaN under `jax.jit`.
      envelope_atol: log-ratios up to this above 0 are taken as rounding, not as a
        violation (a tight envelope touches p~ where log p~ - log M - log q = 0 exactly
        in exact arithmetic).

    Returns:
      ``(samples, info)``: `samples` [num, ...] (rows past ``info["num_accepted"]``
      are unfilled zeros when `max_rounds` ran out first), and `info` a dict of
        - "acceptance_rate": accepted / proposed over all rounds, an unbiased
          estimate of :math:`Z_p / M`;
        - "num_accepted": filled rows, int32, ``min(num, accepted)``;
        - "num_proposed": proposals drawn, int32;
        - "filled": bool [num], which rows hold samples;
        - "envelope_violated": bool, whether any proposal had
          :math:`\log\tilde p(x) > \log M + \log q(x)` (+ `envelope_atol`);
        - "max_log_ratio": the largest :math:`\log\tilde p - \log M - \log q` seen
          (> 0 means violation) and "worst_proposal", the proposal where it occurred.

    Raises:
      ValueError: for non-int `num`/`max_rounds`/`batch_size`, proposals or
        log-densities of the wrong shape, and (with `check_envelope`, outside
        `jax.jit`) for an envelope violation, quoting log M, the worst log-ratio and
        the point. Under `jax.jit` a violation cannot raise: the samples are then all
        NaN and ``info["envelope_violated"]`` is True.

    Example:
      >>> # N(0, 1) truncated to x > 1 from a shifted exponential envelope:
      >>> samples, info = rejection_sample(key, lambda x: jnp.where(x[:, 0] > 1, -0.5 * x[:, 0]**2, -jnp.inf),
      ...     lambda k, n: 1.0 + jax.random.exponential(k, (n, 1)), lambda x: -(x[:, 0] - 1.0),
      ...     log_m=-0.5, num=1000, max_rounds=20)
    """
    for name, v in (("num", num), ("max_rounds", max_rounds), ("batch_size", batch_size)):
        if name == "batch_size" and v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(
                f"rejection_sample: {name} must be a Python int >= 1; received {v!r}. Under "
                "jax.jit close over it or mark it static."
            )
    batch_size = num if batch_size is None else batch_size

    # Shapes of one round, found without running it.
    x_spec = jax.eval_shape(lambda k: proposal_sample_fn(k, batch_size), key)
    if x_spec.ndim < 1 or x_spec.shape[0] != batch_size:
        raise ValueError(
            f"rejection_sample: proposal_sample_fn(key, {batch_size}) must return "
            f"[{batch_size}, ...] proposals; it returned shape {x_spec.shape}."
        )
    for name, f in (("log_target_fn", log_target_fn), ("proposal_log_prob_fn", proposal_log_prob_fn)):
        spec = jax.eval_shape(f, x_spec)
        if spec.shape != (batch_size,):
            raise ValueError(
                f"rejection_sample: {name} must return one log-density per proposal, shape "
                f"({batch_size},), for proposals of shape {x_spec.shape}; it returned shape "
                f"{spec.shape}. Sum over the event axes inside it."
            )
    dtype = jnp.result_type(x_spec.dtype, float) if jnp.issubdtype(x_spec.dtype, jnp.floating) else jnp.result_type(float)
    log_m = jnp.asarray(log_m, dtype)
    if log_m.ndim != 0:
        raise ValueError(f"rejection_sample: log_m must be a scalar log M; received shape {log_m.shape}.")

    def cond(carry):
        r, _, count, *_ = carry
        return (r < max_rounds) & (count < num)

    def body(carry):
        r, buf, count, accepted_total, max_ratio, worst = carry
        key_x, key_u = jax.random.split(jax.random.fold_in(key, r))
        x = proposal_sample_fn(key_x, batch_size)
        log_ratio = (log_target_fn(x) - proposal_log_prob_fn(x)).astype(dtype) - log_m  # <= 0 if M q >= p~
        accept = jnp.log(jax.random.uniform(key_u, (batch_size,), dtype)) < log_ratio
        # Row of the output each accepted proposal goes to; the rest (and overflow) are dropped.
        dest = count + jnp.cumsum(accept) - 1
        dest = jnp.where(accept & (dest < num), dest, num)  # index num is out of bounds: dropped
        buf = buf.at[dest].set(x.astype(buf.dtype), mode="drop")
        i = jnp.argmax(jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio))
        worse = log_ratio[i] > max_ratio
        max_ratio = jnp.where(worse, log_ratio[i], max_ratio)
        worst = jnp.where(worse, x[i], worst)
        n_acc = jnp.sum(accept, dtype=jnp.int32)
        return r + 1, buf, jnp.minimum(count + n_acc, num), accepted_total + n_acc, max_ratio, worst

    buf0 = jnp.zeros((num,) + x_spec.shape[1:], x_spec.dtype)
    carry0 = (
        jnp.zeros((), jnp.int32), buf0, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
        jnp.full((), -jnp.inf, dtype), jnp.zeros(x_spec.shape[1:], x_spec.dtype),
    )
    rounds, samples, count, accepted_total, max_ratio, worst = jax.lax.while_loop(cond, body, carry0)
    num_proposed = rounds * batch_size
    violated = max_ratio > envelope_atol
    if check_envelope and jnp.issubdtype(samples.dtype, jnp.floating):
        samples = jnp.where(violated, jnp.nan, samples)
    info = {
        "acceptance_rate": accepted_total.astype(dtype) / num_proposed.astype(dtype),
        "num_accepted": count,
        "num_proposed": num_proposed,
        "filled": jnp.arange(num) < count,
        "envelope_violated": violated,
        "max_log_ratio": max_ratio,
        "worst_proposal": worst,
    }
    if check_envelope and not isinstance(violated, jax.core.Tracer) and bool(violated):
        raise ValueError(
            f"rejection_sample: the envelope M q(x) >= p~(x) is violated: with log_m="
            f"{float(log_m):.6g}, the proposal x={jax.device_get(worst).tolist()} has "
            f"log p~(x) - log M - log q(x) = {float(max_ratio):.6g} > 0 (tolerance {envelope_atol:g}), so the samples "
            "would not be exact. Increase log_m by at least that much (log M must bound "
            "sup_x log p~(x) - log q(x)), or pass check_envelope=False to inspect info."
        )
    return samples, info
