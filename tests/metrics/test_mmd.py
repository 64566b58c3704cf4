"""Kernel MMD: the unbiased estimator and kernel against brute-force loops in numpy,
the median heuristic against scipy's pdist, the permutation p-value against exact
enumeration of all relabellings, calibration under the null, power under a mean
shift, and clear errors."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from jgen.metrics import (
    gaussian_kernel_matrix,
    median_heuristic_bandwidth,
    mmd2_unbiased,
    mmd_permutation_test,
)

# Compiled once each (eager op-by-op dispatch is slow on a loaded CPU).
_test = jax.jit(mmd_permutation_test, static_argnames="num_permutations")
_mmd2 = jax.jit(mmd2_unbiased)
_kernel = jax.jit(gaussian_kernel_matrix)


def _brute_mmd2(x, y, bandwidths):
    """Gretton et al. (2012) eq. 3 by explicit double loops (numpy, float64)."""
    def k(a, b):
        return np.mean([math.exp(-np.sum((a - b) ** 2) / (2 * h * h)) for h in bandwidths])

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("bandwidth", [0.7, (0.5, 1.0, 2.0)])
def test_unbiased_mmd2_matches_brute_force(bandwidth):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.3
    hs = np.atleast_1d(bandwidth)
    expected = _brute_mmd2(x, y, hs)
    with jax.enable_x64(True):
        got = float(_mmd2(jnp.asarray(x), jnp.asarray(y), bandwidth=jnp.asarray(hs)))
        k = np.asarray(_kernel(jnp.asarray(x), jnp.asarray(y), jnp.asarray(hs)))
        # The permutation test's statistic comes from the pooled matrix by quadratic forms.
        observed, _ = _test(jax.random.PRNGKey(0), jnp.asarray(x), jnp.asarray(y),
                            bandwidth=jnp.asarray(hs), num_permutations=3)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert float(observed) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    ref_k = [[np.mean(np.exp(-np.sum((a - b) ** 2) / (2 * hs**2))) for b in y] for a in x]
    np.testing.assert_allclose(k, ref_k, rtol=1e-12)


def test_median_heuristic_is_the_median_pairwise_distance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(21, 2)) * 2.0
    d = np.sort(pdist(np.concatenate([x, y])))
    lower_median = d[(len(d) + 1) // 2 - 1]
    with jax.enable_x64(True):
        got = float(jax.jit(median_heuristic_bandwidth)(jnp.asarray(x), jnp.asarray(y)))
    assert got == pytest.approx(lower_median, rel=1e-9)
    assert got == pytest.approx(np.median(d), rel=1e-2)  # the usual (averaged) median


def test_permutation_p_value_matches_exact_enumeration():
    # With 3 + 3 points there are C(6, 3) = 20 relabellings; the exact permutation
    # p-value is the fraction with a statistic >= the observed one. 4,000 random
    # permutations estimate it with standard error <= 0.008.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)) + 0.8
    z = np.concatenate([x, y])
    h = 1.0
    observed = _brute_mmd2(x, y, [h])
    stats = [_brute_mmd2(z[list(s)], z[[i for i in range(6) if i not in s]], [h])
             for s in itertools.combinations(range(6), 3)]
    exact_p = np.mean(np.asarray(stats) >= observed - 1e-12)
    with jax.enable_x64(True):
        mmd2, p = _test(jax.random.PRNGKey(3), jnp.asarray(x), jnp.asarray(y),
                        bandwidth=h, num_permutations=4000)
    assert float(mmd2) == pytest.approx(observed, rel=1e-9)
    assert abs(float(p) - exact_p) < 0.03, (float(p), exact_p)


def test_calibrated_under_the_null_and_powerful_under_a_shift():
    # 20 independent repetitions at once (vmap over keys). Under H0 (same distribution)
    # the rejection count at 0.05 is Binomial(20, <= 0.05): P(count >= 5) < 0.003.
    # Under a mean shift of 0.6 sd with 150 points a side, MMD's power is ~1.
    def one(key, shift):
        kx, ky, kp = jax.random.split(key, 3)
        x = jax.random.normal(kx, (150, 2))
        y = jax.random.normal(ky, (120, 2)) + jnp.asarray([shift, 0.0])[None]
        return mmd_permutation_test(kp, x, y, num_permutations=200)[1]

    keys = jax.random.split(jax.random.PRNGKey(4), 20)
    run = jax.jit(jax.vmap(one, in_axes=(0, None)))
    p_null = np.asarray(run(keys, 0.0))
    p_alt = np.asarray(run(keys, 0.6))
    assert np.sum(p_null < 0.05) <= 4, p_null
    assert 0.2 < np.mean(p_null) < 0.8, p_null  # roughly uniform: mean ~ 1/2
    assert np.all(p_alt < 0.05), p_alt
    assert np.all(p_alt >= 1.0 / 201)  # never 0


def test_feature_axes_are_flattened():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(20, 2, 3, 1)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(25, 2, 3, 1)), jnp.float32)
    flat = _mmd2(x.reshape(20, -1), y.reshape(25, -1), bandwidth=2.0)
    np.testing.assert_allclose(_mmd2(x, y, bandwidth=2.0), flat, rtol=1e-6)
    observed, p = _test(jax.random.PRNGKey(0), x, y, bandwidth=2.0, num_permutations=50)
    np.testing.assert_allclose(observed, flat, rtol=1e-4, atol=1e-6)
    assert observed.dtype == jnp.float32 and p.shape == () and 0 < float(p) <= 1


def test_errors_are_clear():
    x = jnp.zeros((10, 2))
    with pytest.raises(ValueError, match=r"at least 2 axes.*received shape \(10,\).*\[:, None\]"):
        mmd2_unbiased(jnp.zeros((10,)), x, bandwidth=1.0)
    with pytest.raises(TypeError, match="floating dtype; received int32"):
        mmd2_unbiased(x, jnp.zeros((10, 2), jnp.int32), bandwidth=1.0)
    with pytest.raises(ValueError, match=r"share their feature shape.*\(10, 2\).*\(5, 3\)"):
        mmd2_unbiased(x, jnp.zeros((5, 3)), bandwidth=1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd2_unbiased(x, jnp.zeros((1, 2)), bandwidth=1.0)
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        mmd2_unbiased(x, x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="scalar or a 1-D array"):
        mmd2_unbiased(x, x, bandwidth=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="num_permutations must be a positive Python int"):
        mmd_permutation_test(jax.random.PRNGKey(0), x, x, num_permutations=0)
