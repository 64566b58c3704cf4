"""Flax Linen networks of the score-based / diffusion family (architecture only)."""

from jgen.models.diffusion.embeddings import (
    GaussianFourierProjection,
    sinusoidal_embedding,
)
from jgen.models.diffusion.mlp import ScoreMLP
from jgen.models.diffusion.unet import UNet

__all__ = ["GaussianFourierProjection", "ScoreMLP", "UNet", "sinusoidal_embedding"]
