"""PixelCNN and Gated PixelCNN: convolutional autoregressive models of images whose
every conditional comes out of one teacher-forced pass (Flax Linen, architecture only).

Pixels are ordered in raster order, row by row, left to right, and within a pixel the
colour channels in order R -> G -> B (subpixel index ``(i * W + j) * C + c``, which is
exactly ``x.reshape(B, -1)`` of an NHWC image):

.. math::
    p(x) = \\prod_{i, j} \\prod_{c=1}^{C} p(x_{ijc} \\mid x_{<(i,j)},\\, x_{ij,<c}).

The models return the parameters of every conditional at once: Bernoulli logits
[B, H, W, C] for binary images (`num_outputs_per_subpixel=1`) or categorical logits
[B, H, W, C, V] (e.g. V = 256 for 8-bit pixels). The exact log-likelihood is then
`jgen.losses.autoregressive.bernoulli_autoregressive_log_prob(logits, x)` or
`categorical_autoregressive_log_prob(logits, x_int)`, and `flat_logits_fn` adapts a
model to `jgen.samplers.ancestral.ancestral_sample`, which fills a flat canvas [B, D].

- `MaskedConv2D` (van den Oord et al. 2016a, Sec. 3.4): a convolution whose kernel is
  zeroed below the centre row and right of the centre; at the centre, output colour
  group c sees input groups < c (mask "A", the first layer) or <= c (mask "B", later
  layers).
- `PixelCNN`: a type-A 7x7 convolution, residual blocks around type-B convolutions,
  two 1x1 output layers. Stacked masked convolutions leave a *blind spot*: pixels up
  and to the right, beyond the receptive field's diagonal, are never seen.
- `GatedPixelCNN` (van den Oord et al. 2016b): a vertical stack (rows above) and a
  horizontal stack (the current row, to the left) with gated units
  :math:`\\tanh(\\cdot) \\odot \\sigma(\\cdot)`; the vertical stack is shifted down one row
  and fed into the horizontal one, which removes the blind spot.

Both take an optional class label (`num_classes`, `labels`): a learned embedding added
as a bias to every layer, :math:`h \\mapsto h + V^\\top \\mathrm{onehot}(y)` — it does not
depend on any pixel, so the autoregressive property is unchanged.

Both also take any condition of the shared interface (`condition_spec`, a
`jgen.conditioning.ConditionSpec` of kind "vector", "tokens" or "image"; the
Conditional PixelCNN of van den Oord et al. 2016b, Sec. 2.3): a `ConditionEncoder`
submodule ("condition") maps the raw condition to an embedding
:math:`s` [B, E] and, for images, a map :math:`m` [B, H, W, M] at the image's
resolution, and every layer gets the bias

.. math::
    h \\mapsto h + V^\\top s + W \\star_{1\\times 1} m,

global (Eq. 4) plus location-dependent (Eq. 5, with the map already at full
resolution, so :math:`W` is a 1x1 convolution); V and W start at zero (training
starts from the unconditional network). Neither depends on x, so the model
is a normalised autoregressive distribution p(x | c) for every c; the map may use
the whole condition (it is not causal in x). Call with `condition=` (and `drop=`,
bool [B], for the encoder's null condition), or with `context=(s, m)` precomputed
by `model.apply(params, condition, drop, method="encode")` (the sampler encodes
once and reuses it for every pixel).

Feature channels are split into C contiguous colour groups (feature f of n belongs to
group ``f * C // n``), so hidden widths must be multiples of C.

Example (binary MNIST-like images)::

    model = PixelCNN(channels=64, num_layers=5)
    params = model.init(key, x)                          # x [B, 28, 28, 1] in {0, 1}
    logits = model.apply(params, x)                      # [B, 28, 28, 1]
    nll = -bernoulli_autoregressive_log_prob(logits, x)  # [B], exact
    fn = flat_logits_fn(model, params, (28, 28, 1))
    samples = ancestral_sample(key, fn, jnp.zeros((16, 28 * 28))).reshape(16, 28, 28, 1)

References:
  van den Oord, A., Kalchbrenner, N. & Kavukcuoglu, K. (2016a). Pixel Recurrent
    Neural Networks. ICML. https://arxiv.org/abs/1601.06759
  van den Oord, A., Kalchbrenner, N., Vinyals, O., Espeholt, L., Graves, A. &
    Kavukcuoglu, K. (2016b). Conditional Image Generation with PixelCNN Decoders.
    NeurIPS. https://arxiv.org/abs/1606.05328
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.conditioning.encoder import ConditionEncoder
from jgen.conditioning.spec import ConditionSpec, check_condition
from jgen.typing import Array, Params


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int; received {value!r}.")
    return int(value)


def _odd_kernel(owner: str, kernel_size: Any) -> tuple[int, int]:
    shape = (kernel_size, kernel_size) if isinstance(kernel_size, (int, np.integer)) else kernel_size
    try:
        kh, kw = (int(k) for k in shape)
    except (TypeError, ValueError):
        kh = kw = 0
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(
            f"{owner}: kernel_size must be an odd int or a pair of odd ints (the mask is "
            f"defined relative to the kernel's centre); received {kernel_size!r}. "
            "E.g. 7 for the first layer, 3 after."
        )
    return kh, kw


def _check_images(owner: str, x: Array) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"{owner}: expected images of shape [B, H, W, C] (NHWC); received shape "
            f"{x.shape}. Add a channel axis to grayscale images (x[..., None]) and a "
            "batch axis to a single image (x[None])."
        )
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _check_groups(owner: str, what: str, width: int, data_channels: int) -> None:
    if width % data_channels:
        raise ValueError(
            f"{owner}: {what} = {width} must be a multiple of the number of data channels "
            f"C = {data_channels}, so that the features split into C colour groups "
            f"(R -> G -> B). Use e.g. {data_channels * max(1, width // data_channels)}."
        )


def _data_channels(owner: str, x: jax.Array, data_channels: Any) -> int:
    """C, the number of colour groups: the input's channel count, unless `data_channels`
    is set (e.g. 1 for a one-hot encoded categorical map [B, H, W, K])."""
    if data_channels is None:
        return x.shape[-1]
    c = _positive_int(owner, "data_channels", data_channels)
    if x.shape[-1] % c:
        raise ValueError(
            f"{owner}: the input's {x.shape[-1]} channels must split into data_channels = {c} "
            f"equal contiguous groups (e.g. a one-hot encoding of each of the C channels); "
            f"received input of shape {x.shape}."
        )
    return c


def _check_labels(owner: str, labels: Any, num_classes: int | None, batch: int) -> None:
    if num_classes is None:
        if labels is not None:
            raise ValueError(
                f"{owner}: received labels, but the module was built without num_classes. "
                f"Build it with num_classes=K to condition on class labels, e.g. "
                f"{owner}(..., num_classes=10)."
            )
        return
    if labels is None:
        raise ValueError(
            f"{owner}: the module is class-conditional (num_classes={num_classes}); pass "
            f"labels, integer class ids of shape [B] = [{batch}]: model.apply(params, x, labels)."
        )
    labels_arr = jnp.asarray(labels)
    if labels_arr.shape != (batch,) or not jnp.issubdtype(labels_arr.dtype, jnp.integer):
        raise ValueError(
            f"{owner}: labels must be integer class ids of shape [B] = [{batch}]; received "
            f"dtype {labels_arr.dtype} and shape {labels_arr.shape}."
        )
    if not isinstance(labels, jax.core.Tracer):  # traced labels cannot be range-checked
        values = np.asarray(labels)
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{owner}: labels must lie in [0, {num_classes}) (num_classes={num_classes}); "
                f"received values from {values.min()} to {values.max()}."
            )


class _LabelBias(nn.Module):
    """The class-conditional bias :math:`V^\\top \\mathrm{onehot}(y)` for one layer, [B, 1, 1, F]."""

    num_classes: int
    features: int

    @nn.compact
    def __call__(self, labels: jax.Array) -> jax.Array:
        table = nn.Embed(self.num_classes, self.features, embedding_init=nn.initializers.normal(0.1))
        return table(labels)[:, None, None, :]


def _label_bias_fn(module: nn.Module, labels: Any) -> Callable[[jax.Array, str], jax.Array]:
    """`add(h, name)`: adds layer `name`'s label bias to h (the identity without labels)."""
    return _condition_bias_fn(labels, getattr(module, "num_classes", None), None)


