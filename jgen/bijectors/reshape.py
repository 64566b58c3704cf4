"""Shape-changing, volume-preserving bijectors for images: `Squeeze` (space-to-depth).

Real NVP and Glow squeeze an image [H, W, C] into [H/2, W/2, 4C] between scales, so
that channel-wise masks can mix spatial neighbours. A reordering of entries has log-det 0.
"""


from jgen.bijectors.base import (
    Bijector,
    bijector_dataclass,
    check_input,
    static_field,
    zero_log_det,
)


@bijector_dataclass
class Squeeze(Bijector):
    r"""Space-to-depth: [B, H, W, C] -> [B, H/f, W/f, f·f·C] with factor :math:`f`.

    .. math::
        y[b, i, j, (p f + q) C + c] = x[b, f i + p, f j + q, c],\qquad
        0 \le p, q < f,\qquad \log|\det J| = 0.

    Each output pixel stacks an :math:`f \times f` patch along channels, row-major over
    the patch and then channel. The inverse is depth-to-space. `event_ndims` is 3.

    Args:
      factor: the patch size f >= 1 (static; default 2). H and W must be divisible by f.

    Raises:
      ValueError: if the input is not [B, H, W, C] with H and W divisible by `factor`
        (forward), or C not divisible by `factor**2` (inverse).

    References:
      Dinh, L., Sohl-Dickstein, J. & Bengio, S. (2017). Density estimation using
        Real NVP. ICLR, Section 3.6 and Figure 3.
    """

    factor: int = static_field(default=2)

    def __post_init__(self):
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"Squeeze: factor must be an int >= 1; received {self.factor!r}.")

    @property
    def event_ndims(self) -> int:
        return 3

    def forward_and_log_det(self, x):
        x = check_input("Squeeze", "x", x, 3)
        b, h, w, c = x.shape
        f = self.factor
        if h % f or w % f:
            raise ValueError(
                f"Squeeze: x must be [B, H, W, C] with H and W divisible by {f}; received "
                f"shape {x.shape}. Pad or crop the image first."
            )
        y = x.reshape(b, h // f, f, w // f, f, c).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(b, h // f, w // f, f * f * c), zero_log_det(x)

    def inverse_and_log_det(self, y):
        y = check_input("Squeeze", "y", y, 3)
        b, h, w, c = y.shape
        f = self.factor
        if c % (f * f):
            raise ValueError(
                f"Squeeze: y must be [B, H, W, C] with C divisible by {f * f}; received "
                f"shape {y.shape}."
            )
        x = y.reshape(b, h, w, f, f, c // (f * f)).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, h * f, w * f, c // (f * f)), zero_log_det(y)
