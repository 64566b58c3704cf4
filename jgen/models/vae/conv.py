"""Convolutional encoder and decoder for VAEs (optionally label-conditioned).

The encoder downsamples twice with stride-2 convolutions (H -> H/4), flattens
and maps to the Gaussian posterior's mean and log-std; the decoder mirrors it
with transposed convolutions. Image height and width must be divisible by 4
(8x8 digits -> 2x2, 28x28 MNIST -> 7x7).
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.models.vae.mlp import _with_label


def _check_divisible(image_shape, who):
    h, w = image_shape[0], image_shape[1]
    if h % 4 or w % 4:
        raise ValueError(f"{who} downsamples by 4: image height and width must be multiples of 4, got {h}x{w}.")


class ConvEncoder(nn.Module):
    """x [B, H, W, C] (+ y [B, K]) -> (mean, log_std), each [B, latent_dim]."""

    channels: Sequence[int]  # two stages, e.g. (32, 64)
    latent_dim: int
    hidden: int = 256

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        _check_divisible(x.shape[1:3], "ConvEncoder")
        h = x
        for i, ch in enumerate(self.channels):
            h = nn.relu(nn.Conv(ch, (3, 3), name=f"conv_{i}a")(h))
            h = nn.relu(nn.Conv(ch, (4, 4), strides=(2, 2), name=f"conv_{i}b")(h))
        h = _with_label(h.reshape((h.shape[0], -1)), y)
        h = nn.relu(nn.Dense(self.hidden, name="fc")(h))
        mean, log_std = jnp.split(nn.Dense(2 * self.latent_dim, name="out")(h), 2, axis=-1)
        return mean, log_std


class ConvDecoder(nn.Module):
    """z [B, latent_dim] (+ y) -> outputs [B, H, W, C * out_channels]."""

    channels: Sequence[int]  # mirrors the encoder, e.g. (64, 32)
    image_shape: Sequence[int]
    out_channels: int = 1
    hidden: int = 256

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
        _check_divisible(self.image_shape, "ConvDecoder")
        h_out, w_out, c = self.image_shape
        h0, w0 = h_out // 4, w_out // 4
        h = nn.relu(nn.Dense(self.hidden, name="fc")(_with_label(z, y)))
        h = nn.relu(nn.Dense(h0 * w0 * self.channels[0], name="fc_grid")(h))
        h = h.reshape((z.shape[0], h0, w0, self.channels[0]))
        for i, ch in enumerate(self.channels):
            h = nn.relu(nn.ConvTranspose(ch, (4, 4), strides=(2, 2), name=f"deconv_{i}")(h))
            h = nn.relu(nn.Conv(ch, (3, 3), name=f"conv_{i}")(h))
        return nn.Conv(c * self.out_channels, (3, 3), name="out")(h)