def _check_spec(owner: str, spec: Any) -> None:
    if spec is not None and (not isinstance(spec, ConditionSpec) or spec.kind not in ("vector", "tokens", "image")):
        raise ValueError(
            f"{owner}: condition_spec must be a jgen.conditioning.ConditionSpec of kind 'vector', 'tokens' or "
            f"'image' (class labels use num_classes); received {spec!r}."
        )


def encode_condition(owner: str, spec: ConditionSpec, encoder: nn.Module, condition: Any,
                     drop: Any) -> tuple[jax.Array, jax.Array | None]:
    """Validates a raw condition against `spec` and runs the `ConditionEncoder`."""
    num = jnp.shape(condition)[0] if jnp.ndim(condition) else 1
    return encoder(check_condition(spec, condition, num, who=owner), drop)


def resolve_context(owner: str, spec: ConditionSpec | None, encode: Callable, condition: Any, drop: Any,
                    context: Any, batch: int, spatial: tuple[int, ...] | None = None):
    """(vec [B, E], cmap [B, H, W, M] or None) of a call, or None for a model without
    `condition_spec`; clear errors for a missing, superfluous or misshapen condition."""
    if spec is None:
        if condition is not None or context is not None:
            raise ValueError(
                f"{owner}: received a condition, but the module was built without condition_spec. Build it "
                f"with condition_spec=jgen.conditioning.resolve(config, info) to condition on it."
            )
        return None
    if (condition is None) == (context is None):
        raise ValueError(
            f"{owner}: this module is conditioned on a {spec.kind} condition; pass exactly one of "
            f"condition= (the raw condition, [B, {', '.join(map(str, spec.shape))}] {np.dtype(spec.dtype).name}) "
            f"or context= (vec, cmap) from method='encode'."
        )
    vec, cmap = encode(condition, drop) if context is None else context
    if vec.ndim != 2 or vec.shape[0] != batch or (cmap is None) != (spec.kind != "image") or (
            cmap is not None and (cmap.ndim != 4 or cmap.shape[0] != batch
                                  or (spatial is not None and tuple(cmap.shape[1:3]) != tuple(spatial)))):
        raise ValueError(
            f"{owner}: the condition context must be (vec [B={batch}, E], cmap [B, H, W, M] for image "
            f"conditions, else None) matching the input; received vec {jnp.shape(vec)}, cmap "
            f"{None if cmap is None else jnp.shape(cmap)}."
        )
    return vec, cmap


