"""Preprocessing: exact values of the scalings, the binarisations' Bernoulli means
(binomial bounds for fixed seeds), static binarisation's independence from batch
composition, dequantisation's floor(y * 256) == x, the registry, and the dtype and
range errors with their messages; each under jit too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.data import (
    PREPROCESSORS,
    binarize_dynamic,
    binarize_static,
    check_range,
    dequantize_uniform,
    get_preprocess,
    scale,
    to_unit_interval,
)

KEY = jax.random.key(0)
PIXELS = jnp.arange(256, dtype=jnp.uint8)


# ---- scalings ----


@pytest.mark.parametrize("fn", [to_unit_interval, jax.jit(to_unit_interval)])
def test_to_unit_interval_values(fn):
    y = fn(PIXELS)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, np.arange(256) / 255, rtol=1e-6)  # reference: x / 255
    assert y[0] == 0 and y[-1] == 1


def test_scale_ranges():
    np.testing.assert_allclose(scale(PIXELS), np.arange(256) / 255 * 2 - 1, atol=1e-6)
    assert scale(PIXELS)[0] == -1 and scale(PIXELS)[-1] == 1
    np.testing.assert_allclose(scale(PIXELS, low=0.0), to_unit_interval(PIXELS), atol=1e-7)
    batch = jnp.zeros((2, 3, 3, 1), jnp.uint8)
    assert jax.jit(scale)(batch).shape == (2, 3, 3, 1)
    with pytest.raises(ValueError, match="low < high; got low=1.0, high=1.0"):
        scale(PIXELS, low=1.0, high=1.0)


@pytest.mark.parametrize("fn", [to_unit_interval, scale, lambda x: dequantize_uniform(KEY, x)])
def test_integer_functions_reject_floats(fn):
    with pytest.raises(TypeError, match=r"expects integer pixels in \[0, 255\] .*got float32 \[2, 2\]"):
        fn(jnp.zeros((2, 2), jnp.float32))


def test_integer_functions_reject_out_of_range():
    x = jnp.array([[0, 300]], jnp.int32)
    expected = (
        r"to_unit_interval expects integer pixels in \[0, 255\]; got min=0 max=300 "
        r"\(int32 \[1, 2\]\)\. Pass raw pixels"
    )
    with pytest.raises(ValueError, match=expected):
        to_unit_interval(x)
    # Under jit the values are unknown: only the (static) dtype check runs.
    assert jax.jit(to_unit_interval)(x).shape == (1, 2)


# ---- binarisation ----


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_binarize_dynamic_mean(p):
    n = 20_000
    y = binarize_dynamic(jax.random.key(1), jnp.full((n,), p, jnp.float32))
    assert y.dtype == jnp.float32 and set(np.unique(y)) <= {0.0, 1.0}
    # Binomial(n, p): the mean lies within 5 standard deviations (fixed seed).
    assert abs(float(y.mean()) - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9


def test_binarize_dynamic_is_fresh_per_key_and_jits():
    x = jnp.full((2, 28, 28, 1), 0.5, jnp.float32)
    a = jax.jit(binarize_dynamic)(jax.random.key(1), x)
    b = jax.jit(binarize_dynamic)(jax.random.key(2), x)
    assert a.shape == x.shape and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, binarize_dynamic(jax.random.key(1), x))


def test_binarize_dynamic_errors_quote_received_values():
    x = jnp.linspace(-1, 1, 4 * 28 * 28, dtype=jnp.float32).reshape(4, 28, 28, 1)
    expected = (
        r"binarize_dynamic expects floats in \[0, 1\]; got min=-1.0 max=1.0 "
        r"\(float32 \[4, 28, 28, 1\]\)\. If your data is in \[-1, 1\], map it with "
        r"\(x \+ 1\) / 2 first"
    )
    with pytest.raises(ValueError, match=expected):
        binarize_dynamic(KEY, x)
    with pytest.raises(TypeError, match=r"expects floats in \[0, 1\]; got uint8 \[3\]\. Map uint8 pixels"):
        binarize_dynamic(KEY, jnp.zeros(3, jnp.uint8))


def test_binarize_static_is_fixed_and_batch_independent():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(8, 5, 5, 1)), jnp.float32)
    index = jnp.arange(100, 108, dtype=jnp.int32)
    full = binarize_static(x, index)  # eager, with the range check
    jitted = jax.jit(binarize_static, static_argnames="seed")
    np.testing.assert_array_equal(full, jitted(x, index))  # reproducible
    # The same examples in another batch (a slice, and a shuffled batch) get the same bits.
    np.testing.assert_array_equal(jitted(x[2:5], index[2:5]), full[2:5])
    order = jnp.array([7, 0, 3, 1, 6, 2, 5, 4])
    np.testing.assert_array_equal(jitted(x[order], index[order]), full[order])
    # The same pixels under another index or seed give other bits.
    assert not np.array_equal(jitted(x, index + 8), full)
    assert not np.array_equal(jitted(x, index, seed=1), full)


def test_binarize_static_mean():
    n, p = 4000, 0.3
    y = binarize_static(jnp.full((n, 4, 4, 1), p, jnp.float32), jnp.arange(n))
    assert abs(float(y.mean()) - p) <= 5 * np.sqrt(p * (1 - p) / (n * 16))


def test_binarize_static_index_errors():
    x = jnp.zeros((4, 2, 2, 1), jnp.float32)
    with pytest.raises(ValueError, match=r"indices \[B\] with B = 4 .*got int32 \[3\]"):
        binarize_static(x, jnp.arange(3))
    with pytest.raises(ValueError, match=r"got float32 \[4\]"):
        binarize_static(x, jnp.zeros(4, jnp.float32))


# ---- dequantisation ----


def test_dequantize_uniform_stays_in_its_bin():
    # 128..255 repeated 8192 times: ~1M values, enough that float32 rounding of
    # (x + u) / 256 onto the bin's upper edge (p ~ 2^-17 per value) would show up.
    x = jnp.tile(jnp.arange(128, 256, dtype=jnp.uint8), 8192)
    y = jax.jit(dequantize_uniform)(jax.random.key(3), x)
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(np.floor(np.asarray(y, np.float64) * 256), np.asarray(x))
    assert float(y.max()) < 1.0
    u = np.asarray(y, np.float64) * 256 - np.asarray(x)  # the uniform noise
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / len(u))


def test_dequantize_uniform_num_bins():
    x = jnp.array([0, 1, 2, 3], jnp.uint8)
    y = dequantize_uniform(KEY, x, num_bins=4)
    np.testing.assert_array_equal(np.floor(np.asarray(y) * 4), [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"integer pixels in \[0, 3\]; got min=0 max=4"):
        dequantize_uniform(KEY, jnp.array([0, 4], jnp.uint8), num_bins=4)


# ---- check_range ----


def test_check_range_message_and_tracers():
    with pytest.raises(ValueError, match=r"^f expects things; got min=-2.0 max=0.5 \(float32 \[2\]\)\. do this$"):
        check_range(jnp.array([-2.0, 0.5]), 0, 1, name="f", expected="things", fix="do this")
    check_range(jnp.array([0.0, 1.0]), 0, 1, name="f", expected="things")  # in range
    check_range(jnp.zeros((0,)), 0, 1, name="f", expected="things")  # empty

    @jax.jit
    def traced(x):
        check_range(x, 0, 1, name="f", expected="things")  # skipped: x is a tracer
        return x

    traced(jnp.array([5.0]))


# ---- registry ----

RANGES = {
    "binarize_dynamic": (0.0, 1.0),
    "binarize_static": (0.0, 1.0),
    "dequantize_uniform": (0.0, 1.0),
    "unit_interval": (0.0, 1.0),
    "symmetric": (-1.0, 1.0),
}


@pytest.mark.parametrize("name", sorted(PREPROCESSORS))
def test_registry_signature_and_range(name):
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 6, 6, 1)), jnp.uint8)
    index = jnp.arange(4, dtype=jnp.int32)
    fn = get_preprocess(name)
    y = jax.jit(fn)(KEY, images, index)
    assert y.dtype == jnp.float32 and y.shape == images.shape
    lo, hi = RANGES[name]
    assert lo <= float(y.min()) and float(y.max()) <= hi
    if name.startswith("binarize"):
        assert set(np.unique(y)) <= {0.0, 1.0}
    if name == "dequantize_uniform":
        assert float(y.max()) < 1.0


@jax.jit
def _by_registry(key, images, index):
    return {name: get_preprocess(name)(key, images, index) for name in RANGES}


@jax.jit
def _by_hand(key, images, index):
    unit = to_unit_interval(images)
    return {
        "binarize_dynamic": binarize_dynamic(key, unit),
        "binarize_static": binarize_static(unit, index),
        "dequantize_uniform": dequantize_uniform(key, images),
        "unit_interval": unit,
        "symmetric": scale(images),
    }


def test_registry_matches_the_functions():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 6, 6, 1)), jnp.uint8)
    index = jnp.arange(4)
    got, expected = _by_registry(KEY, images, index), _by_hand(KEY, images, index)
    for name in RANGES:
        np.testing.assert_array_equal(got[name], expected[name])


def test_registry_unknown_name_lists_valid_ones():
    expected = r"Unknown preprocessing 'binarise'; valid names are \['binarize_dynamic', .*'unit_interval'\]"
    with pytest.raises(ValueError, match=expected):
        get_preprocess("binarise")


def test_range_check_of_a_concrete_constant_inside_jit():
    import jax
    import numpy as np
    import pytest

    from jgen.data.preprocess import to_unit_interval

    const = np.array([[0, 255]], np.uint8)
    out = jax.jit(lambda: to_unit_interval(const))()  # a constant, not a tracer, inside the trace
    np.testing.assert_allclose(out, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="got min=0 max=300"):
        jax.jit(lambda: to_unit_interval(np.array([0, 300], np.int32)))()
