"""GAN architectures (Flax Linen, architecture only): MLP and DCGAN generators and
discriminators, the projection discriminator, and spectral normalisation."""

from jgen.models.gan.dcgan import DCGAN_RESOLUTIONS, DCGANDiscriminator, DCGANGenerator
from jgen.models.gan.mlp import MLPDiscriminator, MLPGenerator
from jgen.models.gan.spectral_norm import (
    SPECTRAL,
    SpectralConv,
    SpectralDense,
    spectral_normalize,
)

__all__ = [
    "DCGAN_RESOLUTIONS",
    "SPECTRAL",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLPDiscriminator",
    "MLPGenerator",
    "SpectralConv",
    "SpectralDense",
    "spectral_normalize",
]