def _condition_bias_fn(labels: Any, num_classes: int | None, context) -> Callable[[jax.Array, str], jax.Array]:
    """`add(h, name)`: adds layer `name`'s conditional biases to h: the label bias
    :math:`V^\\top \\mathrm{onehot}(y)` and/or :math:`V^\\top s + W \\star m` of a
    condition context (s, m); the identity for an unconditional model. Called inside a
    compact `__call__` (the parameters are created in the caller's scope)."""

    def add(h: jax.Array, name: str) -> jax.Array:
        if labels is not None:
            h = h + _LabelBias(num_classes, h.shape[-1], name=f"label_{name}")(jnp.asarray(labels)).astype(h.dtype)
        if context is not None:
            vec, cmap = context
            zeros = nn.initializers.zeros  # start from the unconditional network (and no random init to compile)
            bias = nn.Dense(h.shape[-1], use_bias=False, kernel_init=zeros, name=f"cond_{name}")(vec)
            h = h + bias[:, None, None, :].astype(h.dtype)
            if cmap is not None:
                h = h + nn.Conv(h.shape[-1], (1, 1), use_bias=False, kernel_init=zeros,
                                name=f"cmap_{name}")(cmap).astype(h.dtype)
        return h

    return add


def pixelcnn_mask(
    kernel_shape: Sequence[int],
    in_features: int,
    out_features: int,
    mask_type: str,
    data_channels: int = 1,
) -> np.ndarray:
    """The PixelCNN kernel mask, of shape [kh, kw, in_features, out_features] (HWIO).

    With the kernel centre at (ci, cj) = (kh // 2, kw // 2) and colour groups
    g(f) = f * C // n of the n input or output features:

    .. math::
        M[a, b, f, f'] = \\begin{cases}
            1 & a < c_i \\text{ or } (a = c_i,\\ b < c_j) \\\\
            [\\,g(f) < g(f')\\,] & (a, b) = (c_i, c_j),\\ \\text{mask "A"} \\\\
            [\\,g(f) \\le g(f')\\,] & (a, b) = (c_i, c_j),\\ \\text{mask "B"} \\\\
            0 & \\text{otherwise (below, or right of the centre)}.
        \\end{cases}

    For C = 1 the centre is all zeros (A) or all ones (B).

    Args:
      kernel_shape: (kh, kw), both odd.
      in_features, out_features: kernel fan-in and fan-out, multiples of C.
      mask_type: "A" (first layer: the current subpixel excluded) or "B" (included).
      data_channels: C, the number of colour channels of the data.

    Returns:
      A float32 numpy array of 0s and 1s.

    References:
      van den Oord et al. (2016a). Pixel Recurrent Neural Networks. Sec. 3.4, Fig. 2.
    """
    kh, kw = _odd_kernel("pixelcnn_mask", kernel_shape)
    if mask_type not in ("A", "B"):
        raise ValueError(
            f"pixelcnn_mask: mask_type must be 'A' (first layer, excludes the current "
            f"subpixel) or 'B' (later layers, includes it); received {mask_type!r}."
        )
    c = _positive_int("pixelcnn_mask", "data_channels", data_channels)
    _check_groups("pixelcnn_mask", "in_features", in_features, c)
    _check_groups("pixelcnn_mask", "out_features", out_features, c)
    ci, cj = kh // 2, kw // 2
    mask = np.zeros((kh, kw, in_features, out_features), np.float32)
    mask[:ci] = 1.0
    mask[ci, :cj] = 1.0
    g_in = np.arange(in_features) * c // in_features
    g_out = np.arange(out_features) * c // out_features
    centre = g_in[:, None] < g_out[None, :] if mask_type == "A" else g_in[:, None] <= g_out[None, :]
    mask[ci, cj] = centre.astype(np.float32)
    return mask


