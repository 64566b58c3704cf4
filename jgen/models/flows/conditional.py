"""Conditional coupling flows: a context vector into every coupling network.

A conditional flow is a family of bijectors :math:`f_c`, one per context
:math:`c` (a class label, a feature vector, the integer image being
dequantized). Each coupling's conditioner sees the masked input *and* the
context, :math:`(s, t) = \\text{NN}([x_m, h(c)])`, so for every fixed :math:`c`
the map is an ordinary coupling flow (invertible in closed form, triangular
Jacobian) and

.. math::
    \\log p(x \\mid c) = \\log p_Z(f_c^{-1}(x)) + \\log|\\det J_{f_c^{-1}}(x)|.

The context enters only through the conditioners, never through the masked
(kept) coordinates, so nothing about invertibility depends on it.

jgen builds a conditional flow as `flow_fn(params, context) -> bijector`: the
bijector closes over the context, exactly as the unconditional
`flow_fn(params)` closes over the parameters. Modules here hold architecture
only.

The context :math:`h(c)` is one of: a learned class embedding (`num_classes`), a
float vector through an optional Dense layer, or -- with `condition_spec`, the
shared conditioning interface of `jgen.conditioning` -- the output of a
`ConditionEncoder` trained jointly with the flow: the embedding `vec` [B, E] of a
vector, a caption (token sequence) or an image measurement, with, for images, the
condition map [B, H, W, M] flattened and appended (`flat_context`). The encoder's
`drop` swaps in its learned null condition (condition dropout).

References:
  Winkler, Worrall, Hoogeboom & Welling, "Learning Likelihoods with Conditional
    Normalizing Flows", 2019. https://arxiv.org/abs/1912.00042
  Ho, Chen, Srinivas, Duan & Abbeel, "Flow++", ICML 2019 (the conditional flow
    used for variational dequantization).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.bijectors import Chain, MaskedCoupling, Reverse, half_mask
from jgen.conditioning.encoder import ConditionEncoder
from jgen.conditioning.spec import ConditionSpec, check_condition


def flat_context(vec: jax.Array, cmap: jax.Array | None) -> jax.Array:
    """A `ConditionEncoder`'s output as one flat context [B, E (+ H * W * M)]: the
    embedding, then (image conditions) the condition map flattened."""
    if cmap is None:
        return vec
    return jnp.concatenate([vec, cmap.reshape((cmap.shape[0], -1)).astype(vec.dtype)], axis=-1)


def flat_context_dim(spec: ConditionSpec) -> int:
    """The width of `flat_context` for a condition `spec`."""
    h, w, _ = spec.image_shape
    return spec.embed_dim + (h * w * spec.map_channels if spec.kind == "image" else 0)


def dummy_condition(spec: ConditionSpec, num: int = 1) -> jax.Array:
    """A zero raw condition [num, *spec.shape] of the spec's dtype (for `init`)."""
    return jnp.zeros((num, *spec.shape), spec.dtype)


class ConditionalCouplingMLP(nn.Module):
    """(x_masked [B, D], context [B, C]) -> (shift [B, D], raw_log_scale [B, D]).

    The context is concatenated to the masked input of every hidden layer's
    input; the output layer is zero-initialised so the coupling starts as the
    identity.
    """

    hidden: Sequence[int]
    dim: int

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jnp.concatenate([x, context.astype(x.dtype)], axis=-1)
        for i, width in enumerate(self.hidden):
            h = nn.relu(nn.Dense(width, name=f"dense_{i}")(h))
        out = nn.Dense(2 * self.dim, kernel_init=nn.initializers.zeros, name="out")(h)
        shift, raw_log_scale = jnp.split(out, 2, axis=-1)
        return shift, raw_log_scale


