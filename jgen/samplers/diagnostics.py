r"""MCMC diagnostics: the multi-chain effective sample size.

The effective sample size (ESS) of M chains of N draws is
:math:`MN/\tau` with the integrated autocorrelation time
:math:`\tau = 1 + 2\sum_{t\ge1}\rho_t`: the number of independent draws that
would estimate a mean as precisely. Autocorrelations are combined across chains
with the between-chain variance (so chains stuck in different places lower the
ESS) and the infinite sum is truncated with Geyer's initial monotone sequence
estimator, as in Stan and ArviZ (Vehtari et al. 2021, without rank
normalisation).

References:
  Geyer, C. J. (1992). Practical Markov Chain Monte Carlo. Statistical Science 7(4).
  Gelman, A. et al. (2013). Bayesian Data Analysis, 3rd ed., Sec. 11.5.
  Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. & Bürkner, P.-C. (2021).
    Rank-normalization, folding, and localization: an improved R-hat for assessing
    convergence of MCMC. Bayesian Analysis 16(2). https://arxiv.org/abs/1903.08008
"""

import math

import jax
import jax.numpy as jnp

from jgen.typing import Array


def _autocovariance(x: Array) -> Array:
    """Biased (divide by N) autocovariance along axis 0 for lags 0..N-1, via FFT."""
    n = x.shape[0]
    size = 1 << (2 * n - 1).bit_length()  # zero-pad to >= 2N: no circular wrap-around
    x = x - jnp.mean(x, axis=0, keepdims=True)
    f = jnp.fft.rfft(x, n=size, axis=0)
    acov = jnp.fft.irfft(f * jnp.conj(f), n=size, axis=0)[:n]
    return acov / n


def effective_sample_size(samples: Array) -> Array:
    r"""Multi-chain effective sample size of each dimension, with Geyer's truncation.

    With per-chain autocovariances :math:`\gamma_{t,m}`, within-chain variance
    :math:`W = \frac{N}{N-1}\overline{\gamma_0}`, and
    :math:`\hat{V}^+ = \frac{N-1}{N}W + \operatorname{Var}_m(\bar x_m)`, the combined
    autocorrelation is :math:`\hat\rho_t = 1 - (W - \overline{\gamma_t})/\hat V^+`.
    Pair sums :math:`P_k = \hat\rho_{2k} + \hat\rho_{2k+1}` are kept up to the first
    non-positive one (initial positive sequence) and made non-increasing (initial
    monotone sequence); then :math:`\tau = -1 + 2\sum_k P_k` and
    :math:`\mathrm{ESS} = MN/\tau`, capped at :math:`MN\log_{10}(MN)` as in Stan.

    For an AR(1) chain with coefficient :math:`\rho` the ESS tends to
    :math:`MN(1-\rho)/(1+\rho)`.

    Args:
      samples: floating array [N, M, ...]: N draws of M chains (the layout
        `hmc_sample` returns); N >= 4. For a single chain pass ``x[:, None]``.

    Returns:
      ESS per dimension, shape ``samples.shape[2:]``.

    Raises:
      ValueError: if `samples` has fewer than 2 axes or fewer than 4 draws.

    References:
      Geyer (1992); Vehtari et al. (2021), Sec. 3.2.
    """
    samples = jnp.asarray(samples)
    if samples.ndim < 2 or samples.shape[0] < 4:
        raise ValueError(
            "effective_sample_size: samples must have shape [N, M, ...] (N >= 4 draws "
            f"of M chains); received shape {samples.shape}. For one chain of shape "
            "[N, D] pass samples[:, None]."
        )
    if not jnp.issubdtype(samples.dtype, jnp.floating):
        samples = samples.astype(jnp.result_type(float))
    n, m = samples.shape[:2]
    acov = _autocovariance(samples)  # [N, M, ...]
    mean_acov = jnp.mean(acov, axis=1)  # [N, ...]
    within = mean_acov[0] * n / (n - 1)
    var_plus = within * (n - 1) / n
    if m > 1:
        var_plus = var_plus + jnp.var(jnp.mean(samples, axis=0), axis=0, ddof=1)
    rho = 1.0 - (within[None] - mean_acov) / var_plus[None]  # [N, ...]

    # Geyer: pair sums, truncated at the first non-positive one, then made monotone.
    num_pairs = n // 2
    pairs = rho[0 : 2 * num_pairs : 2] + rho[1 : 2 * num_pairs : 2]  # [N//2, ...]
    keep = jnp.cumprod(pairs > 0, axis=0).astype(pairs.dtype)
    pairs = jax.lax.cummin(jnp.where(keep > 0, pairs, jnp.inf), axis=0)
    tau = -1.0 + 2.0 * jnp.sum(keep * jnp.where(keep > 0, pairs, 0.0), axis=0)
    total = n * m
    tau = jnp.maximum(tau, 1.0 / math.log10(total))
    return total / tau
