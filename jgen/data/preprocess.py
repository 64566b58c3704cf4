"""Pixel preprocessing as pure `jax.numpy` functions (they work under `jit`): scaling
integer pixels to floats, dynamic and static binarisation, uniform dequantisation, and
the config-edge registry `get_preprocess(name)` that maps a config string to
`preprocess(key, image_uint8, index) -> float32 image`.

Each function checks its input: dtypes always (they are static), value ranges only
when the input is concrete (not a tracer inside `jit`), via `check_range`.

References:
    Salakhutdinov, Murray (2008). On the quantitative analysis of deep belief
    networks (statically binarised MNIST). ICML.
    Theis, van den Oord, Bethge (2016). A note on the evaluation of generative
    models (uniform dequantisation). ICLR. https://arxiv.org/abs/1511.01844
"""

from typing import Callable

import jax
import numpy as np
import jax.numpy as jnp

PreprocessFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _describe(x) -> str:
    return f"{jnp.result_type(x)} {list(jnp.shape(x))}"


def check_range(
    x, lo: float, hi: float, *, name: str, expected: str, fix: str = ""
) -> None:
    """Raises if concrete `x` has values outside `[lo, hi]`; no-op on tracers.

    Args:
        x: array to check.
        lo, hi: inclusive bounds.
        name: the calling function, quoted in the message.
        expected: what the caller expects, e.g. "floats in [0, 1]".
        fix: optional advice appended to the message.

    Raises:
        ValueError: quoting the received min, max, dtype and shape.
    """
    if isinstance(x, jax.core.Tracer) or jnp.size(x) == 0:
        return
    # numpy, not jnp: inside a jit trace, jnp.min of a concrete constant is staged
    # (a tracer), and .item() would fail.
    values = np.asarray(x)
    x_min, x_max = values.min().item(), values.max().item()
    if x_min < lo or x_max > hi:
        raise ValueError(
            f"{name} expects {expected}; got min={x_min} max={x_max} ({_describe(x)})."
            + (f" {fix}" if fix else "")
        )


def _check_integer_pixels(x, name: str, max_value: int) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
        raise TypeError(
            f"{name} expects integer pixels in [0, {max_value}] (e.g. uint8); got "
            f"{_describe(x)}. Pass the raw uint8 images from jgen.data, not images "
            "that were already converted to floats."
        )
    check_range(
        x, 0, max_value, name=name, expected=f"integer pixels in [0, {max_value}]",
        fix=f"Pass raw pixels (uint8 for 256 levels) with values 0..{max_value}.",
    )


def _check_unit_floats(x, name: str) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(
            f"{name} expects floats in [0, 1]; got {_describe(x)}. Map uint8 pixels "
            "with jgen.data.to_unit_interval(x) first."
        )
    check_range(
        x, 0.0, 1.0, name=name, expected="floats in [0, 1]",
        fix="If your data is in [-1, 1], map it with (x + 1) / 2 first; if it is "
        "uint8 pixels, use jgen.data.to_unit_interval(x).",
    )


def to_unit_interval(x: jax.Array) -> jax.Array:
    """Maps integer pixels in [0, 255] to float32 x / 255 in [0, 1].

    Example:
        >>> to_unit_interval(jnp.array([0, 255], jnp.uint8)).tolist()
        [0.0, 1.0]
    """
    _check_integer_pixels(x, "to_unit_interval", 255)
    # The clip keeps the endpoints exact when XLA turns / 255 into * (1 / 255).
    return jnp.clip(jnp.asarray(x, jnp.float32) / 255.0, 0.0, 1.0)


def scale(x: jax.Array, *, low: float = -1.0, high: float = 1.0) -> jax.Array:
    """Maps integer pixels in [0, 255] linearly to float32 in [low, high].

    `scale(x)` gives the symmetric [-1, 1] range of diffusion models and GANs;
    `scale(x, low=0.0)` equals `to_unit_interval(x)`.
    """
    if not low < high:
        raise ValueError(f"scale needs low < high; got low={low}, high={high}.")
    _check_integer_pixels(x, "scale", 255)
    y = low + (high - low) * (jnp.asarray(x, jnp.float32) / 255.0)
    return jnp.clip(y, low, high)  # exact endpoints under XLA's algebraic rewrites


