r"""A time-conditioned MLP for diffusion / score models on low-dimensional (2-D toy) data.

`ScoreMLP` maps a noisy point, its noise level and an optional class label to a vector
of the same size (:math:`\varepsilon`, :math:`x_0`, v or a score: the parametrisation
lives outside, in `jgen.sde.parametrization`)::

    temb = Dense(E) . swish . Dense(E) . embed(t)              [+ Embed(label)]
    h = x
    for width in hidden:  h = swish(Dense(width)(h) + Dense(width)(swish(temb)))
    out = Dense(out_dim)(h)

The time embedding is *added* to every hidden layer's pre-activation through its own
projection (the way the DDPM U-Net's residual blocks take it), rather than concatenated
to the input once, so the noise level modulates every layer. Each output row depends
only on the same input row (no batch statistics).

Labels follow the U-Net's convention: with ``num_classes = K > 0`` the label table has
K + 1 rows and label K is the "null" label for classifier-free guidance; a conditional
network requires labels, an unconditional one rejects them.

Other conditions (``condition = spec``, a `jgen.conditioning.ConditionSpec` of kind
"vector", "tokens" or "image") go through a `jgen.conditioning.ConditionEncoder`
submodule (``"condition"``): its embedding ``vec`` is projected to E and added to the
time embedding, and an image condition's map ``cmap`` [B, H, W, C'] is flattened and
concatenated to the input::

    temb += Dense(E)(vec);   h = concat[x, flatten(cmap)]        (cmap: kind "image" only)

``drop`` (bool [B]) swaps in the learned null condition (and an all-zero map) for
classifier-free guidance.

Time: ``t`` is a per-example float [B]; see `jgen.models.diffusion.embeddings` for its
scale. For continuous t in [0, 1] the ``"fourier"`` embedding (scale ~16) resolves
time well; the ``"sinusoidal"`` one is scaled for step indices 0..999.

Example::

    net = ScoreMLP(hidden=(256, 256, 256), embedding="fourier")
    variables = net.init(key, jnp.zeros((1, 2)), jnp.zeros((1,)))
    score = net.apply(variables, x_t, t)                       # [B, 2]

References:
  Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic
    Differential Equations. ICLR. https://arxiv.org/abs/2011.13456
  Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    NeurIPS. https://arxiv.org/abs/2006.11239
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jgen.conditioning.spec import ConditionSpec
from jgen.models.diffusion.embeddings import (
    GaussianFourierProjection,
    sinusoidal_embedding,
)
from jgen.models.diffusion.unet import _check_labels, _int_at_least, encode_condition
from jgen.typing import Array

_EMBEDDINGS = ("sinusoidal", "fourier")


class ScoreMLP(nn.Module):
    """Time- (and label-) conditioned MLP, [B, D] -> [B, out_dim] (see the module docstring).

    Attributes:
      hidden: widths of the hidden layers.
      embed_dim: width E of the time embedding (and of the label embedding).
      num_classes: K > 0 adds a label embedding with K + 1 rows (row K = null label);
        0 = unconditional.
      out_dim: output width; default D (the input's).
      embedding: ``"sinusoidal"`` or ``"fourier"`` (frequencies in ``"constants"``).
      fourier_scale: std of the Fourier frequencies (``embedding="fourier"`` only).
      max_period: the sinusoidal embedding's longest period.
      condition: a `jgen.conditioning.ConditionSpec` or None (see the module docstring);
        exclusive with ``num_classes``.

    Call args:
      x: [B, D] points; t: [B] times / noise levels; labels: None or int [B] in
        [0, num_classes]; cond (keyword-only): the raw condition [B, *condition.shape] of a
        network built with ``condition``, else None; drop (keyword-only): bool [B] or None,
        True = the null condition.

    Returns:
      [B, out_dim].
    """

    hidden: Sequence[int] = (256, 256, 256)
    embed_dim: int = 64
    num_classes: int = 0
    out_dim: int | None = None
    embedding: str = "sinusoidal"
    fourier_scale: float = 16.0
    max_period: float = 10000.0
    condition: ConditionSpec | None = None

    @nn.compact
    def __call__(self, x: Array, t: Array, labels: Array | None = None, *, cond: Array | None = None,
                 drop: Array | None = None) -> jax.Array:
        owner = "ScoreMLP"
        x = jnp.asarray(x)
        if x.ndim != 2:
            raise ValueError(
                f"{owner}: x must have shape [B, D]; received shape {tuple(x.shape)}. Flatten "
                "the event first, or add a batch axis (x[None])."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        b = x.shape[0]
        t = jnp.asarray(t)
        if t.shape != (b,):
            raise ValueError(
                f"{owner}: t must have shape [B] = ({b},), one time per example; received shape "
                f"{tuple(t.shape)}. Use jnp.full(({b},), t) for one time shared by the batch."
            )
        embed_dim = _int_at_least(owner, "embed_dim", self.embed_dim, 2)
        _int_at_least(owner, "num_classes", self.num_classes, 0)
        for width in self.hidden:
            _int_at_least(owner, "every entry of hidden", width, 1)
        out_dim = x.shape[1] if self.out_dim is None else _int_at_least(owner, "out_dim", self.out_dim, 1)
        if self.embedding not in _EMBEDDINGS:
            raise ValueError(f"{owner}: embedding must be one of {_EMBEDDINGS}; received {self.embedding!r}.")
        _check_labels(owner, labels, self.num_classes, b)
        vec, cmap = encode_condition(owner, self.condition, self.num_classes, cond, drop, b)

        if self.embedding == "sinusoidal":
            temb = sinusoidal_embedding(t, embed_dim, self.max_period)
        else:
            temb = GaussianFourierProjection((embed_dim + 1) // 2, self.fourier_scale, name="fourier")(t)
            temb = temb[:, :embed_dim]
        temb = nn.Dense(embed_dim, name="temb_dense0")(temb.astype(x.dtype))
        temb = nn.Dense(embed_dim, name="temb_dense1")(nn.swish(temb))
        if self.num_classes:
            temb = temb + nn.Embed(self.num_classes + 1, embed_dim, name="label_emb")(jnp.asarray(labels))
        if vec is not None:
            temb = temb + nn.Dense(embed_dim, name="cond_proj")(vec.astype(temb.dtype))

        h = x if cmap is None else jnp.concatenate([x, cmap.reshape((b, -1)).astype(x.dtype)], axis=1)
        for i, width in enumerate(self.hidden):
            h = nn.Dense(width, name=f"dense_{i}")(h) + nn.Dense(width, name=f"temb_proj_{i}")(nn.swish(temb))
            h = nn.swish(h)
        return nn.Dense(out_dim, name="dense_out")(h)
