"""Masked coupling layers (NICE, Real NVP) and the masks they use.

A coupling layer keeps the masked part of its input unchanged and transforms the rest
elementwise with parameters computed from the masked part only, so it is invertible in
closed form whatever the conditioner (any network) is, and its Jacobian is triangular.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jgen.bijectors.base import (
    Bijector,
    bijector_dataclass,
    check_input,
    static_field,
    sum_event,
)

_KINDS = ("affine", "additive")


@bijector_dataclass
class MaskedCoupling(Bijector):
    r"""Masked coupling layer: affine (Real NVP) or additive (NICE).

    With a binary mask :math:`m` (1 = kept) and :math:`x_m = m \odot x`,

    .. math::
        y = x_m + (1 - m) \odot \big(x \odot e^{s(x_m)} + t(x_m)\big),\qquad
        \log|\det J| = \sum_{i \in \text{event}} (1 - m_i)\, s_i(x_m),

    and, because :math:`y_m = x_m`,

    .. math::
        x = y_m + (1 - m) \odot \big(y - t(y_m)\big) \odot e^{-s(y_m)}.

    The Jacobian is triangular (in an ordering that puts the masked entries first) with
    diagonal 1 on the masked entries and :math:`e^{s_i}` elsewhere, whence the log-det.

    `kind="affine"`: `conditioner(x_masked)` returns a pair `(shift, raw_log_scale)`,
    each of the input's shape [B, *event], and the log-scale is soft-clamped,

    .. math::
        s = b \tanh(\text{raw} / b),

    with :math:`b` = `log_scale_bound`: the identity near 0, but bounded in
    :math:`(-b, b)` so that one layer cannot blow up or collapse the scale early in
    training (`log_scale_bound=None` uses `raw` as is).
    `kind="additive"`: `conditioner(x_masked)` returns `shift` alone and :math:`s = 0`
    (NICE; volume preserving, log-det 0).

    The conditioner receives :math:`x_m` (entries outside the mask set to 0) and may be
    any function, e.g. `lambda h: split(net.apply(params, h))`; its outputs at masked
    positions are ignored. It is static pytree metadata (hashed by identity), while
    `mask` is a leaf. To train, build the layer inside the loss from the params being
    differentiated (as in `flow_log_prob(Chain([...]), ...)` inside `loss_fn(params,
    ...)`), so the closure is traced, not baked in as constants.

    Args:
      mask: boolean array of the event shape; True entries pass through unchanged and
        condition the others. See `half_mask`, `checkerboard_mask`, `channel_mask`.
      conditioner: `x_masked [B, *event] -> (shift, raw_log_scale)` for affine or
        `-> shift` for additive, each [B, *event].
      kind: "affine" (Real NVP) or "additive" (NICE); static.
      log_scale_bound: positive float or None; the soft clamp :math:`b` above. Static.

    Raises:
      ValueError: for an unknown `kind`, a non-positive bound, an input whose event shape
        is not the mask's shape, or conditioner outputs of the wrong shape.

    Example:
      >>> mask = half_mask(4)
      >>> def conditioner(h):  # h [B, 4] -> two [B, 4] arrays
      ...     out = mlp.apply(params, h)
      ...     return out[:, :4], out[:, 4:]
      >>> y, log_det = MaskedCoupling(mask, conditioner).forward_and_log_det(x)

    References:
      Dinh, L., Krueger, D. & Bengio, Y. (2015). NICE: Non-linear Independent
        Components Estimation. ICLR workshop. https://arxiv.org/abs/1410.8516
      Dinh, L., Sohl-Dickstein, J. & Bengio, S. (2017). Density estimation using
        Real NVP. ICLR. https://arxiv.org/abs/1605.08803
      distrax (google-deepmind), `distrax/_src/bijectors/masked_coupling.py`.
    """

    mask: jax.Array
    conditioner: Callable = static_field()
    kind: str = static_field(default="affine")
    log_scale_bound: float | None = static_field(default=3.0)

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(
                f"MaskedCoupling: kind must be one of {_KINDS}; received {self.kind!r}. "
                "For a rational-quadratic spline coupling use SplineCoupling."
            )
        if self.log_scale_bound is not None and not self.log_scale_bound > 0:
            raise ValueError(
                "MaskedCoupling: log_scale_bound must be a positive float or None; "
                f"received {self.log_scale_bound!r}."
            )
        if not callable(self.conditioner):
            raise TypeError(
                "MaskedCoupling: conditioner must be a function x_masked -> params; "
                f"received {self.conditioner!r} of type {type(self.conditioner).__name__}."
            )

    @property
    def event_ndims(self) -> int:
        return int(np.ndim(self.mask))

    def _mask_for(self, name: str, x: jax.Array) -> jax.Array:
        x = check_input("MaskedCoupling", name, x, self.event_ndims)
        mask_shape = tuple(np.shape(self.mask))
        if x.shape[1:] != mask_shape:
            raise ValueError(
                f"MaskedCoupling: {name} must have shape [B, *mask.shape] = "
                f"[B, {', '.join(map(str, mask_shape))}]; received shape {x.shape}."
            )
        return jnp.broadcast_to(jnp.asarray(self.mask) != 0, x.shape)

    def _shift_and_log_scale(self, x_masked: jax.Array, mask: jax.Array):
        out = self.conditioner(x_masked)
        if self.kind == "affine":
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise TypeError(
                    "MaskedCoupling(kind='affine'): the conditioner must return a pair "
                    f"(shift, raw_log_scale); received {type(out).__name__}. For NICE "
                    "(shift only) use kind='additive'."
                )
            shift, raw = out
        else:
            shift, raw = out, None
        for name, value in (("shift", shift), ("raw_log_scale", raw)):
            if value is not None and jnp.shape(value) != x_masked.shape:
                raise ValueError(
                    f"MaskedCoupling: the conditioner's {name} must have the input's shape "
                    f"{x_masked.shape}; received shape {jnp.shape(value)}."
                )
        zero = jnp.zeros((), x_masked.dtype)
        shift = jnp.where(mask, zero, jnp.asarray(shift, x_masked.dtype))
        if raw is None:
            return shift, None
        raw = jnp.asarray(raw, x_masked.dtype)
        if self.log_scale_bound is not None:
            b = self.log_scale_bound
            raw = b * jnp.tanh(raw / b)
        return shift, jnp.where(mask, zero, raw)

    def forward_and_log_det(self, x):
        mask = self._mask_for("x", x)
        x = jnp.asarray(x)
        x_masked = jnp.where(mask, x, jnp.zeros((), x.dtype))
        shift, log_scale = self._shift_and_log_scale(x_masked, mask)
        if log_scale is None:
            return jnp.where(mask, x, x + shift), jnp.zeros(x.shape[:1], x.dtype)
        y = jnp.where(mask, x, x * jnp.exp(log_scale) + shift)
        return y, sum_event(log_scale)

    def inverse_and_log_det(self, y):
        mask = self._mask_for("y", y)
        y = jnp.asarray(y)
        y_masked = jnp.where(mask, y, jnp.zeros((), y.dtype))
        shift, log_scale = self._shift_and_log_scale(y_masked, mask)
        if log_scale is None:
            return jnp.where(mask, y, y - shift), jnp.zeros(y.shape[:1], y.dtype)
        x = jnp.where(mask, y, (y - shift) * jnp.exp(-log_scale))
        return x, -sum_event(log_scale)


def _check_shape(fn: str, shape: Sequence[int], ndim: int, example: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape) if isinstance(shape, (tuple, list)) else shape
    if not isinstance(shape, tuple) or len(shape) != ndim or min(shape) < 1:
        raise ValueError(
            f"{fn}: shape must be a tuple of {ndim} positive ints, e.g. {example}; "
            f"received {shape!r}."
        )
    return shape


def half_mask(dim: int, *, flip: bool = False) -> jax.Array:
    """Boolean mask of shape [dim] that keeps the first `dim // 2` entries.

    Args:
      dim: the vector size D >= 2.
      flip: keep the other `dim - dim // 2` entries instead (the complementary mask).

    Returns:
      Boolean array [dim], True where the coupling leaves the input unchanged.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ValueError(f"half_mask: dim must be an int >= 2; received {dim!r}.")
    mask = np.arange(dim) < dim // 2
    return jnp.asarray(mask != flip)


