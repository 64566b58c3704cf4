r"""The DDPM U-Net: the noise-prediction network of Ho et al. (2020), architecture only.

A PixelCNN++-style U-Net (Salimans et al. 2017) with wide residual blocks, group
normalisation, a time embedding injected into every residual block, and single-head
self-attention at chosen resolutions (Ho et al. 2020, Appendix B). It maps a noisy image
and its noise level to an image-shaped output (:math:`\varepsilon`, :math:`x_0`, v or a
score: the parametrisation lives outside, in `jgen.sde.parametrization`)::

    temb = Dense(4ch) . swish . Dense(4ch) . embed(t)          [+ Embed(label)]
    hs = [Conv3x3(ch)(x)]
    for level i (resolution H / 2^i), width ch * ch_mult[i]:
        num_res_blocks x { h = ResBlock(hs[-1], temb); h = Attn(h) if H_i in attn_res; hs += [h] }
        if not last: hs += [Downsample(hs[-1])]              # 3x3 conv, stride 2
    h = ResBlock . Attn . ResBlock (hs[-1])                  # the middle, always attends
    for level i reversed:
        (num_res_blocks + 1) x { h = ResBlock(concat[h, hs.pop()], temb); Attn if H_i in attn_res }
        if not first: h = Upsample(h)                         # nearest x2, 3x3 conv
    out = Conv3x3(out_ch, zero init) . swish . GroupNorm (h)

    ResBlock(x, temb): h = Conv3x3(swish(GN(x))) + Dense(swish(temb))[:, None, None]
                       h = Conv3x3_zero_init(dropout(swish(GN(h))))
                       return NiN(x) + h                  # NiN = 1x1 conv iff channels change
    Attn(x):           h = GN(x); q, k, v = 1x1 convs (h)
                       w = softmax_{HW}(q k^T / sqrt(C)); return x + Proj_zero_init(w v)

The zero-initialised last convolutions make every residual block (with matching
widths) and every attention block the identity at initialisation, and the network
output exactly zero. Initialisers follow the DDPM code (`variance_scaling(1, fan_avg,
uniform)`). With the CIFAR-10 settings (ch=128, ch_mult=(1, 2, 2, 2), two residual
blocks, attention at 16x16, 32x32x3 input) the network has 35,746,307 parameters
(the paper's 35.7M).

Class conditioning (``num_classes = K > 0``): a learned embedding of the label, a table
of K + 1 rows, is added to the time embedding (as in Nichol & Dhariwal 2021); row K is
the "null" label used to train and sample classifier-free guidance (Ho & Salimans 2021):
pass ``labels = jnp.full((B,), K)`` for the unconditional prediction. A conditional
network requires labels (there is no implicit null), an unconditional one rejects them.

Other conditions (``condition = spec``, a `jgen.conditioning.ConditionSpec` of kind
"vector", "tokens" or "image"): a `jgen.conditioning.ConditionEncoder` submodule
(``"condition"``, trained jointly) turns the raw condition ``cond`` into an embedding
``vec`` [B, D] and, for images, a map ``cmap`` [B, H, W, C']; ``Dense(4ch)(vec)`` is added
to the time embedding and ``cmap`` is concatenated to the input channels::

    temb += Dense(4ch)(vec);   x_in = concat[x, cmap]            (cmap: kind "image" only)

``drop`` (bool [B]) swaps in the encoder's learned null condition (and an all-zero map),
the unconditional model classifier-free guidance needs.

Time: ``t`` is a per-example float [B]; see `jgen.models.diffusion.embeddings` for its
scale (DDPM step indices 0..N-1 for ``embedding="sinusoidal"``; continuous t or
:math:`\log\sigma` go well with ``embedding="fourier"``).

Example (DDPM CIFAR-10)::

    net = UNet(ch=128, ch_mult=(1, 2, 2, 2), attn_resolutions=(16,), dropout=0.1)
    variables = net.init({"params": key}, x, n.astype(jnp.float32), train=False)
    eps_hat = net.apply(variables, x_t, n, train=True, rngs={"dropout": dkey})

References:
  Ho, J., Jain, A. & Abbeel, P. (2020). Denoising Diffusion Probabilistic Models.
    NeurIPS. https://arxiv.org/abs/2006.11239 (Appendix B; code `diffusion_tf/models/unet.py`.)
  Salimans, T., Karpathy, A., Chen, X. & Kingma, D. P. (2017). PixelCNN++.
    ICLR. https://arxiv.org/abs/1701.05517
  Wu, Y. & He, K. (2018). Group Normalization. ECCV. https://arxiv.org/abs/1803.08494
  Nichol, A. & Dhariwal, P. (2021). Improved Denoising Diffusion Probabilistic Models.
    ICML. https://arxiv.org/abs/2102.09672 (learned variance: out_ch = 2C.)
  Ho, J. & Salimans, T. (2021). Classifier-Free Diffusion Guidance.
    https://arxiv.org/abs/2207.12598
"""

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.conditioning.encoder import ConditionEncoder
from jgen.conditioning.spec import ConditionSpec, check_condition
from jgen.models.diffusion.embeddings import (
    GaussianFourierProjection,
    sinusoidal_embedding,
)
from jgen.typing import Array

