r"""MLP generator and discriminator for GANs on vectors and small images, optionally
class-conditional by concatenating a one-hot label to the input (Mirza & Osindero 2014),
or conditional on any other condition of `jgen.conditioning` (``condition=spec``).

Architecture only: the generator maps noise z [B, latent_dim] (and integer labels y [B])
to samples [B, *data_shape]; the discriminator maps samples (and labels) to one raw output
per example [B] -- a logit, a critic value or an f-GAN pre-activation, read by the
objectives in `jgen.losses.gan` and `jgen.losses.fgan`. The discriminator can use spectral
normalisation (`jgen.models.gan.spectral_norm`), in which case its ``__call__`` needs the
keyword ``update_stats`` (see that module for how the training step threads the
``"spectral"`` collection).

**Other conditions** (``condition`` a `jgen.conditioning.ConditionSpec` of kind "vector",
"tokens" or "image"; then y is the *raw* condition [B, ...]): each network has its own
`jgen.conditioning.ConditionEncoder` submodule ``"condition"`` (so each player of the
two-player game owns and trains its own), giving vec [B, D] and, for kind "image", a map
cmap [B, H, W, C']. The generator reads [z, vec, flatten(cmap)]. The discriminator
flattens [x, cmap] into its MLP, whose last hidden layer is the feature vector
:math:`\phi(x)`, and is a projection discriminator (Miyato & Koyama 2018, Eq. 3) on vec:

.. math:: D(x, c) = \psi(\phi(x)) + \langle V\,\mathrm{vec}(c), \phi(x)\rangle,

with :math:`\psi` and V linear (V is the ``"project"`` layer, not spectrally normalised).

References:
  Goodfellow, I. et al. (2014). Generative Adversarial Nets. NeurIPS.
    https://arxiv.org/abs/1406.2661
  Mirza, M. & Osindero, S. (2014). Conditional Generative Adversarial Nets.
    https://arxiv.org/abs/1411.1784
  Miyato, T. & Koyama, M. (2018). cGANs with Projection Discriminator. ICLR.
    https://arxiv.org/abs/1802.05637
"""

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.conditioning.encoder import ConditionEncoder
from jgen.conditioning.spec import ConditionSpec, check_condition
from jgen.models.gan.spectral_norm import SpectralDense
from jgen.models.nn import MLP
from jgen.typing import Array

GENERATOR_OUTPUTS = ("tanh", "identity")


def leaky_relu(x: Array) -> Array:
    """LeakyReLU with slope 0.2, the discriminator activation of DCGAN (Radford et al. 2016)."""
    return nn.leaky_relu(x, negative_slope=0.2)


def check_labels(y, num_classes: int, batch: int, who: str) -> Array | None:
    """Validates the labels of a (possibly) conditional net: integer class ids [B] when
    ``num_classes > 0``, None otherwise. Returns y (or None)."""
    if num_classes < 0:
        raise ValueError(f"{who}: num_classes must be >= 0 (0 = unconditional); got {num_classes}.")
    if num_classes == 0:
        if y is not None:
            raise ValueError(f"{who} is unconditional (num_classes=0) but labels y were passed; build it with "
                             f"num_classes=K to condition on K classes, or drop y.")
        return None
    if y is None:
        raise ValueError(f"{who} is conditional (num_classes={num_classes}): pass integer labels y of shape "
                         f"[B] = [{batch}], e.g. net.apply(variables, x, batch['label']).")
    y = jnp.asarray(y)
    if y.shape != (batch,) or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"{who}: labels y must be integer class ids of shape [B] = [{batch}]; got shape "
                         f"{list(y.shape)}, dtype {y.dtype}. For one-hot labels pass jnp.argmax(y, -1).")
    return y


def concat_label(h: Array, y: Array | None, num_classes: int) -> Array:
    """[h, one_hot(y)] along the last axis (h unchanged when y is None)."""
    if y is None:
        return h
    return jnp.concatenate([h, jax.nn.one_hot(y, num_classes, dtype=h.dtype)], axis=-1)


def encode_condition(spec: ConditionSpec, y, num_classes: int, batch: int, who: str):
    """Inside a compact method: checks the raw condition y (shape and dtype of `spec`) and
    runs the network's own `ConditionEncoder` (named "condition"): (vec [B, D], cmap or None)."""
    if num_classes:
        raise ValueError(f"{who}: give either num_classes (class labels) or condition (another kind), not both; "
                         f"got num_classes={num_classes} and condition kind {spec.kind!r}.")
    y = check_condition(spec, y, batch, who=who)
    return ConditionEncoder(spec, name="condition")(y)


def project(vec: Array, phi: Array) -> Array:
    """The projection term <V vec, phi> [B] of a projection discriminator (V: "project")."""
    v = nn.Dense(phi.shape[-1], use_bias=False, name="project")(vec.astype(phi.dtype))
    return jnp.sum(v * phi, axis=-1)


