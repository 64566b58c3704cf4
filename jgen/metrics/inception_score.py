r"""Inception Score (IS) from a classifier's class probabilities.

For class probabilities :math:`p(y \mid x)` of generated samples :math:`x` and their
marginal :math:`p(y) = \mathbb E_x\, p(y \mid x)`,

.. math::
    \mathrm{IS} = \exp\Big(\mathbb E_x\, \mathrm{KL}\big(p(y \mid x) \,\|\, p(y)\big)\Big)
      = \exp\Big(\mathbb E_x \sum_y p(y \mid x) \log p(y \mid x)
                 - \sum_y p(y) \log p(y)\Big),

which lies in :math:`[1, K]` for :math:`K` classes: 1 when every prediction equals the
marginal, :math:`K` when predictions are one-hot and the classes are used equally
(Salimans et al. 2016, Section 4). As in the reference code, the N samples are cut
into `num_splits` contiguous equal splits, :math:`p(y)` is the mean over each split,
and the score is reported as the mean and standard deviation over splits. This
module takes the probabilities (e.g. Inception-v3 softmax outputs); running the
classifier is the caller's job. For probabilities that arrive in batches see
`jgen.metrics.streaming.class_probs_update`.

:math:`0 \log 0 = 0` throughout (``xlogy``).

References:
  Salimans, T., Goodfellow, I., Zaremba, W., Cheung, V., Radford, A. & Chen, X.
    (2016). Improved Techniques for Training GANs. NeurIPS (Section 4).
    https://arxiv.org/abs/1606.03498
    Reference code: https://github.com/openai/improved-gan
    (``inception_score/model.py``, ``get_inception_score``).
  Barratt, S. & Sharma, R. (2018). A Note on the Inception Score.
    https://arxiv.org/abs/1801.01973 (caveats; the split convention).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy


def _check_probs(fn: str, probs) -> jax.Array:
    """Checks a floating [N, K] array; when concrete, also that rows are distributions."""
    p = jnp.asarray(probs)
    if p.ndim != 2:
        raise ValueError(
            f"{fn}: probs must have shape [num_samples, num_classes]; received shape "
            f"{p.shape}."
        )
    if not jnp.issubdtype(p.dtype, jnp.floating):
        raise TypeError(
            f"{fn}: probs must have a floating dtype; received {p.dtype} (shape {p.shape})."
        )
    if not isinstance(p, jax.core.Tracer) and p.size:  # traced values cannot be checked
        host = np.asarray(p, np.float64)
        row_sums = host.sum(axis=1)
        if np.any(host < 0) or np.any(np.abs(row_sums - 1.0) > 1e-2):
            worst = int(np.argmax(np.abs(row_sums - 1.0)))
            raise ValueError(
                f"{fn}: each row of probs must be a probability vector (non-negative, "
                f"summing to 1); row {worst} sums to {row_sums[worst]:.4g} and the "
                f"minimum entry is {host.min():.4g}. If these are logits, pass "
                "jax.nn.softmax(logits, axis=-1)."
            )
    return p


def kl_to_marginal_terms(probs: jax.Array) -> jax.Array:
    r"""Per-example :math:`\mathrm{KL}(p(y \mid x_n) \,\|\, \bar p)`, with :math:`\bar p` the mean row.

    .. math::
        \mathrm{KL}_n = \sum_y p_{ny} \big(\log p_{ny} - \log \bar p_y\big),
        \quad \bar p_y = \frac1N \sum_n p_{ny}.

    Args:
      probs: [N, K] class probabilities (rows sum to 1).

    Returns:
      [N] non-negative KL terms; :math:`\log \mathrm{IS}` of this set is their mean.
    """
    p = _check_probs("kl_to_marginal_terms", probs)
    p_bar = jnp.mean(p, axis=0, keepdims=True)
    return jnp.sum(xlogy(p, p) - xlogy(p, p_bar), axis=1)


def inception_score(probs: jax.Array, *, num_splits: int = 10) -> tuple[jax.Array, jax.Array]:
    r"""Inception Score: mean and standard deviation of :math:`\exp(\mathbb E_x \mathrm{KL})` over splits.

    The N rows are cut into `num_splits` contiguous splits of N / num_splits rows; for
    split :math:`s` with rows :math:`\mathcal S_s`,

    .. math::
        \mathrm{IS}_s = \exp\Big(\frac{1}{|\mathcal S_s|} \sum_{n \in \mathcal S_s}
          \mathrm{KL}\big(p(y \mid x_n) \,\|\, \bar p_s\big)\Big),
        \quad \bar p_s = \frac{1}{|\mathcal S_s|} \sum_{n \in \mathcal S_s} p(y \mid x_n).

    The reference reports 50,000 samples in 10 splits; scores with different N or
    splits are not comparable (the marginal is estimated per split).

    Args:
      probs: [N, K] floating class probabilities, rows summing to 1 (checked when the
        array is concrete, i.e. outside jit). N must be divisible by `num_splits`.
      num_splits: number of splits, a positive Python int (static under jit).

    Returns:
      `(mean, std)` over splits (std with ddof = 0, as in the reference; 0 for one
      split).

    Raises:
      ValueError / TypeError: for probs that are not floating [N, K], rows that are
        not distributions (e.g. logits), or N not divisible by `num_splits`.

    Example:
      >>> probs = jax.nn.softmax(classifier_logits, axis=-1)   # [50000, 1000]
      >>> is_mean, is_std = inception_score(probs, num_splits=10)
    """
    fn = "inception_score"
    p = _check_probs(fn, probs)
    n, k = p.shape
    if isinstance(num_splits, bool) or not isinstance(num_splits, (int, np.integer)) or num_splits < 1:
        raise ValueError(
            f"{fn}: num_splits must be a positive Python int (static under jit); received "
            f"{num_splits!r}."
        )
    if n < num_splits or n % num_splits:
        raise ValueError(
            f"{fn}: the {n} samples (probs of shape {p.shape}) cannot be cut into "
            f"{num_splits} equal splits; pass N divisible by num_splits, e.g. "
            f"probs[:{(n // num_splits) * num_splits}], or change num_splits."
        )
    splits = p.reshape(num_splits, n // num_splits, k)
    p_bar = jnp.mean(splits, axis=1, keepdims=True)  # [S, 1, K]
    kl = jnp.sum(xlogy(splits, splits) - xlogy(splits, p_bar), axis=2)  # [S, N/S]
    scores = jnp.exp(jnp.mean(kl, axis=1))
    return jnp.mean(scores), jnp.std(scores)