class MaskedConv2D(nn.Module):
    """A 'SAME' convolution with the PixelCNN mask (`pixelcnn_mask`) on its kernel.

    :math:`y = x \\star (W \\odot M) + b`; a masked weight contributes exactly 0 and gets
    gradient 0. The mask is a numpy constant computed from static shapes.

    Attributes:
      features: output channels (a multiple of `data_channels`).
      kernel_size: an odd int or a pair (kh, kw) of odd ints, e.g. (1, k) for the
        horizontal stack of the Gated PixelCNN.
      mask_type: "A" (first layer) or "B" (later layers).
      data_channels: C, the number of colour groups (1 for grayscale/binary, 3 for RGB).
      use_bias: add a bias.
      kernel_init: initialiser of the full (unmasked) kernel.

    Call args:
      x: [B, H, W, F_in] with F_in a multiple of C.

    Returns:
      [B, H, W, features].
    """

    features: int
    kernel_size: int | tuple[int, int]
    mask_type: str = "B"
    data_channels: int = 1
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = _odd_kernel("MaskedConv2D", self.kernel_size)
        mask = pixelcnn_mask((kh, kw), x.shape[-1], self.features, self.mask_type, self.data_channels)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
        dtype = jnp.result_type(x.dtype, kernel.dtype)
        y = jax.lax.conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype) * jnp.asarray(mask, dtype),
            window_strides=(1, 1),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(dtype)[None, None, None, :]
        return y


def _output_shape(out: jax.Array, data_channels: int, num_outputs: int) -> jax.Array:
    """[B, H, W, C * P] (contiguous colour groups) -> [B, H, W, C, P], or [B, H, W, C] for P = 1."""
    out = out.reshape(out.shape[:3] + (data_channels, num_outputs))
    return out[..., 0] if num_outputs == 1 else out


