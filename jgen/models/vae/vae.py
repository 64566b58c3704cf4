"""The VAE container: an encoder and a decoder, each optionally label-conditioned.

`encode(x, y=None)` returns q(z|x[,y]) as (mean, log_std); `decode(z, y=None)`
returns the decoder's raw outputs [B, H, W, C * P] that a likelihood in
`jgen.losses.likelihoods` reads. Losses call them through
`model.apply(params, x, method=VAE.encode)`.
"""

import flax.linen as nn
import jax


class VAE(nn.Module):
    """Holds `encoder` and `decoder` submodules (any of the MLP / conv ones)."""

    encoder: nn.Module
    decoder: nn.Module

    def encode(self, x: jax.Array, y: jax.Array | None = None):
        return self.encoder(x, y)

    def decode(self, z: jax.Array, y: jax.Array | None = None):
        return self.decoder(z, y)

    def __call__(self, x: jax.Array, y: jax.Array | None = None):
        mean, _ = self.encoder(x, y)
        return self.decoder(mean, y)


def mlp_vae(encoder_hidden, decoder_hidden, latent_dim: int, image_shape, out_channels: int = 1) -> VAE:
    """An MLP VAE (the Foundation slice's model)."""
    from jgen.models.vae.mlp import MLPDecoder, MLPEncoder

    return VAE(MLPEncoder(tuple(encoder_hidden), latent_dim),
               MLPDecoder(tuple(decoder_hidden), tuple(image_shape), out_channels))


def conv_vae(channels, latent_dim: int, image_shape, out_channels: int = 1, hidden: int = 256) -> VAE:
    """A convolutional VAE: two stride-2 stages each way."""
    from jgen.models.vae.conv import ConvDecoder, ConvEncoder

    return VAE(ConvEncoder(tuple(channels), latent_dim, hidden),
               ConvDecoder(tuple(reversed(tuple(channels))), tuple(image_shape), out_channels, hidden))
