"""The bijector template, and the two ways of combining bijectors: `Inverse` and `Chain`.

A bijector is an invertible, differentiable map :math:`f` together with
:math:`\\log|\\det J_f|`, applied to a batch of shape [B, *event_shape]. It is a
small immutable object: a frozen dataclass registered as a JAX pytree, whose array
fields (shifts, log-scales, masks) are pytree leaves and whose configuration
(`event_ndims`, functions, strings, permutations) is static metadata. So a bijector can
be built inside a loss function from a params dict, or passed straight into a
`jax.jit`-compiled function; changing its arrays does not recompile, changing its
static fields does.

A subclass implements `forward_and_log_det` and `inverse_and_log_det` (pure; maths in
its docstring) and sets `event_ndims`, the number of trailing axes that form one event.
Inputs have exactly one leading batch axis, `x.ndim == event_ndims + 1`, and
log-determinants are summed over the event, one per example: shape [B]. To map a
batch of batches, `jax.vmap` over the extra axis.

References:
  Papamakarios, G., Nalisnick, E., Rezende, D. J., Mohamed, S. &
    Lakshminarayanan, B. (2021). Normalizing Flows for Probabilistic Modeling and
    Inference. JMLR 22(57). https://arxiv.org/abs/1912.02762
  distrax (google-deepmind), `distrax/_src/bijectors/bijector.py` and `chain.py`.
"""

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def static_field(**kwargs: Any) -> Any:
    """A dataclass field that is pytree metadata (static under jit), not a leaf."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def bijector_dataclass(cls: type) -> type:
    """Makes `cls` a frozen, pytree-registered dataclass (identity `==` and hash).

    Fields declared with `static_field()` are metadata; all others are leaves.
    `eq=False` because array fields have no boolean `==`.
    """
    cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
    return jax.tree_util.register_dataclass(cls)


def check_event_ndims(owner: str, event_ndims: Any) -> None:
    """Raises unless `event_ndims` is a static Python int >= 0."""
    if isinstance(event_ndims, bool) or not isinstance(event_ndims, (int, np.integer)):
        raise TypeError(
            f"{owner}: event_ndims must be a Python int; received {event_ndims!r} of "
            f"type {type(event_ndims).__name__}. E.g. event_ndims=1 for vectors [B, D], "
            "event_ndims=3 for images [B, H, W, C]."
        )
    if event_ndims < 0:
        raise ValueError(f"{owner}: event_ndims must be >= 0; received {event_ndims}.")


def check_input(owner: str, name: str, x: Any, event_ndims: int) -> jax.Array:
    """Checks that `x` is a floating batch [B, *event] with `event_ndims` event axes.

    Looks only at static shapes and dtypes, so it raises at trace time under jit.

    Returns:
      `x` as a JAX array.
    """
    x = jnp.asarray(x)
    if x.ndim != event_ndims + 1:
        raise ValueError(
            f"{owner}: {name} must have shape [B, *event_shape] with {event_ndims} event "
            f"axes (ndim {event_ndims + 1}); received shape {x.shape} (ndim {x.ndim}). "
            "Add a batch axis for a single example (x[None]), or jax.vmap over extra "
            "leading axes."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{owner}: {name} must have a floating dtype; received {x.dtype} "
            f"(shape {x.shape}). Cast it first, e.g. {name}.astype(jnp.float32)."
        )
    return x


def sum_event(a: jax.Array) -> jax.Array:
    """Sums a [B, ...] array over all axes but the first, giving [B]."""
    return jnp.sum(a, axis=tuple(range(1, a.ndim)))


def zero_log_det(x: jax.Array) -> jax.Array:
    """Log-determinant of a volume-preserving map: zeros of shape [B], dtype of `x`."""
    return jnp.zeros(x.shape[:1], x.dtype)


class Bijector(abc.ABC):
    """Base class: an invertible map on batches [B, *event] with per-example log|det J|.

    Subclasses are `@bijector_dataclass` classes with an `event_ndims` attribute and
    implement the two methods below. `forward` and `inverse` drop the log-det.

    Direction convention for flows (see `jgen.bijectors.transformed`): `forward` maps
    the base (latent) space to data space, i.e. it is the sampling direction.
    """

    event_ndims: int

    @abc.abstractmethod
    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Computes :math:`y = f(x)` and :math:`\\log|\\det \\partial f / \\partial x|`.

        Args:
          x: floating array [B, *event_shape].

        Returns:
          `(y, log_det)` with `y` of the output event shape and `log_det` of shape [B].
        """

    @abc.abstractmethod
    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Computes :math:`x = f^{-1}(y)` and :math:`\\log|\\det \\partial f^{-1} / \\partial y|`.

        Args:
          y: floating array [B, *event_shape].

        Returns:
          `(x, log_det)` with `log_det` of shape [B]; at `y = f(x)` it equals minus the
          forward log-det at `x`.
        """

    def forward(self, x: jax.Array) -> jax.Array:
        """:math:`y = f(x)` without the log-det."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, y: jax.Array) -> jax.Array:
        """:math:`x = f^{-1}(y)` without the log-det."""
        return self.inverse_and_log_det(y)[0]


