r"""Logistic log-densities: continuous, discretised, and the discretised mixture.

The discretised logistic mixture is the pixel likelihood of PixelCNN++ and of most
later image models that report bits/dim on 8-bit data. Data live on the grid of
`num_bins` equally spaced bin centres in [-1, 1],
:math:`c_j = -1 + 2j/(n-1)`, :math:`j = 0, \dots, n-1`, and bin :math:`j` is the
interval :math:`[c_j - h, c_j + h]` with half-width :math:`h = 1/(n-1)`, except that
the first bin extends to :math:`-\infty` and the last to :math:`+\infty`, so the
probabilities of the `num_bins` values sum to exactly 1.

A bin's log-probability is the log of a logistic CDF difference. With
:math:`a = (x - \mu + h)/s` and :math:`b = (x - \mu - h)/s` it is computed from the
identity

.. math::
    \sigma(a) - \sigma(b) = \sigma(a)\,\sigma(-b)\,\big(1 - e^{-(a-b)}\big),\qquad
    a - b = 2h/s,

entirely in log space (`log_sigmoid` and a stable :math:`\log(1-e^{-\delta})`). This
is exact for every :math:`x, \mu, s`, including far tails where both CDFs round to 0
or 1; it stands in for PixelCNN++'s fallback (the log-density at the bin centre plus
:math:`\log 2h`, used when the CDF difference falls below 1e-5), which is this
expression's limit as :math:`2h/s \to 0` and is not needed as a separate branch.

Channel-autoregressive coupling of RGB means (PixelCNN++ Sec. 2.2) is not here: it
only changes the per-channel `means` passed to
`discretized_logistic_mixture_log_prob`, which a wrapper can compute and pass in.

References:
  Salimans, T., Karpathy, A., Chen, X. & Kingma, D. P. (2017). PixelCNN++: Improving
    the PixelCNN with Discretized Logistic Mixture Likelihood and Other
    Modifications. ICLR. https://arxiv.org/abs/1701.05517
  Maechler, M. (2012). Accurately Computing log(1 - exp(-|a|)). R package Rmpfr
    vignette. (The two-branch evaluation of log(1 - e^{-delta}).)
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from jgen.distributions._util import (
    broadcast_params,
    check_floating,
    check_num_bins,
    sum_event,
)

_LOG_LN2 = math.log(math.log(2.0))


def logistic_log_prob(
    x: jax.Array,
    mean: jax.Array,
    log_scale: jax.Array,
    *,
    event_ndims: int | None = None,
) -> jax.Array:
    r"""Log-density of the (continuous) logistic distribution.

    .. math::
        \log p(x) = \sum_{i \in \text{event}} -z_i - 2\,\operatorname{softplus}(-z_i)
                    - \log s_i,\qquad z_i = (x_i - \mu_i)/s_i.

    Args:
      x: floating array of shape [B, ...]; the leading axis is the batch axis.
      mean: floating array broadcastable against `x`; the location.
      log_scale: floating array broadcastable against `x`; log of the scale `s`.
      event_ndims: None sums all axes but the first; an int `k` sums the last `k` axes.

    Returns:
      Log-densities of shape [B] (or the leading axes kept by `event_ndims`).

    Raises:
      TypeError: if an argument is not floating.
      ValueError: if the shapes do not broadcast.
    """
    fn = "logistic_log_prob"
    for name, value in (("x", x), ("mean", mean), ("log_scale", log_scale)):
        check_floating(fn, name, value)
    x, mean, log_scale = broadcast_params(fn, x=x, mean=mean, log_scale=log_scale)
    z = (x - mean) * jnp.exp(-log_scale)
    return sum_event(-z - 2.0 * jax.nn.softplus(-z) - log_scale, event_ndims)


def _log1mexp_exp(log_delta: jax.Array) -> jax.Array:
    r"""Computes :math:`\log(1 - e^{-\delta})` from :math:`\log\delta`, for :math:`\delta > 0`.

    Maechler's switch (log(-expm1(-d)) below ln 2, log1p(-exp(-d)) above), plus the
    series :math:`\log\delta - \delta/2` where :math:`\delta` underflows. Every branch
    is fed a safe input so gradients stay finite under `jnp.where`.
    """
    delta = jnp.exp(log_delta)
    tiny = log_delta < -20.0  # delta < 2e-9: the series error delta^2/24 is < 1e-18
    big = log_delta >= _LOG_LN2
    d_mid = jnp.where(tiny | big, 0.5, delta)
    # For delta > e^4 the result is within 1e-23 of 0; cap it so exp(log_delta) cannot
    # overflow into an inf * 0 gradient.
    d_big = jnp.exp(jnp.where(big, jnp.minimum(log_delta, 4.0), 0.0))
    mid = jnp.log(-jnp.expm1(-d_mid))
    large = jnp.log1p(-jnp.exp(-d_big))
    return jnp.where(tiny, log_delta - 0.5 * delta, jnp.where(big, large, mid))


def _discretized_logistic_elementwise(
    x: jax.Array, mean: jax.Array, log_scale: jax.Array, num_bins: int
) -> jax.Array:
    """Per-element log-probability of x's bin; inputs already broadcast together."""
    half = 1.0 / (num_bins - 1)
    inv_scale = jnp.exp(-log_scale)
    centred = x - mean
    upper = (centred + half) * inv_scale  # a: standardised right edge of the bin
    lower = (centred - half) * inv_scale  # b: standardised left edge of the bin
    first = x < -1.0 + half  # leftmost bin: (-inf, c_0 + h]
    last = x > 1.0 - half  # rightmost bin: [c_{n-1} - h, +inf)
    log_cdf_upper = jnp.where(last, 0.0, jax.nn.log_sigmoid(upper))
    log_sf_lower = jnp.where(first, 0.0, jax.nn.log_sigmoid(-lower))
    log_width = _log1mexp_exp(math.log(2.0 * half) - log_scale)
    return log_cdf_upper + log_sf_lower + jnp.where(first | last, 0.0, log_width)


