"""MLP encoder and decoder for a VAE on flattened images.

Architecture only: the encoder maps an image to the mean and log standard
deviation of a diagonal Gaussian q(z|x); the decoder maps a latent z to the
logits of a factorised Bernoulli p(x|z). The objective lives in
`jgen.losses.elbo` and `jgen.losses.iwae`.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.models.nn import MLP


class MLPEncoder(nn.Module):
    """x [B, H, W, C] -> (mean [B, latent_dim], log_std [B, latent_dim])."""

    hidden: Sequence[int]
    latent_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x.reshape((x.shape[0], -1))
        h = MLP(tuple(self.hidden) + (2 * self.latent_dim,), name="mlp")(h)
        mean, log_std = jnp.split(h, 2, axis=-1)
        return mean, log_std


class MLPDecoder(nn.Module):
    """z [B, latent_dim] -> logits [B, *image_shape]."""

    hidden: Sequence[int]
    image_shape: Sequence[int]

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        size = 1
        for d in self.image_shape:
            size *= d
        logits = MLP(tuple(self.hidden) + (size,), name="mlp")(z)
        return logits.reshape((z.shape[0], *self.image_shape))


class VAE(nn.Module):
    """Holds an encoder and a decoder; `encode` and `decode` are the two apply methods.

    `__call__` runs both on a batch (encoder mean as the latent) so that
    `init` creates every parameter; losses call `encode`/`decode` directly via
    `apply(params, x, method=VAE.encode)`.
    """

    encoder_hidden: Sequence[int]
    decoder_hidden: Sequence[int]
    latent_dim: int
    image_shape: Sequence[int]

    def setup(self):
        self.encoder = MLPEncoder(self.encoder_hidden, self.latent_dim)
        self.decoder = MLPDecoder(self.decoder_hidden, self.image_shape)

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def __call__(self, x):
        mean, _ = self.encoder(x)
        return self.decoder(mean)
