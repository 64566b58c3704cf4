"""Fréchet distance (FID formula): zero for a set against itself, the closed form
against scipy.linalg.sqrtm in float64 and a diagonal case by hand, invariance to row
order, finite non-negative values for rank-deficient covariances (checked against the
eps -> 0 limit of the regularised formula), and clear errors."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jgen.metrics.frechet import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    trace_sqrt_product,
)


def _random_spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def _scipy_reference(mu1, s1, mu2, s2):
    """The TTUR reference formula with scipy.linalg.sqrtm of S1 S2, float64."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on (near-)singular input
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                 - 2.0 * np.trace(covmean).real)


def test_same_sample_gives_zero():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 16)) * 3.0 + 5.0
    mu, sigma = feature_statistics(f)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)


def test_two_large_samples_from_one_gaussian_give_a_small_value():
    rng = np.random.default_rng(1)
    d = 8
    cov = _random_spd(rng, d)
    chol = np.linalg.cholesky(cov)
    f1 = rng.normal(size=(20000, d)) @ chol.T
    f2 = rng.normal(size=(20000, d)) @ chol.T
    shifted = f2 + 0.5
    same, different = fid_from_features(f1, f2), fid_from_features(f1, shifted)
    # Positive finite-sample bias only, O(d^2 / N) ~ 1e-3 here; the shift adds d * 0.25.
    assert 0.0 <= same < 0.02
    assert different == pytest.approx(d * 0.25, rel=0.05)


@pytest.mark.parametrize("d", [1, 3, 12])
def test_closed_form_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d, scale=2.0)
    expected = _scipy_reference(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # Symmetric in its two arguments, like the distance it is.
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)
    # JAX float32 inputs are accepted and promoted to float64.
    got32 = frechet_distance(jnp.asarray(mu1, jnp.float32), jnp.asarray(s1, jnp.float32),
                             jnp.asarray(mu2, jnp.float32), jnp.asarray(s2, jnp.float32))
    assert got32 == pytest.approx(expected, rel=1e-5)


def test_diagonal_case_by_hand():
    # Commuting (diagonal) covariances: tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt a - sqrt b)^2.
    a = np.array([1.0, 4.0, 9.0, 0.25])
    b = np.array([4.0, 1.0, 9.0, 1.0])
    mu1 = np.array([0.0, 1.0, 2.0, 3.0])
    mu2 = np.array([1.0, 1.0, 0.0, 3.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert expected == pytest.approx(5.0 + 1.0 + 1.0 + 0.25)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-12)


def test_invariant_to_sample_order():
    rng = np.random.default_rng(2)
    f1 = rng.normal(size=(300, 10))
    f2 = rng.normal(size=(250, 10)) * 1.5 + 0.2
    base = fid_from_features(f1, f2)
    permuted = fid_from_features(f1[rng.permutation(300)], f2[rng.permutation(250)])
    assert permuted == pytest.approx(base, rel=1e-10)


def test_feature_statistics_matches_numpy_and_is_unbiased():
    rng = np.random.default_rng(3)
    f = (rng.normal(size=(9000, 5)) + 1e4).astype(np.float32)  # > one chunk of rows
    mu, sigma = feature_statistics(f)
    ref = f.astype(np.float64)
    np.testing.assert_allclose(mu, ref.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(ref, rowvar=False), rtol=1e-9, atol=1e-12)
    assert mu.dtype == sigma.dtype == np.float64


def test_rank_deficient_covariances_give_finite_non_negative_values():
    # 10 samples in 20 dimensions: both covariances have rank 9.
    values, naive_is_unusable = [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        f1 = rng.normal(size=(10, 20))
        f2 = rng.normal(size=(10, 20)) + 0.5
        mu1, s1 = feature_statistics(f1)
        mu2, s2 = feature_statistics(f2)
        assert np.linalg.matrix_rank(s1) == 9
        got = frechet_distance(mu1, s1, mu2, s2)
        assert np.isfinite(got) and got >= 0.0
        values.append(got)
        # Independent reference: the formula with a full-rank regulariser eps I, whose
        # limit eps -> 0 is the exact value (the trace of the root is continuous).
        eps = 1e-9 * np.eye(20)
        assert got == pytest.approx(_scipy_reference(mu1, s1 + eps, mu2, s2 + eps), rel=1e-6)
        # The naive square root of the non-symmetric product S1 S2 comes back complex
        # (recent scipy) or non-finite (older scipy) for most such draws, and its value
        # of a set against itself is not >= 0; ours is exactly 0 there.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root = scipy.linalg.sqrtm(s1 @ s2)
        naive_is_unusable.append(np.iscomplexobj(root) or not np.all(np.isfinite(root)))
        assert frechet_distance(mu1, s1, mu1, s1) == 0.0
    assert any(naive_is_unusable)
    assert len(set(values)) == 5


def test_trace_sqrt_product_of_singular_matrices():
    # S1 = diag(1, 0), S2 = diag(0, 1): S1 S2 = 0, so tr sqrt = 0 (not NaN).
    assert trace_sqrt_product(np.diag([1.0, 0.0]), np.diag([0.0, 1.0])) == 0.0
    # Round-off negative eigenvalues are clipped.
    assert trace_sqrt_product(np.diag([1.0, -1e-17]), np.diag([4.0, 1.0])) == pytest.approx(2.0)


def test_errors_are_clear():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match=r"different dimensions.*\(3,\).*\(4,\)"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma2 must be a \[D, D\] covariance.*\(5, 3\)"):
        frechet_distance(mu, s, mu, np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"mu1 must be a mean vector.*\(1, 3\)"):
        frechet_distance(mu[None], s, mu, s)
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, s)
    with pytest.raises(ValueError, match="NaN or infinite"):
        frechet_distance(mu, s, np.array([0.0, np.nan, 0.0]), s)
    with pytest.raises(TypeError, match="real-valued"):
        frechet_distance(mu.astype(complex), s, mu, s)
    with pytest.raises(ValueError, match="at least 2 samples; received 1"):
        feature_statistics(np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"\[num_samples, feature_dim\].*\(4, 2, 2\)"):
        feature_statistics(np.ones((4, 2, 2)))
    with pytest.raises(ValueError, match=r"different dimensions.*\(5, 3\).*\(5, 4\)"):
        fid_from_features(np.ones((5, 3)), np.ones((5, 4)))
