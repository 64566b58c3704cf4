"""Diagonal Gaussian log-densities, reparameterised sampling, KL and entropy.

These are the Gaussian terms of VAEs (encoder posterior, prior, decoder likelihood)
and of flows' base distributions. Every density is parameterised by its mean and the
log of its standard deviation, which keeps the scale positive without a constraint.

References:
  Kingma, D. P. & Welling, M. (2014). Auto-Encoding Variational Bayes. ICLR.
    https://arxiv.org/abs/1312.6114 (Appendix B: the Gaussian KL.)
"""

import math

import jax
import jax.numpy as jnp

from jgen.distributions._util import broadcast_params, check_floating, sum_event

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_HALF_LOG_2PIE = 0.5 * math.log(2.0 * math.pi * math.e)


def diag_gaussian_log_prob(
    x: jax.Array,
    mean: jax.Array,
    log_std: jax.Array,
    *,
    event_ndims: int | None = None,
) -> jax.Array:
    r"""Log-density of a Gaussian with diagonal covariance.

    .. math::
        \log p(x) = \sum_{i \in \text{event}} -\tfrac12 z_i^2 - \log\sigma_i
                    - \tfrac12\log 2\pi,\qquad z_i = (x_i - \mu_i)\, e^{-\log\sigma_i}.

    Args:
      x: floating array of shape [B, ...]; the leading axis is the batch axis.
      mean: floating array broadcastable against `x`.
      log_std: floating array broadcastable against `x`; log of the standard deviation.
      event_ndims: None sums all axes but the first; an int `k` sums the last `k`
        axes only (see `sum_event`).

    Returns:
      Log-densities of shape [B] (or the leading axes kept by `event_ndims`).

    Raises:
      TypeError: if `x`, `mean` or `log_std` is not floating.
      ValueError: if the shapes do not broadcast.

    Example:
      >>> x = jnp.zeros((8, 784))
      >>> diag_gaussian_log_prob(x, jnp.zeros(784), jnp.zeros(784)).shape
      (8,)
    """
    fn = "diag_gaussian_log_prob"
    for name, value in (("x", x), ("mean", mean), ("log_std", log_std)):
        check_floating(fn, name, value)
    x, mean, log_std = broadcast_params(fn, x=x, mean=mean, log_std=log_std)
    z = (x - mean) * jnp.exp(-log_std)
    return sum_event(-0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI, event_ndims)


def standard_normal_log_prob(x: jax.Array, *, event_ndims: int | None = None) -> jax.Array:
    r"""Log-density of the standard normal, :math:`\sum_i -\tfrac12 x_i^2 - \tfrac12\log 2\pi`.

    Args:
      x: floating array of shape [B, ...]; the leading axis is the batch axis.
      event_ndims: None sums all axes but the first; an int `k` sums the last `k` axes.

    Returns:
      Log-densities of shape [B] (or the leading axes kept by `event_ndims`).

    Raises:
      TypeError: if `x` is not floating.
    """
    check_floating("standard_normal_log_prob", "x", x)
    x = jnp.asarray(x)
    return sum_event(-0.5 * jnp.square(x) - _HALF_LOG_2PI, event_ndims)


def diag_gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    r"""Reparameterised sample :math:`\mu + e^{\log\sigma}\,\epsilon`, :math:`\epsilon\sim N(0, I)`.

    Gradients flow to `mean` and `log_std` (the reparameterisation trick of
    Kingma & Welling, 2014).

    Args:
      key: a PRNG key.
      mean: floating array.
      log_std: floating array broadcastable against `mean`.

    Returns:
      One sample with the broadcast shape and dtype of `mean` and `log_std`.

    Raises:
      TypeError: if `mean` or `log_std` is not floating.
      ValueError: if the shapes do not broadcast.
    """
    fn = "diag_gaussian_sample"
    check_floating(fn, "mean", mean)
    check_floating(fn, "log_std", log_std)
    mean, log_std = broadcast_params(fn, mean=mean, log_std=log_std)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(log_std) * eps


def diag_gaussian_kl(
    mean: jax.Array,
    log_std: jax.Array,
    mean2: jax.Array = 0.0,
    log_std2: jax.Array = 0.0,
    *,
    event_ndims: int | None = None,
) -> jax.Array:
    r"""Closed-form :math:`\mathrm{KL}(N(\mu_1, \sigma_1^2) \,\|\, N(\mu_2, \sigma_2^2))`, diagonal.

    Per element, with :math:`d = \log\sigma_1 - \log\sigma_2`,

    .. math::
        \mathrm{KL} = \tfrac12\Big(\frac{\sigma_1^2 + (\mu_1-\mu_2)^2}{\sigma_2^2} - 1\Big) - d
                    = \tfrac12\Big(\operatorname{expm1}(2d) - 2d
                      + \big((\mu_1 - \mu_2)\,e^{-\log\sigma_2}\big)^2\Big),

    and the second form (used here) is accurate when the two scales are close and is
    exactly 0 when the distributions are equal. The defaults give the VAE prior
    :math:`N(0, I)`.

    Args:
      mean: floating array of shape [B, ...]; mean of the first distribution.
      log_std: floating array; log standard deviation of the first distribution.
      mean2: mean of the second distribution (default 0).
      log_std2: log standard deviation of the second distribution (default 0).
      event_ndims: None sums all axes but the first of the broadcast shape; an int `k`
        sums the last `k` axes.

    Returns:
      KL divergences of shape [B] (or the leading axes kept by `event_ndims`).

    Raises:
      TypeError: if any argument is not floating.
      ValueError: if the shapes do not broadcast.

    References:
      Kingma, D. P. & Welling, M. (2014). Auto-Encoding Variational Bayes. ICLR,
        Appendix B.
    """
    fn = "diag_gaussian_kl"
    args = {"mean": mean, "log_std": log_std, "mean2": mean2, "log_std2": log_std2}
    for name, value in args.items():
        check_floating(fn, name, value)
    mean, log_std, mean2, log_std2 = broadcast_params(fn, **args)
    d = log_std - log_std2
    z = (mean - mean2) * jnp.exp(-log_std2)
    return sum_event(0.5 * (jnp.expm1(2.0 * d) - 2.0 * d + jnp.square(z)), event_ndims)


def diag_gaussian_entropy(log_std: jax.Array, *, event_ndims: int | None = None) -> jax.Array:
    r"""Differential entropy :math:`\sum_i \tfrac12\log(2\pi e) + \log\sigma_i` (in nats).

    Args:
      log_std: floating array of shape [B, ...]; log standard deviations.
      event_ndims: None sums all axes but the first; an int `k` sums the last `k` axes.

    Returns:
      Entropies of shape [B] (or the leading axes kept by `event_ndims`).

    Raises:
      TypeError: if `log_std` is not floating.
    """
    check_floating("diag_gaussian_entropy", "log_std", log_std)
    log_std = jnp.asarray(log_std)
    return sum_event(log_std + _HALF_LOG_2PIE, event_ndims)
