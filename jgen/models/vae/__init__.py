"""Variational autoencoder architectures (Flax Linen, architecture only)."""

from jgen.models.vae.mlp import MLPDecoder, MLPEncoder, VAE

__all__ = ["MLPDecoder", "MLPEncoder", "VAE"]
