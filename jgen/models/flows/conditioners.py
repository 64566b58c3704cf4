"""Conditioner networks for coupling flows on flat vectors (architecture only).

`CouplingMLPs` holds one MLP per coupling layer; layer `i` maps the masked
input [B, D] to a shift and a raw log-scale, each [B, D] (or to the shift alone,
`additive=True`, for NICE's additive couplings). The last layer is
zero-initialised so every coupling starts as the identity (a common
stabiliser for RealNVP-style training). For images see `jgen.models.flows.conv`.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class CouplingMLP(nn.Module):
    """x_masked [B, D] -> (shift [B, D], raw_log_scale [B, D]); shift only if `additive`."""

    hidden: Sequence[int]
    dim: int
    additive: bool = False

    @nn.compact
    def __call__(self, x: jax.Array):
        h = x
        for i, width in enumerate(self.hidden):
            h = nn.relu(nn.Dense(width, name=f"dense_{i}")(h))
        out = nn.Dense(self.dim if self.additive else 2 * self.dim, kernel_init=nn.initializers.zeros,
                       name="out")(h)
        if self.additive:
            return out
        shift, raw_log_scale = jnp.split(out, 2, axis=-1)
        return shift, raw_log_scale


class CouplingMLPs(nn.Module):
    """`num_layers` independent conditioners; `condition(x, i)` runs layer i."""

    num_layers: int
    hidden: Sequence[int]
    dim: int
    additive: bool = False

    def setup(self):
        self.nets = [CouplingMLP(tuple(self.hidden), self.dim, self.additive, name=f"coupling_{i}")
                     for i in range(self.num_layers)]

    def condition(self, x: jax.Array, i: int):
        return self.nets[i](x)

    def __call__(self, x: jax.Array):
        return [net(x) for net in self.nets]
