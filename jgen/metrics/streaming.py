r"""Streaming accumulators for evaluation over many batches: feature moments (for FID)
and class-probability sums (for the Inception Score), as pure init / update / merge /
finalize functions over NamedTuple states.

**Moments.** `MomentState` holds the count :math:`n`, a shift :math:`s` (the first
row seen), the running mean of the shifted features :math:`\bar c = \mu - s` and the
centred sum of outer products :math:`M_2 = \sum_i (f_i - \mu)(f_i - \mu)^\top`, never
the raw sums :math:`\sum f` and :math:`\sum f f^\top`: recovering the covariance from
raw sums, :math:`(\sum f f^\top - n \mu \mu^\top)/(n-1)`, cancels catastrophically in
float32 when features sit far from 0 relative to their spread. Working with
:math:`f - s` (the "shifted data" algorithm) keeps every running quantity of the size
of the spread, so the mean is not rounded at the scale of the offset between updates.
Two parts (a running state and a batch, or two states) merge by the pairwise update of
Chan, Golub & LeVeque (1979),

.. math::
    n = n_a + n_b, \quad \delta = \bar c_b - \bar c_a, \quad
    \bar c = \bar c_a + \delta \frac{n_b}{n}, \quad
    M_2 = M_{2,a} + M_{2,b} + \delta \delta^\top \frac{n_a n_b}{n},

with both means taken relative to the same shift (a state with another shift is
re-expressed first: :math:`\bar c_b + (s_b - s_a)`, a difference of two data points).
The state's dtype (float32 by default, float64 under x64) is the accumulation dtype.
`moments_finalize` returns :math:`\mu = s + \bar c` and the unbiased covariance
:math:`M_2 / (n - 1)`, the convention of ``np.cov`` and of the reference FID code (see
`jgen.metrics.frechet`).

**Class probabilities.** For the Inception Score, `ClassProbState` accumulates
:math:`n`, :math:`\sum_x p(y \mid x)` [K] and :math:`\sum_x \sum_y p \log p` (a scalar),
which is enough because

.. math::
    \log \mathrm{IS} = \frac1n \sum_x \sum_y p(y \mid x) \log p(y \mid x)
                       - \sum_y \bar p_y \log \bar p_y,
    \qquad \bar p = \frac1n \sum_x p(\cdot \mid x),

(the cross term :math:`\frac1n \sum_x \sum_y p \log \bar p_y = \sum_y \bar p_y \log
\bar p_y`). This is the score of the whole stream as one split; for the reference's
10-split mean and std keep one state per split.

**Sharding.** The updates are ordinary reductions over the batch axis, so they run
unchanged under `jax.jit` with the batch sharded over a device mesh (the compiler
inserts the cross-device sums) and the state replicated; the library does not decide
the parallelism. An optional `mask` [B] drops padded rows, so a final partial batch
can be padded up to a multiple of the number of devices. Place the initial state on
the mesh as well (``jax.device_put(moments_init(d), replicated(mesh))``), so that the
first and later calls see the same input types and the update traces once.

References:
  Chan, T. F., Golub, G. H. & LeVeque, R. J. (1979). Updating Formulae and a Pairwise
    Algorithm for Computing Sample Variances. Stanford CS Tech. Report STAN-CS-79-773
    (the pairwise merge; its covariance form is the same algebra).
  Heusel, M. et al. (2017). GANs Trained by a Two Time-Scale Update Rule Converge to
    a Local Nash Equilibrium. NeurIPS (FID). https://arxiv.org/abs/1706.08500
  Salimans, T. et al. (2016). Improved Techniques for Training GANs. NeurIPS (IS).
    https://arxiv.org/abs/1606.03498
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy


class MomentState(NamedTuple):
    """Running first and second moments of D-dimensional features.

    Attributes:
      count: int32 scalar, number of rows seen.
      shift: [D] the first row seen (0 while empty); a reference point of the data's
        size, subtracted before accumulating.
      shifted_mean: [D] running mean of (f_i - shift); the mean is shift + shifted_mean.
      m2: [D, D] centred sum of outer products, sum_i (f_i - mean)(f_i - mean)^T.
    """

    count: jax.Array
    shift: jax.Array
    shifted_mean: jax.Array
    m2: jax.Array


class ClassProbState(NamedTuple):
    """Running sums for the Inception Score over K classes.

    Attributes:
      count: int32 scalar, number of rows seen.
      sum_p: [K] sum over rows of p(y | x).
      sum_plogp: scalar, sum over rows and classes of p log p (0 log 0 = 0).
    """

    count: jax.Array
    sum_p: jax.Array
    sum_plogp: jax.Array


def _check_dim(fn: str, dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"{fn}: the dimension must be a positive int; received {dim!r}.")
    return int(dim)


def _check_batch(fn: str, x, dim: int, what: str, state_name: str, mask):
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"{fn}: the batch must have shape [batch, {what}]; received shape {x.shape}. "
            "Flatten per-example features first, e.g. x.reshape(len(x), -1)."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: the batch must be floating; received dtype {x.dtype}.")
    if x.shape[1] != dim:
        raise ValueError(
            f"{fn}: the batch has {what} {x.shape[1]} (shape {x.shape}) but the state was "
            f"initialised with {what} {dim} ({state_name}); use the same feature "
            "extractor for every batch, or a fresh state."
        )
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != (x.shape[0],):
            raise ValueError(
                f"{fn}: mask must have shape [batch] = ({x.shape[0]},) to match the batch of "
                f"shape {x.shape}; received shape {mask.shape}."
            )
        mask = mask.astype(bool)
    return x, mask


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


# ----------------------------------------------------------------------------- moments


def moments_init(dim: int, dtype=jnp.float32) -> MomentState:
    """An empty `MomentState` for features of dimension `dim`, accumulating in `dtype`."""
    dim = _check_dim("moments_init", dim)
    return MomentState(
        count=jnp.zeros((), jnp.int32),
        shift=jnp.zeros((dim,), dtype),
        shifted_mean=jnp.zeros((dim,), dtype),
        m2=jnp.zeros((dim, dim), dtype),
    )


def _combine(state: MomentState, count_b, mean_b, m2_b) -> MomentState:
    """Chan et al.'s merge of `state` with a part of `count_b` rows whose mean, relative
    to `state.shift`, is `mean_b` and whose centred sum of products is `m2_b`."""
    dtype = state.m2.dtype
    count = state.count + count_b
    n = jnp.maximum(count, 1).astype(dtype)  # guards 0 / 0 when both parts are empty
    na, nb = state.count.astype(dtype), jnp.asarray(count_b).astype(dtype)
    delta = mean_b - state.shifted_mean
    shifted_mean = state.shifted_mean + delta * (nb / n)
    m2 = state.m2 + m2_b + jnp.outer(delta, delta) * (na * nb / n)
    return MomentState(count, state.shift, shifted_mean, m2)


def moments_update(
    state: MomentState, features: jax.Array, *, mask: jax.Array | None = None
) -> MomentState:
    r"""Adds a batch of features [B, D] to the running moments.

    An empty state first takes the batch's first kept row as its shift :math:`s`. The
    batch's shifted mean :math:`\bar c_b = \frac{1}{n_b} \sum_i (f_i - s)` and centred
    products :math:`M_{2,b} = \sum_i (f_i - s - \bar c_b)(f_i - s - \bar c_b)^\top`
    are then merged in (module docstring). Works under `jax.jit` with `features` (and
    `mask`) sharded along the batch axis: the sums over the batch become cross-device
    reductions.

    Args:
      state: a `MomentState` (from `moments_init`).
      features: floating [B, D]; cast to the state's dtype.
      mask: optional bool [B]; rows where it is False are ignored (padding).

    Returns:
      The updated `MomentState` (same dtypes and shapes, so a jitted update traces
      once).

    Raises:
      ValueError / TypeError: for a batch that is not floating [B, D] with the
        state's D, or a mask that is not [B].
    """
    fn = "moments_update"
    x, mask = _check_batch(fn, features, state.shift.shape[0], "feature dimension",
                           f"shift of shape {state.shift.shape}", mask)
    dtype = state.m2.dtype
    x = x.astype(dtype)
    w = jnp.ones((x.shape[0],), dtype) if mask is None else mask.astype(dtype)
    first = x[jnp.argmax(w)] if x.shape[0] else state.shift
    state = state._replace(shift=jnp.where(state.count > 0, state.shift, first))
    c = x - state.shift[None, :]
    count_b = jnp.sum(w)
    mean_b = jnp.sum(c * w[:, None], axis=0) / jnp.maximum(count_b, 1.0)
    c = (c - mean_b[None, :]) * w[:, None]
    m2_b = jnp.matmul(c.T, c, precision=jax.lax.Precision.HIGHEST)  # no TF32 on GPU
    return _combine(state, count_b.astype(jnp.int32), mean_b, m2_b)


def moments_merge(a: MomentState, b: MomentState) -> MomentState:
    """Merges two `MomentState`s (e.g. from different hosts or data shards) into the
    state of the union of their rows; associative and commutative up to round-off.
    The result keeps a's shift (b's if a is empty)."""
    if a.shift.shape != b.shift.shape:
        raise ValueError(
            f"moments_merge: the states have different feature dimensions: a.shift has "
            f"shape {a.shift.shape} and b.shift has shape {b.shift.shape}."
        )
    dtype = jnp.promote_types(a.m2.dtype, b.m2.dtype)
    a, b = (jax.tree.map(lambda v: v.astype(dtype) if v.ndim else v, s) for s in (a, b))
    shift = jnp.where(a.count > 0, a.shift, b.shift)
    a = MomentState(a.count, shift, a.shifted_mean + (a.shift - shift), a.m2)
    return _combine(a, b.count, b.shifted_mean + (b.shift - shift), b.m2)


def moments_finalize(state: MomentState) -> tuple[jax.Array, jax.Array]:
    r"""Mean and unbiased covariance :math:`(s + \bar c, M_2 / (n - 1))` of everything seen.

    Pass the result to `jgen.metrics.frechet.frechet_distance` (which works in float64).

    Args:
      state: a `MomentState` with count >= 2 (checked when concrete; under jit a
        state with fewer rows gives a NaN covariance).

    Returns:
      `(mu, sigma)`: [D] and [D, D] in the state's dtype.

    Raises:
      ValueError: for a concrete state with fewer than 2 rows.
    """
    if _is_concrete(state.count) and int(state.count) < 2:
        raise ValueError(
            "moments_finalize: the unbiased covariance needs at least 2 rows; the state has "
            f"count = {int(state.count)}. Update it with more features first."
        )
    dtype = state.m2.dtype
    denom = (state.count - 1).astype(dtype)
    sigma = jnp.where(denom > 0, state.m2 / jnp.maximum(denom, 1.0), jnp.nan)
    return state.shift + state.shifted_mean, sigma


# ----------------------------------------------------------------- class probabilities


def class_probs_init(num_classes: int, dtype=jnp.float32) -> ClassProbState:
    """An empty `ClassProbState` for `num_classes` classes, accumulating in `dtype`."""
    k = _check_dim("class_probs_init", num_classes)
    return ClassProbState(
        count=jnp.zeros((), jnp.int32),
        sum_p=jnp.zeros((k,), dtype),
        sum_plogp=jnp.zeros((), dtype),
    )


def class_probs_update(
    state: ClassProbState, probs: jax.Array, *, mask: jax.Array | None = None
) -> ClassProbState:
    """Adds a batch of class probabilities [B, K] (rows summing to 1, e.g. softmax
    outputs); `mask` [B] drops padded rows. Works with the batch sharded under jit.

    Raises:
      ValueError / TypeError: for a batch that is not floating [B, K] with the
        state's K, or a mask that is not [B].
    """
    fn = "class_probs_update"
    p, mask = _check_batch(fn, probs, state.sum_p.shape[0], "number of classes",
                           f"sum_p of shape {state.sum_p.shape}", mask)
    p = p.astype(state.sum_p.dtype)
    if mask is None:
        w = jnp.ones((p.shape[0],), p.dtype)
    else:
        w = mask.astype(p.dtype)
    return ClassProbState(
        count=state.count + jnp.sum(w).astype(jnp.int32),
        sum_p=state.sum_p + jnp.sum(p * w[:, None], axis=0),
        sum_plogp=state.sum_plogp + jnp.sum(jnp.sum(xlogy(p, p), axis=1) * w),
    )


def class_probs_merge(a: ClassProbState, b: ClassProbState) -> ClassProbState:
    """Merges two `ClassProbState`s (sums add)."""
    if a.sum_p.shape != b.sum_p.shape:
        raise ValueError(
            "class_probs_merge: the states have different numbers of classes: a.sum_p has "
            f"shape {a.sum_p.shape} and b.sum_p has shape {b.sum_p.shape}."
        )
    return ClassProbState(a.count + b.count, a.sum_p + b.sum_p, a.sum_plogp + b.sum_plogp)


def class_probs_finalize(state: ClassProbState) -> jax.Array:
    r"""Inception Score of everything seen, as one split:
    :math:`\exp\big(\frac1n \sum p \log p - \sum_y \bar p_y \log \bar p_y\big)`.

    Equals `jgen.metrics.inception_score.inception_score(all_probs, num_splits=1)[0]`.

    Raises:
      ValueError: for a concrete empty state.
    """
    if _is_concrete(state.count) and int(state.count) < 1:
        raise ValueError(
            "class_probs_finalize: the state is empty (count = 0); update it with class "
            "probabilities first."
        )
    n = jnp.maximum(state.count, 1).astype(state.sum_p.dtype)
    p_bar = state.sum_p / n
    return jnp.exp(state.sum_plogp / n - jnp.sum(xlogy(p_bar, p_bar)))