def _check_bijector(owner: str, b: Any) -> None:
    if not isinstance(b, Bijector):
        raise TypeError(
            f"{owner}: expected a jgen.bijectors.Bijector; received {b!r} of type "
            f"{type(b).__name__}. E.g. {owner}(Affine(shift, log_scale))."
        )


@bijector_dataclass
class Inverse(Bijector):
    r"""The inverse bijector :math:`f^{-1}`: forward and inverse swapped.

    .. math::
        \text{Inverse}(f).\text{forward}(y) = f^{-1}(y), \qquad
        \log|\det J_{f^{-1}}(y)| = -\log|\det J_f(f^{-1}(y))|.

    Args:
      bijector: the bijector :math:`f` to invert.

    Example:
      >>> b = Inverse(Tanh())
      >>> b.forward(jnp.full((2, 3), 0.5))  # atanh(0.5)
    """

    bijector: Bijector

    def __post_init__(self):
        _check_bijector("Inverse", self.bijector)

    @property
    def event_ndims(self) -> int:
        return self.bijector.event_ndims

    def forward_and_log_det(self, x):
        return self.bijector.inverse_and_log_det(x)

    def inverse_and_log_det(self, y):
        return self.bijector.forward_and_log_det(y)


@bijector_dataclass
class Chain(Bijector):
    r"""Composition of bijectors; **forward applies `bijectors[0]` first.**

    For `Chain([f1, f2, ..., fK])`,

    .. math::
        y = f_K(\cdots f_2(f_1(x))), \qquad
        \log|\det J(x)| = \sum_{k=1}^{K} \log|\det J_{f_k}(x_{k-1})|,\quad
        x_0 = x,\; x_k = f_k(x_{k-1}),

    and the inverse applies :math:`f_K^{-1}` first. This is reading order (like
    `optax.chain`), and the *opposite* of `distrax.Chain` and TFP's `Chain`, which
    apply the last bijector first. All members must share one `event_ndims` so the
    per-example log-dets [B] add up.

    Args:
      bijectors: a non-empty sequence of bijectors, applied left to right in forward.

    Raises:
      ValueError: if `bijectors` is empty or the members' `event_ndims` differ.
      TypeError: if a member is not a `Bijector`.

    Example:
      >>> flow = Chain([Affine(shift, log_scale), Tanh()])  # y = tanh(x * s + t)
    """

    bijectors: Sequence[Bijector]

    def __post_init__(self):
        bijectors = tuple(self.bijectors)
        if not bijectors:
            raise ValueError(
                "Chain: received an empty sequence of bijectors; pass at least one, "
                "e.g. Chain([Affine(shift, log_scale)])."
            )
        for b in bijectors:
            _check_bijector("Chain", b)
        ndims = [b.event_ndims for b in bijectors]
        if len(set(ndims)) != 1:
            received = ", ".join(f"{type(b).__name__}: {b.event_ndims}" for b in bijectors)
            raise ValueError(
                f"Chain: all bijectors must have the same event_ndims; received {received}. "
                "Construct the elementwise ones with the event_ndims of the others, e.g. "
                "Affine(shift, log_scale, event_ndims=3) in an image flow."
            )
        object.__setattr__(self, "bijectors", bijectors)

    @property
    def event_ndims(self) -> int:
        return self.bijectors[0].event_ndims

    def forward_and_log_det(self, x):
        total = None
        for b in self.bijectors:
            x, log_det = b.forward_and_log_det(x)
            total = log_det if total is None else total + log_det
        return x, total

    def inverse_and_log_det(self, y):
        total = None
        for b in reversed(self.bijectors):
            y, log_det = b.inverse_and_log_det(y)
            total = log_det if total is None else total + log_det
        return y, total
