"""The VAE container: an encoder, a decoder and, for a conditional VAE (CVAE) on
anything but class labels, a condition encoder.

`encode(x, y=None, cmap=None)` returns q(z|x[,c]) as (mean, log_std); `decode(z,
y=None, cmap=None)` returns the decoder's raw outputs [B, H, W, C * P] that a
likelihood in `jgen.losses.likelihoods` reads. `y` is a condition vector [B, K] (a
one-hot label, or the embedding of `embed`) and `cmap` an image-shaped condition map
[B, H, W, C'] (kind "image"). `embed(condition, drop=None) -> (vec, cmap)` runs the
`jgen.conditioning.ConditionEncoder` (the ``"condition"`` submodule, trained jointly
with the encoder and decoder) on a raw condition. Losses call the methods through
`model.apply(params, x, method=VAE.encode)`.

Reference:
  Sohn, K., Lee, H. & Yan, X. (2015). Learning Structured Output Representation using
    Deep Conditional Generative Models. NeurIPS. (The CVAE: q(z|x,c), p(x|z,c).)
"""

import flax.linen as nn
import jax


class VAE(nn.Module):
    """Holds `encoder` and `decoder` submodules (any of the MLP / conv ones) and an
    optional `condition` encoder (a `jgen.conditioning.ConditionEncoder`)."""

    encoder: nn.Module
    decoder: nn.Module
    condition: nn.Module | None = None

    def embed(self, condition: jax.Array, drop: jax.Array | None = None):
        """Raw condition [B, ...] -> (vec [B, D], cmap [B, H, W, C'] or None)."""
        if self.condition is None:
            raise ValueError("VAE.embed: this VAE has no condition encoder; build it with "
                             "mlp_vae(..., condition=spec) / conv_vae(..., condition=spec).")
        return self.condition(condition, drop)

    def encode(self, x: jax.Array, y: jax.Array | None = None, cmap: jax.Array | None = None):
        return self.encoder(x, y, cmap)

    def decode(self, z: jax.Array, y: jax.Array | None = None, cmap: jax.Array | None = None):
        return self.decoder(z, y, cmap)

    def __call__(self, x: jax.Array, y: jax.Array | None = None, condition: jax.Array | None = None,
                 drop: jax.Array | None = None):
        """decode(posterior mean): `y` a one-hot label, or `condition` a raw condition
        (for a VAE with a condition encoder; then `y` must be None)."""
        cmap = None
        if self.condition is not None:
            if condition is None or y is not None:
                raise ValueError("VAE: this VAE has a condition encoder: pass the raw condition as "
                                 "`condition=` (and no y).")
            y, cmap = self.condition(condition, drop)
        mean, _ = self.encoder(x, y, cmap)
        return self.decoder(mean, y, cmap)


def _condition_encoder(condition):
    if condition is None:
        return None
    from jgen.conditioning.encoder import ConditionEncoder

    return ConditionEncoder(condition)


def mlp_vae(encoder_hidden, decoder_hidden, latent_dim: int, image_shape, out_channels: int = 1,
            condition=None) -> VAE:
    """An MLP VAE (the Foundation slice's model); `condition`: a
    `jgen.conditioning.ConditionSpec` for a condition encoder (None: none)."""
    from jgen.models.vae.mlp import MLPDecoder, MLPEncoder

    return VAE(MLPEncoder(tuple(encoder_hidden), latent_dim),
               MLPDecoder(tuple(decoder_hidden), tuple(image_shape), out_channels), _condition_encoder(condition))


def conv_vae(channels, latent_dim: int, image_shape, out_channels: int = 1, hidden: int = 256,
             condition=None) -> VAE:
    """A convolutional VAE: two stride-2 stages each way; `condition` as in `mlp_vae`."""
    from jgen.models.vae.conv import ConvDecoder, ConvEncoder

    return VAE(ConvEncoder(tuple(channels), latent_dim, hidden),
               ConvDecoder(tuple(reversed(tuple(channels))), tuple(image_shape), out_channels, hidden),
               _condition_encoder(condition))
