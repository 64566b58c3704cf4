"""Network pieces shared by several families."""

from jgen.models.nn.mlp import MLP

__all__ = ["MLP"]