def checkerboard_mask(shape: Sequence[int], *, flip: bool = False) -> jax.Array:
    """Checkerboard mask for images: True where `(h + w)` is even (odd if `flip`).

    Args:
      shape: the event shape (H, W, C); every channel of a pixel shares its value.
      flip: use the complementary checkerboard.

    Returns:
      Boolean array of shape (H, W, C).

    References:
      Dinh, L., Sohl-Dickstein, J. & Bengio, S. (2017). Density estimation using
        Real NVP. ICLR, Section 3.4 and Figure 3.
    """
    h, w, c = _check_shape("checkerboard_mask", shape, 3, "(28, 28, 1)")
    board = (np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0
    mask = np.broadcast_to(board[:, :, None], (h, w, c))
    return jnp.asarray(mask != flip)


def channel_mask(shape: Sequence[int], *, flip: bool = False) -> jax.Array:
    """Channel-wise mask for images: True on the first `C // 2` channels.

    Args:
      shape: the event shape (H, W, C) with C >= 2 (apply `Squeeze` first for C = 1).
      flip: keep the other channels instead.

    Returns:
      Boolean array of shape (H, W, C).

    References:
      Dinh, L., Sohl-Dickstein, J. & Bengio, S. (2017). Density estimation using
        Real NVP. ICLR, Section 3.4 and Figure 3.
    """
    h, w, c = _check_shape("channel_mask", shape, 3, "(14, 14, 4)")
    if c < 2:
        raise ValueError(
            f"channel_mask: needs at least 2 channels; received shape {shape}. "
            "Use checkerboard_mask, or Squeeze the image to 4C channels first."
        )
    mask = np.broadcast_to(np.arange(c) < c // 2, (h, w, c))
    return jnp.asarray(mask != flip)
