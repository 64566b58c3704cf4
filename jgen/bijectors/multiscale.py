"""Multi-scale architectures as bijectors: `FactorOut` (Real NVP's factoring out of
half the channels at each scale) and `Flattened` (an image bijector seen on flat vectors).

Real NVP and Glow transform an image at several scales. In the data -> base direction,
each scale squeezes the image, applies flow steps, and then *factors out* half of the
channels: those go straight to the base distribution and only the other half is
transformed further, at the next (coarser) scale. Here that recursion is an ordinary
nested bijector, e.g. (forward = sampling direction, `Chain` applies the first first)::

    level(h, w, c) = Chain([Squeeze(),                               # [h/2, w/2, 4c]
                            FactorOut(level(h/2, w/2, 2c), num_kept=2c),
                            *steps,                                  # on [h/2, w/2, 4c]
                            Inverse(Squeeze())])                     # back to [h, w, c]

so the whole flow maps [H, W, C] to [H, W, C] and the base is a standard normal over
that tensor: the latent variables of all scales, arranged into the image shape by the
inverse squeezes, a fixed permutation with log-det 0 under which the standard normal
is invariant. Coarser scales see fewer dimensions, which is the point: the cost of a
scale falls with its depth.

References:
  Dinh, L., Sohl-Dickstein, J. & Bengio, S. (2017). Density estimation using Real NVP.
    ICLR, Section 3.6 and Figure 4(b). https://arxiv.org/abs/1605.08803
  Kingma, D. P. & Dhariwal, P. (2018). Glow: Generative Flow with Invertible 1x1
    Convolutions. NeurIPS, Figure 2(b). https://arxiv.org/abs/1807.03039
"""

import math

import jax.numpy as jnp
import numpy as np

from jgen.bijectors.base import (
    Bijector,
    _check_bijector,
    bijector_dataclass,
    check_input,
    static_field,
)


@bijector_dataclass
class FactorOut(Bijector):
    r"""Transforms the first `num_kept` channels of an image with `inner`; the other
    channels pass through unchanged (they are "factored out" to the base distribution).

    On images [B, H, W, C] (`event_ndims` = 3), with :math:`k` = `num_kept`,
    :math:`x = (x_{:k}, x_{k:})` split along channels and :math:`g` = `inner`,

    .. math::
        y = \big(g(x_{:k}),\; x_{k:}\big), \qquad
        x = \big(g^{-1}(y_{:k}),\; y_{k:}\big), \qquad
        \log|\det J(x)| = \log|\det J_g(x_{:k})|,

    because the Jacobian is block diagonal, :math:`\operatorname{diag}(J_g, I)`. `inner`
    may change shapes internally (a `Squeeze` followed by flow steps and its inverse), but
    must map [B, H, W, k] to [B, H, W, k]. In the data -> base direction (`inverse`), the
    last :math:`C - k` channels are final latent variables of this scale, and
    :math:`g^{-1}` continues the flow on the rest: Real NVP's
    :math:`(z^{(i+1)}, h^{(i+1)}) = f^{(i+1)}(h^{(i)})` recursion (see the module
    docstring for a whole multi-scale architecture).

    Args:
      inner: a bijector with `event_ndims` 3 on [B, H, W, num_kept].
      num_kept: how many leading channels `inner` transforms, 1 <= num_kept < C (static).

    Raises:
      ValueError: for a non-positive `num_kept`, an `inner` whose `event_ndims` is not 3,
        an input with no more than `num_kept` channels, or an `inner` that changes the
        shape of the kept channels.

    Example:
      >>> flow = Chain([Squeeze(), FactorOut(inner_level, num_kept=2), *steps,
      ...               Inverse(Squeeze())])  # [B, 8, 8, 1] -> [B, 8, 8, 1]

    References:
      Dinh, L., Sohl-Dickstein, J. & Bengio, S. (2017). Density estimation using Real NVP.
        ICLR, Section 3.6. https://arxiv.org/abs/1605.08803
    """

    inner: Bijector
    num_kept: int = static_field()

    def __post_init__(self):
        _check_bijector("FactorOut", self.inner)
        if self.inner.event_ndims != 3:
            raise ValueError(
                "FactorOut: inner must act on images [B, H, W, C] (event_ndims 3); received "
                f"{type(self.inner).__name__} with event_ndims {self.inner.event_ndims}. "
                "Construct elementwise members with event_ndims=3."
            )
        k = self.num_kept
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(
                f"FactorOut: num_kept must be an int >= 1; received {k!r}. E.g. "
                "num_kept=C // 2 to factor out half of C channels."
            )
        object.__setattr__(self, "num_kept", int(k))

    @property
    def event_ndims(self) -> int:
        return 3

    def _split(self, name: str, x):
        x = check_input("FactorOut", name, x, 3)
        if x.shape[-1] <= self.num_kept:
            raise ValueError(
                f"FactorOut: {name} must have more than num_kept={self.num_kept} channels; "
                f"received shape {x.shape}. Squeeze first (4x the channels) or lower num_kept."
            )
        return x[..., : self.num_kept], x[..., self.num_kept :]

    def _apply(self, name, x, fn):
        kept, out = self._split(name, x)
        new, log_det = fn(kept)
        if new.shape != kept.shape:
            raise ValueError(
                f"FactorOut: inner must keep the shape of the kept channels {kept.shape}; it "
                f"returned shape {new.shape}. End the inner bijector with Inverse(Squeeze()) "
                "for every Squeeze it applies."
            )
        return jnp.concatenate([new, out], axis=-1), log_det

    def forward_and_log_det(self, x):
        return self._apply("x", x, self.inner.forward_and_log_det)

    def inverse_and_log_det(self, y):
        return self._apply("y", y, self.inner.inverse_and_log_det)


