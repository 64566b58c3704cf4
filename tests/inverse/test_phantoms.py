"""Tests for jgen.inverse.phantoms.

References: the published modified Shepp-Logan table (Toft 1996; MATLAB
phantom('Modified Shepp-Logan')): values of known regions at pixel centres, and the
exact mean intensity sum_k rho_k pi a_k b_k / 4 (ellipse areas over the square [-1, 1]^2).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.inverse import (
    SHEPP_LOGAN_ELLIPSES,
    random_ellipses,
    render_ellipses,
    shepp_logan,
)


def test_shepp_logan_matches_published_table_at_points():
    # N = 101: pixel (i, j) is at x = (2j + 1)/101 - 1, y = 1 - (2i + 1)/101.
    x = np.asarray(shepp_logan(101))
    assert x.shape == (101, 101) and x.dtype == np.float32
    np.testing.assert_allclose(x[50, 50], 0.2, atol=1e-6)  # (0, 0): 1 - 0.8, brain
    np.testing.assert_allclose(x[5, 50], 1.0, atol=1e-6)  # (0, 0.891): skull only
    np.testing.assert_allclose(x[50, 61], 0.0, atol=1e-6)  # (0.218, 0): right ventricle
    np.testing.assert_allclose(x[50, 39], 0.0, atol=1e-6)  # (-0.218, 0): left ventricle
    np.testing.assert_allclose(x[32, 50], 0.3, atol=1e-6)  # (0, 0.356): top ellipse
    assert x[0, 0] == 0.0 and x[50, 0] == 0.0  # outside the skull
    # Ellipse values from the table: sums of (1, -0.8, -0.2, 0.1, ...).
    levels = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 1.0])
    assert np.all(np.abs(np.unique(x)[:, None] - levels[None]).min(1) < 1e-6)
    # y points up: the top ellipse (y0 = 0.35) is in the upper half.
    assert x[32, 50] > x[101 - 1 - 32, 50]


def test_shepp_logan_mean_is_analytic():
    e = SHEPP_LOGAN_ELLIPSES
    exact = float(np.sum(e[:, 0] * np.pi * e[:, 1] * e[:, 2]) / 4.0)
    np.testing.assert_allclose(float(shepp_logan(64, supersample=8).mean()), exact, rtol=1e-3)
    x = shepp_logan(64, supersample=4)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_render_ellipses_rotation_and_intensity():
    # An ellipse rotated by 90 degrees equals the one with swapped axes.
    a = render_ellipses(jnp.array([[0.7, 0.5, 0.2, 0.0, 0.0, np.pi / 2]]), 33)
    b = render_ellipses(jnp.array([[0.7, 0.2, 0.5, 0.0, 0.0, 0.0]]), 33)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(np.unique(np.asarray(b)), [0.0, 0.7], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[E, 6\]"):
        render_ellipses(jnp.ones((2, 5)), 8)


def test_random_ellipses_reproducible_and_bounded():
    f = jax.jit(lambda k: random_ellipses(k, 3, 48))
    x1, x2 = f(jax.random.key(0)), f(jax.random.key(0))
    np.testing.assert_array_equal(x1, x2)
    x3 = f(jax.random.key(1))
    assert x1.shape == (3, 48, 48) and x1.dtype == jnp.float32
    assert float(jnp.abs(x1 - x3).max()) > 0.1
    assert float(jnp.abs(x1[0] - x1[1]).max()) > 0.1  # examples differ within a batch
    assert float(x1.min()) >= 0.0 and float(x1.max()) <= 1.0
    assert all(float(img.max()) > 0.3 for img in x1)  # the body is there
    # Everything lies inside the unit disk.
    u = (2 * np.arange(48) + 1) / 48 - 1
    outside = u[None, :] ** 2 + u[:, None] ** 2 > 1.0
    assert float(jnp.abs(x1[:, outside]).max()) == 0.0


def test_random_ellipses_count():
    # One ellipse (the body): a two-valued image; more ellipses add more levels.
    x = np.asarray(random_ellipses(jax.random.key(2), 2, 40, num_ellipses=(1, 1)))
    assert all(len(np.unique(img)) == 2 for img in x)
    y = np.asarray(random_ellipses(jax.random.key(2), 2, 40, num_ellipses=(6, 6)))
    assert all(len(np.unique(img)) > 2 for img in y)
    # Supersampling smooths edges: more distinct values.
    z = np.asarray(random_ellipses(jax.random.key(2), 1, 40, num_ellipses=(1, 1), supersample=3))
    assert len(np.unique(z)) > 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: shepp_logan(0), "size"),
        (lambda: shepp_logan(8, supersample=0), "supersample"),
        (lambda: random_ellipses(jax.random.key(0), 2, 16, num_ellipses=(5, 2)), "num_ellipses"),
        (lambda: random_ellipses(jax.random.key(0), 0, 16), "num"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
