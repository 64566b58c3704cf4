"""Autoregressive architectures (Flax Linen, architecture only): MADE and its masks."""

from jgen.models.autoregressive.made import (
    MADE,
    MADEMasks,
    MaskedDense,
    made_conditioner,
    made_masks,
)

__all__ = ["MADE", "MADEMasks", "MaskedDense", "made_conditioner", "made_masks"]