class ConditionalCouplingMLPs(nn.Module):
    """`num_layers` conditioners plus an optional context embedding.

    `embed(context, drop=None)` maps the raw context to features:

    - `condition_spec` set (a `jgen.conditioning.ConditionSpec` of kind "vector",
      "tokens" or "image"): the context is that kind's raw condition (float
      [B, D], int token ids [B, L], or an image measurement [B, h, w, c]), encoded
      by a `ConditionEncoder` submodule named "condition" into `flat_context`
      (the embedding, plus the flattened condition map for images); `drop` (bool
      [B]) swaps in the null condition. Then, if `context_features > 0`, one Dense
      layer.
    - `num_classes > 0`: an integer label [B] looked up in a learned embedding of
      size `context_features`;
    - otherwise a float vector [B, C] goes through one Dense layer with
      `context_features` outputs (or is used as is when `context_features == 0`).

    `condition(x, i, features)` runs layer i.
    """

    num_layers: int
    hidden: Sequence[int]
    dim: int
    context_features: int = 16
    num_classes: int = 0
    condition_spec: ConditionSpec | None = None

    def setup(self):
        if self.condition_spec is not None and self.num_classes > 0:
            raise ValueError("ConditionalCouplingMLPs: give num_classes (class labels) or condition_spec "
                             "(a ConditionEncoder's condition), not both.")
        self.nets = [ConditionalCouplingMLP(tuple(self.hidden), self.dim, name=f"coupling_{i}")
                     for i in range(self.num_layers)]
        if self.condition_spec is not None:
            self.encoder = ConditionEncoder(self.condition_spec, name="condition")
        if self.num_classes > 0:
            self.context_embed = nn.Embed(self.num_classes, self.context_features, name="context_embed")
        elif self.context_features > 0:
            self.context_embed = nn.Dense(self.context_features, name="context_embed")
        else:
            self.context_embed = None

    def embed(self, context: jax.Array, drop: jax.Array | None = None) -> jax.Array:
        if self.condition_spec is not None:
            num = jnp.shape(context)[0] if jnp.ndim(context) else 1
            context = check_condition(self.condition_spec, context, num, who="ConditionalCouplingMLPs")
            features = flat_context(*self.encoder(context, drop))
            return features if self.context_embed is None else self.context_embed(features)
        if drop is not None:
            raise ValueError("ConditionalCouplingMLPs: `drop` (condition dropout) needs a condition_spec; this "
                             "module conditions on labels or a plain context vector.")
        if self.num_classes > 0:
            if context.ndim != 1 or not jnp.issubdtype(context.dtype, jnp.integer):
                raise ValueError(
                    f"A label-conditioned flow (num_classes={self.num_classes}) takes integer labels of "
                    f"shape [B]; received {context.dtype} of shape {context.shape}."
                )
            return self.context_embed(context)
        if context.ndim != 2:
            raise ValueError(
                f"A vector-conditioned flow takes a context of shape [B, C]; received shape {context.shape}. "
                "Reshape it to [B, -1], or set num_classes for integer labels."
            )
        return context if self.context_embed is None else self.context_embed(context)

    def condition(self, x: jax.Array, i: int, features: jax.Array):
        return self.nets[i](x, features)

    def __call__(self, x: jax.Array, context: jax.Array, drop: jax.Array | None = None):
        features = self.embed(context, drop)
        return [net(x, features) for net in self.nets]


def make_conditional_coupling_flow(nets: ConditionalCouplingMLPs, *, log_scale_bound: float | None = 3.0,
                                   final=()):
    """`flow_fn(params, context, drop=None) -> bijector` on [B, D]: `nets.num_layers`
    affine half-mask couplings, each followed by `Reverse`, whose conditioners see
    the context, then the bijectors in `final` (e.g. `[Sigmoid()]`).

    The context is embedded once per call (`nets.embed`), and every coupling
    closes over the same features. `drop` (bool [B]) is the condition dropout of a
    `condition_spec` model (see `ConditionalCouplingMLPs`).
    """
    dim = nets.dim
    # D = 1: nothing to keep, so the "coupling" is an affine map whose shift and
    # scale depend on the context alone.
    mask = half_mask(dim) if dim >= 2 else jnp.zeros((dim,), bool)

    def flow_fn(params, context, drop=None):
        features = nets.apply(params, context, drop, method=ConditionalCouplingMLPs.embed)
        layers = []
        for i in range(nets.num_layers):
            def conditioner(xm, i=i):
                feats = features
                if feats.shape[0] != xm.shape[0]:
                    raise ValueError(
                        f"The context has batch size {feats.shape[0]} but the flow's input has "
                        f"{xm.shape[0]}; give one context row per example."
                    )
                return nets.apply(params, xm, i, feats, method=ConditionalCouplingMLPs.condition)

            layers += [MaskedCoupling(mask, conditioner, log_scale_bound=log_scale_bound), Reverse()]
        return Chain(layers + list(final))

    return flow_fn
