"""Filters for categorical outputs (temperature, top-k, top-p) and the draw itself.

Each filter is a pure function `logits [..., V] -> logits [..., V]` over the last
(vocabulary) axis, so they compose by plain function composition, e.g.

    logits = top_p_filter(top_k_filter(apply_temperature(logits, 0.8), 40), 0.95)

A filtered-out category gets logit `-inf` (probability exactly 0 after the
softmax); the kept ones keep their logits, so the softmax renormalises over the
support: :math:`q_i = p_i / \\sum_{j \\in S} p_j` for :math:`i \\in S`.
`sample_categorical` applies them in the conventional order (temperature, top-k,
top-p) and draws.

References:
  Fan, Lewis & Dauphin, "Hierarchical Neural Story Generation", ACL 2018 (top-k).
  Holtzman, Buys, Du, Forbes & Choi, "The Curious Case of Neural Text
    Degeneration", ICLR 2020 (top-p / nucleus sampling).
"""

import jax
import jax.numpy as jnp

from jgen.typing import Array, PRNGKey


def _check_logits(who: str, logits) -> Array:
    logits = jnp.asarray(logits)
    if logits.ndim < 1 or not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(
            f"{who}: logits must be a floating array [..., V] with the categories on the last axis; "
            f"received dtype {logits.dtype} and shape {logits.shape}."
        )
    return logits


def apply_temperature(logits: Array, temperature: float) -> Array:
    """Divides the logits by `temperature` > 0: below 1 sharpens, above 1 flattens.

    (A temperature of 0, greedy decoding, is `jnp.argmax`; it is not a distribution.)
    """
    logits = _check_logits("apply_temperature", logits)
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"apply_temperature: temperature must be > 0; received {temperature}. "
                         "For greedy decoding take jnp.argmax(logits, -1).")
    return logits / jnp.asarray(temperature, logits.dtype)


def top_k_filter(logits: Array, k: int) -> Array:
    """Keeps the `k` largest logits per row and sets the rest to -inf.

    Exactly `k` categories survive: ties at the k-th value are broken towards the
    lower index (the order of `jax.lax.top_k`). `k` is static; `k >= V` keeps all.
    """
    logits = _check_logits("top_k_filter", logits)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k_filter: k must be a Python int >= 1; received {k!r}.")
    vocab = logits.shape[-1]
    if k >= vocab:
        return logits
    _, idx = jax.lax.top_k(logits, k)  # [..., k]
    keep = jnp.any(jax.nn.one_hot(idx, vocab, dtype=jnp.bool_), axis=-2)  # [..., V]
    return jnp.where(keep, logits, -jnp.inf)


def top_p_filter(logits: Array, p: float) -> Array:
    """Nucleus filter: keeps the smallest set of most-probable categories whose total
    probability is at least `p` (0 < p <= 1), and sets the rest to -inf.

    Categories are ranked by probability, ties towards the lower index; category
    ranked r is kept iff the total probability of those ranked before it is < p,
    so the most probable category is always kept and the kept mass is >= p.
    `p` may be traced (a scalar).
    """
    logits = _check_logits("top_p_filter", logits)
    if isinstance(p, (int, float)) and not 0.0 < p <= 1.0:
        raise ValueError(f"top_p_filter: p must be in (0, 1]; received {p}.")
    probs = jax.nn.softmax(logits, axis=-1)
    order = jnp.argsort(-probs, axis=-1, stable=True)  # descending, ties by index
    sorted_probs = jnp.take_along_axis(probs, order, axis=-1)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_before < jnp.asarray(p, probs.dtype)
    # Undo the sort: rank[i] is the position of category i in `order`.
    rank = jnp.argsort(order, axis=-1)
    keep = jnp.take_along_axis(keep_sorted, rank, axis=-1)
    return jnp.where(keep, logits, -jnp.inf)


def sample_categorical(key: PRNGKey, logits: Array, *, temperature: float = 1.0,
                       top_k: int | None = None, top_p: float | None = None) -> Array:
    """Draws one category per row of `logits [..., V]` -> int32 [...], after
    temperature, then top-k, then top-p filtering (each skipped when None / 1)."""
    logits = _check_logits("sample_categorical", logits)
    if not (isinstance(temperature, (int, float)) and temperature == 1.0):
        logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
