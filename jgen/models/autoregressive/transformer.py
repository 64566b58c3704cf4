"""A decoder-only causal transformer over token sequences, with an explicit key-value
cache for incremental decoding.

The model maps tokens :math:`x_{0:T}` [B, T] to logits [B, T, V] and is causal:
**output t depends only on the inputs at positions <= t**, and it parametrises the
distribution of the *next* token,

.. math::
    p(x_{t+1} \\mid x_{\\le t}) = \\operatorname{softmax}(\\text{logits}_t),

so the log-likelihood of a sequence given its first token is
``categorical_autoregressive_log_prob(logits[:, :-1], tokens[:, 1:])``
(`jgen.losses.autoregressive`). To model the first token too, start every sequence
with a beginning-of-sequence symbol reserved in the vocabulary.

Architecture (GPT-2 style, Radford et al. 2019): token embedding plus a learned (or
sinusoidal, Vaswani et al. 2017) position embedding; `num_layers` pre-LayerNorm
blocks :math:`h \\leftarrow h + \\mathrm{Attn}(\\mathrm{LN}(h))`,
:math:`h \\leftarrow h + \\mathrm{MLP}(\\mathrm{LN}(h))` with causal multi-head
self-attention

.. math::
    \\mathrm{Attn}(Q, K, V)_t = \\sum_{s \\le t}
        \\operatorname{softmax}_s\\!\\left(\\frac{q_t \\cdot k_s}{\\sqrt{d_h}}\\right) v_s,

then a final LayerNorm and a linear map to the V logits. With ``num_classes > 0`` the
model is class-conditional: a label embedding is **added to every position** (so the
positions, and the cache, are the same as for the unconditional model).

With ``condition_spec`` (a `jgen.conditioning.ConditionSpec` of kind "vector",
"tokens" or "image") the model is conditioned on that condition the same way: a
`ConditionEncoder` submodule ("condition") gives the embedding s [B, E], and
:math:`W_s s` is added to every position; for image conditions the map m
[B, H, W, M] (at the image's resolution, `condition_spec.image_shape` = (H, W, C))
is laid out in the token order (subpixel (i * W + j) * C + c gets m[i, j]) and
:math:`W_m m_t` is added at position t -- the position whose output predicts
subpixel t when the sequence starts with a beginning-of-sequence token, as in the
autoregressive family. Neither depends on the tokens, so causality (and the
cache) are unchanged, and the map may use the whole condition. Call with
``condition=`` (and ``drop=`` for the null condition) or a ``context=`` from
`encode`, computed once per sequence (the cached sampler reuses it every step).

Key-value cache. Position t's keys and values depend only on positions <= t, so
decoding one new token needs the queries of that position only, against the keys and
values of all earlier positions. `KVCache` holds them explicitly, per layer
[B, T_cache, heads, head_dim], with the number of positions filled so far;
`CausalTransformer.extend(tokens [B, C], cache)` processes C new positions (C = 1 for a
decoding step, C = P to prefill a prompt) and returns their logits and the updated
cache. The cache is an ordinary pytree argument and result (no Flax mutable
collection), so samplers can carry it through `lax.scan`; see
`jgen.samplers.kv_cache`.

Modules hold architecture only.

References:
  Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
  Radford, Wu, Child, Luan, Amodei & Sutskever, "Language Models are Unsupervised
    Multitask Learners", 2019 (GPT-2: pre-LayerNorm decoder-only transformer).
"""

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.conditioning.encoder import ConditionEncoder
from jgen.conditioning.spec import ConditionSpec, check_condition
from jgen.typing import Array

_EMBED_INIT = nn.initializers.normal(0.02)


class KVCache(NamedTuple):
    """Keys and values of the positions decoded so far.

    Attributes:
      keys: one array per layer, [B, T_cache, num_heads, head_dim]; positions >=
        `index` hold zeros (or stale values) and are never attended to.
      values: likewise.
      index: int32 scalar, the number of positions filled (the next position).
    """

    keys: tuple[Array, ...]
    values: tuple[Array, ...]
    index: Array