def discretized_logistic_log_prob(
    x: jax.Array,
    mean: jax.Array,
    log_scale: jax.Array,
    *,
    num_bins: int = 256,
    event_ndims: int | None = None,
) -> jax.Array:
    r"""Log-probability of `x` under a logistic discretised to `num_bins` bins in [-1, 1].

    .. math::
        \log P(x) = \sum_{i \in \text{event}} \log\Big(F\big(\tfrac{x_i + h - \mu_i}{s_i}\big)
                    - F\big(\tfrac{x_i - h - \mu_i}{s_i}\big)\Big),

    with :math:`F` the logistic CDF, :math:`h = 1/(n-1)`, :math:`F(\cdot) = 1` at the
    top edge of the last bin and :math:`0` at the bottom edge of the first (see the
    module docstring for the bins and the stable evaluation).

    Args:
      x: floating array of shape [B, ...] with values on the bin centres
        :math:`-1 + 2j/(n-1)`, e.g. 8-bit pixels mapped by `p / 127.5 - 1`. Values off
        the grid are scored as the bin of width 2h centred on them (not checked).
      mean: floating array broadcastable against `x`.
      log_scale: floating array broadcastable against `x`. It is not clamped;
        PixelCNN++ clamps it below at -7 in the network head, which is where such a
        choice belongs.
      num_bins: static number of values, at least 2 (256 for 8-bit data).
      event_ndims: None sums all axes but the first; an int `k` sums the last `k` axes.

    Returns:
      Log-probabilities of shape [B] (or the leading axes kept by `event_ndims`).

    Raises:
      TypeError: if an argument is not floating or `num_bins` is not an int.
      ValueError: if the shapes do not broadcast or `num_bins < 2`.

    References:
      Salimans et al. (2017). PixelCNN++. ICLR, Sec. 2.1.
    """
    fn = "discretized_logistic_log_prob"
    check_num_bins(fn, num_bins)
    for name, value in (("x", x), ("mean", mean), ("log_scale", log_scale)):
        check_floating(fn, name, value)
    x, mean, log_scale = broadcast_params(fn, x=x, mean=mean, log_scale=log_scale)
    log_p = _discretized_logistic_elementwise(x, mean, log_scale, num_bins)
    return sum_event(log_p, event_ndims)


def _mixture_shapes(
    fn_name: str, x_shape: tuple[int, ...] | None, **params: jax.Array
) -> tuple[int, ...]:
    """Broadcast shape [..., K] of the mixture parameters and (optionally) x[..., None]."""
    shapes = {name: tuple(jnp.shape(p)) for name, p in params.items()}
    received = ", ".join(f"{n} of shape {s}" for n, s in shapes.items())
    if any(len(s) == 0 for s in shapes.values()):
        raise ValueError(
            f"{fn_name}: mixture parameters need a trailing component axis of size K; "
            f"received {received}. For x of shape [B, H, W, C] and K components pass "
            "parameters of shape [B, H, W, C, K]."
        )
    try:
        shape = np.broadcast_shapes(*shapes.values())
    except ValueError:
        raise ValueError(
            f"{fn_name}: the mixture parameters do not broadcast together: {received}. "
            "They must agree on the trailing component axis K and broadcast on the rest."
        ) from None
    if x_shape is None:
        return shape
    try:
        batch = np.broadcast_shapes(x_shape, shape[:-1])
    except ValueError:
        raise ValueError(
            f"{fn_name}: x of shape {x_shape} does not broadcast against the mixture "
            f"parameters' shape {shape} with the trailing component axis removed "
            f"({shape[:-1]}). Give the parameters the shape x.shape + (K,); the last "
            "axis of the parameters is always the component axis."
        ) from None
    return batch + shape[-1:]


