"""Flow architectures (Flax Linen, architecture only): conditioner networks for coupling
layers, MLPs on flat vectors and small ResNets on images."""

from jgen.models.flows.conditioners import CouplingMLP, CouplingMLPs
from jgen.models.flows.conv import ConvConditioner, ConvConditioners, ResidualBlock

__all__ = ["ConvConditioner", "ConvConditioners", "CouplingMLP", "CouplingMLPs", "ResidualBlock"]
