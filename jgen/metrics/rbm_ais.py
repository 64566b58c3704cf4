r"""Annealed importance sampling (AIS) estimate of an RBM's log-partition function.

Salakhutdinov & Murray (2008) anneal from a tractable *base-rate* RBM A, with
:math:`W_A = 0`, visible biases :math:`b_A` and zero hidden biases, to the target RBM
B along the geometric path of unnormalised marginals

.. math::
    p^*_\beta(v) = e^{(1-\beta) b_A^\top v}\; e^{\beta b^\top v}
                   \prod_{j=1}^{H}\big(1 + e^{\beta(c_j + v^\top W_{:j})}\big),
    \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_K = 1,

which is itself the visible marginal of an RBM with parameters
:math:`(\beta W,\ (1-\beta)b_A + \beta b,\ \beta c)`, so each intermediate is sampled by
ordinary block Gibbs (`jgen.samplers.gibbs.gibbs_visible_step`). With
:math:`v_0 \sim p_A` (independent :math:`\mathrm{Bern}(\sigma(b_A))`) and
:math:`v_k` one Gibbs sweep at :math:`\beta_k` from :math:`v_{k-1}`, the weight

.. math:: \log w = \sum_{k=1}^{K}\big[\log p^*_{\beta_k}(v_{k-1}) - \log p^*_{\beta_{k-1}}(v_{k-1})\big]

has :math:`\mathbb E[w] = Z_B/Z_A` with
:math:`\log Z_A = \sum_i\operatorname{softplus}(b_{A,i}) + H\log 2`. Averaging the M
weights, :math:`\log\hat Z_B = \log Z_A + \log\frac1M\sum_m w_m` is unbiased for
:math:`Z_B` and hence, by Jensen, *underestimates* :math:`\log Z_B` on average (so it
overestimates test log-likelihoods; Salakhutdinov & Murray 2008, Sec. 4.1). A base
with :math:`b_A` fitted to the data's marginals (`base_visible_bias_from_data`) starts
closer to B and needs fewer temperatures.

References:
  Neal, R. M. (2001). Annealed importance sampling. Statistics and Computing 11.
    https://arxiv.org/abs/physics/9803008
  Salakhutdinov, R. & Murray, I. (2008). On the Quantitative Analysis of Deep Belief
    Networks. ICML. https://doi.org/10.1145/1390156.1390266
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jgen.models.ebm.rbm import check_params, free_energy
from jgen.samplers.gibbs import gibbs_visible_step
from jgen.typing import Array, Params, PRNGKey


def base_visible_bias_from_data(v_data: Array, *, pseudocount: float = 1.0) -> Array:
    r"""The base-rate model's visible biases :math:`b_A = \log\frac{m}{1-m}`, [V].

    m are the data's per-unit means smoothed with `pseudocount` (``(sum + a) / (N + 2a)``)
    so that units never on or never off get finite biases. Salakhutdinov & Murray (2008)
    use this maximum-likelihood base rate.
    """
    v = jnp.asarray(v_data)
    if v.ndim != 2:
        raise ValueError(
            f"base_visible_bias_from_data: v_data must be binary data [N, V]; received shape {v.shape}."
        )
    v = v.astype(jnp.result_type(float))
    m = (jnp.sum(v, axis=0) + pseudocount) / (v.shape[0] + 2.0 * pseudocount)
    return jnp.log(m) - jnp.log1p(-m)


def _tempered(params: Params, base_b: Array, beta: Array) -> Params:
    """The RBM whose visible marginal is p*_beta: (beta W, (1 - beta) b_A + beta b, beta c)."""
    return {
        "W": beta * params["W"],
        "b": (1.0 - beta) * base_b + beta * params["b"],
        "c": beta * params["c"],
    }


def _check_betas(betas, dtype) -> Array:
    betas = jnp.asarray(betas, dtype)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(
            "rbm_ais_log_partition: betas must be a 1-D schedule [K + 1] from 0 to 1 (K >= 1), "
            "e.g. jnp.linspace(0, 1, 1001) or jgen.metrics.ais.sigmoid_schedule(1000); "
            f"received shape {betas.shape}."
        )
    if not isinstance(betas, jax.core.Tracer):
        bv = np.asarray(betas)
        if bv[0] != 0 or bv[-1] != 1 or np.any(np.diff(bv) < 0):
            raise ValueError(
                "rbm_ais_log_partition: betas must be non-decreasing from betas[0] = 0 to "
                f"betas[-1] = 1; received {float(bv[0]):g} ... {float(bv[-1]):g} (non-decreasing: "
                f"{bool(np.all(np.diff(bv) >= 0))})."
            )
    return betas


def rbm_ais_log_partition(
    key: PRNGKey,
    params: Params,
    *,
    num_chains: int,
    betas: Array,
    base_visible_bias: Array | None = None,
) -> tuple[Array, dict]:
    r"""AIS estimate of :math:`\log Z` of a Bernoulli-Bernoulli RBM (Salakhutdinov & Murray 2008).

    The M chains run together through the K - 1 intermediate temperatures in one
    `lax.scan` (one weight update and one Gibbs sweep per temperature), then a last
    weight update to :math:`\beta_K = 1`.

    Args:
      key: a PRNG key.
      params: RBM params ``{"W": [V, H], "b": [V], "c": [H]}``.
      num_chains: M, independent AIS runs (a Python int).
      betas: the temperatures [K + 1], non-decreasing from 0 to 1 (Salakhutdinov &
        Murray use K ~ 15,000 for MNIST-sized RBMs; a few hundred suffice for tiny ones).
      base_visible_bias: :math:`b_A` [V] of the base-rate RBM; None for zeros (the
        uniform distribution). `base_visible_bias_from_data` gives the data's base rate.

    Returns:
      ``(log_z, info)``: the scalar estimate
      :math:`\log Z_A + \operatorname{logmeanexp}(\log w)`, and `info` a dict of
        - "log_z_stderr": delta-method standard error ``std(w) / (sqrt(M) mean(w))``
          (NaN for M = 1; understated when the weights are heavy-tailed);
        - "log_weights" [M] and "weights_ess", :math:`(\sum w)^2/\sum w^2` in [1, M];
        - "log_z_base": :math:`\log Z_A`;
        - "samples" [M, V]: the chains' final states, approximate draws from the RBM.

    Raises:
      ValueError: for bad params, `num_chains`, `betas` or `base_visible_bias`.

    Example:
      >>> log_z, info = rbm_ais_log_partition(key, params, num_chains=100,
      ...     betas=jnp.linspace(0.0, 1.0, 1001),
      ...     base_visible_bias=base_visible_bias_from_data(v_train))
      >>> test_ll = jnp.mean(-free_energy(params, v_test)) - log_z
    """
    num_visible, num_hidden = check_params("rbm_ais_log_partition", params)
    if not isinstance(num_chains, int) or isinstance(num_chains, bool) or num_chains < 1:
        raise ValueError(f"rbm_ais_log_partition: num_chains must be a Python int >= 1; received {num_chains!r}.")
    dtype = params["W"].dtype
    betas = _check_betas(betas, dtype)
    if base_visible_bias is None:
        base_b = jnp.zeros((num_visible,), dtype)
    else:
        base_b = jnp.asarray(base_visible_bias, dtype)
        if base_b.shape != (num_visible,):
            raise ValueError(
                f"rbm_ais_log_partition: base_visible_bias must have shape ({num_visible},) (one "
                f"bias per visible unit); received shape {base_b.shape}."
            )

    def log_p_star(beta, v):  # log p*_beta(v) = -F of the tempered RBM, [M]
        return -free_energy(_tempered(params, base_b, beta), v)

    key_init, key_gibbs = jax.random.split(key)
    p_base = jax.nn.sigmoid(base_b)
    v0 = jax.random.bernoulli(key_init, p_base[None], (num_chains, num_visible)).astype(dtype)

    def body(carry, k):
        v, log_w = carry
        log_w = log_w + log_p_star(betas[k], v) - log_p_star(betas[k - 1], v)
        v = gibbs_visible_step(jax.random.fold_in(key_gibbs, k), _tempered(params, base_b, betas[k]), v)
        return (v, log_w), None

    num_temps = betas.shape[0] - 1
    (v, log_w), _ = jax.lax.scan(body, (v0, jnp.zeros((num_chains,), dtype)), jnp.arange(1, num_temps))
    log_w = log_w + log_p_star(betas[-1], v) - log_p_star(betas[-2], v)

    log_z_base = jnp.sum(jax.nn.softplus(base_b)) + num_hidden * math.log(2.0)
    log_z = log_z_base + jax.nn.logsumexp(log_w) - math.log(num_chains)
    w = jnp.exp(log_w - jnp.max(log_w))
    stderr = (
        jnp.std(w, ddof=1) / (math.sqrt(num_chains) * jnp.mean(w))
        if num_chains > 1 else jnp.full((), jnp.nan, dtype)
    )
    info = {
        "log_z_stderr": stderr,
        "log_weights": log_w,
        "weights_ess": jnp.square(jnp.sum(w)) / jnp.sum(jnp.square(w)),
        "log_z_base": log_z_base,
        "samples": v,
    }
    return log_z, info