def check_update_stats(spectral_norm: bool, update_stats, who: str) -> bool:
    """``update_stats`` must be a bool when the net uses spectral norm (it decides whether u
    is stored); ignored otherwise."""
    if not spectral_norm:
        return False
    if not isinstance(update_stats, bool):
        raise TypeError(f"{who} uses spectral normalisation: pass update_stats=True in the discriminator's "
                         f"training step (with mutable=['spectral']) and update_stats=False elsewhere; got "
                         f"{update_stats!r}.")
    return update_stats


class MLPGenerator(nn.Module):
    """z [B, latent_dim] (+ y [B] int) -> samples [B, *data_shape].

    Attributes:
      hidden: hidden widths, e.g. (128, 128).
      data_shape: shape of one sample, e.g. (2,) or (28, 28, 1).
      num_classes: K > 0 for a conditional generator (one-hot y concatenated to z), 0 for none.
      output: "tanh" (samples in [-1, 1], for images scaled to [-1, 1]) or "identity"
        (unbounded, for toy data in R^d).
      activation: hidden activation.
      condition: a `jgen.conditioning.ConditionSpec` (kind vector / tokens / image): y is
        then the raw condition, encoded by the "condition" submodule; None: none.
    """

    hidden: Sequence[int]
    data_shape: Sequence[int]
    num_classes: int = 0
    output: str = "tanh"
    activation: Callable[[Array], Array] = nn.relu
    condition: ConditionSpec | None = None

    @nn.compact
    def __call__(self, z: Array, y: Array | None = None) -> Array:
        who = "MLPGenerator"
        if self.output not in GENERATOR_OUTPUTS:
            raise ValueError(f"{who}: unknown output {self.output!r}; choose one of {GENERATOR_OUTPUTS}.")
        if z.ndim != 2:
            raise ValueError(f"{who}: z must be [B, latent_dim]; got shape {list(z.shape)}.")
        if self.condition is not None:
            vec, cmap = encode_condition(self.condition, y, self.num_classes, z.shape[0], who)
            h = jnp.concatenate([z, vec.astype(z.dtype)] + ([] if cmap is None else [cmap.reshape((z.shape[0], -1))]),
                                axis=-1)
        else:
            h = concat_label(z, check_labels(y, self.num_classes, z.shape[0], who), self.num_classes)
        size = math.prod(self.data_shape)
        out = MLP(tuple(self.hidden) + (size,), self.activation, name="mlp")(h)
        if self.output == "tanh":
            out = jnp.tanh(out)
        return out.reshape((z.shape[0],) + tuple(self.data_shape))


class MLPDiscriminator(nn.Module):
    """x [B, ...] (+ y [B] int, or a raw condition) -> raw outputs [B].

    The last hidden layer's output phi(x) is sown as ``intermediates/features``.

    Attributes:
      hidden: hidden widths.
      num_classes: K > 0 for a conditional discriminator (one-hot y concatenated to the
        flattened x), 0 for none.
      spectral_norm: spectrally normalise every dense layer (then ``update_stats`` is required).
      activation: hidden activation (LeakyReLU 0.2 by default).
      condition: a `jgen.conditioning.ConditionSpec` (kind vector / tokens / image): y is
        then the raw condition; a projection discriminator on its embedding (module doc).
    """

    hidden: Sequence[int]
    num_classes: int = 0
    spectral_norm: bool = False
    activation: Callable[[Array], Array] = leaky_relu
    condition: ConditionSpec | None = None

    @nn.compact
    def __call__(self, x: Array, y: Array | None = None, *, update_stats: bool | None = None) -> Array:
        who = "MLPDiscriminator"
        if x.ndim < 2:
            raise ValueError(f"{who}: x must be a batch [B, ...]; got shape {list(x.shape)}. Use x[:, None] for "
                             f"scalar data.")
        update = check_update_stats(self.spectral_norm, update_stats, who)
        vec = None
        if self.condition is not None:
            vec, cmap = encode_condition(self.condition, y, self.num_classes, x.shape[0], who)
            if cmap is not None and tuple(cmap.shape[:-1]) != tuple(x.shape[:-1]):
                raise ValueError(f"{who}: the condition map {list(cmap.shape)} does not match the images "
                                 f"{list(x.shape)} (same [B, H, W] needed).")
            h = x.reshape((x.shape[0], -1))
            if cmap is not None:
                h = jnp.concatenate([h, cmap.reshape((x.shape[0], -1)).astype(h.dtype)], axis=-1)
        else:
            y = check_labels(y, self.num_classes, x.shape[0], who)
            h = concat_label(x.reshape((x.shape[0], -1)), y, self.num_classes)
        widths = tuple(self.hidden) + (1,)
        for i, width in enumerate(widths):
            if i == len(widths) - 1:  # phi(x), the features the output layer reads
                self.sow("intermediates", "features", h)
                phi = h
            if self.spectral_norm:
                h = SpectralDense(width, name=f"dense_{i}")(h, update_stats=update)
            else:
                h = nn.Dense(width, name=f"dense_{i}")(h)
            if i < len(widths) - 1:
                h = self.activation(h)
        out = h[:, 0]
        if vec is not None:
            out = out + project(vec, phi)
        return out
