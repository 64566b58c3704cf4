"""Rational-quadratic spline bijectors (Neural Spline Flows): an elementwise monotone
spline with K bins on [-bound, bound] and identity tails, and a coupling layer that
computes the spline's parameters from the masked part of its input.

The spline is far more flexible than an affine map per dimension, yet has a closed-form
inverse (the root of a quadratic) and derivative. Raw parameters are unconstrained (raw
network outputs); all-zero raw parameters give the identity map.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jgen.bijectors.base import (
    Bijector,
    bijector_dataclass,
    check_event_ndims,
    check_input,
    static_field,
    sum_event,
)


def _knots(raw: jax.Array, bound: float, min_size: float) -> tuple[jax.Array, jax.Array]:
    """Bin sizes [..., K] (softmax, each >= min_size * 2 bound) and knots [..., K+1]."""
    k = raw.shape[-1]
    frac = min_size + (1.0 - min_size * k) * jax.nn.softmax(raw, axis=-1)
    cum = jnp.cumsum(frac, axis=-1)
    pad = [(0, 0)] * (raw.ndim - 1) + [(1, 0)]
    knots = 2.0 * bound * jnp.pad(cum, pad) - bound
    # Pin the ends exactly (the cumsum may round away from 1).
    knots = knots.at[..., 0].set(-bound).at[..., -1].set(bound)
    return knots[..., 1:] - knots[..., :-1], knots


def _rqs(
    x: jax.Array,
    widths_raw: jax.Array,
    heights_raw: jax.Array,
    derivatives_raw: jax.Array,
    *,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
    inverse: bool,
) -> tuple[jax.Array, jax.Array]:
    """Elementwise spline (or its inverse) and log|derivative|, both of x's shape.

    The parameters have shapes x.shape + (K,), x.shape + (K,), x.shape + (K - 1,).
    """
    widths, x_knots = _knots(widths_raw, bound, min_bin_width)
    heights, y_knots = _knots(heights_raw, bound, min_bin_height)
    # Interior derivatives: softplus shifted so that raw = 0 gives derivative 1;
    # the boundary derivatives are 1 to match the identity tails.
    offset = float(np.log(np.expm1(1.0 - min_derivative)))
    interior = min_derivative + jax.nn.softplus(derivatives_raw + offset)
    pad = [(0, 0)] * (interior.ndim - 1) + [(1, 1)]
    derivs = jnp.pad(interior, pad, constant_values=1.0)

    inside = (x >= -bound) & (x <= bound)
    xc = jnp.clip(x, -bound, bound)  # keeps the unused spline branch finite
    search = y_knots if inverse else x_knots
    # Bin index in 0..K-1: how many interior knots lie at or below xc.
    idx = jnp.sum(xc[..., None] >= search[..., 1:-1], axis=-1)[..., None]
    take = lambda a: jnp.take_along_axis(a, idx, axis=-1)[..., 0]
    x_k, w_k = take(x_knots), take(widths)
    y_k, h_k = take(y_knots), take(heights)
    d_k = take(derivs[..., :-1])
    d_k1 = take(derivs[..., 1:])
    s_k = h_k / w_k
    delta = d_k1 + d_k - 2.0 * s_k

    if inverse:
        # Root of a xi^2 + b xi + c = 0 in [0, 1], in the form 2c / (-b - sqrt(b^2 - 4ac))
        # that avoids cancellation (Durkan et al. 2019, eqs. 6-8).
        dy = xc - y_k
        a = h_k * (s_k - d_k) + dy * delta
        b = h_k * d_k - dy * delta
        c = -s_k * dy
        disc = jnp.maximum(b * b - 4.0 * a * c, 0.0)
        xi = (2.0 * c) / (-b - jnp.sqrt(disc))
        out = x_k + xi * w_k
    else:
        xi = (xc - x_k) / w_k
        xi1m = xi * (1.0 - xi)
        out = y_k + h_k * (s_k * xi * xi + d_k * xi1m) / (s_k + delta * xi1m)
    xi1m = xi * (1.0 - xi)
    denom = s_k + delta * xi1m
    # Durkan et al. (2019), eq. 5: the derivative dy/dx at xi.
    log_deriv = (
        2.0 * jnp.log(s_k)
        + jnp.log(d_k1 * xi * xi + 2.0 * s_k * xi1m + d_k * (1.0 - xi) ** 2)
        - 2.0 * jnp.log(denom)
    )
    if inverse:
        log_deriv = -log_deriv
    zero = jnp.zeros((), x.dtype)
    return jnp.where(inside, out, x), jnp.where(inside, log_deriv, zero)


def _spline_params(owner: str, x: jax.Array, widths_raw, heights_raw, derivatives_raw):
    """Casts and broadcasts the raw parameters to x.shape + (K,) / (K - 1,)."""
    widths_raw, heights_raw, derivatives_raw = (
        jnp.asarray(a, x.dtype) for a in (widths_raw, heights_raw, derivatives_raw)
    )
    k = widths_raw.shape[-1] if widths_raw.ndim else 0
    ok = (
        k >= 1
        and heights_raw.ndim >= 1
        and heights_raw.shape[-1] == k
        and derivatives_raw.ndim >= 1
        and derivatives_raw.shape[-1] == k - 1
    )
    if not ok:
        raise ValueError(
            f"{owner}: widths and heights must end in the number of bins K and derivatives "
            f"in K - 1; received shapes {widths_raw.shape}, {heights_raw.shape}, "
            f"{derivatives_raw.shape}. E.g. (*event, 8), (*event, 8), (*event, 7)."
        )
    out = []
    for name, a in (("widths", widths_raw), ("heights", heights_raw),
                    ("derivatives", derivatives_raw)):
        target = x.shape + a.shape[-1:]
        try:
            np.broadcast_shapes(a.shape, target)
        except ValueError:
            raise ValueError(
                f"{owner}: {name} of shape {a.shape} does not broadcast to the input of "
                f"shape {x.shape} plus its last axis, {target}. Give it the shape "
                f"{x.shape[1:] + a.shape[-1:]} (shared over the batch) or {target}."
            ) from None
        out.append(jnp.broadcast_to(a, target))
    return out


_SPLINE_DOC_MATH = r"""
    On :math:`[-B, B]` the knots :math:`(x_k, y_k)_{k=0}^{K}` run from :math:`(-B, -B)`
    to :math:`(B, B)`, with bin widths :math:`w_k` and heights :math:`h_k` from a
    softmax of the raw widths/heights (each at least `min_bin_width` / `min_bin_height`
    of :math:`2B`), and derivatives :math:`d_0 = d_K = 1`, interior
    :math:`d_k = \delta_{\min} + \operatorname{softplus}(\text{raw}_k + \log(e^{1 - \delta_{\min}} - 1))`
    (so raw = 0 gives :math:`d_k = 1`). In bin :math:`k`, with
    :math:`s_k = h_k / w_k` and :math:`\xi = (x - x_k) / w_k \in [0, 1]`,

    .. math::
        y = y_k + \frac{h_k\,[s_k \xi^2 + d_k \xi(1 - \xi)]}
                       {s_k + (d_{k+1} + d_k - 2 s_k)\,\xi(1 - \xi)},\qquad
        \frac{dy}{dx} = \frac{s_k^2\,[d_{k+1}\xi^2 + 2 s_k \xi(1-\xi) + d_k (1-\xi)^2]}
                             {[s_k + (d_{k+1} + d_k - 2 s_k)\,\xi(1 - \xi)]^2}.

    Outside :math:`[-B, B]` the map is the identity (log-derivative 0); value and
    derivative are continuous at :math:`\pm B`. The inverse solves
    :math:`a\xi^2 + b\xi + c = 0` with :math:`a = h_k(s_k - d_k) + (y - y_k)\Delta_k`,
    :math:`b = h_k d_k - (y - y_k)\Delta_k`, :math:`c = -s_k (y - y_k)`,
    :math:`\Delta_k = d_{k+1} + d_k - 2 s_k`, by the cancellation-free root
    :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})`.
"""


def _check_spline_config(owner: str, bound, min_bin_width, min_bin_height, min_derivative):
    if not (isinstance(bound, (int, float)) and bound > 0):
        raise ValueError(f"{owner}: bound must be a positive float; received {bound!r}.")
    for name, v in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height),
                    ("min_derivative", min_derivative)):
        if not (isinstance(v, (int, float)) and 0 < v < 1):
            raise ValueError(f"{owner}: {name} must be a float in (0, 1); received {v!r}.")


@bijector_dataclass
class RationalQuadraticSpline(Bijector):
    __doc__ = (
        r"""Elementwise monotone rational-quadratic spline with identity tails.
    """
        + _SPLINE_DOC_MATH
        + r"""
    The log-det is the sum over the event of :math:`\log(dy/dx)`.

    Args:
      widths_raw: floating array [..., K] broadcastable to [B, *event, K]: the event
        shape plus K (shared over the batch) or per example.
      heights_raw: floating array [..., K], broadcastable likewise.
      derivatives_raw: floating array [..., K - 1] (interior knots only).
      bound: B > 0, the half-width of the spline's interval (static; default 3.0).
      event_ndims: number of trailing event axes (static; default 1).
      min_bin_width, min_bin_height, min_derivative: static floats in (0, 1).

    Raises:
      ValueError: for a non-positive bound, or (when called) parameter shapes that do
        not end in K, K, K - 1 or do not broadcast to the input.

    Example:
      >>> k = 8
      >>> spline = RationalQuadraticSpline(jnp.zeros((4, k)), jnp.zeros((4, k)),
      ...                                  jnp.zeros((4, k - 1)), bound=3.0)
      >>> spline.forward(x)  # all-zero raw parameters: the identity

    References:
      Durkan, C., Bekasov, A., Murray, I. & Papamakarios, G. (2019). Neural Spline
        Flows. NeurIPS, Section 3.1 and Appendix A. https://arxiv.org/abs/1906.04032
      Gregory, J. A. & Delbourgo, R. (1982). Piecewise rational quadratic
        interpolation to monotonic data. IMA J. Numer. Anal. 2(2).
    """
    )

    widths_raw: jax.Array
    heights_raw: jax.Array
    derivatives_raw: jax.Array
    bound: float = static_field(default=3.0)
    event_ndims: int = static_field(default=1)
    min_bin_width: float = static_field(default=1e-3)
    min_bin_height: float = static_field(default=1e-3)
    min_derivative: float = static_field(default=1e-3)

    def __post_init__(self):
        check_event_ndims("RationalQuadraticSpline", self.event_ndims)
        _check_spline_config("RationalQuadraticSpline", self.bound, self.min_bin_width,
                             self.min_bin_height, self.min_derivative)

    def _apply(self, name, x, inverse):
        owner = "RationalQuadraticSpline"
        x = check_input(owner, name, x, self.event_ndims)
        w, h, d = _spline_params(owner, x, self.widths_raw, self.heights_raw,
                                 self.derivatives_raw)
        y, log_deriv = _rqs(
            x, w, h, d, bound=self.bound, min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height, min_derivative=self.min_derivative,
            inverse=inverse,
        )
        return y, sum_event(log_deriv)

    def forward_and_log_det(self, x):
        return self._apply("x", x, inverse=False)

    def inverse_and_log_det(self, y):
        return self._apply("y", y, inverse=True)


@bijector_dataclass
class SplineCoupling(Bijector):
    __doc__ = (
        r"""Masked coupling layer with a rational-quadratic spline (Neural Spline Flows).

    With a binary mask :math:`m` (1 = kept) and :math:`x_m = m \odot x`, the entries
    outside the mask go through an elementwise `RationalQuadraticSpline` whose raw
    parameters :math:`\theta = \text{conditioner}(x_m)` depend on the kept part only:

    .. math::
        y = x_m + (1 - m) \odot g_{\theta(x_m)}(x), \qquad
        \log|\det J| = \sum_{i \in \text{event}} (1 - m_i) \log g'_{\theta_i}(x_i),

    and the inverse applies :math:`g^{-1}` with :math:`\theta(y_m)`, :math:`y_m = x_m`.
    The Jacobian is triangular, as in `MaskedCoupling`. The spline :math:`g`:
    """
        + _SPLINE_DOC_MATH
        + r"""
    Args:
      mask: boolean array of the event shape; True entries pass through unchanged. See
        `half_mask`, `checkerboard_mask`, `channel_mask`.
      conditioner: `x_masked [B, *event] -> (widths_raw, heights_raw,
        derivatives_raw)` of shapes [B, *event, K], [B, *event, K], [B, *event, K - 1];
        values at masked positions are ignored. Static (hashed by identity); build the
        layer inside the loss from the params being trained, as for `MaskedCoupling`.
      bound: B > 0 (static; default 3.0).
      min_bin_width, min_bin_height, min_derivative: static floats in (0, 1).

    Raises:
      ValueError: for an input whose event shape is not the mask's, or conditioner
        outputs of the wrong shapes.
      TypeError: if the conditioner does not return a triple.

    Example:
      >>> k = 8
      >>> def conditioner(h):  # h [B, 4] -> [B, 4, 8], [B, 4, 8], [B, 4, 7]
      ...     out = mlp.apply(params, h).reshape(h.shape[0], 4, 3 * k - 1)
      ...     return out[..., :k], out[..., k:2 * k], out[..., 2 * k:]
      >>> y, log_det = SplineCoupling(half_mask(4), conditioner).forward_and_log_det(x)

    References:
      Durkan, C., Bekasov, A., Murray, I. & Papamakarios, G. (2019). Neural Spline
        Flows. NeurIPS, Section 3.2 (coupling transforms).
        https://arxiv.org/abs/1906.04032
    """
    )

    mask: jax.Array
    conditioner: Callable = static_field()
    bound: float = static_field(default=3.0)
    min_bin_width: float = static_field(default=1e-3)
    min_bin_height: float = static_field(default=1e-3)
    min_derivative: float = static_field(default=1e-3)

    def __post_init__(self):
        _check_spline_config("SplineCoupling", self.bound, self.min_bin_width,
                             self.min_bin_height, self.min_derivative)
        if not callable(self.conditioner):
            raise TypeError(
                "SplineCoupling: conditioner must be a function x_masked -> (widths_raw, "
                f"heights_raw, derivatives_raw); received {self.conditioner!r} of type "
                f"{type(self.conditioner).__name__}."
            )

    @property
    def event_ndims(self) -> int:
        return int(np.ndim(self.mask))

    def _apply(self, name, x, inverse):
        owner = "SplineCoupling"
        x = check_input(owner, name, x, self.event_ndims)
        mask_shape = tuple(np.shape(self.mask))
        if x.shape[1:] != mask_shape:
            raise ValueError(
                f"{owner}: {name} must have shape [B, *mask.shape] = "
                f"[B, {', '.join(map(str, mask_shape))}]; received shape {x.shape}."
            )
        mask = jnp.broadcast_to(jnp.asarray(self.mask) != 0, x.shape)
        x_masked = jnp.where(mask, x, jnp.zeros((), x.dtype))
        out = self.conditioner(x_masked)
        if not (isinstance(out, (tuple, list)) and len(out) == 3):
            raise TypeError(
                f"{owner}: the conditioner must return a triple (widths_raw, heights_raw, "
                f"derivatives_raw); received {type(out).__name__}."
            )
        w, h, d = out
        k = jnp.shape(w)[-1] if jnp.ndim(w) else None
        want = (x.shape + (k,), x.shape + (k,), x.shape + ((k - 1) if k else None,))
        got = tuple(jnp.shape(a) for a in out)
        if got != want:
            raise ValueError(
                f"{owner}: the conditioner's outputs must have shapes [B, *event, K], "
                f"[B, *event, K], [B, *event, K - 1] = {want}; received shapes {got}."
            )
        w, h, d = _spline_params(owner, x, w, h, d)
        y, log_deriv = _rqs(
            x, w, h, d, bound=self.bound, min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height, min_derivative=self.min_derivative,
            inverse=inverse,
        )
        zero = jnp.zeros((), x.dtype)
        return jnp.where(mask, x, y), sum_event(jnp.where(mask, zero, log_deriv))

    def forward_and_log_det(self, x):
        return self._apply("x", x, inverse=False)

    def inverse_and_log_det(self, y):
        return self._apply("y", y, inverse=True)
