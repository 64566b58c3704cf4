"""The 2-D toy densities: normalisation by quadrature, samplers against the densities
by a chi-square test, entropies against Monte-Carlo estimates and closed forms, and
clear errors. References: scipy.stats, scipy.integrate, grid quadrature in float64."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from jgen.data.toy2d import TOY_DENSITIES, _ring_normaliser, get_toy_density

NAMES = sorted(TOY_DENSITIES)


def _grid(lo, hi, h, *, midpoints):
    """Nodes of a trapezoid grid (endpoints included) or cell midpoints, spacing h."""
    n = round((hi - lo) / h)
    if midpoints:
        return lo + h * (np.arange(n) + 0.5)
    return np.linspace(lo, hi, n + 1)


def _density_on(density, g):
    """The density in float64 on the grid g x g."""
    xx, yy = np.meshgrid(g, g, indexing="ij")
    with jax.enable_x64(True):
        lp = jax.jit(density.log_prob)(jnp.asarray(np.stack([xx.ravel(), yy.ravel()], axis=1)))
        return np.exp(np.asarray(lp, np.float64)).reshape(xx.shape)


@pytest.fixture(scope="module")
def samples():
    """100,000 exact samples per density (fixed seed), drawn once: each distinct
    sample size compiles the sampler anew. (`get_toy_density` caches the densities,
    so the tests below reuse these compiled samplers.)"""
    return {name: np.asarray(get_toy_density(name).sample(jax.random.PRNGKey(7), 100_000))
            for name in NAMES}


# Quadrature boxes and spacings. The smooth densities (gaussian, gmm, rings) use the
# trapezoidal rule on a box whose edge lies >= 10 standard deviations from every mode:
# truncated mass < 1e-20, and for smooth, rapidly decaying integrands the trapezoidal
# error decays like exp(-2 pi^2 sigma^2 / h^2) (Trefethen & Weideman 2014), negligible
# at h <= sigma / 6 (the rings' cone at the origin carries density e^{-32}). What is
# left is float64 round-off over ~1e6 terms, hence the 1e-9 tolerance. The checkerboard
# uses the midpoint rule on cells aligned with the squares, exact for a piecewise
# constant density, on a box larger than the board (so the outside must be 0).
QUADRATURE = {
    # name: (lo, hi, h, midpoints)
    "gaussian": (-9.5, 10.5, 0.05, False),  # sd 1 and 0.5; conditional sd of x2 is 0.3
    "gmm": (-4.0, 4.0, 0.02, False),  # radius 2 + 10 sd (sd 0.2)
    "rings": (-3.6, 3.6, 0.01, False),  # outer radius 2.4 + 12 sd (sd 0.1)
    "checkerboard": (-3.0, 3.0, 1.0 / 16.0, True),
}


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_integrates_to_one(name):
    density = get_toy_density(name)
    lo, hi, h, midpoints = QUADRATURE[name]
    g = _grid(lo, hi, h, midpoints=midpoints)
    p = _density_on(density, g)
    if midpoints:
        total = h * h * p.sum()
    else:
        w = np.ones(len(g))
        w[0] = w[-1] = 0.5
        total = h * h * np.einsum("i,j,ij->", w, w, p)
    assert abs(total - 1.0) < 1e-9, total


def _bin_probabilities(density, num_bins, sub):
    """Probabilities of a num_bins x num_bins grid over `extent` (midpoint rule with
    sub x sub points per bin, float64), plus the mass outside as the last entry."""
    lo, hi = density.extent[:2]
    g = _grid(lo, hi, (hi - lo) / (num_bins * sub), midpoints=True)
    p = _density_on(density, g) * ((hi - lo) / (num_bins * sub)) ** 2
    probs = p.reshape(num_bins, sub, num_bins, sub).sum(axis=(1, 3)).ravel()
    return np.append(probs, max(1.0 - probs.sum(), 0.0))


@pytest.mark.parametrize("name", NAMES)
def test_sampler_matches_density_chi_square(name, samples):
    # 10 x 10 bins over the plotting window plus one "outside" bin; expected counts from
    # the density (midpoint rule, 100 sub-points per bin and axis: relative error
    # ~ h^2 / (24 sd^2) < 1e-3 of each bin's mass, far below the sampling noise); bins
    # expecting fewer than 5 points are pooled into one. Fixed seed.
    density = get_toy_density(name)
    x = samples[name].astype(np.float64)
    n, num_bins = len(x), 10
    probs = _bin_probabilities(density, num_bins, 100)
    lo, hi = density.extent[:2]
    idx = np.floor((x - lo) / (hi - lo) * num_bins).astype(int)
    inside = np.all((idx >= 0) & (idx < num_bins), axis=1)
    flat = np.where(inside, idx[:, 0] * num_bins + idx[:, 1], num_bins * num_bins)
    counts = np.bincount(flat, minlength=num_bins * num_bins + 1)
    expected = n * probs
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    if expected[-1] == 0:  # nothing was pooled
        assert observed[-1] == 0
        observed, expected = observed[:-1], expected[:-1]
    chi2 = np.sum((observed - expected) ** 2 / expected)
    p_value = stats.chi2.sf(chi2, df=len(expected) - 1)
    assert p_value > 1e-3, (chi2, len(expected), p_value)


@pytest.mark.parametrize("name", NAMES)
def test_entropy_matches_monte_carlo(name, samples):
    # H = E[-log p(x)]; 100,000 exact samples give a standard error of about 3e-3.
    density = get_toy_density(name)
    lp = np.asarray(jax.jit(density.log_prob)(samples[name]), np.float64)
    assert np.all(np.isfinite(lp))
    estimate, se = -lp.mean(), lp.std(ddof=1) / math.sqrt(lp.size)
    assert abs(estimate - density.entropy) <= 4.0 * se + 1e-5, (estimate, se, density.entropy)
    assert 0.0 <= density.entropy_error < 1e-8


def test_gaussian_log_prob_and_entropy_match_scipy():
    d = get_toy_density("gaussian", mean=(0.3, -1.0), scales=(0.7, 1.3), correlation=-0.6)
    cov = np.array([[0.49, -0.6 * 0.7 * 1.3], [-0.6 * 0.7 * 1.3, 1.69]])
    ref = stats.multivariate_normal(mean=[0.3, -1.0], cov=cov)
    x = np.random.default_rng(0).normal(size=(50, 2)) * 2.0
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(d.log_prob(jnp.asarray(x))), ref.logpdf(x), rtol=1e-12)
    assert d.entropy == pytest.approx(ref.entropy(), rel=1e-12)


def test_gmm_log_prob_matches_scipy_and_entropy_bounds():
    d = get_toy_density("gmm", num_components=5, radius=1.5, scale=0.4)
    centres = [1.5 * np.array([np.cos(2 * np.pi * k / 5), np.sin(2 * np.pi * k / 5)]) for k in range(5)]
    x = np.random.default_rng(1).normal(size=(40, 2)) * 2.0
    logs = np.stack([stats.multivariate_normal(c, 0.16 * np.eye(2)).logpdf(x) for c in centres])
    with jax.enable_x64(True):
        got = np.asarray(d.log_prob(jnp.asarray(x)))
    np.testing.assert_allclose(got, special.logsumexp(logs, axis=0) - np.log(5), rtol=1e-12)
    # A mixture's entropy lies between its components' (concavity) and that plus the
    # entropy of the weights.
    h_comp = 1.0 + np.log(2 * np.pi * 0.16)
    assert h_comp < d.entropy < h_comp + np.log(5)


def test_ring_normaliser_matches_quadrature():
    for mu, s in ((0.0, 0.3), (0.8, 0.1), (0.3, 0.5), (2.0, 1.0)):
        ref, _ = integrate.quad(lambda r, mu=mu, s=s: 2 * np.pi * r * np.exp(-((r - mu) ** 2) / (2 * s * s)),
                                0.0, np.inf, epsabs=1e-13, epsrel=1e-12)
        assert _ring_normaliser(mu, s) == pytest.approx(ref, rel=1e-9)


def test_rings_entropy_independent_quadrature():
    # The density depends on |x| only: H = -2 pi int_0^inf r p(r) log p(r) dr, here by
    # adaptive scipy quadrature instead of the module's trapezoidal rule.
    d = get_toy_density("rings", radii=(0.5, 1.5), scale=0.2, weights=(1.0, 2.0))

    def integrand(r):
        with jax.enable_x64(True):
            lp = float(d.log_prob(jnp.asarray([[r, 0.0]], jnp.float64))[0])
        return -2.0 * np.pi * r * np.exp(lp) * lp

    ref, _ = integrate.quad(integrand, 0.0, 5.0, points=[0.5, 1.5], limit=200, epsabs=1e-12)
    assert abs(d.entropy - ref) <= d.entropy_error + 1e-9, (d.entropy, ref, d.entropy_error)
    assert d.entropy_error < 1e-7


def test_ring_at_the_origin_is_a_gaussian():
    # A ring of radius 0 is N(0, s^2 I): entropy 1 + log(2 pi s^2), density in closed form.
    d = get_toy_density("rings", radii=(0.0,), scale=0.5)
    exact = 1.0 + math.log(2 * math.pi * 0.25)
    assert abs(d.entropy - exact) <= d.entropy_error, (d.entropy, exact, d.entropy_error)
    assert d.entropy_error < 1e-6
    x = np.random.default_rng(2).normal(size=(20, 2))
    with jax.enable_x64(True):
        got = np.asarray(d.log_prob(jnp.asarray(x)))
    np.testing.assert_allclose(got, stats.multivariate_normal(np.zeros(2), 0.25 * np.eye(2)).logpdf(x),
                               rtol=1e-12)


def test_checkerboard_entropy_is_log_area():
    d = get_toy_density("checkerboard", num_squares=3, side=0.5)
    assert d.entropy == pytest.approx(math.log(5 * 0.25), abs=1e-15)
    x = np.asarray(d.sample(jax.random.PRNGKey(0), 2000))
    # Every sample lies on a black square: cell indices of equal parity.
    cell = np.floor((x + 0.75) / 0.5).astype(int)
    assert np.all((cell >= 0) & (cell < 3)) and np.all(cell.sum(axis=1) % 2 == 0)


def test_samples_shape_dtype_and_keys(samples):
    for name in NAMES:
        d = get_toy_density(name)
        assert d is get_toy_density(name)  # cached
        assert samples[name].shape == (100_000, 2) and samples[name].dtype == np.float32
        # Same key, same samples (the compiled sampler is reused); another key, others.
        np.testing.assert_array_equal(samples[name], d.sample(jax.random.PRNGKey(7), 100_000))
        assert not np.array_equal(samples[name], d.sample(jax.random.PRNGKey(8), 100_000))


def test_errors_are_clear():
    d = get_toy_density("gmm")
    with pytest.raises(ValueError, match=r"shape \[N, 2\].*received shape \(4, 3\)"):
        d.log_prob(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"x\[None\]"):
        d.log_prob(jnp.zeros((2,)))
    with pytest.raises(TypeError, match="floating dtype; received int32"):
        d.log_prob(jnp.zeros((4, 2), jnp.int32))
    with pytest.raises(KeyError, match="known: checkerboard, gaussian, gmm, rings"):
        get_toy_density("moons")
    with pytest.raises(ValueError, match="positive Python int"):
        d.sample(jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="correlation must lie in"):
        get_toy_density("gaussian", correlation=1.0)
    with pytest.raises(ValueError, match="one per radius"):
        get_toy_density("rings", radii=(1.0, 2.0), weights=(1.0,))
