"""Time-conditioned MLP vector fields for continuous normalizing flows (architecture only).

`CNFVectorField` maps `(t, z [B, D]) -> dz/dt [B, D]` for `jgen.bijectors.ContinuousFlow`
on 2-D toy data and other small dimensions. Time enters every layer, either FFJORD's
ConcatSquash gating or by concatenating `t` to the layer input. Each row of the output
depends on the same row of `z` only (no batch statistics), as `ContinuousFlow` requires.

References:
  Grathwohl, W., Chen, R. T. Q., Bettencourt, J., Sutskever, I. & Duvenaud, D. (2019).
    FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models.
    ICLR. https://arxiv.org/abs/1810.01367 (code: `lib/layers/diffeq_layers/basic.py`,
    `ConcatSquashLinear`, `ConcatLinear`).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_CONDITIONINGS = ("concatsquash", "concat")


def _time_column(t: jax.Array, h: jax.Array) -> jax.Array:
    """A scalar `t` or per-example `t` [B] as a column [B, 1] of h's dtype."""
    t = jnp.asarray(t, h.dtype)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != h.shape[0]):
        raise ValueError(
            f"CNFVectorField: t must be a scalar or have shape [B] = ({h.shape[0]},); "
            f"received shape {t.shape}."
        )
    return jnp.broadcast_to(jnp.reshape(t, (-1, 1)), (h.shape[0], 1))


class ConcatSquashDense(nn.Module):
    r"""FFJORD's ConcatSquash layer, :math:`(W h + b) \odot \sigma(g\,t + c) + a\,t`.

    The time gates each output unit multiplicatively and shifts it additively.

    Attributes:
      features: output width.
      param_dtype: dtype of the parameters.
    """

    features: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array, h: jax.Array) -> jax.Array:
        tc = _time_column(t, h)
        dense = functools.partial(nn.Dense, self.features, param_dtype=self.param_dtype)
        gate = nn.sigmoid(dense(name="hyper_gate")(tc))
        shift = dense(use_bias=False, name="hyper_bias")(tc)
        return dense(name="layer")(h) * gate + shift


class ConcatDense(nn.Module):
    r"""Dense layer on the input with time appended, :math:`W [h, t] + b`.

    Attributes:
      features: output width.
      param_dtype: dtype of the parameters.
    """

    features: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array, h: jax.Array) -> jax.Array:
        return nn.Dense(self.features, param_dtype=self.param_dtype, name="layer")(
            jnp.concatenate([h, _time_column(t, h)], axis=1)
        )


class CNFVectorField(nn.Module):
    r"""Time-conditioned MLP :math:`f_\theta(t, z)` for continuous flows.

    `len(hidden)` hidden layers with `activation`, then an output layer of width D
    (z's last axis); every layer sees the time (`conditioning`). Smooth activations
    (tanh, softplus) keep the ODE smooth for high-order adaptive solvers; ReLU would
    make the Jacobian discontinuous and the divergence piecewise constant.

    Attributes:
      hidden: widths of the hidden layers, e.g. (64, 64, 64) as in FFJORD's toy models.
      activation: elementwise nonlinearity, e.g. `jnp.tanh` (default) or
        `jax.nn.softplus`.
      conditioning: "concatsquash" (FFJORD's `ConcatSquashDense`) or "concat"
        (`ConcatDense`).
      zero_init_output: if True the output layer starts at zero, so the flow starts as
        the identity map (a common stabiliser); the default draws it like the others.
      param_dtype: dtype of the parameters (e.g. `jnp.float64` for x64 checks).

    Call:
      `net.apply(params, t, z)` with `t` a scalar or [B] and `z` [B, D]; returns [B, D].

    Example:
      >>> net = CNFVectorField(hidden=(64, 64, 64))
      >>> params = net.init(key, 0.0, jnp.zeros((1, 2)))
      >>> flow = ContinuousFlow(lambda t, z: net.apply(params, t, z))
    """

    hidden: Sequence[int] = (64, 64, 64)
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh
    conditioning: str = "concatsquash"
    zero_init_output: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array, z: jax.Array) -> jax.Array:
        if self.conditioning not in _CONDITIONINGS:
            raise ValueError(
                f"CNFVectorField: conditioning must be one of {_CONDITIONINGS}; received "
                f"{self.conditioning!r}."
            )
        if z.ndim != 2:
            raise ValueError(
                f"CNFVectorField: z must have shape [B, D]; received shape {z.shape}. "
                "Flatten the event first, or add a batch axis (z[None])."
            )
        layer = ConcatSquashDense if self.conditioning == "concatsquash" else ConcatDense
        h = z
        for i, width in enumerate(self.hidden):
            h = self.activation(layer(width, self.param_dtype, name=f"hidden_{i}")(t, h))
        out = layer(z.shape[1], self.param_dtype, name="out")(t, h)
        if self.zero_init_output:
            # Zero the output by a learnable scale initialised at 0: exact identity at
            # init without zeroing the time-dependent parts' gradients.
            scale = self.param(
                "out_scale", nn.initializers.zeros, (z.shape[1],), self.param_dtype
            )
            out = out * scale[None]
        return out