def binarize_dynamic(key: jax.Array, x: jax.Array) -> jax.Array:
    """Samples binary pixels, Bernoulli(x), independently for every call.

    Dynamic binarisation draws a fresh binary image each time an example is seen,
    which regularises models of binarised MNIST.

    Args:
        key: PRNG key; use a new one per step.
        x: floats in [0, 1], any shape (the Bernoulli probabilities).

    Returns:
        float32 samples in {0, 1} of `x`'s shape.
    """
    _check_unit_floats(x, "binarize_dynamic")
    return jax.random.bernoulli(key, x).astype(jnp.float32)


def binarize_static(x: jax.Array, index: jax.Array, *, seed: int = 0) -> jax.Array:
    """A fixed binarisation: example `i` always gets the same binary image.

    The key of example `i` is `fold_in(key(seed), i)`, so the sample depends only on
    `(seed, index)`, never on which other examples share the batch.

    Args:
        x: floats in [0, 1], [B, ...].
        index: int [B], the examples' indices in their dataset (batch["index"]).
        seed: selects one of the fixed binarisations.

    Returns:
        float32 samples in {0, 1} of `x`'s shape.
    """
    _check_unit_floats(x, "binarize_static")
    index = jnp.asarray(index)
    if not jnp.issubdtype(index.dtype, jnp.integer) or index.shape != jnp.shape(x)[:1]:
        raise ValueError(
            "binarize_static expects integer example indices [B] with B = "
            f"{jnp.shape(x)[0] if jnp.ndim(x) else None} (x is {_describe(x)}); got "
            f"{_describe(index)}. Pass batch['index'].",
        )
    base = jax.random.key(seed)

    def one(xi, i):
        return jax.random.bernoulli(jax.random.fold_in(base, i), xi)

    return jax.vmap(one)(x, index).astype(jnp.float32)


def dequantize_uniform(key: jax.Array, x: jax.Array, *, num_bins: int = 256) -> jax.Array:
    """Uniform dequantisation: integer x -> (x + u) / num_bins, u ~ U[0, 1).

    The result lies in [x / num_bins, (x + 1) / num_bins), so it stays in [0, 1) and
    floor(y * num_bins) == x (values that float32 rounding would push onto the
    upper edge are clipped just below it).

    Args:
        key: PRNG key; use a new one per step.
        x: integer pixels in [0, num_bins - 1].
        num_bins: number of pixel values.

    Returns:
        float32 of `x`'s shape.
    """
    _check_integer_pixels(x, "dequantize_uniform", num_bins - 1)
    x = jnp.asarray(x, jnp.float32)
    u = jax.random.uniform(key, x.shape, jnp.float32)
    upper = jnp.nextafter((x + 1.0) / num_bins, jnp.float32(0.0))
    return jnp.minimum((x + u) / num_bins, upper)


# ---- config edge: name -> preprocess(key, image_uint8, index) -> float32 image ----


def _binarized_dynamic(key, x, index):
    del index
    return binarize_dynamic(key, to_unit_interval(x))


def _binarized_static(key, x, index):
    del key  # the binarisation is fixed by (seed=0, index)
    return binarize_static(to_unit_interval(x), index)


def _dequantized(key, x, index):
    del index
    return dequantize_uniform(key, x)


def _unit_interval(key, x, index):
    del key, index
    return to_unit_interval(x)


def _symmetric(key, x, index):
    del key, index
    return scale(x, low=-1.0, high=1.0)


PREPROCESSORS: dict[str, PreprocessFn] = {
    "binarize_dynamic": _binarized_dynamic,
    "binarize_static": _binarized_static,
    "dequantize_uniform": _dequantized,
    "unit_interval": _unit_interval,
    "symmetric": _symmetric,
}


def get_preprocess(name: str) -> PreprocessFn:
    """Returns the preprocessing named in a config (e.g. `data.preprocess`).

    Every returned function has the signature the training code calls,
    `preprocess(key, image_uint8 [B, H, W, C], index int [B]) -> float32 image`
    (functions that need no randomness ignore `key`; only "binarize_static" uses
    `index`).

    Args:
        name: one of "binarize_dynamic", "binarize_static", "dequantize_uniform",
            "unit_interval" ([0, 1]) or "symmetric" ([-1, 1]).

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        return PREPROCESSORS[name]
    except KeyError:
        raise ValueError(
            f"Unknown preprocessing {name!r}; valid names are {sorted(PREPROCESSORS)}."
        ) from None
