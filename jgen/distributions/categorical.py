r"""Categorical log-probabilities and sampling, parameterised by unnormalised logits.

The likelihood of autoregressive models over discrete symbols (PixelCNN's 256-way
softmax over pixel values, character and token models). The trailing axis of
`logits` indexes the K categories; it is not an event axis. The event reduction
applies to the shape of the integer targets `x`.

References:
  van den Oord, A., Kalchbrenner, N. & Kavukcuoglu, K. (2016). Pixel Recurrent Neural
    Networks. ICML. https://arxiv.org/abs/1601.06759 (The 256-way softmax likelihood.)
"""

import jax
import jax.numpy as jnp
import numpy as np

from jgen.distributions._util import check_floating, sum_event


def _batch_shape(fn_name: str, x: jax.Array | None, logits: jax.Array) -> tuple[int, ...]:
    """Common shape of `x` and `logits[..., 0]`, with errors naming both shapes."""
    if logits.ndim == 0:
        raise ValueError(
            f"{fn_name}: logits must have a trailing category axis of size K; received "
            "a 0-d array. For x of shape [B, ...] pass logits of shape [B, ..., K]."
        )
    if x is None:
        return logits.shape[:-1]
    try:
        return np.broadcast_shapes(x.shape, logits.shape[:-1])
    except ValueError:
        raise ValueError(
            f"{fn_name}: x of shape {x.shape} does not broadcast against logits of shape "
            f"{logits.shape} with its trailing category axis removed "
            f"({logits.shape[:-1]}). Give logits the shape x.shape + (K,), e.g. "
            "[B, H, W, 256] for x of shape [B, H, W]; the last axis of logits is always "
            "the category axis."
        ) from None


def categorical_log_prob(
    x: jax.Array, logits: jax.Array, *, event_ndims: int | None = None
) -> jax.Array:
    r"""Log-probability of integer categories `x` under softmax(`logits`).

    .. math::
        \log p(x) = \sum_{i \in \text{event}} l_{i, x_i} - \operatorname{logsumexp}_k l_{i,k}.

    Args:
      x: integer array of shape [B, ...] with values in [0, K). Out-of-range values
        (negative or >= K) give NaN rather than a silently wrong number.
      logits: floating array of shape [..., K] whose leading shape broadcasts against
        `x`, e.g. [B, ..., K] or just [K] for one distribution shared by all elements.
        Entries of -inf mask categories out.
      event_ndims: None sums all axes but the first of the broadcast shape of `x` and
        `logits[..., 0]`; an int `k` sums the last `k` of those axes.

    Returns:
      Log-probabilities of shape [B] (or the leading axes kept by `event_ndims`).

    Raises:
      TypeError: if `x` is not an integer array or `logits` is not floating.
      ValueError: if `logits` has no category axis or the shapes do not broadcast.

    Example:
      >>> x = jnp.zeros((8, 28, 28), jnp.int32)
      >>> categorical_log_prob(x, jnp.zeros((8, 28, 28, 256))).shape
      (8,)
    """
    fn = "categorical_log_prob"
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(
            f"{fn}: x must hold integer category indices; received dtype {x.dtype} "
            f"(shape {x.shape}). Cast class labels or pixel values with "
            "x.astype(jnp.int32); for one-hot targets use jnp.argmax(x, axis=-1)."
        )
    check_floating(fn, "logits", logits)
    logits = jnp.asarray(logits)
    shape = _batch_shape(fn, x, logits)
    num_categories = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    log_probs = jnp.broadcast_to(log_probs, shape + (num_categories,))
    x = jnp.broadcast_to(x, shape)
    index = jnp.clip(x, 0, num_categories - 1)[..., None]
    picked = jnp.take_along_axis(log_probs, index, axis=-1)[..., 0]
    # Out-of-range labels are NaN, not the clamped (or, for -1, wrapped) category.
    valid = (x >= 0) & (x < num_categories)
    return sum_event(jnp.where(valid, picked, jnp.nan), event_ndims)


def categorical_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Samples category indices from softmax(`logits`) over the trailing axis.

    Uses the Gumbel-max trick via `jax.random.categorical`; categories with logit -inf
    are never drawn.

    Args:
      key: a PRNG key.
      logits: floating array of shape [..., K].

    Returns:
      int32 array of shape `logits.shape[:-1]` with values in [0, K).

    Raises:
      TypeError: if `logits` is not floating.
      ValueError: if `logits` is 0-d.
    """
    fn = "categorical_sample"
    check_floating(fn, "logits", logits)
    logits = jnp.asarray(logits)
    _batch_shape(fn, None, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