_EMBEDDINGS = ("sinusoidal", "fourier")


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
    """DDPM's initialiser: variance scaling, fan_avg, uniform; zeros for scale 0."""
    if scale == 0.0:
        return nn.initializers.zeros
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def _conv3x3(features: int, name: str, scale: float = 1.0, stride: int = 1) -> nn.Conv:
    return nn.Conv(features, (3, 3), strides=(stride, stride), padding="SAME",
                   kernel_init=default_init(scale), name=name)


def _nin(features: int, name: str, scale: float = 1.0) -> nn.Dense:
    """A 1x1 convolution ("network in network"), a Dense layer over the channel axis."""
    return nn.Dense(features, kernel_init=default_init(scale), name=name)


def _group_norm(num_groups: int, name: str) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=num_groups, epsilon=1e-6, name=name)


def _check_divides(owner: str, num_groups: int, channels: int) -> None:
    if channels % num_groups:
        raise ValueError(
            f"{owner}: num_groups={num_groups} must divide the number of channels; received "
            f"{channels} channels. Use num_groups={math.gcd(num_groups, channels)} or a width "
            f"that is a multiple of {num_groups}."
        )


class ResnetBlock(nn.Module):
    """DDPM's residual block: GN, swish, conv, + time projection, GN, swish, dropout,
    zero-initialised conv; a 1x1 shortcut when the width changes.

    Attributes:
      out_ch: output channels (default: the input's).
      dropout: dropout rate before the second convolution.
      num_groups: GroupNorm groups; must divide the input and output channels.

    Call args:
      x: [B, H, W, C]; temb: [B, E] time embedding; train: enables dropout (rng
        ``"dropout"``).
    """

    out_ch: int | None = None
    dropout: float = 0.0
    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, *, train: bool) -> jax.Array:
        c = x.shape[-1]
        out_ch = c if self.out_ch is None else self.out_ch
        _check_divides("ResnetBlock", self.num_groups, c)
        _check_divides("ResnetBlock", self.num_groups, out_ch)
        h = nn.swish(_group_norm(self.num_groups, "norm1")(x))
        h = _conv3x3(out_ch, "conv1")(h)
        h = h + _nin(out_ch, "temb_proj")(nn.swish(temb))[:, None, None, :]
        h = nn.swish(_group_norm(self.num_groups, "norm2")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = _conv3x3(out_ch, "conv2", scale=0.0)(h)
        if c != out_ch:
            x = _nin(out_ch, "nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    r"""Single-head self-attention over the H*W positions, with a residual connection.

    :math:`y = x + P\,\mathrm{softmax}(q k^\top / \sqrt{C})\, v` with q, k, v, P 1x1
    convolutions of GroupNorm(x) (P zero-initialised). It treats the positions as a
    set: permuting the H*W positions of the input permutes the output the same way.

    Attributes:
      num_groups: GroupNorm groups; must divide the channels.
    """

    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hh, ww, c = x.shape
        _check_divides("AttnBlock", self.num_groups, c)
        h = _group_norm(self.num_groups, "norm")(x)
        q = _nin(c, "q")(h).reshape(b, hh * ww, c)
        k = _nin(c, "k")(h).reshape(b, hh * ww, c)
        v = _nin(c, "v")(h).reshape(b, hh * ww, c)
        w = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k) * (c ** -0.5), axis=-1)
        h = jnp.einsum("bij,bjc->bic", w, v).reshape(b, hh, ww, c)
        return x + _nin(c, "proj_out", scale=0.0)(h)


class Downsample(nn.Module):
    """Halves H and W: a 3x3 stride-2 convolution, or 2x2 average pooling."""

    with_conv: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.with_conv:
            return _conv3x3(x.shape[-1], "conv", stride=2)(x)
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class Upsample(nn.Module):
    """Doubles H and W: nearest-neighbour repetition, then (optionally) a 3x3 convolution."""

    with_conv: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        if self.with_conv:
            x = _conv3x3(x.shape[-1], "conv")(x)
        return x


def _int_at_least(owner: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{owner}: {name} must be an int >= {low}; received {value!r}.")
    return int(value)


class UNet(nn.Module):
    r"""The DDPM U-Net (see the module docstring for the layout and references).

    Attributes:
      ch: base width (128 for CIFAR-10 in DDPM).
      ch_mult: width multiplier per resolution level; the input is halved
        ``len(ch_mult) - 1`` times, so H and W must be divisible by
        :math:`2^{\text{len(ch\_mult)} - 1}`.
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attn_resolutions: spatial sizes (values of H at a level) that get self-attention
        after every residual block; sizes the network never visits are ignored (as in
        DDPM). The middle block always attends.
      dropout: dropout rate inside the residual blocks (active only with train=True,
        rng name ``"dropout"``).
      out_ch: output channels; default the input's (use 2C for a learned variance).
      num_classes: K > 0 adds a label embedding with K + 1 rows (row K = null label for
        classifier-free guidance) to the time embedding; 0 = unconditional.
      embedding: ``"sinusoidal"`` (`sinusoidal_embedding`, width ch) or ``"fourier"``
        (`GaussianFourierProjection`, width ch, frequencies in ``"constants"``).
      fourier_scale: std of the Fourier frequencies (``embedding="fourier"`` only).
      resamp_with_conv: 3x3 convolutions in the down/upsampling layers (else average
        pooling / plain nearest-neighbour upsampling).
      num_groups: GroupNorm groups; must divide ``ch * m`` for every ``m`` in ``ch_mult``.
      condition: a `jgen.conditioning.ConditionSpec` (kinds "vector", "tokens", "image";
        "label" works too, but class labels normally use ``num_classes``) or None; the
        network then takes ``cond`` (see the module docstring). Exclusive with
        ``num_classes``.

    Call args:
      x: [B, H, W, C] float images.
      t: [B] float time / step index / log-noise-level (see the embeddings module).
      labels: None for an unconditional network; int [B] in [0, num_classes] for a
        conditional one (``num_classes`` = the null label).
      train: keyword-only; True enables dropout.
      cond: keyword-only; the raw condition [B, *condition.shape] of a network built with
        ``condition`` (None otherwise), see `jgen.conditioning.spec`.
      drop: keyword-only; bool [B] or None: True replaces the condition by the null one.

    Returns:
      [B, H, W, out_ch] (``out_ch`` defaulting to C); exactly zero at initialisation.
    """

    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    out_ch: int | None = None
    num_classes: int = 0
    embedding: str = "sinusoidal"
    fourier_scale: float = 16.0
    resamp_with_conv: bool = True
    num_groups: int = 32
    condition: ConditionSpec | None = None

    def _check_config(self) -> None:
        owner = "UNet"
        ch = _int_at_least(owner, "ch", self.ch, 1)
        if len(self.ch_mult) == 0:
            raise ValueError(f"{owner}: ch_mult must be a non-empty sequence of positive ints; received {self.ch_mult!r}.")
        for m in self.ch_mult:
            _int_at_least(owner, "every entry of ch_mult", m, 1)
        _int_at_least(owner, "num_res_blocks", self.num_res_blocks, 1)
        _int_at_least(owner, "num_classes", self.num_classes, 0)
        groups = _int_at_least(owner, "num_groups", self.num_groups, 1)
        if self.out_ch is not None:
            _int_at_least(owner, "out_ch", self.out_ch, 1)
        if self.embedding not in _EMBEDDINGS:
            raise ValueError(f"{owner}: embedding must be one of {_EMBEDDINGS}; received {self.embedding!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{owner}: dropout must be a rate in [0, 1); received {self.dropout!r}.")
        widths = tuple(ch * int(m) for m in self.ch_mult)
        bad = [w for w in (ch,) + widths if w % groups]
        if bad:
            raise ValueError(
                f"{owner}: num_groups={groups} must divide every feature width (ch={ch} and "
                f"ch * ch_mult = {widths}); {bad[0]} is not divisible. Use a ch that is a "
                f"multiple of {groups}, or num_groups={math.gcd(groups, math.gcd(*((ch,) + widths)))}."
            )

    def _check_inputs(self, x: Array, t: Array, labels: Any) -> tuple[jax.Array, jax.Array]:
        owner = "UNet"
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(
                f"{owner}: expected images of shape [B, H, W, C] (NHWC); received shape "
                f"{tuple(x.shape)}. Add a channel axis to grayscale images (x[..., None]) and "
                "a batch axis to a single image (x[None])."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        b, hh, ww, _ = x.shape
        factor = 2 ** (len(self.ch_mult) - 1)
        if hh % factor or ww % factor:
            raise ValueError(
                f"{owner}: H and W must be divisible by 2^(len(ch_mult) - 1) = {factor} "
                f"(ch_mult={tuple(self.ch_mult)} halves the resolution {len(self.ch_mult) - 1} "
                f"times); received H={hh}, W={ww}. Pad or crop the images (e.g. 28 -> 32) "
                "or use a shorter ch_mult."
            )
        t = jnp.asarray(t)
        if t.shape != (b,):
            raise ValueError(
                f"{owner}: t must have shape [B] = ({b},), one time per example; received shape "
                f"{tuple(t.shape)}. Use jnp.full(({b},), t) for one time shared by the batch."
            )
        _check_labels(owner, labels, self.num_classes, b)
        return x, t

    @nn.compact
    def __call__(self, x: Array, t: Array, labels: Array | None = None, *, train: bool,
                 cond: Array | None = None, drop: Array | None = None) -> jax.Array:
        self._check_config()
        x, t = self._check_inputs(x, t, labels)
        vec, cmap = encode_condition("UNet", self.condition, self.num_classes, cond, drop, x.shape[0],
                                     spatial=x.shape[1:3])
        ch, groups = int(self.ch), int(self.num_groups)
        out_ch = x.shape[-1] if self.out_ch is None else int(self.out_ch)
        num_levels = len(self.ch_mult)

        # Time (and label) embedding, shared by every residual block.
        if self.embedding == "sinusoidal":
            temb = sinusoidal_embedding(t, ch)
        else:
            temb = GaussianFourierProjection(ch // 2 + ch % 2, self.fourier_scale, name="fourier")(t)[:, :ch]
        temb = _nin(4 * ch, "temb_dense0")(temb.astype(x.dtype))
        temb = _nin(4 * ch, "temb_dense1")(nn.swish(temb))
        if self.num_classes:
            temb = temb + nn.Embed(self.num_classes + 1, 4 * ch, name="label_emb")(jnp.asarray(labels))
        if vec is not None:
            temb = temb + _nin(4 * ch, "cond_proj")(vec.astype(temb.dtype))

        def res(h, width, name):
            return ResnetBlock(width, self.dropout, groups, name=name)(h, temb, train=train)

        # Downsampling.
        x_in = x if cmap is None else jnp.concatenate([x, cmap.astype(x.dtype)], axis=-1)
        hs = [_conv3x3(ch, "conv_in")(x_in)]
        for i in range(num_levels):
            for j in range(self.num_res_blocks):
                h = res(hs[-1], ch * self.ch_mult[i], f"down_{i}_block_{j}")
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(groups, name=f"down_{i}_attn_{j}")(h)
                hs.append(h)
            if i != num_levels - 1:
                hs.append(Downsample(self.resamp_with_conv, name=f"down_{i}_downsample")(hs[-1]))

        # Middle.
        h = hs[-1]
        h = res(h, h.shape[-1], "mid_block_1")
        h = AttnBlock(groups, name="mid_attn_1")(h)
        h = res(h, h.shape[-1], "mid_block_2")

        # Upsampling, consuming the skip connections in reverse order.
        for i in reversed(range(num_levels)):
            for j in range(self.num_res_blocks + 1):
                h = res(jnp.concatenate([h, hs.pop()], axis=-1), ch * self.ch_mult[i], f"up_{i}_block_{j}")
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(groups, name=f"up_{i}_attn_{j}")(h)
            if i != 0:
                h = Upsample(self.resamp_with_conv, name=f"up_{i}_upsample")(h)
        assert not hs, "UNet: internal error, unused skip connections"

        # End: zero-initialised output convolution.
        h = nn.swish(_group_norm(groups, "norm_out")(h))
        return _conv3x3(out_ch, "conv_out", scale=0.0)(h)


def encode_condition(owner: str, spec: ConditionSpec | None, num_classes: int, cond: Any, drop: Any, batch: int,
                     *, spatial: tuple[int, int] | None = None) -> tuple[jax.Array | None, jax.Array | None]:
    """(vec [B, D], cmap [B, H, W, C'] or None) of a network's raw condition, or (None, None)
    for a network without a condition spec. Call inside a compact method: it creates the
    `ConditionEncoder` submodule ``"condition"``. Errors name what was received."""
    if spec is None:
        if cond is not None or drop is not None:
            what = "a condition (cond=...)" if cond is not None else "drop=..."
            raise ValueError(
                f"{owner}: received {what}, but the network has no condition spec (condition=None). Build it "
                f"with {owner}(..., condition=spec), spec = jgen.conditioning.resolve(config, info)."
            )
        return None, None
    if not isinstance(spec, ConditionSpec):
        raise TypeError(f"{owner}: condition must be a jgen.conditioning.ConditionSpec or None; received "
                        f"{type(spec).__name__}.")
    if num_classes:
        raise ValueError(
            f"{owner}: set either num_classes (class labels, the legacy path) or condition (a ConditionSpec), "
            f"not both; received num_classes={num_classes} and a {spec.kind!r} condition."
        )
    cond = check_condition(spec, cond, batch, who=owner)
    if drop is not None:
        drop = jnp.asarray(drop)
        if drop.shape != (batch,):
            raise ValueError(f"{owner}: drop must be bool [B] = ({batch},), one flag per example; received "
                             f"{drop.dtype} {tuple(drop.shape)}.")
    if spec.kind == "image" and spatial is not None and tuple(spec.image_shape[:2]) != tuple(spatial):
        raise ValueError(
            f"{owner}: the image condition is made for {spec.image_shape[0]}x{spec.image_shape[1]} images "
            f"(ConditionSpec.image_shape={tuple(spec.image_shape)}); received {spatial[0]}x{spatial[1]} inputs."
        )
    return ConditionEncoder(spec, name="condition")(cond, drop)


def _check_labels(owner: str, labels: Any, num_classes: int, batch: int) -> None:
    """Labels: None iff unconditional; else int [B] in [0, num_classes] (num_classes = null)."""
    if not num_classes:
        if labels is not None:
            raise ValueError(
                f"{owner}: received labels, but the network is unconditional (num_classes=0). "
                f"Build it with num_classes=K to condition on class labels, e.g. {owner}(..., num_classes=10)."
            )
        return
    if labels is None:
        raise ValueError(
            f"{owner}: the network is class-conditional (num_classes={num_classes}); pass labels, "
            f"integer class ids of shape [B] = ({batch},). For the unconditional (classifier-free "
            f"guidance) prediction pass the null label: labels=jnp.full(({batch},), {num_classes})."
        )
    arr = jnp.asarray(labels)
    if arr.shape != (batch,) or not jnp.issubdtype(arr.dtype, jnp.integer):
        raise ValueError(
            f"{owner}: labels must be integer class ids of shape [B] = ({batch},); received dtype "
            f"{arr.dtype} and shape {tuple(arr.shape)}."
        )
    if not isinstance(labels, jax.core.Tracer):  # traced labels cannot be range-checked
        values = np.asarray(labels)
        if values.size and (values.min() < 0 or values.max() > num_classes):
            raise ValueError(
                f"{owner}: labels must lie in [0, {num_classes}] (classes 0..{num_classes - 1}, "
                f"{num_classes} = the null label); received values from {values.min()} to {values.max()}."
            )
