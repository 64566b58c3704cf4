"""Ancestral sampling from an autoregressive model, compiled as one XLA loop.

Given `logits_fn(x) -> logits` that returns, for every position i, the logits of
:math:`p(x_i \\mid x_{<i})` (a teacher-forced pass: FVSBN, NADE, MADE, PixelCNN...),
sampling visits the positions in the model's order and draws each from its
conditional given the values drawn so far:

    x <- init (zeros, or a partial observation to complete)
    for t in 0 .. D-1 (a `lax.fori_loop`, so the program size does not grow with D):
        i = order[t]
        if i is observed: keep x_i
        else: x_i ~ p(x_i | x_<i) = Bernoulli / Categorical(filter(logits_fn(x)[:, i]))

Each step runs the full network on the current canvas (D passes in all); models
with a cache (the transformer's KV cache) have their own incremental sampler.
Categorical draws go through `jgen.samplers.categorical` (temperature, top-k,
top-p); Bernoulli draws take a temperature on the logit.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jgen.samplers.categorical import sample_categorical
from jgen.typing import Array, PRNGKey


def ancestral_sample(
    key: PRNGKey,
    logits_fn: Callable[[Array], Array],
    init: Array,
    *,
    kind: str = "bernoulli",
    order=None,
    observed: Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Array:
    """Fills `init [B, D]` position by position with draws from the model.

    Args:
      key: PRNG key; position t uses `fold_in(key, t)`, so results are reproducible.
      logits_fn: `x [B, D] -> logits [B, D]` (Bernoulli) or `[B, D, V]` (categorical),
        autoregressive in `order`.
      init: the starting canvas [B, D] (floats for Bernoulli, ints for categorical);
        its values at `observed` positions are kept (completion), the rest overwritten.
      kind: "bernoulli" or "categorical".
      order: a permutation of range(D) (e.g. a MADE order; checked unless traced); default 0..D-1.
      observed: optional bool [B, D] or [D]; True = keep init's value.
      temperature, top_k, top_p: filters (`top_k`/`top_p` categorical only).

    Returns:
      The completed canvas, same shape and dtype as `init`.
    """
    init = jnp.asarray(init)
    if init.ndim != 2:
        raise ValueError(f"ancestral_sample: init must be a canvas [B, D]; received shape {init.shape}. "
                         "Flatten images with x.reshape(B, -1).")
    if kind not in ("bernoulli", "categorical"):
        raise ValueError(f"ancestral_sample: kind must be 'bernoulli' or 'categorical'; received {kind!r}.")
    if kind == "bernoulli" and (top_k is not None or top_p is not None):
        raise ValueError("ancestral_sample: top_k / top_p apply to categorical outputs only.")
    num, dim = init.shape
    if order is None:
        order = np.arange(dim)
    if not isinstance(order, jax.core.Tracer):  # a traced order (e.g. drawn by made_masks) is trusted
        order = np.asarray(order)
        if sorted(order.tolist()) != list(range(dim)):
            raise ValueError(f"ancestral_sample: order must be a permutation of range({dim}); received {order}.")
    order = jnp.asarray(order, jnp.int32)
    if observed is None:
        observed = jnp.zeros((num, dim), bool)
    observed = jnp.broadcast_to(jnp.asarray(observed, bool), (num, dim))

    def body(t, x):
        i = order[t]
        logits = jax.lax.dynamic_index_in_dim(logits_fn(x), i, axis=1, keepdims=False)
        k = jax.random.fold_in(key, t)
        if kind == "bernoulli":
            draw = jax.random.bernoulli(k, jax.nn.sigmoid(logits / temperature)).astype(x.dtype)
        else:
            draw = sample_categorical(k, logits, temperature=temperature, top_k=top_k, top_p=top_p).astype(x.dtype)
        column = jax.lax.dynamic_index_in_dim(x, i, axis=1, keepdims=False)
        keep = jax.lax.dynamic_index_in_dim(observed, i, axis=1, keepdims=False)
        return jax.lax.dynamic_update_index_in_dim(x, jnp.where(keep, column, draw), i, axis=1)

    return jax.lax.fori_loop(0, dim, body, init)
