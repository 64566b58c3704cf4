"""Convolutional encoder and decoder for VAEs (optionally conditional).

The encoder downsamples twice with stride-2 convolutions (H -> H/4), flattens
and maps to the Gaussian posterior's mean and log-std; the decoder mirrors it
with transposed convolutions. Image height and width must be divisible by 4
(8x8 digits -> 2x2, 28x28 MNIST -> 7x7).

Conditioning (both optional): a vector ``y`` [B, K] (one-hot label, or the embedding
``vec`` of `jgen.conditioning.ConditionEncoder`) is concatenated to the dense layer
next to the latent, in the encoder and in the decoder; an image-shaped condition map
``cmap`` [B, H, W, C'] (kind "image") is concatenated to the encoder's input channels
and, average-pooled to each resolution, to the decoder's feature maps at every scale
(H/4, H/2, H), so a pixel-aligned condition (e.g. the low-resolution image of
super-resolution) reaches the output convolutions directly.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.models.vae.mlp import _with_label, check_condition_inputs


def _check_divisible(image_shape, who):
    h, w = image_shape[0], image_shape[1]
    if h % 4 or w % 4:
        raise ValueError(f"{who} downsamples by 4: image height and width must be multiples of 4, got {h}x{w}.")


def _pooled(cmap: jax.Array, h: int, w: int) -> jax.Array:
    """cmap [B, H, W, C'] average-pooled to [B, h, w, C'] (h, w divide H, W)."""
    b, hh, ww, c = cmap.shape
    fh, fw = hh // h, ww // w
    return cmap.reshape(b, h, fh, w, fw, c).mean(axis=(2, 4))


class ConvEncoder(nn.Module):
    """x [B, H, W, C] (+ y [B, K], + cmap [B, H, W, C']) -> (mean, log_std), each [B, latent_dim]."""

    channels: Sequence[int]  # two stages, e.g. (32, 64)
    latent_dim: int
    hidden: int = 256

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None,
                 cmap: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        _check_divisible(x.shape[1:3], "ConvEncoder")
        check_condition_inputs(y, cmap, x.shape[0], x.shape[1:3], "ConvEncoder")
        h = x if cmap is None else jnp.concatenate([x, cmap.astype(x.dtype)], axis=-1)
        for i, ch in enumerate(self.channels):
            h = nn.relu(nn.Conv(ch, (3, 3), name=f"conv_{i}a")(h))
            h = nn.relu(nn.Conv(ch, (4, 4), strides=(2, 2), name=f"conv_{i}b")(h))
        h = _with_label(h.reshape((h.shape[0], -1)), y)
        h = nn.relu(nn.Dense(self.hidden, name="fc")(h))
        mean, log_std = jnp.split(nn.Dense(2 * self.latent_dim, name="out")(h), 2, axis=-1)
        return mean, log_std


class ConvDecoder(nn.Module):
    """z [B, latent_dim] (+ y [B, K], + cmap [B, H, W, C']) -> outputs [B, H, W, C * out_channels]."""

    channels: Sequence[int]  # mirrors the encoder, e.g. (64, 32)
    image_shape: Sequence[int]
    out_channels: int = 1
    hidden: int = 256

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None, cmap: jax.Array | None = None) -> jax.Array:
        _check_divisible(self.image_shape, "ConvDecoder")
        h_out, w_out, c = self.image_shape
        check_condition_inputs(y, cmap, z.shape[0], (h_out, w_out), "ConvDecoder")
        h0, w0 = h_out // 4, w_out // 4

        def with_map(h):
            if cmap is None:
                return h
            return jnp.concatenate([h, _pooled(cmap, h.shape[1], h.shape[2]).astype(h.dtype)], axis=-1)

        h = nn.relu(nn.Dense(self.hidden, name="fc")(_with_label(z, y)))
        h = nn.relu(nn.Dense(h0 * w0 * self.channels[0], name="fc_grid")(h))
        h = with_map(h.reshape((z.shape[0], h0, w0, self.channels[0])))
        for i, ch in enumerate(self.channels):
            h = nn.relu(nn.ConvTranspose(ch, (4, 4), strides=(2, 2), name=f"deconv_{i}")(h))
            h = nn.relu(nn.Conv(ch, (3, 3), name=f"conv_{i}")(with_map(h)))
        return nn.Conv(c * self.out_channels, (3, 3), name="out")(with_map(h))
