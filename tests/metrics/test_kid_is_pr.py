"""KID (against a brute-force numpy U-statistic, unbiasedness over repeated draws,
positivity under a shift), the Inception Score (uniform -> 1, one-hot over K -> K, the
reference numpy formula with splits), precision/recall and density/coverage (against
brute-force numpy, identical / disjoint / half-support cases), all under jit, and
clear errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.metrics.inception_score import inception_score, kl_to_marginal_terms
from jgen.metrics.kid import kernel_inception_distance, polynomial_kernel_matrix
from jgen.metrics.precision_recall import (
    density_coverage,
    nearest_neighbour_radii,
    prdc,
    precision_recall,
)

_kid = jax.jit(kernel_inception_distance, static_argnames=("num_subsets", "subset_size"))
_is = jax.jit(inception_score, static_argnames="num_splits")
_prdc = jax.jit(prdc, static_argnames=("k", "block_size"))


# ------------------------------------------------------------------------------ KID


def _brute_poly_mmd2(x, y):
    """Bińkowski et al. (2018): unbiased MMD^2 with k = (x.y/d + 1)^3, double loops."""
    d = x.shape[1]

    def k(a, b):
        return (float(a @ b) / d + 1.0) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_kid_with_full_subsets_equals_the_brute_force_statistic():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 4)), rng.normal(size=(9, 4)) + 0.4
    with jax.enable_x64(True):
        mean, se = _kid(jax.random.PRNGKey(0), jnp.asarray(x), jnp.asarray(y),
                        num_subsets=3, subset_size=9)
        kmat = polynomial_kernel_matrix(jnp.asarray(x), jnp.asarray(y))
    # A subset of all rows is a permutation, and the statistic is permutation invariant.
    assert float(mean) == pytest.approx(_brute_poly_mmd2(x, y), rel=1e-9)
    assert float(se) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(np.asarray(kmat), (x @ y.T / 4 + 1) ** 3, rtol=1e-12)


def test_kid_is_unbiased_under_the_null_and_positive_under_a_shift():
    d, n, draws = 6, 40, 150
    keys = jax.random.split(jax.random.PRNGKey(1), draws)

    def one_draw(key, shift):
        kx, ky, ks = jax.random.split(key, 3)
        x = jax.random.normal(kx, (n, d))
        y = jax.random.normal(ky, (n, d)) + shift
        return kernel_inception_distance(ks, x, y, num_subsets=4, subset_size=30)[0]

    # lax.map rather than vmap: the same result, and much faster to compile.
    draws_of = jax.jit(lambda ks, shift: jax.lax.map(lambda k: one_draw(k, shift), ks))
    same = np.asarray(draws_of(keys, 0.0))
    # Unbiased: over independent draws of two samples from one distribution the mean
    # is 0 within 3 standard errors (the biased V-statistic would sit at about
    # 2 (E k(x, x) - E k(x, x')) / m > 0, dozens of standard errors away).
    se = same.std(ddof=1) / math.sqrt(draws)
    assert abs(same.mean()) < 3.0 * se
    assert (same < 0).any()  # an unbiased estimate of 0 must go negative sometimes
    # Different distributions (mean shift 0.5): clearly positive.
    shifted = np.asarray(draws_of(keys, 0.5))
    assert shifted.mean() > 10.0 * shifted.std(ddof=1) / math.sqrt(draws)
    # The returned standard error is the subsets' Monte Carlo error, and is small.
    mean, se1 = _kid(jax.random.PRNGKey(2), jax.random.normal(jax.random.PRNGKey(3), (200, d)),
                     jax.random.normal(jax.random.PRNGKey(4), (200, d)) + 1.0,
                     num_subsets=10, subset_size=100)
    assert float(mean) > 10 * float(se1) > 0


def test_kid_errors():
    x = jnp.ones((10, 3))
    with pytest.raises(ValueError, match=r"subset_size.*min\(N, M\) = 10.*received 11"):
        kernel_inception_distance(jax.random.PRNGKey(0), x, x, subset_size=11)
    with pytest.raises(ValueError, match="num_subsets must be a positive Python int"):
        kernel_inception_distance(jax.random.PRNGKey(0), x, x, num_subsets=0)
    with pytest.raises(ValueError, match="share their feature shape"):
        kernel_inception_distance(jax.random.PRNGKey(0), x, jnp.ones((10, 4)))
    _, se = kernel_inception_distance(jax.random.PRNGKey(0), x, x, num_subsets=1)
    assert np.isnan(float(se))


# -------------------------------------------------------------------- Inception Score


def _reference_is(preds, splits):
    """openai/improved-gan inception_score/model.py, in numpy."""
    scores = []
    for k in range(splits):
        part = preds[k * (preds.shape[0] // splits):(k + 1) * (preds.shape[0] // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return np.mean(scores), np.std(scores)


def test_inception_score_extremes():
    k = 7
    uniform = jnp.full((21, k), 1.0 / k)
    mean, std = _is(uniform, num_splits=3)
    assert float(mean) == pytest.approx(1.0, abs=1e-6) and float(std) == pytest.approx(0.0, abs=1e-6)
    one_hot = jax.nn.one_hot(jnp.arange(42) % k, k)  # every class equally often per split
    mean, std = _is(one_hot, num_splits=3)
    assert float(mean) == pytest.approx(k, rel=1e-6) and float(std) == pytest.approx(0.0, abs=1e-5)
    # One class only: no diversity, IS = 1.
    mean, _ = _is(jax.nn.one_hot(jnp.zeros(12, jnp.int32), k), num_splits=2)
    assert float(mean) == pytest.approx(1.0, abs=1e-6)


def test_inception_score_matches_the_reference_formula():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(60, 10)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    with jax.enable_x64(True):
        for splits in (1, 4):
            mean, std = _is(jnp.asarray(probs), num_splits=splits)
            ref_mean, ref_std = _reference_is(probs, splits)
            assert float(mean) == pytest.approx(ref_mean, rel=1e-10)
            assert float(std) == pytest.approx(ref_std, rel=1e-8, abs=1e-12)
        kl = kl_to_marginal_terms(jnp.asarray(probs))
        assert math.exp(float(jnp.mean(kl))) == pytest.approx(_reference_is(probs, 1)[0], rel=1e-10)
        assert bool(jnp.all(kl >= -1e-12))


def test_inception_score_errors():
    p = jnp.full((10, 4), 0.25)
    with pytest.raises(ValueError, match=r"10 samples.*3 equal splits.*probs\[:9\]"):
        inception_score(p, num_splits=3)
    with pytest.raises(ValueError, match="If these are logits"):
        inception_score(jnp.ones((10, 4)), num_splits=2)
    with pytest.raises(ValueError, match=r"\[num_samples, num_classes\].*\(4,\)"):
        inception_score(jnp.full((4,), 0.25), num_splits=1)
    with pytest.raises(ValueError, match="num_splits must be a positive"):
        inception_score(p, num_splits=0)


# ------------------------------------------------------------ precision/recall, D&C


def _brute_prdc(real, fake, k):
    """Kynkäänniemi et al. (2019) and Naeem et al. (2020) by full distance matrices."""
    def radii(a):
        d = np.linalg.norm(a[:, None] - a[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    r_real, r_fake = radii(real), radii(fake)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # [N, M]
    precision = np.mean(np.any(d_rf <= r_real[:, None], axis=0))
    recall = np.mean(np.any(d_rf <= r_fake[None, :], axis=1))
    density = np.sum(d_rf <= r_real[:, None]) / (k * fake.shape[0])
    coverage = np.mean(d_rf.min(axis=1) <= r_real)
    return precision, recall, density, coverage


@pytest.mark.parametrize("k, block_size", [(3, 7), (1, 1024)])
def test_prdc_matches_brute_force(k, block_size):
    rng = np.random.default_rng(k)
    real = rng.normal(size=(61, 3))
    fake = rng.normal(size=(45, 3)) * 1.3 + 0.3
    with jax.enable_x64(True):
        got = _prdc(jnp.asarray(real), jnp.asarray(fake), k=k, block_size=block_size)
    expected = _brute_prdc(real, fake, k)
    np.testing.assert_allclose([float(v) for v in got], expected, rtol=1e-12)


def test_separate_functions_agree_with_prdc():
    rng = np.random.default_rng(11)
    real, fake = rng.normal(size=(50, 3)), rng.normal(size=(40, 3)) + 0.5
    static = {"k": 5, "block_size": 16}

    def separate(real, fake):
        return (*precision_recall(real, fake, **static), *density_coverage(real, fake, **static),
                nearest_neighbour_radii(real, **static))

    with jax.enable_x64(True):
        p, r, d, c, radii2 = jax.jit(separate)(jnp.asarray(real), jnp.asarray(fake))
        got = _prdc(jnp.asarray(real), jnp.asarray(fake), **static)
    np.testing.assert_allclose([float(p), float(r), float(d), float(c)],
                               _brute_prdc(real, fake, 5), rtol=1e-12)
    assert tuple(float(v) for v in got) == (float(p), float(r), float(d), float(c))
    dist = np.linalg.norm(real[:, None] - real[None], axis=-1)
    np.testing.assert_allclose(np.sqrt(np.asarray(radii2)), np.sort(dist, axis=1)[:, 5], rtol=1e-8)


def test_prdc_identical_disjoint_and_half_support():
    rng = np.random.default_rng(7)
    real = jnp.asarray(rng.uniform(size=(1200, 2)), jnp.float32)
    same = _prdc(real, real, k=3, block_size=256)
    assert float(same.precision) == float(same.recall) == float(same.coverage) == 1.0
    # Every point lies in its own ball plus those of which it is among the k nearest.
    assert float(same.density) >= 1.0

    far = _prdc(real, real + 10.0, k=3, block_size=256)
    assert float(far.precision) == float(far.recall) == 0.0
    assert float(far.density) == float(far.coverage) == 0.0

    # Generated = the left half of the real support, at the same density per area.
    fake = jnp.asarray(rng.uniform(size=(600, 2)) * np.array([0.5, 1.0]), jnp.float32)
    half = _prdc(real, fake, k=3, block_size=256)
    assert float(half.precision) > 0.97  # every generated point is realistic
    assert float(half.recall) == pytest.approx(0.5, abs=0.05)  # half the support covered
    # Naeem et al. (2020), Section 3.3: for matching distributions with M = N,
    # E[coverage] = 1 - prod_{i=1..k} (N - i) / (M + N - i) ~ 1 - 2^-k; that holds on the
    # covered half (600 real and 600 generated points there), so about 0.875 / 2.
    expected_coverage = 0.5 * (1.0 - np.prod([(600 - i) / (1200 - i) for i in (1, 2, 3)]))
    assert float(half.coverage) == pytest.approx(expected_coverage, abs=0.03)
    assert float(half.density) == pytest.approx(1.0, abs=0.15)


def test_prdc_errors():
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match=r"needs more than k = 3 samples; real has 3"):
        precision_recall(x, jnp.ones((10, 2)))
    with pytest.raises(ValueError, match=r"needs more than k = 3 samples; fake has 3"):
        precision_recall(jnp.ones((10, 2)), x)
    with pytest.raises(ValueError, match="share their feature shape"):
        density_coverage(jnp.ones((10, 2)), jnp.ones((10, 3)))
    with pytest.raises(ValueError, match="block_size must be a positive Python int"):
        prdc(jnp.ones((10, 2)), jnp.ones((10, 2)), block_size=0)
    with pytest.raises(TypeError, match="floating dtype"):
        prdc(jnp.ones((10, 2), jnp.int32), jnp.ones((10, 2)))
