"""MLP encoder and decoder for VAEs on flattened images (optionally label-conditioned).

Architecture only: the encoder maps an image (and, for a conditional VAE, a
one-hot label) to the mean and log standard deviation of a diagonal Gaussian
q(z|x[,y]); the decoder maps a latent z (and label) to `out_channels` values per
image channel (e.g. Bernoulli logits, Gaussian mean and log-std, or mixture
parameters). The likelihood that reads them lives in `jgen.losses.likelihoods`.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.models.nn import MLP


def _with_label(h: jax.Array, y: jax.Array | None) -> jax.Array:
    return h if y is None else jnp.concatenate([h, y.astype(h.dtype)], axis=-1)


class MLPEncoder(nn.Module):
    """x [B, H, W, C] (+ y [B, K]) -> (mean [B, latent_dim], log_std [B, latent_dim])."""

    hidden: Sequence[int]
    latent_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        h = _with_label(x.reshape((x.shape[0], -1)), y)
        h = MLP(tuple(self.hidden) + (2 * self.latent_dim,), name="mlp")(h)
        mean, log_std = jnp.split(h, 2, axis=-1)
        return mean, log_std


class MLPDecoder(nn.Module):
    """z [B, latent_dim] (+ y) -> outputs [B, H, W, C * out_channels]."""

    hidden: Sequence[int]
    image_shape: Sequence[int]
    out_channels: int = 1

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
        h, w, c = self.image_shape
        out = MLP(tuple(self.hidden) + (h * w * c * self.out_channels,), name="mlp")(_with_label(z, y))
        return out.reshape((z.shape[0], h, w, c * self.out_channels))
