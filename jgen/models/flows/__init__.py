"""Flow architectures (Flax Linen, architecture only): conditioner networks."""

from jgen.models.flows.conditioners import CouplingMLP, CouplingMLPs

__all__ = ["CouplingMLP", "CouplingMLPs"]
