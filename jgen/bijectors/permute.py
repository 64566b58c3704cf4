"""Volume-preserving reorderings of the last axis: `Permute` (any fixed permutation)
and `Reverse`. Between coupling layers they let every dimension be transformed.

A permutation matrix has determinant :math:`\\pm 1`, so both have log-det 0.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jgen.bijectors.base import (
    Bijector,
    bijector_dataclass,
    check_event_ndims,
    check_input,
    static_field,
    zero_log_det,
)


def _check_last_axis(owner: str, name: str, x, size: int) -> None:
    if x.shape[-1] != size:
        raise ValueError(
            f"{owner}: the last axis of {name} must have size {size} (the permutation's "
            f"length); received shape {x.shape}."
        )


@bijector_dataclass
class Permute(Bijector):
    r"""Fixed permutation of the last axis: :math:`y_{\ldots, i} = x_{\ldots, \pi(i)}`.

    .. math::
        y = x[..., \pi], \qquad x = y[..., \pi^{-1}], \qquad \log|\det J| = 0.

    The permutation is static configuration (a tuple of ints), not a learned array.
    With `event_ndims=3` it permutes the channels of images [B, H, W, C].

    Args:
      perm: a permutation of `range(D)`, D the size of the last axis (sequence of
        ints or an integer numpy array).
      event_ndims: number of trailing event axes (static; default 1, at least 1).

    Raises:
      ValueError: if `perm` is not a permutation of `range(len(perm))`.

    Example:
      >>> perm = tuple(np.random.default_rng(0).permutation(4).tolist())
      >>> Permute(perm).forward(x)  # x [B, 4]

    References:
      Dinh, L., Sohl-Dickstein, J. & Bengio, S. (2017). Density estimation using
        Real NVP. ICLR. https://arxiv.org/abs/1605.08803
    """

    perm: Sequence[int] = static_field()
    event_ndims: int = static_field(default=1)

    def __post_init__(self):
        check_event_ndims("Permute", self.event_ndims)
        if self.event_ndims < 1:
            raise ValueError(
                f"Permute: event_ndims must be >= 1 (it permutes the last event axis); "
                f"received {self.event_ndims}."
            )
        perm = np.asarray(self.perm)
        if (
            perm.ndim != 1
            or not np.issubdtype(perm.dtype, np.integer)
            or not np.array_equal(np.sort(perm), np.arange(perm.size))
        ):
            raise ValueError(
                f"Permute: perm must be a permutation of range(D) given as ints, e.g. "
                f"(2, 0, 1); received {self.perm!r}."
            )
        object.__setattr__(self, "perm", tuple(int(i) for i in perm))

    def forward_and_log_det(self, x):
        x = check_input("Permute", "x", x, self.event_ndims)
        _check_last_axis("Permute", "x", x, len(self.perm))
        return jnp.take(x, np.asarray(self.perm), axis=-1), zero_log_det(x)

    def inverse_and_log_det(self, y):
        y = check_input("Permute", "y", y, self.event_ndims)
        _check_last_axis("Permute", "y", y, len(self.perm))
        inv = np.argsort(np.asarray(self.perm))
        return jnp.take(y, inv, axis=-1), zero_log_det(y)


@bijector_dataclass
class Reverse(Bijector):
    r"""Reverses the last axis: :math:`y_{\ldots, i} = x_{\ldots, D-1-i}`; self-inverse.

    .. math::
        y = x[..., ::-1], \qquad x = y[..., ::-1], \qquad \log|\det J| = 0.

    Alternating `Reverse` with half-masked couplings is the NICE / Real NVP recipe for
    vectors.

    Args:
      event_ndims: number of trailing event axes (static; default 1, at least 1).
    """

    event_ndims: int = static_field(default=1)

    def __post_init__(self):
        check_event_ndims("Reverse", self.event_ndims)
        if self.event_ndims < 1:
            raise ValueError(
                f"Reverse: event_ndims must be >= 1 (it reverses the last event axis); "
                f"received {self.event_ndims}."
            )

    def forward_and_log_det(self, x):
        x = check_input("Reverse", "x", x, self.event_ndims)
        return jnp.flip(x, axis=-1), zero_log_det(x)

    def inverse_and_log_det(self, y):
        y = check_input("Reverse", "y", y, self.event_ndims)
        return jnp.flip(y, axis=-1), zero_log_det(y)