@bijector_dataclass
class Flattened(Bijector):
    r"""An image bijector seen as a bijector of flat vectors: [B, D] -> [B, D].

    With :math:`R` the reshape from :math:`\mathbb R^D` to the event shape (row-major,
    :math:`D` = prod(event_shape)) and :math:`f` = `bijector`,

    .. math::
        \text{Flattened}(f) = R^{-1} \circ f \circ R, \qquad
        \log|\det J| = \log|\det J_f|,

    since a reshape only renames coordinates. Lets losses that work on flattened data
    (`jgen.losses.flow`) use convolutional, multi-scale image flows. `event_ndims` is 1.

    Args:
      bijector: a bijector on [B, *event_shape] with `event_ndims == len(event_shape)`
        that keeps that shape.
      event_shape: the static event shape, e.g. (28, 28, 1).

    Raises:
      ValueError: if `event_shape` does not match the bijector's `event_ndims`, or the
        input is not [B, prod(event_shape)].

    Example:
      >>> flat = Flattened(glow, (28, 28, 1))
      >>> flow_log_prob(flat, standard_normal_log_prob, x.reshape(B, 784))
    """

    bijector: Bijector
    event_shape: tuple = static_field()

    def __post_init__(self):
        _check_bijector("Flattened", self.bijector)
        shape = self.event_shape
        ok = isinstance(shape, (tuple, list)) and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape
        )
        if not ok or len(shape) != self.bijector.event_ndims:
            raise ValueError(
                f"Flattened: event_shape must be a tuple of {self.bijector.event_ndims} positive "
                f"ints (the event_ndims of {type(self.bijector).__name__}); received {shape!r}. "
                "E.g. Flattened(image_flow, (28, 28, 1))."
            )
        object.__setattr__(self, "event_shape", tuple(int(s) for s in shape))

    @property
    def event_ndims(self) -> int:
        return 1

    def _apply(self, name, x, fn):
        x = check_input("Flattened", name, x, 1)
        d = math.prod(self.event_shape)
        if x.shape[1] != d:
            raise ValueError(
                f"Flattened: {name} must have shape [B, {d}] (the flattened event shape "
                f"{self.event_shape}); received shape {x.shape}."
            )
        y, log_det = fn(x.reshape((x.shape[0], *self.event_shape)))
        return y.reshape(x.shape), log_det

    def forward_and_log_det(self, x):
        return self._apply("x", x, self.bijector.forward_and_log_det)

    def inverse_and_log_det(self, y):
        return self._apply("y", y, self.bijector.inverse_and_log_det)

