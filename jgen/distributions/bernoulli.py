r"""Bernoulli log-probabilities and sampling, parameterised by logits.

The decoder likelihood of binarised-image VAEs and autoregressive models (binarised
MNIST). Working with logits rather than probabilities keeps every term finite:
:math:`\log\sigma(l)` and :math:`\log\sigma(-l) = \log(1 - \sigma(l))` are
computed with `jax.nn.log_sigmoid`, never as the log of a rounded probability.

References:
  Loaiza-Ganem, G. & Cunningham, J. P. (2019). The continuous Bernoulli: fixing a
    pervasive error in variational autoencoders. NeurIPS.
    https://arxiv.org/abs/1907.06845
"""

import jax
import jax.numpy as jnp

from jgen.distributions._util import broadcast_params, check_floating, sum_event

_CAST_HINT = (
    " Binary data stored as bool/uint8 (e.g. binarised MNIST) should be cast with "
    "x.astype(logits.dtype); check that its values are 0/1, not 0/255."
)


def bernoulli_logits_log_prob(
    x: jax.Array, logits: jax.Array, *, event_ndims: int | None = None
) -> jax.Array:
    r"""Log-probability of `x` under independent Bernoullis with the given logits.

    .. math::
        \log p(x) = \sum_{i \in \text{event}} x_i \log\sigma(l_i) + (1 - x_i)\log\sigma(-l_i).

    For :math:`x \in \{0, 1\}` this is the log-pmf. Values strictly inside [0, 1]
    (e.g. grey-level pixels) are accepted too, but the result is then the negative
    binary cross-entropy :math:`-H(x, \sigma(l))`, not a normalised log-density: the
    continuous Bernoulli of Loaiza-Ganem & Cunningham (2019) would add a log
    normaliser. Values are not checked (that would need a host sync under `jit`).

    Args:
      x: floating array of shape [B, ...] with values in [0, 1] (usually {0, 1}).
      logits: floating array broadcastable against `x`.
      event_ndims: None sums all axes but the first; an int `k` sums the last `k` axes.

    Returns:
      Log-probabilities of shape [B] (or the leading axes kept by `event_ndims`).

    Raises:
      TypeError: if `x` or `logits` is not floating (integer/bool `x` included).
      ValueError: if the shapes do not broadcast.

    Example:
      >>> x = jnp.ones((8, 784))
      >>> bernoulli_logits_log_prob(x, jnp.zeros((8, 784))).shape
      (8,)
    """
    fn = "bernoulli_logits_log_prob"
    check_floating(fn, "x", x, _CAST_HINT)
    check_floating(fn, "logits", logits)
    x, logits = broadcast_params(fn, x=x, logits=logits)
    log_p = x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)
    return sum_event(log_p, event_ndims)


def bernoulli_logits_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    r"""Samples :math:`x \sim \mathrm{Bernoulli}(\sigma(l))` as 0.0/1.0 floats.

    Uses :math:`x = \mathbb{1}[u < l]` with standard logistic noise :math:`u`, since
    :math:`P(u < l) = \sigma(l)`; this never forms :math:`\sigma(l)`, so very negative
    or positive logits behave exactly. Not differentiable (the gradient is zero).

    Args:
      key: a PRNG key.
      logits: floating array of any shape.

    Returns:
      Samples with the shape and dtype of `logits`, values in {0., 1.}.

    Raises:
      TypeError: if `logits` is not floating.
    """
    check_floating("bernoulli_logits_sample", "logits", logits)
    logits = jnp.asarray(logits)
    u = jax.random.logistic(key, logits.shape, logits.dtype)
    return (u < logits).astype(logits.dtype)
