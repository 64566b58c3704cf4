"""Tests for jgen.distributions.normal against scipy.stats.norm and quadrature."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jgen.distributions import (
    diag_gaussian_entropy,
    diag_gaussian_kl,
    diag_gaussian_log_prob,
    diag_gaussian_sample,
    standard_normal_log_prob,
)

RNG = np.random.default_rng(0)

# Jitted once per module: eager dispatch compiles every primitive separately (seconds
# per new dtype), and every function must work under jit anyway.
log_prob = jax.jit(diag_gaussian_log_prob, static_argnames="event_ndims")
kl = jax.jit(diag_gaussian_kl, static_argnames="event_ndims")
entropy = jax.jit(diag_gaussian_entropy, static_argnames="event_ndims")


def _scipy_log_prob(x, mean, log_std, axes):
    """Reference: scipy.stats.norm.logpdf summed over the event axes."""
    return stats.norm.logpdf(x, loc=mean, scale=np.exp(log_std)).sum(axis=axes)


@pytest.mark.parametrize(
    "x_shape, param_shape, event_ndims, axes",
    [
        ((5,), (5,), None, ()),  # scalar event: one number per example
        ((5, 3), (5, 3), None, (1,)),  # batched vector event
        ((4, 2, 3), (3,), None, (1, 2)),  # parameters shared over the batch
        ((4, 2, 3), (), 1, (2,)),  # event_ndims=1 keeps [B, T]
        ((4, 2), (4, 2), 0, ()),  # elementwise
    ],
)
def test_log_prob_matches_scipy(x64, x_shape, param_shape, event_ndims, axes):
    x = RNG.normal(size=x_shape)
    mean = RNG.normal(size=param_shape)
    log_std = RNG.normal(size=param_shape) * 0.5
    expected = _scipy_log_prob(x, mean, log_std, axes)
    got = log_prob(x, mean, log_std, event_ndims=event_ndims)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_standard_normal_matches_scipy(x64):
    x = RNG.normal(size=(6, 2, 3)) * 3
    expected = stats.norm.logpdf(x).sum(axis=(1, 2))  # reference: scipy.stats.norm
    np.testing.assert_allclose(jax.jit(standard_normal_log_prob)(x), expected, rtol=1e-12)


def test_log_prob_eager_float32():
    x = jnp.array([[0.5, -1.0]], jnp.float32)
    got = diag_gaussian_log_prob(x, 0.0, 0.0)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, stats.norm.logpdf([0.5, -1.0]).sum(), rtol=1e-6)


def test_log_prob_wrong_shape_raises_naming_shapes():
    x = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"x of shape \(4, 3\), mean of shape \(4,\)"):
        diag_gaussian_log_prob(x, jnp.zeros(4), 0.0)
    with pytest.raises(ValueError, match="could not broadcast"):  # under jit too
        jax.jit(diag_gaussian_log_prob)(x, jnp.zeros(4), jnp.zeros(()))


def test_log_prob_integer_x_raises():
    with pytest.raises(TypeError, match=r"x must have a floating dtype; received dtype int32"):
        diag_gaussian_log_prob(jnp.zeros((2, 3), jnp.int32), 0.0, 0.0)


def test_log_prob_gradients_finite_at_extreme_scales():
    x = jnp.array([[0.0, 3.0, -1e3]])
    for log_std in (-20.0, 0.0, 20.0):
        grads = jax.jit(jax.grad(lambda m, s: log_prob(x, m, s).sum(), argnums=(0, 1)))(
            jnp.zeros(3), jnp.full(3, log_std))
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_sample_matches_normal_ks_and_is_reparameterised():
    mean, log_std = jnp.array([2.0, -1.0]), jnp.array([0.5, -1.0])
    n = 20_000
    samples = jax.jit(diag_gaussian_sample)(jax.random.key(0), jnp.broadcast_to(mean, (n, 2)),
                                            log_std)
    assert samples.shape == (n, 2) and samples.dtype == jnp.float32
    for d in range(2):  # reference: scipy.stats.kstest against norm(mean, std)
        p = stats.kstest(np.asarray(samples[:, d]), "norm",
                         args=(float(mean[d]), float(np.exp(log_std[d])))).pvalue
        assert p > 1e-3
    # d sample / d mean = 1 and d sample / d log_std = std * eps = sample - mean.
    key = jax.random.key(1)
    g_mean = jax.grad(lambda m: diag_gaussian_sample(key, m, log_std).sum())(mean)
    np.testing.assert_allclose(g_mean, 1.0)
    g_log_std = jax.grad(lambda s: diag_gaussian_sample(key, mean, s).sum())(log_std)
    np.testing.assert_allclose(g_log_std, diag_gaussian_sample(key, mean, log_std) - mean,
                               rtol=1e-6)


def _quad_kl(m1, s1, m2, s2):
    """Reference: KL by scipy.integrate.quad of p log(p/q) with p, q from scipy.stats."""
    p, q = stats.norm(m1, s1), stats.norm(m2, s2)
    integrand = lambda t: p.pdf(t) * (p.logpdf(t) - q.logpdf(t))  # noqa: E731
    return integrate.quad(integrand, m1 - 40 * s1, m1 + 40 * s1, limit=200,
                          epsabs=1e-13, epsrel=1e-11)[0]


def test_kl_matches_quadrature(x64):
    mean, log_std = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3)) * 0.7
    mean2, log_std2 = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 3)) * 0.7
    expected = np.array([[_quad_kl(mean[b, d], np.exp(log_std[b, d]), mean2[b, d],
                                   np.exp(log_std2[b, d])) for d in range(3)] for b in range(2)])
    np.testing.assert_allclose(kl(mean, log_std, mean2, log_std2), expected.sum(axis=1),
                               rtol=1e-8)
    got = kl(mean, log_std, mean2, log_std2, event_ndims=0)
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-12)


def test_kl_to_standard_normal_default_and_self_kl_zero(x64):
    mean, log_std = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    # Reference: Kingma & Welling (2014) Appendix B, -1/2 sum(1 + log s^2 - m^2 - s^2).
    expected = -0.5 * np.sum(1 + 2 * log_std - mean**2 - np.exp(2 * log_std), axis=1)
    np.testing.assert_allclose(kl(mean, log_std), expected, rtol=1e-12)
    np.testing.assert_array_equal(kl(mean, log_std, mean, log_std), 0.0)


def test_kl_accurate_for_nearly_equal_scales(x64):
    # KL(N(0, e^{2d}) || N(0, 1)) = (e^{2d} - 1)/2 - d = d^2 + O(d^3): tiny, and the
    # naive formula (exp(2d) - 1)/2 - d loses ~3% of it to cancellation in float32;
    # the expm1 form keeps it to ~1e-4.
    d = 1e-3
    got = kl(jnp.zeros((1, 1), jnp.float32), jnp.full((1, 1), d, jnp.float32))
    np.testing.assert_allclose(got, [np.expm1(2 * d) / 2 - d], rtol=2e-4)


def test_kl_wrong_shape_and_dtype():
    with pytest.raises(ValueError, match=r"mean of shape \(2, 3\).*mean2 of shape \(2,\)"):
        diag_gaussian_kl(jnp.zeros((2, 3)), 0.0, jnp.zeros(2))
    with pytest.raises(TypeError, match="log_std must have a floating dtype"):
        diag_gaussian_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32))


def test_entropy_matches_scipy(x64):
    log_std = RNG.normal(size=(4, 5))
    expected = stats.norm(scale=np.exp(log_std)).entropy().sum(axis=1)  # reference: scipy
    np.testing.assert_allclose(entropy(log_std), expected, rtol=1e-12)
    np.testing.assert_allclose(entropy(log_std[:, 0], event_ndims=0),
                               stats.norm(scale=np.exp(log_std[:, 0])).entropy(), rtol=1e-12)


def test_log_prob_traces_once_per_shape():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(x, m, s):
        return diag_gaussian_log_prob(x, m, s)

    for i in range(3):
        f(jnp.full((2, 3), float(i)), jnp.zeros(3), jnp.zeros(3))