def init_kv_cache(model: "CausalTransformer", batch_size: int, length: int | None = None,
                  dtype=jnp.float32) -> KVCache:
    """An empty cache for `batch_size` sequences of up to `length` (default
    `model.max_len`) positions."""
    length = model.max_len if length is None else length
    if not isinstance(length, int) or not 1 <= length <= model.max_len:
        raise ValueError(f"init_kv_cache: length must be an int in [1, max_len={model.max_len}]; "
                         f"received {length!r}.")
    head_dim = model.d_model // model.num_heads
    shape = (batch_size, length, model.num_heads, head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(model.num_layers))
    return KVCache(keys=zeros, values=zeros, index=jnp.zeros((), jnp.int32))


def sinusoidal_positions(positions: Array, dim: int) -> Array:
    """Vaswani et al.'s encoding, positions [...] -> [..., dim]:
    PE(p, 2i) = sin(p / 10000^(2i/dim)), PE(p, 2i+1) = cos(p / 10000^(2i/dim))."""
    if dim % 2:
        raise ValueError(f"sinusoidal_positions: dim must be even; received {dim}.")
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)  # [dim/2]
    positions = jnp.asarray(positions, jnp.float32)
    angles = positions[..., None] * freqs.reshape((1,) * positions.ndim + (-1,))  # [..., dim/2]
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(angles.shape[:-1] + (dim,))


def _attend(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Masked softmax attention. q [B, Q, H, Dh], k, v [B, K, H, Dh], mask bool [Q, K]
    (True = may attend) -> [B, Q, H, Dh]. Masked scores are replaced (not added to),
    so masked keys and values get exactly zero weight and exactly zero gradient."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    scores = jnp.where(mask[None, None], scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


class _Block(nn.Module):
    """Pre-LayerNorm block: h + Attn(LN(h)), then h + MLP(LN(h))."""

    num_heads: int
    head_dim: int
    mlp_dim: int

    def setup(self):
        self.ln_attn = nn.LayerNorm()
        self.qkv = nn.DenseGeneral((3, self.num_heads, self.head_dim))
        self.proj = nn.DenseGeneral(self.num_heads * self.head_dim, axis=(-2, -1))
        self.ln_mlp = nn.LayerNorm()
        self.fc_in = nn.Dense(self.mlp_dim)
        self.fc_out = nn.Dense(self.num_heads * self.head_dim)

    def _mlp(self, h):
        return h + self.fc_out(nn.gelu(self.fc_in(self.ln_mlp(h))))

    def _qkv(self, h):
        qkv = self.qkv(self.ln_attn(h))  # [B, T, 3, H, Dh]
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

    def __call__(self, h: Array) -> Array:
        """Full causal pass, h [B, T, D] -> [B, T, D]."""
        q, k, v = self._qkv(h)
        t = h.shape[1]
        causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]  # query t sees keys s <= t
        return self._mlp(h + self.proj(_attend(q, k, v, causal)))

    def extend(self, h: Array, k_cache: Array, v_cache: Array, index: Array):
        """C new positions index .. index+C-1, h [B, C, D]; writes their keys and values
        into the caches [B, T_cache, H, Dh] and attends over all cached positions <=
        each query's own. Returns (h', k_cache', v_cache')."""
        q, k, v = self._qkv(h)
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), index, axis=1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), index, axis=1)
        query_pos = index + jnp.arange(h.shape[1])
        mask = jnp.arange(k_cache.shape[1])[None, :] <= query_pos[:, None]  # [C, T_cache]
        h = self._mlp(h + self.proj(_attend(q, k_cache, v_cache, mask)))
        return h, k_cache, v_cache


