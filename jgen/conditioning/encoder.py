"""`ConditionEncoder`: a raw condition (see `jgen.conditioning.spec`) to what a network
consumes, the same module in every family.

    encoder = ConditionEncoder(spec)
    vec, cmap = encoder(condition, drop)   # vec [B, embed_dim]; cmap [B, H, W, C'] or None

- label: a learned embedding table [K, D].
- vector: a two-layer MLP.
- tokens: a bidirectional transformer over the token sequence (learned positions,
  padding masked out of attention and of the mean pool), then a linear map to D. It is
  trained jointly with the generative model.
- image: `cmap` = the measurement lifted to the model's resolution (nearest-neighbour
  upsampling for super-resolution), scaled to [-1, 1], with a trailing "present"
  channel; `vec` = a learned "present" embedding. Networks concatenate `cmap` to their
  input (or flatten it).

`drop` (bool [B], or None = keep all) replaces the condition by the null condition: a
learned null embedding and an all-zero map. Training drops conditions with
probability `p_uncond`; classifier-free guidance evaluates the network with
drop = True for the unconditional prediction.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.conditioning.spec import ConditionSpec, lift
from jgen.typing import Array, PRNGKey


class TextEncoder(nn.Module):
    """A small bidirectional transformer over token ids [B, L] (0 = padding) -> [B, D]."""

    vocab_size: int
    max_len: int
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 4

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        valid = tokens > 0  # [B, L]
        h = nn.Embed(self.vocab_size, self.dim, name="token_embed")(tokens)
        pos = self.param("positions", nn.initializers.normal(0.02), (self.max_len, self.dim))
        h = h + pos[None, : tokens.shape[1]]
        attn_mask = valid[:, None, None, :]  # keys that are words
        for i in range(self.num_layers):
            a = nn.LayerNorm(name=f"ln_attn_{i}")(h)
            a = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name=f"attn_{i}")(a, a, mask=attn_mask)
            h = h + a
            f = nn.LayerNorm(name=f"ln_mlp_{i}")(h)
            f = nn.Dense(4 * self.dim, name=f"mlp_in_{i}")(f)
            h = h + nn.Dense(self.dim, name=f"mlp_out_{i}")(nn.gelu(f))
        h = nn.LayerNorm(name="ln_final")(h)
        w = valid.astype(h.dtype)[..., None]
        return (h * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1.0)


class ConditionEncoder(nn.Module):
    """Raw condition -> (embedding [B, D], map [B, H, W, C'] or None); see the module doc."""

    spec: ConditionSpec

    @nn.compact
    def __call__(self, condition: Array, drop: Array | None = None) -> tuple[Array, Array | None]:
        s = self.spec
        d = s.embed_dim
        b = condition.shape[0]
        cmap = None
        if s.kind == "label":
            vec = nn.Embed(s.num_classes, d, name="label_embed")(condition.astype(jnp.int32))
        elif s.kind == "vector":
            h = nn.gelu(nn.Dense(d, name="vector_in")(condition.astype(jnp.float32)))
            vec = nn.Dense(d, name="vector_out")(h)
        elif s.kind == "tokens":
            h = TextEncoder(len(s.vocab), s.max_tokens, d, s.text_layers, s.text_heads, name="text")(
                condition.astype(jnp.int32))
            vec = nn.Dense(d, name="text_out")(h)
        elif s.kind == "image":
            y = 2.0 * lift(s, condition.astype(jnp.float32)) - 1.0
            cmap = jnp.concatenate([y, jnp.ones((*y.shape[:-1], 1), y.dtype)], axis=-1)
            vec = jnp.broadcast_to(self.param("present", nn.initializers.normal(1.0), (d,)), (b, d))
        else:
            raise ValueError(f"ConditionEncoder: unknown condition kind {s.kind!r}.")
        null = self.param("null", nn.initializers.normal(1.0), (d,))
        if drop is not None:
            drop = jnp.asarray(drop, bool).reshape(b)
            vec = jnp.where(drop[:, None], null[None], vec)
            if cmap is not None:
                cmap = jnp.where(drop[:, None, None, None], 0.0, cmap)
        return vec, cmap


def drop_mask(key: PRNGKey, num: int, p_uncond: float) -> Array:
    """bool [num]: which conditions training replaces by the null condition."""
    return jax.random.bernoulli(key, p_uncond, (num,))
