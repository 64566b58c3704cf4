"""Variational autoencoder architectures (Flax Linen, architecture only)."""

from jgen.models.vae.conv import ConvDecoder, ConvEncoder
from jgen.models.vae.mlp import MLPDecoder, MLPEncoder
from jgen.models.vae.vae import VAE, conv_vae, mlp_vae
from jgen.models.vae.vqvae import VQVAE, Codebook, VQDecoder, VQEncoder

__all__ = [
    "Codebook", "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "VAE", "VQDecoder", "VQEncoder",
    "VQVAE", "conv_vae", "mlp_vae",
]
