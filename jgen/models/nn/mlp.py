"""A plain multilayer perceptron, the building block of the MLP models."""

from typing import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """Dense layers with an activation between them (none after the last).

    Attributes:
      features: output width of each layer; the last entry is the output size.
      activation: applied after every layer but the last.
    """

    features: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, width in enumerate(self.features):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            if i < len(self.features) - 1:
                x = self.activation(x)
        return x