class PixelCNN(nn.Module):
    """PixelCNN with residual blocks (van den Oord et al. 2016a, Sec. 3.4-3.5, Fig. 5).

    Layers (every convolution masked, colour groups respected)::

        h = MaskedConv(A, first_kernel_size)(x)                  # channels
        repeat num_layers:                                        # residual block
            r = MaskedConv(B, 1x1)(relu h)                        # channels / 2
            r = MaskedConv(B, kernel_size)(relu r)                # channels / 2
            h = h + MaskedConv(B, 1x1)(relu r)                    # channels
        out = MaskedConv(B, 1x1, C * P)(relu MaskedConv(B, 1x1)(relu h))

    plus the label bias after every convolution when `num_classes` is set, and the
    condition biases when `condition_spec` is set.

    Attributes:
      channels: feature channels of the residual stream (2h in the paper); a multiple
        of 2C.
      num_layers: number of residual blocks.
      kernel_size: odd kernel of the type-B convolutions (3 in the paper).
      num_outputs_per_subpixel: P; 1 gives Bernoulli logits [B, H, W, C], P > 1
        categorical logits [B, H, W, C, P] (256 for 8-bit pixels).
      first_kernel_size: odd kernel of the type-A first layer (7 in the paper).
      num_classes: set to condition on class labels.
      data_channels: C, the number of colour groups; None (default) means the input's
        channel count. Set it to 1 to feed a categorical map one-hot encoded,
        [B, H, W, K] (e.g. VQ-VAE code indices), with P = K output logits.
      condition_spec: a `jgen.conditioning.ConditionSpec` (kind "vector", "tokens" or
        "image") to condition on it: a `ConditionEncoder` ("condition") and the
        biases :math:`V^\\top s + W \\star m` after every convolution (module doc).

    Call args:
      x: [B, H, W, C] pixels as numbers (e.g. {0, 1}, or x / 127.5 - 1 for 8-bit);
        integer input is cast to float32.
      labels: int [B] in [0, num_classes), required iff `num_classes` is set.
      condition: the raw condition [B, ...] (with `condition_spec`), or
      context: (vec [B, E], cmap [B, H, W, M] or None) from `encode` instead.
      drop: optional bool [B], the encoder's null condition where True.

    Methods:
      encode(condition, drop=None) -> (vec, cmap): the encoder alone.

    Returns:
      Logits [B, H, W, C] (P = 1) or [B, H, W, C, P]; the logits of subpixel (i, j, c)
      depend only on subpixels before it in raster order.
    """

    channels: int = 64
    num_layers: int = 7
    kernel_size: int = 3
    num_outputs_per_subpixel: int = 1
    first_kernel_size: int = 7
    num_classes: int | None = None
    data_channels: int | None = None
    condition_spec: ConditionSpec | None = None

    def setup(self):
        _check_spec("PixelCNN", self.condition_spec)
        if self.condition_spec is not None:
            self.encoder = ConditionEncoder(self.condition_spec, name="condition")

    def encode(self, condition: Array, drop: Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        """The raw condition [B, ...] -> (vec [B, E], cmap [B, H, W, M] or None)."""
        if self.condition_spec is None:
            raise ValueError("PixelCNN.encode: the module was built without condition_spec.")
        return encode_condition("PixelCNN", self.condition_spec, self.encoder, condition, drop)

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None, *, condition: Array | None = None,
                 drop: Array | None = None, context=None) -> jax.Array:
        x = _check_images("PixelCNN", x)
        c = _data_channels("PixelCNN", x, self.data_channels)
        feats = _positive_int("PixelCNN", "channels", self.channels)
        p = _positive_int("PixelCNN", "num_outputs_per_subpixel", self.num_outputs_per_subpixel)
        if feats % (2 * c):
            raise ValueError(
                f"PixelCNN: channels = {feats} must be a multiple of 2C = {2 * c} (the residual "
                f"stream and its half-width bottleneck split into C = {c} colour groups); "
                f"use e.g. channels={2 * c * max(1, feats // (2 * c))}."
            )
        _check_labels("PixelCNN", labels, self.num_classes, x.shape[0])
        context = resolve_context("PixelCNN", self.condition_spec, self.encode, condition, drop, context, x.shape[0],
                                  x.shape[1:3])
        add_bias = _condition_bias_fn(labels, self.num_classes, context)

        def conv(h, width, kernel, mask_type, name):
            h = MaskedConv2D(width, kernel, mask_type, c, name=name)(h)
            return add_bias(h, name)

        h = conv(x, feats, self.first_kernel_size, "A", "conv_in")
        for layer in range(self.num_layers):
            r = conv(nn.relu(h), feats // 2, 1, "B", f"block{layer}_reduce")
            r = conv(nn.relu(r), feats // 2, self.kernel_size, "B", f"block{layer}_conv")
            h = h + conv(nn.relu(r), feats, 1, "B", f"block{layer}_expand")
        h = conv(nn.relu(h), feats, 1, "B", "head_hidden")
        out = conv(nn.relu(h), c * p, 1, "B", "head_out")
        return _output_shape(out, c, p)


def _down_shift(x: jax.Array) -> jax.Array:
    """Moves a feature map one row down (row 0 becomes zeros): y[i] = x[i - 1]."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def _gate(h: jax.Array, data_channels: int) -> jax.Array:
    """tanh(a) * sigmoid(b) within each colour group: [.., 2p] -> [.., p].

    The 2p features form C contiguous groups of 2p / C, each the pair [a | b], so each
    output feature is gated by features of its own colour group.
    """
    half = h.shape[-1] // (2 * data_channels)
    g = h.reshape(h.shape[:-1] + (data_channels, 2, half))
    out = jnp.tanh(g[..., 0, :]) * jax.nn.sigmoid(g[..., 1, :])
    return out.reshape(h.shape[:-1] + (data_channels * half,))


class GatedPixelCNN(nn.Module):
    """Gated PixelCNN with vertical and horizontal stacks, no blind spot (van den Oord et al. 2016b, Fig. 2).

    With k the layer's kernel size, p = `channels` and g(y) = tanh(y_a) * sigmoid(y_b),
    each layer l computes

    .. math::
        \\tilde v &= W_v \\star v_{l} + V_v^\\top y, \\qquad
        v_{l+1} = g(\\tilde v),\\\\
        \\tilde h &= W_h \\star h_l + U\\,\\mathrm{shift}_\\downarrow(\\tilde v) + V_h^\\top y,\\qquad
        h_{l+1} = h_l + W_o\\, g(\\tilde h),

    where :math:`W_v` is a (k//2 + 1) x k convolution covering the rows i - k//2 .. i
    (so :math:`v(i, j)` sees the input in rows <= i), :math:`\\mathrm{shift}_\\downarrow`
    moves it down one row (so the horizontal stack gets only rows < i), :math:`W_h` a
    1 x k masked convolution covering columns j - k//2 .. j of the current row (mask
    A in the first layer, B after, colour groups respected), U and :math:`W_o` 1x1
    convolutions (:math:`W_o` type-B masked). The first layer reads the image in both
    stacks, uses `first_kernel_size`, mask A and no residual. The output is
    ReLU -> 1x1 -> ReLU -> 1x1 (type-B masked) of the horizontal stack.

    Because the vertical stack's receptive field is a full rectangle of rows above, and
    the horizontal one the full row to the left, every earlier pixel within reach is
    seen (no blind spot), unlike stacked masked convolutions (`PixelCNN`).

    Attributes:
      channels: p, feature channels of both stacks (a multiple of C).
      num_layers: gated layers after the first.
      kernel_size: odd k of the gated layers.
      num_outputs_per_subpixel: P, as in `PixelCNN`.
      first_kernel_size: odd k of the first layer (7 in the paper).
      num_classes: set to condition on class labels (the conditional biases
        :math:`V^\\top y` of the paper's Eq. 4).
      data_channels: as in `PixelCNN`.
      condition_spec: as in `PixelCNN`: the biases :math:`V^\\top s` (Eq. 4) and
        :math:`W \\star m` (Eq. 5) on both stacks of every layer and the head.

    Call args / Methods / Returns: as `PixelCNN`.
    """

    channels: int = 64
    num_layers: int = 7
    kernel_size: int = 3
    num_outputs_per_subpixel: int = 1
    first_kernel_size: int = 7
    num_classes: int | None = None
    data_channels: int | None = None
    condition_spec: ConditionSpec | None = None

    def setup(self):
        _check_spec("GatedPixelCNN", self.condition_spec)
        if self.condition_spec is not None:
            self.encoder = ConditionEncoder(self.condition_spec, name="condition")

    def encode(self, condition: Array, drop: Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        """The raw condition [B, ...] -> (vec [B, E], cmap [B, H, W, M] or None)."""
        if self.condition_spec is None:
            raise ValueError("GatedPixelCNN.encode: the module was built without condition_spec.")
        return encode_condition("GatedPixelCNN", self.condition_spec, self.encoder, condition, drop)

    @nn.compact
    def __call__(self, x: Array, labels: Array | None = None, *, condition: Array | None = None,
                 drop: Array | None = None, context=None) -> jax.Array:
        x = _check_images("GatedPixelCNN", x)
        c = _data_channels("GatedPixelCNN", x, self.data_channels)
        feats = _positive_int("GatedPixelCNN", "channels", self.channels)
        p = _positive_int("GatedPixelCNN", "num_outputs_per_subpixel", self.num_outputs_per_subpixel)
        _check_groups("GatedPixelCNN", "channels", feats, c)
        _check_labels("GatedPixelCNN", labels, self.num_classes, x.shape[0])
        context = resolve_context("GatedPixelCNN", self.condition_spec, self.encode, condition, drop, context, x.shape[0],
                                  x.shape[1:3])
        add_bias = _condition_bias_fn(labels, self.num_classes, context)

        def layer(v, h, k, mask_type, name):
            k = _odd_kernel("GatedPixelCNN", k)[0]
            v_pre = nn.Conv(2 * feats, (k // 2 + 1, k), padding=((k // 2, 0), (k // 2, k // 2)),
                            name=f"{name}_vertical")(v)
            v_pre = add_bias(v_pre, f"{name}_vertical")
            h_pre = MaskedConv2D(2 * feats, (1, k), mask_type, c, name=f"{name}_horizontal")(h)
            h_pre = h_pre + nn.Conv(2 * feats, (1, 1), use_bias=False, name=f"{name}_link")(_down_shift(v_pre))
            h_pre = add_bias(h_pre, f"{name}_horizontal")
            h_out = MaskedConv2D(feats, 1, "B", c, name=f"{name}_out")(_gate(h_pre, c))
            return _gate(v_pre, c), h_out

        v, h = layer(x, x, self.first_kernel_size, "A", "layer_in")
        for i in range(self.num_layers):
            v, h_new = layer(v, h, self.kernel_size, "B", f"layer{i}")
            h = h + h_new
        h = add_bias(MaskedConv2D(feats, 1, "B", c, name="head_hidden")(nn.relu(h)), "head_hidden")
        out = MaskedConv2D(c * p, 1, "B", c, name="head_out")(nn.relu(h))
        return _output_shape(out, c, p)


def flat_logits_fn(
    model: nn.Module,
    params: Params,
    image_shape: Sequence[int],
    *,
    labels: Array | None = None,
    input_fn: Callable[[jax.Array], jax.Array] | None = None,
    context=None,
) -> Callable[[jax.Array], jax.Array]:
    """The `x_flat [B, D] -> logits [B, D]` (or [B, D, V]) function of `ancestral_sample`.

    The flat index is the raster-order subpixel index (i * W + j) * C + c, so the
    canvas is `x.reshape(B, H, W, C)` and the default order 0..D-1 of the sampler is
    the model's order.

    Args:
      model: a `PixelCNN` or `GatedPixelCNN`.
      params: its variables.
      image_shape: (H, W, C).
      labels: int [B] class labels for a class-conditional model (B = the canvas batch).
      input_fn: maps the [B, H, W, C] canvas to the network input; default casts to
        float32 (right for binary canvases; for a categorical canvas of 8-bit ints use
        e.g. `lambda x: x / 127.5 - 1`, as in training).
      context: (vec, cmap) of a model with `condition_spec`, from
        `model.apply(params, condition, method="encode")` (computed once, reused at
        every step).

    Returns:
      The logits function.

    Example:
      >>> fn = flat_logits_fn(model, params, (28, 28, 1))
      >>> x = ancestral_sample(key, fn, jnp.zeros((16, 784)))
    """
    h, w, c = (int(s) for s in image_shape)

    def logits_fn(x_flat: jax.Array) -> jax.Array:
        if x_flat.ndim != 2 or x_flat.shape[1] != h * w * c:
            raise ValueError(
                f"flat_logits_fn: expected a canvas [B, H*W*C] = [B, {h * w * c}]; received "
                f"shape {x_flat.shape}."
            )
        x = x_flat.reshape((x_flat.shape[0], h, w, c))
        x = input_fn(x) if input_fn is not None else x.astype(jnp.float32)
        out = model.apply(params, x, labels) if context is None else model.apply(params, x, labels, context=context)
        return out.reshape((x_flat.shape[0], h * w * c) + out.shape[4:])

    return logits_fn