class CausalTransformer(nn.Module):
    """tokens [B, T] (T <= max_len) -> logits [B, T, vocab_size]; output t depends on
    tokens <= t and gives p(token t+1 | tokens <= t).

    Attributes:
      vocab_size: number of token ids V (ids are 0 .. V-1).
      max_len: the longest sequence (the size of the learned position table).
      d_model: width of the residual stream; a multiple of `num_heads`.
      num_heads: attention heads, each of size d_model / num_heads.
      num_layers: transformer blocks.
      mlp_ratio: the MLP's hidden width is mlp_ratio * d_model.
      num_classes: > 0 for a class-conditional model (a label embedding added to every
        position; then every call needs `label` int [B]); 0 for unconditional.
      position_embedding: "learned" (a trained [max_len, d_model] table) or
        "sinusoidal" (fixed).
      condition_spec: a `jgen.conditioning.ConditionSpec` (kind "vector", "tokens" or
        "image") to condition on it (see the module docstring); every call then
        needs `condition=` (raw, [B, ...]) or `context=` (from `encode`).

    Methods:
      __call__(tokens, label=None, *, condition=None, drop=None, context=None)
        -> logits [B, T, V].
      from_embeddings(x [B, T, d_model], label=None, *, condition=None, drop=None,
        context=None) -> logits: the same network fed token embeddings directly (for
        Jacobian tests and soft inputs).
      extend(tokens [B, C], cache, label=None, *, condition=None, drop=None,
        context=None) -> (logits [B, C, V], cache): cached decoding of C new
        positions (see the module docstring and `init_kv_cache`).
      encode(condition, drop=None) -> context (vec [B, E], cmap [B, H, W, M] or None).

    Example:
      model = CausalTransformer(vocab_size=65, max_len=128, d_model=64, num_heads=4)
      params = model.init(key, jnp.zeros((1, 128), jnp.int32))
      logits = model.apply(params, tokens)                     # [B, T, 65]
      cache = init_kv_cache(model, batch_size=B)
      step_logits, cache = model.apply(params, tokens[:, :1], cache, method=model.extend)
    """

    vocab_size: int
    max_len: int
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: int = 4
    num_classes: int = 0
    position_embedding: str = "learned"
    condition_spec: ConditionSpec | None = None

    def setup(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"CausalTransformer: d_model={self.d_model} must be a multiple of "
                             f"num_heads={self.num_heads}.")
        if self.position_embedding not in ("learned", "sinusoidal"):
            raise ValueError("CausalTransformer: position_embedding must be 'learned' or 'sinusoidal'; "
                             f"received {self.position_embedding!r}.")
        self.token_embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=_EMBED_INIT)
        if self.position_embedding == "learned":
            self.pos_embed = self.param("pos_embed", _EMBED_INIT, (self.max_len, self.d_model))
        if self.num_classes > 0:
            self.label_embed = nn.Embed(self.num_classes, self.d_model, embedding_init=_EMBED_INIT)
        spec = self.condition_spec
        if spec is not None:
            if not isinstance(spec, ConditionSpec) or spec.kind not in ("vector", "tokens", "image"):
                raise ValueError("CausalTransformer: condition_spec must be a jgen.conditioning.ConditionSpec of "
                                 f"kind 'vector', 'tokens' or 'image' (labels use num_classes); received {spec!r}.")
            if spec.kind == "image" and math.prod(spec.image_shape) > self.max_len:
                raise ValueError(f"CausalTransformer: an image condition of {spec.image_shape} lays its map over "
                                 f"{math.prod(spec.image_shape)} positions; max_len={self.max_len} is shorter.")
            self.encoder = ConditionEncoder(spec, name="condition")
            # Zero-initialised: training starts from the unconditional network.
            self.condition_embed = nn.Dense(self.d_model, use_bias=False, kernel_init=nn.initializers.zeros)
            if spec.kind == "image":
                self.condition_map_embed = nn.Dense(self.d_model, use_bias=False, kernel_init=nn.initializers.zeros)
        self.blocks = [
            _Block(self.num_heads, self.d_model // self.num_heads, self.mlp_ratio * self.d_model)
            for _ in range(self.num_layers)
        ]
        self.ln_final = nn.LayerNorm()
        self.head = nn.Dense(self.vocab_size)

    # -- input checks -------------------------------------------------------------------

    def _check_tokens(self, tokens) -> Array:
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"CausalTransformer: tokens must be integer ids of shape [B, T]; received {tokens.dtype} "
                f"of shape {tokens.shape}. For one sequence use tokens[None]; encode text with a vocabulary "
                "(e.g. jgen.data.sequences.CharVocab.encode) first."
            )
        if not isinstance(tokens, jax.core.Tracer) and tokens.size:
            # numpy, not jnp: jnp ops on a constant inside a jit trace are staged (tracers).
            values = np.asarray(tokens)
            lo, hi = int(values.min()), int(values.max())
            if lo < 0 or hi >= self.vocab_size:
                raise ValueError(
                    f"CausalTransformer: token ids must lie in [0, vocab_size={self.vocab_size}); received ids "
                    f"in [{lo}, {hi}]. Check the vocabulary the data were encoded with."
                )
        return tokens

    def _check_label(self, label, batch: int) -> Array | None:
        if self.num_classes <= 0:
            if label is not None:
                raise ValueError("CausalTransformer: received a label but num_classes=0 (unconditional). "
                                 "Set num_classes to train a class-conditional model.")
            return None
        if label is None:
            raise ValueError(f"CausalTransformer: this model is class-conditional (num_classes="
                             f"{self.num_classes}); pass label, integer [B].")
        label = jnp.asarray(label)
        if label.shape != (batch,) or not jnp.issubdtype(label.dtype, jnp.integer):
            raise ValueError(f"CausalTransformer: label must be integer [B={batch}]; received {label.dtype} "
                             f"of shape {label.shape}.")
        return label

    def _context(self, condition, drop, context, batch: int):
        """The (vec, cmap) of a call (None without condition_spec), with clear errors."""
        spec = self.condition_spec
        if spec is None:
            if condition is not None or context is not None:
                raise ValueError("CausalTransformer: received a condition but condition_spec is None "
                                 "(unconditional). Build it with condition_spec to condition on one.")
            return None
        if (condition is None) == (context is None):
            raise ValueError(f"CausalTransformer: this model is conditioned on a {spec.kind} condition; pass "
                             f"exactly one of condition= (raw, [B, {', '.join(map(str, spec.shape))}] "
                             f"{np.dtype(spec.dtype).name}) or context= (from method='encode').")
        vec, cmap = self.encode(condition, drop) if context is None else context
        if vec.shape != (batch, spec.embed_dim) or (cmap is None) != (spec.kind != "image"):
            raise ValueError(f"CausalTransformer: context must be (vec [B={batch}, {spec.embed_dim}], cmap or None); "
                             f"received vec {jnp.shape(vec)}, cmap {None if cmap is None else jnp.shape(cmap)}.")
        return vec, cmap

    def encode(self, condition: Array, drop: Array | None = None) -> tuple[Array, Array | None]:
        """The raw condition [B, ...] -> (vec [B, E], cmap [B, H, W, M] or None)."""
        if self.condition_spec is None:
            raise ValueError("CausalTransformer.encode: the model was built without condition_spec.")
        num = jnp.shape(condition)[0] if jnp.ndim(condition) else 1
        return self.encoder(check_condition(self.condition_spec, condition, num, who="CausalTransformer"), drop)

    def _condition_bias(self, context, positions: Array) -> Array:
        """[B, T, d_model]: W_s s at every position, plus W_m m_t for image conditions."""
        vec, cmap = context
        bias = self.condition_embed(vec)[:, None, :]
        if cmap is not None:
            h, w, c = self.condition_spec.image_shape
            per_token = jnp.repeat(cmap.reshape((cmap.shape[0], h * w, cmap.shape[-1])), c, axis=1)  # [B, D, M]
            per_token = jnp.pad(per_token, ((0, 0), (0, self.max_len - h * w * c), (0, 0)))
            bias = bias + self.condition_map_embed(jnp.take(per_token, positions, axis=1))
        return bias

    # -- forward passes -----------------------------------------------------------------

    def _positions(self, positions: Array) -> Array:
        if self.position_embedding == "learned":
            return jnp.take(self.pos_embed, positions, axis=0)
        return sinusoidal_positions(positions, self.d_model)

    def _inputs(self, x: Array, positions: Array, label, context=None) -> Array:
        h = x + self._positions(positions)[None]
        label = self._check_label(label, x.shape[0])
        if label is not None:
            h = h + self.label_embed(label)[:, None, :]
        if context is not None:
            h = h + self._condition_bias(context, positions).astype(h.dtype)
        return h

    def _output(self, h: Array) -> Array:
        return self.head(self.ln_final(h))

    def __call__(self, tokens: Array, label: Array | None = None, *, condition: Array | None = None,
                 drop: Array | None = None, context=None) -> Array:
        tokens = self._check_tokens(tokens)
        return self.from_embeddings(self.token_embed(tokens), label, condition=condition, drop=drop, context=context)

    def from_embeddings(self, x: Array, label: Array | None = None, *, condition: Array | None = None,
                        drop: Array | None = None, context=None) -> Array:
        """x [B, T, d_model] (token embeddings, before positions) -> logits [B, T, V]."""
        if x.ndim != 3 or x.shape[-1] != self.d_model or x.shape[1] > self.max_len:
            raise ValueError(f"CausalTransformer: expected embeddings [B, T <= {self.max_len}, {self.d_model}]; "
                             f"received shape {x.shape}.")
        context = self._context(condition, drop, context, x.shape[0])
        h = self._inputs(x, jnp.arange(x.shape[1]), label, context)
        for block in self.blocks:
            h = block(h)
        return self._output(h)

    def extend(self, tokens: Array, cache: KVCache, label: Array | None = None, *, condition: Array | None = None,
               drop: Array | None = None, context=None) -> tuple[Array, KVCache]:
        """Cached decoding of C new positions cache.index .. cache.index + C - 1.

        Args:
          tokens: int [B, C], the tokens at those positions.
          cache: a `KVCache` from `init_kv_cache` (or a previous `extend`); it must have
            room: index + C <= T_cache (not checked when index is traced; writes past
            the end are clamped by XLA and corrupt the last slots).
          label: int [B] for a class-conditional model.
          condition, drop, context: for a model with `condition_spec` (pass the
            `context` from `encode` when decoding step by step: it is computed once).

        Returns:
          (logits [B, C, V] for those positions -- equal to the full forward pass's
          logits there -- and the cache with their keys/values written and index += C).
        """
        tokens = self._check_tokens(tokens)
        if not isinstance(cache, KVCache) or len(cache.keys) != self.num_layers:
            raise ValueError(f"CausalTransformer.extend: cache must be a KVCache with {self.num_layers} layers "
                             "from init_kv_cache(model, batch_size, length).")
        batch, length = cache.keys[0].shape[:2]
        if tokens.shape[0] != batch or tokens.shape[1] > length:
            raise ValueError(f"CausalTransformer.extend: tokens {tokens.shape} do not fit the cache of batch "
                             f"{batch} and length {length}.")
        positions = cache.index + jnp.arange(tokens.shape[1])
        context = self._context(condition, drop, context, batch)
        h = self._inputs(self.token_embed(tokens), positions, label, context)
        keys, values = [], []
        for block, k_cache, v_cache in zip(self.blocks, cache.keys, cache.values):
            h, k_cache, v_cache = block.extend(h, k_cache, v_cache, cache.index)
            keys.append(k_cache)
            values.append(v_cache)
        new_cache = KVCache(tuple(keys), tuple(values), cache.index + tokens.shape[1])
        return self._output(h), new_cache
