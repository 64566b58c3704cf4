"""Shared helpers for `jgen.distributions`: the one event-axis reduction every
log-density uses, and the static shape/dtype checks that make their errors readable.

All checks here look only at static shapes and dtypes, so they run (and raise) at
trace time under `jax.jit` exactly as they do eagerly.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_BROADCAST_HINT = (
    "Parameters must broadcast against x in the numpy way: give them x's shape, "
    "a shape matching x's trailing axes (e.g. [D] for x of shape [B, D]) or a scalar; "
    "where leading axes differ add the singleton axes explicitly "
    "(e.g. mean[:, None] for x of shape [B, T] and mean of shape [B])."
)


def sum_event(x: jax.Array, event_ndims: int | None = None) -> jax.Array:
    """Sums per-element log-densities over the event axes.

    With `event_ndims=None` the leading axis of `x` is the batch axis and every other
    axis is an event axis, so an array of shape [B, ...] reduces to shape [B]. With an
    integer `k`, only the last `k` axes are summed (`k=0` returns `x` unchanged).

    Args:
      x: per-element log-densities, e.g. of shape [B, H, W, C].
      event_ndims: None (all axes but the first) or a Python int in [0, x.ndim].

    Returns:
      `x` summed over its event axes: shape [B] for `event_ndims=None`,
      `x.shape[:x.ndim - k]` for `event_ndims=k`.

    Raises:
      TypeError: if `event_ndims` is not None or a Python int.
      ValueError: if `event_ndims` is out of range, or `x` is 0-d with
        `event_ndims=None` (there is no batch axis to keep).

    Example:
      >>> sum_event(jnp.ones((4, 2, 3))).shape
      (4,)
      >>> sum_event(jnp.ones((4, 2, 3)), event_ndims=1).shape
      (4, 2)
    """
    x = jnp.asarray(x)
    if event_ndims is None:
        if x.ndim == 0:
            raise ValueError(
                "sum_event: event_ndims=None keeps the leading (batch) axis, but "
                "received a 0-d array. Add a batch axis (x[None]) or pass "
                "event_ndims=0 for an elementwise result."
            )
        axes = tuple(range(1, x.ndim))
    else:
        if isinstance(event_ndims, bool) or not isinstance(event_ndims, (int, np.integer)):
            raise TypeError(
                f"event_ndims must be None or a Python int; received {event_ndims!r} "
                f"of type {type(event_ndims).__name__}. Under jax.jit pass it as a "
                "static argument (static_argnames=('event_ndims',))."
            )
        if not 0 <= event_ndims <= x.ndim:
            raise ValueError(
                f"event_ndims must lie in [0, {x.ndim}] for log-densities of shape "
                f"{x.shape}; received event_ndims={event_ndims}. Use None to sum all "
                "axes but the first."
            )
        axes = tuple(range(x.ndim - int(event_ndims), x.ndim))
    return jnp.sum(x, axis=axes)


def check_floating(fn_name: str, name: str, value: Any, hint: str = "") -> None:
    """Raises TypeError unless `value` has a floating dtype (Python scalars pass)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return  # weakly typed: takes the dtype of the arrays it meets
    dtype = jnp.result_type(value)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{fn_name}: {name} must have a floating dtype; received dtype {dtype} "
            f"(shape {jnp.shape(value)}). Cast it first, e.g. "
            f"{name}.astype(jnp.float32).{hint}"
        )


def check_num_bins(fn_name: str, num_bins: Any) -> None:
    """Raises unless `num_bins` is a static Python int >= 2."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)):
        raise TypeError(
            f"{fn_name}: num_bins must be a Python int; received {num_bins!r} of type "
            f"{type(num_bins).__name__}. Under jax.jit mark it static "
            "(static_argnames=('num_bins',))."
        )
    if num_bins < 2:
        raise ValueError(
            f"{fn_name}: num_bins must be at least 2; received num_bins={num_bins}. "
            "Use num_bins=256 for 8-bit data."
        )


def broadcast_params(fn_name: str, **arrays: Any) -> tuple[jax.Array, ...]:
    """Broadcasts named arrays to their common shape and floating dtype.

    The result shape is numpy's `broadcast_shapes` of the inputs; broadcasting is done
    explicitly with `jnp.broadcast_to`, so it is allowed under
    `jax_numpy_rank_promotion="raise"`.

    Args:
      fn_name: the public function's name, for error messages.
      **arrays: the arrays in signature order, e.g. `x=x, mean=mean, log_std=log_std`.

    Returns:
      The arrays, in the order given, broadcast to one shape and one dtype.

    Raises:
      ValueError: if the shapes do not broadcast; the message lists each shape.
    """
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    try:
        shape = np.broadcast_shapes(*shapes.values())
    except ValueError:
        received = ", ".join(f"{n} of shape {s}" for n, s in shapes.items())
        raise ValueError(
            f"{fn_name}: could not broadcast {received}. {_BROADCAST_HINT}"
        ) from None
    dtype = jnp.result_type(*arrays.values())
    return tuple(jnp.broadcast_to(jnp.asarray(a, dtype), shape) for a in arrays.values())