def discretized_logistic_mixture_log_prob(
    x: jax.Array,
    logit_probs: jax.Array,
    means: jax.Array,
    log_scales: jax.Array,
    *,
    num_bins: int = 256,
    event_ndims: int | None = None,
) -> jax.Array:
    r"""Log-probability under an elementwise mixture of K discretised logistics.

    Each element of `x` has its own K-component mixture, independent of the others:

    .. math::
        \log P(x) = \sum_{i \in \text{event}} \operatorname{logsumexp}_k
            \big(\log\pi_{ik} + \log P_{\text{disc}}(x_i \mid \mu_{ik}, s_{ik})\big),
        \qquad \log\pi_{i\cdot} = \operatorname{log\_softmax}(\text{logit\_probs}_{i\cdot}).

    Args:
      x: floating array of shape [B, ...] on the bin grid in [-1, 1] (see
        `discretized_logistic_log_prob`).
      logit_probs: floating array of shape [..., K]; unnormalised mixture logits. The
        trailing axis indexes components and is not an event axis; the leading shape
        broadcasts against `x`.
      means: floating array of shape [..., K]; component locations.
      log_scales: floating array of shape [..., K]; log of component scales.
      num_bins: static number of values, at least 2 (256 for 8-bit data).
      event_ndims: None sums all axes but the first of the broadcast shape of `x` and
        the parameters without their K axis; an int `k` sums the last `k` of those.

    Returns:
      Log-probabilities of shape [B] (or the leading axes kept by `event_ndims`).

    Raises:
      TypeError: if an argument is not floating or `num_bins` is not an int.
      ValueError: if the shapes do not broadcast or `num_bins < 2`.

    Example:
      >>> x = jnp.zeros((8, 32, 32, 3))
      >>> params = jnp.zeros((8, 32, 32, 3, 10))
      >>> discretized_logistic_mixture_log_prob(x, params, params, params).shape
      (8,)

    References:
      Salimans et al. (2017). PixelCNN++. ICLR, Sec. 2.1, Eq. (2).
    """
    fn = "discretized_logistic_mixture_log_prob"
    check_num_bins(fn, num_bins)
    named = {"x": x, "logit_probs": logit_probs, "means": means, "log_scales": log_scales}
    for name, value in named.items():
        check_floating(fn, name, value)
    del named["x"]
    shape = _mixture_shapes(fn, tuple(jnp.shape(x)), **named)
    dtype = jnp.result_type(x, logit_probs, means, log_scales)
    x_k, logit_probs, means, log_scales = (
        jnp.broadcast_to(jnp.asarray(a, dtype), shape)
        for a in (jnp.expand_dims(jnp.asarray(x), -1), logit_probs, means, log_scales)
    )
    log_mix = jax.nn.log_softmax(logit_probs, axis=-1)
    log_comp = _discretized_logistic_elementwise(x_k, means, log_scales, num_bins)
    log_p = jax.nn.logsumexp(log_mix + log_comp, axis=-1)
    return sum_event(log_p, event_ndims)


def discretized_logistic_mixture_sample(
    key: jax.Array,
    logit_probs: jax.Array,
    means: jax.Array,
    log_scales: jax.Array,
    *,
    num_bins: int = 256,
) -> jax.Array:
    r"""Samples the elementwise discretised logistic mixture onto the bin grid.

    Picks a component :math:`k \sim \mathrm{softmax}(\text{logit\_probs})`, draws
    :math:`y = \mu_k + s_k u` with standard logistic :math:`u`, and returns the centre
    of the bin containing :math:`y`: :math:`-1 + 2j/(n-1)` with
    :math:`j = \mathrm{clip}(\mathrm{round}((y + 1)(n-1)/2), 0, n-1)`. Rounding to the
    nearest centre and clipping to the end bins is exactly the bin assignment of
    `discretized_logistic_mixture_log_prob`, so samples follow its pmf exactly.

    Args:
      key: a PRNG key.
      logit_probs: floating array of shape [..., K]; unnormalised mixture logits.
      means: floating array of shape [..., K].
      log_scales: floating array of shape [..., K].
      num_bins: static number of values, at least 2.

    Returns:
      Floating array of the parameters' broadcast shape without the K axis, with
      values on the bin grid in [-1, 1].

    Raises:
      TypeError: if an argument is not floating or `num_bins` is not an int.
      ValueError: if the shapes do not broadcast or `num_bins < 2`.

    References:
      Salimans et al. (2017). PixelCNN++. ICLR.
    """
    fn = "discretized_logistic_mixture_sample"
    check_num_bins(fn, num_bins)
    named = {"logit_probs": logit_probs, "means": means, "log_scales": log_scales}
    for name, value in named.items():
        check_floating(fn, name, value)
    shape = _mixture_shapes(fn, None, **named)
    logit_probs, means, log_scales = broadcast_params(fn, **named)
    key_component, key_noise = jax.random.split(key)
    k = jax.random.categorical(key_component, logit_probs, axis=-1)[..., None]
    mean = jnp.take_along_axis(means, k, axis=-1)[..., 0]
    log_scale = jnp.take_along_axis(log_scales, k, axis=-1)[..., 0]
    y = mean + jnp.exp(log_scale) * jax.random.logistic(key_noise, shape[:-1], means.dtype)
    j = jnp.clip(jnp.round((y + 1.0) * (0.5 * (num_bins - 1))), 0, num_bins - 1)
    return j * (2.0 / (num_bins - 1)) - 1.0
