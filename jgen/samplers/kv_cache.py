"""Sampling continuations from a next-token model, incrementally with a key-value
cache or by recomputing the prefix, compiled as one XLA loop.

A next-token model returns, at every position t, the logits of
:math:`p(x_{t+1} \\mid x_{\\le t})` (the `CausalTransformer` / `WaveNet` convention).
Given a prompt :math:`x_{0:P}` [B, P] (P >= 1), ancestral sampling draws

    for t in P .. P + num_new - 1:
        x_t ~ Categorical(filter(logits_{t-1}(x_{<t})))     key: fold_in(key, t)

Two ways to get the logits, which draw exactly the same tokens from the same key
(up to float rounding of the logits, which flips a draw only at a near-exact tie):

- ``use_cache=True`` (the transformer's KV cache): one pass over the prompt fills the
  cache (prefill), then each step feeds ONE position, the token just drawn, through
  `extend_fn` -- O(T) work per step, O(T^2) in all.
- ``use_cache=False`` (the reference; any model): each step reruns `logits_fn` on the
  whole canvas [B, P + num_new] and reads position t-1; causality makes the
  not-yet-drawn positions irrelevant. O(T^2) per step.

Either way the steps run inside one `lax.scan` / `fori_loop`, so the step function
is traced once and the program does not grow with `num_new`. Draws go through
`jgen.samplers.categorical.sample_categorical` (temperature, then top-k, then top-p).

References:
  Pope et al., "Efficiently Scaling Transformer Inference", MLSys 2023 (KV caching).
  Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jgen.models.autoregressive.transformer import CausalTransformer, init_kv_cache
from jgen.samplers.categorical import sample_categorical
from jgen.typing import Array, Params, PRNGKey


class DecodeFns(NamedTuple):
    """The functions a next-token sampler needs; output t is p(x_{t+1} | x_{<=t}).

    Attributes:
      logits_fn: tokens int [B, T] -> logits [B, T, V] (the full, causal pass).
      init_cache: (batch_size, length) -> an empty cache pytree; None if the model
        has no cache (then only ``use_cache=False`` works).
      extend_fn: (tokens int [B, C], cache) -> (logits [B, C, V], cache): the logits of
        C new positions given everything cached so far, and the updated cache.
    """

    logits_fn: Callable[[Array], Array]
    init_cache: Callable[[int, int], Any] | None = None
    extend_fn: Callable[[Array, Any], tuple[Array, Any]] | None = None


def transformer_decode_fns(model: CausalTransformer, params: Params, *,
                           label: Array | None = None) -> DecodeFns:
    """`DecodeFns` of a `CausalTransformer` with fixed `params` (and `label` int [B]
    for a class-conditional model)."""

    def logits_fn(tokens):
        return model.apply(params, tokens, label)

    def init_cache(batch_size, length):
        return init_kv_cache(model, batch_size, length)

    def extend_fn(tokens, cache):
        return model.apply(params, tokens, cache, label, method=model.extend)

    return DecodeFns(logits_fn, init_cache, extend_fn)


def sample_transformer(
    key: PRNGKey,
    fns: DecodeFns,
    prompt: Array,
    num_new: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
) -> Array:
    """Appends `num_new` sampled tokens to `prompt`.

    Args:
      key: PRNG key; the token at position t is drawn with `fold_in(key, t)`, so the
        cached and uncached paths (and any two runs) draw the same tokens.
      fns: the model's `DecodeFns` (e.g. `transformer_decode_fns(model, params)`).
      prompt: int [B, P] with P >= 1 (put a beginning-of-sequence token first to
        sample from scratch); P + num_new must fit the model (its max_len).
      num_new: number of tokens to draw (a static Python int >= 0).
      temperature, top_k, top_p: filters, as in `sample_categorical`.
      use_cache: True = prefill the cache, then one position per step through
        `fns.extend_fn`; False = recompute the full canvas each step (the reference).

    Returns:
      int32 [B, P + num_new]: the prompt followed by the draws.

    Example:
      fns = transformer_decode_fns(model, params)
      out = jax.jit(lambda k: sample_transformer(k, fns, prompt, 64, top_p=0.9))(key)
    """
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ValueError(
            f"sample_transformer: prompt must be integer tokens [B, P] with P >= 1; received {prompt.dtype} "
            f"of shape {prompt.shape}. To sample from scratch, start with a beginning-of-sequence token, "
            "e.g. jnp.zeros((B, 1), jnp.int32)."
        )
    if isinstance(num_new, bool) or not isinstance(num_new, int) or num_new < 0:
        raise ValueError(f"sample_transformer: num_new must be a Python int >= 0; received {num_new!r}.")
    if use_cache and (fns.init_cache is None or fns.extend_fn is None):
        raise ValueError("sample_transformer: use_cache=True needs fns.init_cache and fns.extend_fn; "
                         "this model has none, pass use_cache=False.")
    batch, num_prompt = prompt.shape
    total = num_prompt + num_new
    canvas = jnp.concatenate([prompt.astype(jnp.int32), jnp.zeros((batch, num_new), jnp.int32)], axis=1)
    if num_new == 0:
        return canvas

    def draw(t, logits):
        return sample_categorical(jax.random.fold_in(key, t), logits,
                                  temperature=temperature, top_k=top_k, top_p=top_p)

    def put(canvas, t, tokens):
        return jax.lax.dynamic_update_index_in_dim(canvas, tokens, t, axis=1)

    if not use_cache:
        def body(t, canvas):
            logits = jax.lax.dynamic_index_in_dim(fns.logits_fn(canvas), t - 1, axis=1, keepdims=False)
            return put(canvas, t, draw(t, logits))

        return jax.lax.fori_loop(num_prompt, total, body, canvas)

    # Prefill: positions 0 .. P-1 in one pass; their last logits give position P.
    logits, cache = fns.extend_fn(prompt.astype(jnp.int32), fns.init_cache(batch, total))
    first = draw(num_prompt, logits[:, -1])
    canvas = put(canvas, num_prompt, first)

    def step(carry, t):
        # Feed the ONE position t-1 (the token just drawn); read p(x_t | x_<t).
        canvas, cache, previous = carry
        logits, cache = fns.extend_fn(previous[:, None], cache)
        token = draw(t, logits[:, 0])
        return (put(canvas, t, token), cache, token), None

    (canvas, _, _), _ = jax.lax.scan(step, (canvas, cache, first), jnp.arange(num_prompt + 1, total))
    return canvas
