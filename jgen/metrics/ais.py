r"""Annealed importance sampling (AIS) estimates of a latent-variable model's log p(x).

AIS (Neal 2001) moves C chains per example through a sequence of distributions
bridging a normalised initial :math:`q_0(z)` and the unnormalised posterior
:math:`p(z)\,p(x|z)` along the geometric path

.. math::
    \log f_t(z) = (1-\beta_t)\log q_0(z) + \beta_t\big[\log p(z) + \log p(x|z)\big],
    \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

accumulating :math:`\log w = \sum_{t=1}^T (\beta_t - \beta_{t-1})
[\log p(z_{t-1}) + \log p(x|z_{t-1}) - \log q_0(z_{t-1})]` where
:math:`z_0 \sim q_0` and :math:`z_t` follows an HMC transition leaving
:math:`f_t` invariant. Each :math:`w` is an unbiased estimate of :math:`p(x)`, so
:math:`\log \tfrac1C\sum_c w_c` is a stochastic lower bound on :math:`\log p(x)`
(Jensen) that tightens as T grows. This is the evaluation protocol of Wu et al.
(2017) for VAEs and GANs: :math:`q_0` the prior or the encoder, a sigmoid
schedule, HMC with 10 leapfrog steps and per-chain step sizes adapted toward a
0.65 acceptance rate.

References:
  Neal, R. M. (2001). Annealed importance sampling. Statistics and Computing 11.
    https://arxiv.org/abs/physics/9803008
  Grosse, R. B., Ghahramani, Z. & Adams, R. P. (2015). Sandwiching the marginal
    likelihood using bidirectional Monte Carlo. https://arxiv.org/abs/1511.02543
    (the sigmoid schedule.)
  Wu, Y., Burda, Y., Salakhutdinov, R. & Grosse, R. (2017). On the Quantitative
    Analysis of Decoder-Based Generative Models. ICLR.
    https://arxiv.org/abs/1611.04273
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp

from jgen.distributions import diag_gaussian_log_prob
from jgen.losses.elbo import EncodeFn, LogLikelihoodFn
from jgen.samplers.hmc import (
    HMCState,
    hmc_step,
    log_prob_and_grad,
    step_size_adapt_init,
    step_size_adapt_update,
)
from jgen.typing import Array, Params, PRNGKey


def sigmoid_schedule(num_steps: int, *, delta: float = 4.0, dtype=None) -> Array:
    r"""The sigmoid annealing schedule of Grosse et al. (2015), [num_steps + 1].

    :math:`\tilde\beta_t = \sigma(\delta(2t/T - 1))`, rescaled so that
    :math:`\beta_0 = 0` and :math:`\beta_T = 1`. Steps are small at both ends, where
    the intermediate distributions change fastest in practice.
    """
    _check_num_steps("sigmoid_schedule", num_steps)
    s = jax.nn.sigmoid(jnp.linspace(-delta, delta, num_steps + 1, dtype=dtype))
    return (s - s[0]) / (s[-1] - s[0])


def geometric_schedule(num_steps: int, *, beta_min: float = 1e-4, dtype=None) -> Array:
    r"""The geometric schedule :math:`\beta_0 = 0`, :math:`\beta_{1..T}` log-spaced from
    `beta_min` to 1 (Neal 2001), [num_steps + 1]."""
    _check_num_steps("geometric_schedule", num_steps)
    tail = jnp.geomspace(beta_min, 1.0, num_steps, dtype=dtype)
    return jnp.concatenate([jnp.zeros((1,), tail.dtype), tail.at[-1].set(1.0)])


def _check_num_steps(fn: str, num_steps) -> None:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(
            f"{fn}: num_steps must be a Python int >= 1 (the number of annealing "
            f"temperatures); received {num_steps!r}. Under jax.jit close over it or "
            "mark it static."
        )


def ais_log_marginal(
    log_prior_fn: Callable[[Array], Array],
    log_likelihood_fn: LogLikelihoodFn,
    params: Params,
    key: PRNGKey,
    x: Array,
    *,
    num_chains: int,
    num_steps: int,
    num_leapfrog: int = 10,
    step_size: float = 0.05,
    init: str = "prior",
    encode_fn: EncodeFn | None = None,
    latent_dim: int | None = None,
    schedule_fn: Callable[[int], Array] = sigmoid_schedule,
    adapt_step_size: bool = True,
    target_accept: float = 0.65,
    max_step_size: float = 0.5,
) -> tuple[Array, dict]:
    r"""Per-example AIS estimate of log p(x) in nats, with C chains per example.

    All B * C chains run together: `x` is repeated C times along the batch axis
    (chain c of example b is row ``b * C + c``), so `log_likelihood_fn` is called
    on batches of B * C rows. The T - 1 HMC transitions run in one `lax.scan` over
    temperatures with nothing stored per step, so memory is that of one decoder
    forward/backward pass on B * C latents (B=100, C=16 is 1600 rows) whatever T.
    Cost: (T - 1)(L + 1) + 1 gradient evaluations of the joint density.

    Args:
      log_prior_fn: ``z [N, D] -> [N]``, log p(z), e.g.
        `jgen.distributions.standard_normal_log_prob`.
      log_likelihood_fn: ``(params, x [N, ...], z [N, D]) -> [N]``, log p(x|z) (the
        IWAE convention).
      params: model parameters, passed to `log_likelihood_fn` and `encode_fn`.
      key: a PRNG key.
      x: a batch [B, ...].
      num_chains: C, independent chains per example (a Python int).
      num_steps: T, the number of annealing temperatures (a Python int); T = 1 is
        plain importance sampling from q0 (with init="posterior", the IWAE-C
        estimate).
      num_leapfrog: leapfrog steps L per HMC transition.
      step_size: initial leapfrog step size of every chain.
      init: "prior" for :math:`q_0 = N(0, I)` (the VAE prior; needs `latent_dim` or
        `encode_fn` for the dimension) or "posterior" for the encoder's
        :math:`q_0 = q(z|x)` (needs `encode_fn`), usually far fewer steps for the
        same accuracy.
      encode_fn: ``(params, x) -> (mean [B, D], log_std [B, D])``.
      latent_dim: D, for init="prior" without `encode_fn`.
      schedule_fn: ``num_steps -> betas [num_steps + 1]`` from 0 to 1, e.g.
        `sigmoid_schedule` (default) or `geometric_schedule`.
      adapt_step_size: adapt each chain's step size after every transition with
        the rule of Wu et al. (`jgen.samplers.step_size_adapt_update`) toward
        `target_accept`. This makes later transitions depend on a chain's past, a
        small departure from exact AIS that Wu et al. accept; pass False (and a
        tuned `step_size`) for transitions that are exactly invariant.
      target_accept: acceptance rate the adaptation aims at (0.65, Wu et al.).
      max_step_size: upper clip of adapted step sizes (0.5, Wu et al., suited to
        latents with an N(0, I) prior).

    Returns:
      ``(log_px, info)``: `log_px` [B], the logmeanexp over chains of the log
      weights; `info` a dict of
        - "log_px_stderr" [B]: delta-method standard error of `log_px` from the
          spread of the chain weights, ``std(w) / (sqrt(C) mean(w))`` (NaN for C=1;
          it understates the error when the weights are heavy-tailed);
        - "log_weights" [B, C];
        - "weights_ess" [B]: :math:`(\sum_c w_c)^2 / \sum_c w_c^2`, in [1, C];
        - "acceptance_rate" [B]: mean HMC acceptance probability over chains and
          transitions (NaN for T = 1);
        - "step_size" [B, C]: the final step sizes.

    Raises:
      ValueError: for an unknown `init`, a missing `encode_fn`/`latent_dim`, or
        non-int `num_chains`/`num_steps`.

    Example:
      >>> log_px, info = ais_log_marginal(
      ...     standard_normal_log_prob, log_likelihood_fn, params, key, x,
      ...     num_chains=16, num_steps=500, init="posterior", encode_fn=encode_fn)

    References:
      Neal (2001); Wu et al. (2017), Sec. 3 and Appendix; Grosse et al. (2015).
    """
    _check_num_steps("ais_log_marginal", num_steps)
    if not isinstance(num_chains, int) or isinstance(num_chains, bool) or num_chains < 1:
        raise ValueError(
            f"ais_log_marginal: num_chains must be a Python int >= 1; received {num_chains!r}."
        )
    if init not in ("prior", "posterior"):
        raise ValueError(
            f'ais_log_marginal: init must be "prior" (q0 = N(0, I)) or "posterior" '
            f"(q0 = encode_fn's q(z|x)); received init={init!r}."
        )
    x = jax.tree.map(jnp.asarray, x)
    num_examples, c = jax.tree.leaves(x)[0].shape[0], num_chains

    # The initial distribution q0 = N(mean, exp(log_std)^2), per chain [B * C, D].
    if init == "posterior":
        if encode_fn is None:
            raise ValueError(
                'ais_log_marginal: init="posterior" starts the chains at the encoder\'s '
                "q(z|x); pass encode_fn=lambda params, x: (mean, log_std), or use "
                'init="prior".'
            )
        mean, log_std = encode_fn(params, x)
    else:
        if latent_dim is None:
            if encode_fn is None:
                raise ValueError(
                    'ais_log_marginal: init="prior" needs the latent dimension: pass '
                    "latent_dim=D (or encode_fn, whose output shape gives it)."
                )
            latent_dim = jax.eval_shape(encode_fn, params, x)[0].shape[-1]
        dtype = jnp.result_type(float)
        mean = jnp.zeros((num_examples, latent_dim), dtype)
        log_std = jnp.zeros((num_examples, latent_dim), dtype)
    mean = jnp.repeat(mean, c, axis=0)
    log_std = jnp.repeat(log_std, c, axis=0)
    inv_var = jnp.exp(-2.0 * log_std)
    x_rep = jax.tree.map(lambda a: jnp.repeat(a, c, axis=0), x)  # x may be a pytree (e.g. image, label)
    dtype = mean.dtype

    def log_joint(z):
        return log_prior_fn(z) + log_likelihood_fn(params, x_rep, z)

    def log_q0_and_grad(z):  # closed form, no autodiff needed
        return diag_gaussian_log_prob(z, mean, log_std), -(z - mean) * inv_var

    def log_f(beta):
        return lambda z: (1.0 - beta) * diag_gaussian_log_prob(z, mean, log_std) + beta * log_joint(z)

    betas = jnp.asarray(schedule_fn(num_steps), dtype)
    if betas.shape != (num_steps + 1,):
        raise ValueError(
            f"ais_log_marginal: schedule_fn({num_steps}) must return num_steps + 1 "
            f"temperatures from 0 to 1; it returned shape {betas.shape}."
        )

    key_init, key_hmc = jax.random.split(key)
    z0 = mean + jnp.exp(log_std) * jax.random.normal(key_init, mean.shape, dtype)
    adapt0 = step_size_adapt_init(step_size, num_examples * c, target_accept=target_accept, dtype=dtype)

    def body(carry, t):
        z, log_w, adapt, accept_sum = carry
        beta_prev, beta = betas[t - 1], betas[t]
        # Weight update at the current point: log f_t(z) - log f_{t-1}(z).
        lj, grad_lj = log_prob_and_grad(log_joint, z)
        lq, grad_lq = log_q0_and_grad(z)
        log_w = log_w + (beta - beta_prev) * (lj - lq)
        # One HMC transition leaving f_t invariant, starting from the cached f_t and grad.
        state = HMCState(
            position=z,
            log_prob=(1.0 - beta) * lq + beta * lj,
            grad=(1.0 - beta) * grad_lq + beta * grad_lj,
            num_steps=jnp.zeros((), jnp.int32),
            mean_accept_prob=jnp.zeros_like(lq),
        )
        state, info = hmc_step(
            log_f(beta), jax.random.fold_in(key_hmc, t), state,
            step_size=adapt.step_size, num_leapfrog=num_leapfrog,
        )
        if adapt_step_size:
            adapt = step_size_adapt_update(
                adapt, info.accept_prob, target_accept=target_accept, max_step_size=max_step_size
            )
        return (state.position, log_w, adapt, accept_sum + info.accept_prob), None

    init_carry = (z0, jnp.zeros(z0.shape[:1], dtype), adapt0, jnp.zeros(z0.shape[:1], dtype))
    (z, log_w, adapt, accept_sum), _ = jax.lax.scan(body, init_carry, jnp.arange(1, num_steps))
    # Last weight update, to beta_T = 1; no transition needed after it.
    log_w = log_w + (betas[-1] - betas[-2]) * (log_joint(z) - log_q0_and_grad(z)[0])

    log_w = log_w.reshape(num_examples, c)
    log_px = jax.nn.logsumexp(log_w, axis=1) - math.log(c)
    w = jnp.exp(log_w - jnp.max(log_w, axis=1, keepdims=True))  # in (0, 1], max 1
    w_mean = jnp.mean(w, axis=1)
    stderr = jnp.std(w, axis=1, ddof=1) / (math.sqrt(c) * w_mean) if c > 1 else jnp.full_like(w_mean, jnp.nan)
    num_transitions = num_steps - 1
    acceptance = (
        jnp.mean(accept_sum.reshape(num_examples, c), axis=1) / num_transitions
        if num_transitions
        else jnp.full_like(log_px, jnp.nan)
    )
    info = {
        "log_px_stderr": stderr,
        "log_weights": log_w,
        "weights_ess": jnp.square(jnp.sum(w, axis=1)) / jnp.sum(jnp.square(w), axis=1),
        "acceptance_rate": acceptance,
        "step_size": adapt.step_size.reshape(num_examples, c),
    }
    return log_px, info
