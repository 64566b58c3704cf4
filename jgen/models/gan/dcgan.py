r"""DCGAN generator and discriminator for 16x16, 24x24, 28x28 (MNIST) and 32x32 (CIFAR-10)
images, with an optional projection discriminator for conditional GANs.

**Generator** (Radford et al. 2016): z [B, latent_dim] (+ one-hot y) -> dense -> a base grid
(4x4 for 16x16, 6x6 for 24x24, 7x7 for 28x28, 4x4 for 32x32) with ``features * 2**n_up``
channels -> ``n_up`` stride-2 4x4 transposed convolutions (3 for 32x32, 2 otherwise), halving the channels each time ->
a 3x3 convolution to C channels -> tanh, so samples lie in [-1, 1] (scale the data to
[-1, 1] to match).

*Norm choice.* DCGAN used batch norm in the generator. Here the default is ``norm="layer"``:
layer normalisation over (H, W, C) of each example (`flax.linen.GroupNorm` with one group,
per-channel scale and offset), or ``"none"``. A per-example norm keeps the generator a
function of each z alone (a sample does not depend on the batch it was drawn in), and
needs no mutable ``batch_stats`` collection in the training step.

**Discriminator**: ``n_up`` stride-2 4x4 convolutions (``features``, ``2 * features``, ...)
with LeakyReLU(0.2) and no normalisation (batch norm couples the examples, which breaks
the per-example gradient penalty of WGAN-GP; Gulrajani et al. 2017, Sec. 4), flattened to
the feature vector :math:`\phi(x)`; optionally every layer spectrally normalised
(``spectral_norm=True``, Miyato et al. 2018; the call then needs ``update_stats``). The
output is one raw value per example [B]:

.. math:: D(x) = \psi(\phi(x)) \quad\text{or, conditional,}\quad
    D(x, y) = \psi(\phi(x)) + \langle e_y, \phi(x)\rangle,

the *projection discriminator* of Miyato & Koyama (2018, Eq. 3), with :math:`\psi` linear and
:math:`e_y` a learned class embedding (the ``"embed"`` parameter, [K, dim phi]; not spectrally
normalised here). :math:`\phi(x)` is sown as ``intermediates/features`` for inspection
(``apply(..., mutable=["intermediates"])``).

**Other conditions** (``condition`` a `jgen.conditioning.ConditionSpec` of kind "vector",
"tokens" or "image"; y is then the raw condition [B, ...]): each network owns a
`jgen.conditioning.ConditionEncoder` submodule ``"condition"`` giving vec [B, D] and, for
images, cmap [B, H, W, C']. The generator concatenates vec to z and cmap, average-pooled
to each resolution, to its feature maps at every scale (the base grid, then after each
transposed convolution). The discriminator concatenates cmap to its input channels and
projects on vec, :math:`e_y` replaced by :math:`V\,\mathrm{vec}(c)` with V linear (the
``"project"`` layer): :math:`D(x, c) = \psi(\phi(x)) + \langle V\,\mathrm{vec}(c), \phi(x)\rangle`.

References:
  Radford, A., Metz, L. & Chintala, S. (2016). Unsupervised Representation Learning with
    Deep Convolutional Generative Adversarial Networks. ICLR. https://arxiv.org/abs/1511.06434
  Miyato, T. & Koyama, M. (2018). cGANs with Projection Discriminator. ICLR.
    https://arxiv.org/abs/1802.05637
  Miyato, T., Kataoka, T., Koyama, M. & Yoshida, Y. (2018). Spectral Normalization for
    Generative Adversarial Networks. ICLR. https://arxiv.org/abs/1802.05957
  Gulrajani, I. et al. (2017). Improved Training of Wasserstein GANs. NeurIPS.
    https://arxiv.org/abs/1704.00028
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jgen.conditioning.spec import ConditionSpec
from jgen.models.gan.mlp import (
    check_labels,
    check_update_stats,
    concat_label,
    encode_condition,
    leaky_relu,
    project,
)
from jgen.models.gan.spectral_norm import SpectralConv, SpectralDense
from jgen.typing import Array

# image side -> (base grid side, number of stride-2 stages)
DCGAN_RESOLUTIONS = {16: (4, 2), 24: (6, 2), 28: (7, 2), 32: (4, 3)}
GENERATOR_NORMS = ("layer", "none")


def _with_map(h: Array, cmap: Array | None) -> Array:
    """h [B, h, w, C] with cmap [B, H, W, C'] average-pooled to (h, w) appended on channels."""
    if cmap is None:
        return h
    b, hh, ww, c = cmap.shape
    fh, fw = hh // h.shape[1], ww // h.shape[2]
    pooled = cmap.reshape(b, h.shape[1], fh, h.shape[2], fw, c).mean(axis=(2, 4))
    return jnp.concatenate([h, pooled.astype(h.dtype)], axis=-1)


def dcgan_plan(image_shape: Sequence[int], who: str) -> tuple[int, int]:
    """(base grid side, number of stride-2 stages) for a supported [H, W, C]; ValueError otherwise."""
    shape = tuple(image_shape)
    if len(shape) != 3 or shape[0] != shape[1] or shape[0] not in DCGAN_RESOLUTIONS or shape[2] < 1:
        raise ValueError(f"{who}: image_shape must be [H, W, C] with H = W in {sorted(DCGAN_RESOLUTIONS)} "
                         f"(e.g. 28x28 MNIST, 32x32 CIFAR-10); got {list(shape)}. Pad or resize the images, e.g. "
                         f"MNIST to 32x32 with jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))).")
    return DCGAN_RESOLUTIONS[shape[0]]


class DCGANGenerator(nn.Module):
    """z [B, latent_dim] (+ y [B] int) -> images [B, H, W, C] in [-1, 1].

    Attributes:
      image_shape: (H, W, C) with H = W = 28 or 32.
      features: channels of the last stage; the base grid has ``features * 2**n_up``.
      num_classes: K > 0 for a conditional generator (one-hot y concatenated to z).
      norm: "layer" (per-example layer norm after each hidden layer) or "none".
      condition: a `jgen.conditioning.ConditionSpec` (kind vector / tokens / image): y is
        then the raw condition (module doc); None: none.
    """

    image_shape: Sequence[int]
    features: int = 64
    num_classes: int = 0
    norm: str = "layer"
    condition: ConditionSpec | None = None

    @nn.compact
    def __call__(self, z: Array, y: Array | None = None) -> Array:
        who = "DCGANGenerator"
        base, n_up = dcgan_plan(self.image_shape, who)
        if self.norm not in GENERATOR_NORMS:
            raise ValueError(f"{who}: unknown norm {self.norm!r}; choose one of {GENERATOR_NORMS}.")
        if z.ndim != 2:
            raise ValueError(f"{who}: z must be [B, latent_dim]; got shape {list(z.shape)}.")
        cmap = None
        if self.condition is not None:
            vec, cmap = encode_condition(self.condition, y, self.num_classes, z.shape[0], who)
            inp = jnp.concatenate([z, vec.astype(z.dtype)], axis=-1)
        else:
            inp = concat_label(z, check_labels(y, self.num_classes, z.shape[0], who), self.num_classes)

        def norm_act(h, name):
            if self.norm == "layer":
                h = nn.GroupNorm(num_groups=1, name=name)(h)
            return nn.relu(h)

        ch = self.features * 2 ** n_up
        h = nn.Dense(base * base * ch, name="project")(inp)
        h = _with_map(norm_act(h.reshape((z.shape[0], base, base, ch)), "norm_project"), cmap)
        for i in range(n_up):
            ch //= 2
            h = nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME", name=f"deconv_{i}")(h)
            h = _with_map(norm_act(h, f"norm_{i}"), cmap)
        return jnp.tanh(nn.Conv(self.image_shape[2], (3, 3), name="out")(h))


class DCGANDiscriminator(nn.Module):
    """x [B, H, W, C] (+ y [B] int) -> raw outputs [B] (logits / critic values).

    Attributes:
      image_shape: (H, W, C) with H = W = 28 or 32; inputs must match it.
      features: channels of the first convolution (doubled at each stage).
      num_classes: K > 0 for a projection discriminator, 0 for an unconditional one.
      spectral_norm: spectrally normalise every convolution and the output layer (then the
        call needs ``update_stats``; see `jgen.models.gan.spectral_norm`).
      condition: a `jgen.conditioning.ConditionSpec` (kind vector / tokens / image): y is
        then the raw condition; cmap joins the input channels, vec the projection.
    """

    image_shape: Sequence[int]
    features: int = 64
    num_classes: int = 0
    spectral_norm: bool = False
    condition: ConditionSpec | None = None

    @nn.compact
    def __call__(self, x: Array, y: Array | None = None, *, update_stats: bool | None = None) -> Array:
        who = "DCGANDiscriminator"
        _, n_down = dcgan_plan(self.image_shape, who)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"{who} was built for images of shape {list(self.image_shape)}: x must be "
                             f"[B, {', '.join(map(str, self.image_shape))}]; got {list(x.shape)}.")
        update = check_update_stats(self.spectral_norm, update_stats, who)
        vec = None
        if self.condition is not None:
            vec, cmap = encode_condition(self.condition, y, self.num_classes, x.shape[0], who)
            y = None
            h = x if cmap is None else jnp.concatenate([x, cmap.astype(x.dtype)], axis=-1)
        else:
            y = check_labels(y, self.num_classes, x.shape[0], who)
            h = x
        for i in range(n_down):
            ch = self.features * 2 ** i
            if self.spectral_norm:
                h = SpectralConv(ch, (4, 4), (2, 2), name=f"conv_{i}")(h, update_stats=update)
            else:
                h = nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME", name=f"conv_{i}")(h)
            h = leaky_relu(h)
        phi = h.reshape((x.shape[0], -1))
        self.sow("intermediates", "features", phi)
        if self.spectral_norm:
            out = SpectralDense(1, name="psi")(phi, update_stats=update)[:, 0]
        else:
            out = nn.Dense(1, name="psi")(phi)[:, 0]
        if y is not None:
            embed = nn.Embed(self.num_classes, phi.shape[-1], name="embed")(y)
            out = out + jnp.sum(embed * phi, axis=-1)
        if vec is not None:
            out = out + project(vec, phi)
        return out
