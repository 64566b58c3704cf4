"""MLP encoder and decoder for VAEs on flattened images (optionally conditional).

Architecture only: the encoder maps an image (and, for a conditional VAE, a condition
embedding) to the mean and log standard deviation of a diagonal Gaussian q(z|x[,c]);
the decoder maps a latent z (and the condition) to `out_channels` values per image
channel (e.g. Bernoulli logits, Gaussian mean and log-std, or mixture parameters). The
likelihood that reads them lives in `jgen.losses.likelihoods`.

The condition enters in two forms (both optional):

- ``y`` [B, K]: a vector concatenated to the flattened input of each MLP (a one-hot
  class label for the label-conditional VAE, or the embedding ``vec`` of
  `jgen.conditioning.ConditionEncoder` for any other kind);
- ``cmap`` [B, H, W, C']: an image-shaped condition map (kind "image"), flattened and
  concatenated the same way.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.models.nn import MLP


def _with_label(h: jax.Array, y: jax.Array | None) -> jax.Array:
    return h if y is None else jnp.concatenate([h, y.astype(h.dtype)], axis=-1)


def check_condition_inputs(y, cmap, batch: int, spatial, who: str) -> None:
    """Raises a clear error unless y is [B, K] and cmap is [B, H, W, C'] at the model's
    resolution `spatial` = (H, W) (each may be None)."""
    if y is not None and (jnp.ndim(y) != 2 or jnp.shape(y)[0] != batch):
        raise ValueError(f"{who}: the condition vector y must be [B, K] with B = {batch}; received shape "
                         f"{list(jnp.shape(y))}. Labels go in one-hot; other conditions through "
                         "jgen.conditioning.ConditionEncoder.")
    if cmap is not None and (jnp.ndim(cmap) != 4 or jnp.shape(cmap)[0] != batch
                             or tuple(jnp.shape(cmap)[1:3]) != tuple(spatial)):
        raise ValueError(f"{who}: the condition map must be [B, H, W, C'] = [{batch}, {spatial[0]}, {spatial[1]}, "
                         f"C'] (the model's resolution); received shape {list(jnp.shape(cmap))}.")


class MLPEncoder(nn.Module):
    """x [B, H, W, C] (+ y [B, K], + cmap [B, H, W, C']) -> (mean, log_std), each [B, latent_dim]."""

    hidden: Sequence[int]
    latent_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None,
                 cmap: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        check_condition_inputs(y, cmap, x.shape[0], x.shape[1:3], "MLPEncoder")
        h = x.reshape((x.shape[0], -1))
        if cmap is not None:
            h = jnp.concatenate([h, cmap.reshape((x.shape[0], -1)).astype(h.dtype)], axis=-1)
        h = MLP(tuple(self.hidden) + (2 * self.latent_dim,), name="mlp")(_with_label(h, y))
        mean, log_std = jnp.split(h, 2, axis=-1)
        return mean, log_std


class MLPDecoder(nn.Module):
    """z [B, latent_dim] (+ y [B, K], + cmap [B, H, W, C']) -> outputs [B, H, W, C * out_channels]."""

    hidden: Sequence[int]
    image_shape: Sequence[int]
    out_channels: int = 1

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None, cmap: jax.Array | None = None) -> jax.Array:
        h, w, c = self.image_shape
        check_condition_inputs(y, cmap, z.shape[0], (h, w), "MLPDecoder")
        inp = _with_label(z, y)
        if cmap is not None:
            inp = jnp.concatenate([inp, cmap.reshape((z.shape[0], -1)).astype(inp.dtype)], axis=-1)
        out = MLP(tuple(self.hidden) + (h * w * c * self.out_channels,), name="mlp")(inp)
        return out.reshape((z.shape[0], h, w, c * self.out_channels))
