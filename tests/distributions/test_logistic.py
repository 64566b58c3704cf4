"""Tests for jgen.distributions.logistic against scipy.stats.logistic: the continuous
density, the discretised logistic and its mixture by exact enumeration of the bins,
and the mixture sampler by a chi-square test against the enumerated pmf."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from jgen.distributions import (
    discretized_logistic_log_prob,
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_sample,
    logistic_log_prob,
)

RNG = np.random.default_rng(0)


def _grid(num_bins):
    return np.linspace(-1.0, 1.0, num_bins)


def _bin_edges(x, num_bins):
    """Edges [x - h, x + h] of the bins centred at x; the end bins reach -inf / +inf."""
    h = 1.0 / (num_bins - 1)
    return np.where(x < -1 + h, -np.inf, x - h), np.where(x > 1 - h, np.inf, x + h)


def _cdf_bin_probs(x, mean, scale, num_bins):
    """Reference: P(bin of x) = scipy.stats.logistic.cdf(upper) - cdf(lower)."""
    lower, upper = _bin_edges(x, num_bins)
    dist = stats.logistic(loc=mean, scale=scale)
    return dist.cdf(upper) - dist.cdf(lower)


def _tail_accurate_log_bin_probs(x, mean, scale, num_bins):
    """Reference for far tails, where cdf differences round to 0: the log of the
    difference from scipy.stats.logistic.logsf (right of the mean) or .logcdf (left),
    log(F(u) - F(l)) = log F(u) + log(1 - exp(log F(l) - log F(u)))."""
    lower, upper = _bin_edges(x, num_bins)
    lower, upper = (lower - mean) / scale, (upper - mean) / scale
    logsf, logcdf = stats.logistic.logsf, stats.logistic.logcdf
    with np.errstate(invalid="ignore", divide="ignore"):
        right = logsf(lower) + np.log(-np.expm1(logsf(upper) - logsf(lower)))
        left = logcdf(upper) + np.log(-np.expm1(logcdf(lower) - logcdf(upper)))
    return np.where(x >= mean, right, left)


# Jitted once per module: eager dispatch compiles every primitive separately, which
# costs seconds per new dtype; one jit per function keeps the file fast.
_static = ("num_bins", "event_ndims")
logistic_lp = jax.jit(logistic_log_prob, static_argnames="event_ndims")
disc_lp = jax.jit(discretized_logistic_log_prob, static_argnames=_static)
mix_lp = jax.jit(discretized_logistic_mixture_log_prob, static_argnames=_static)
mix_sample = jax.jit(discretized_logistic_mixture_sample, static_argnames="num_bins")


# ----------------------------------------------------------------- continuous logistic


@pytest.mark.parametrize(
    "x_shape, param_shape, event_ndims, axes",
    [((5,), (5,), None, ()), ((4, 2, 3), (3,), None, (1, 2)), ((4, 3), (4, 3), 0, ())],
)
def test_logistic_log_prob_matches_scipy(x64, x_shape, param_shape, event_ndims, axes):
    x = RNG.normal(size=x_shape) * 5
    mean, log_scale = RNG.normal(size=param_shape), RNG.normal(size=param_shape)
    # Reference: scipy.stats.logistic.logpdf summed over the event axes.
    expected = stats.logistic.logpdf(x, loc=mean, scale=np.exp(log_scale)).sum(axis=axes)
    got = logistic_lp(x, mean, log_scale, event_ndims=event_ndims)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_logistic_log_prob_far_tail_float32():
    x = jnp.array([[1e4, -1e4]])
    # Reference: -|z| - 2 log(1 + e^-|z|) = -1e4 to float32 precision; the density
    # itself underflows, its log must not.
    np.testing.assert_allclose(logistic_lp(x, 0.0, 0.0, event_ndims=0), [[-1e4, -1e4]], rtol=1e-6)
    grads = jax.jit(jax.grad(lambda m, s: logistic_log_prob(x, m, s).sum(), argnums=(0, 1)))(
        jnp.zeros(2), jnp.full(2, -20.0))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_logistic_log_prob_errors():
    with pytest.raises(ValueError, match=r"x of shape \(2, 3\), mean of shape \(2,\)"):
        logistic_lp(jnp.zeros((2, 3)), jnp.zeros(2), 0.0)
    with pytest.raises(TypeError, match="log_scale must have a floating dtype"):
        logistic_lp(jnp.zeros((2, 3)), 0.0, jnp.zeros(3, jnp.int32))


# ---------------------------------------------------------------- discretised logistic

PARAMS = [(0.1, -2.0), (-0.37, -4.0), (0.9, 0.5), (2.5, -1.0), (-0.8, 3.0)]


@pytest.mark.parametrize("num_bins", [2, 4, 256])
@pytest.mark.parametrize("mean, log_scale", PARAMS)
def test_discretized_bins_are_cdf_differences_and_sum_to_one(x64, num_bins, mean, log_scale):
    x = _grid(num_bins)[None, :]  # every bin centre, as one example of num_bins elements
    log_p = disc_lp(x, mean, log_scale, num_bins=num_bins, event_ndims=0)[0]
    expected = _cdf_bin_probs(x[0], mean, np.exp(log_scale), num_bins)
    np.testing.assert_allclose(jnp.exp(log_p), expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(jnp.exp(log_p).sum(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("mean, log_scale", [(0.9, -6.0), (-1.5, -8.0), (0.0, 5.0), (0.3, 12.0)])
def test_discretized_tails_exact(x64, mean, log_scale):
    # Bins hundreds of scales from the mean, where both CDFs round to 0 or 1 and
    # PixelCNN++ switches to its density-times-width fallback; and very wide scales
    # where each bin holds as little as 5e-8 of the mass.
    x = _grid(256)
    expected = _tail_accurate_log_bin_probs(x, mean, np.exp(log_scale), 256)
    assert np.all(np.isfinite(expected))
    got = disc_lp(x[None], mean, log_scale, event_ndims=0)[0]
    # The reference itself loses ~eps / (bin mass) relatively at the widest scale.
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    got32 = disc_lp(x[None].astype(np.float32), np.float32(mean), np.float32(log_scale),
                    event_ndims=0)[0]
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(got32, expected, rtol=1e-5, atol=1e-4)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    mean=st.floats(-3.0, 3.0),
    log_scale=st.floats(-9.0, 6.0),
    num_bins=st.sampled_from([2, 3, 5, 16, 256]),
)
def test_discretized_sums_to_one_property(mean, log_scale, num_bins):
    with jax.enable_x64(True):
        log_p = disc_lp(_grid(num_bins)[None], np.float64(mean), np.float64(log_scale),
                        num_bins=num_bins, event_ndims=0)
        assert abs(float(jax.nn.logsumexp(log_p))) < 1e-12  # exact enumeration


def test_discretized_batched_8bit_pixels(x64):
    x = RNG.integers(0, 256, size=(3, 4, 4, 2)) / 127.5 - 1.0  # 8-bit pixels -> [-1, 1]
    mean = RNG.normal(size=(3, 4, 4, 2)) * 0.5
    log_scale = RNG.normal(size=(2,)) - 3.0  # shared per channel
    expected = _tail_accurate_log_bin_probs(x, mean, np.exp(log_scale), 256)
    np.testing.assert_allclose(disc_lp(x, mean, log_scale, event_ndims=0), expected, rtol=1e-9)
    got = disc_lp(x, mean, log_scale)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected.sum(axis=(1, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(disc_lp(x, mean, log_scale, event_ndims=1),
                               expected.sum(axis=3), rtol=1e-12)


def test_discretized_gradients_finite_at_extremes():
    x = jnp.asarray(_grid(256), jnp.float32)[None, :]
    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(
        lambda m, s: discretized_logistic_log_prob(x, m, s).sum(), argnums=(0, 1))))
    means, log_scales = np.meshgrid([-30.0, 0.0, 0.999, 30.0], [-20.0, -7.0, 0.0, 20.0, 80.0])
    value, grads = value_and_grad(jnp.asarray(means.ravel(), jnp.float32),
                                  jnp.asarray(log_scales.ravel(), jnp.float32))
    assert bool(jnp.all(jnp.isfinite(value)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_discretized_errors():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"x of shape \(2, 3\), mean of shape \(2,\)"):
        disc_lp(x, jnp.zeros(2), 0.0)
    with pytest.raises(ValueError, match="num_bins must be at least 2; received num_bins=1"):
        discretized_logistic_log_prob(x, 0.0, 0.0, num_bins=1)
    with pytest.raises(TypeError, match="num_bins must be a Python int"):
        discretized_logistic_log_prob(x, 0.0, 0.0, num_bins=256.0)
    with pytest.raises(TypeError, match=r"x must have a floating dtype; received dtype uint8"):
        disc_lp(jnp.zeros((2, 3), jnp.uint8), 0.0, 0.0)


# ------------------------------------------------------------------------------ mixture


def _mixture_bin_probs(x, logit_probs, means, log_scales, num_bins):
    """Reference: sum_k softmax(logit_probs)_k * (scipy cdf difference of component k),
    with the parameters' trailing axis indexing components."""
    weights = special.softmax(logit_probs, axis=-1)
    probs = _cdf_bin_probs(x[..., None], means, np.exp(log_scales), num_bins)
    return (weights * probs).sum(axis=-1)


MIXTURE = (np.array([0.5, -1.0, 1.5]), np.array([-0.6, 0.1, 0.8]), np.array([-1.5, -3.0, -2.0]))


@pytest.mark.parametrize("num_bins", [4, 256])
def test_mixture_enumeration_matches_scipy_and_sums_to_one(x64, num_bins):
    x = _grid(num_bins)[None, :]
    log_p = mix_lp(x, *MIXTURE, num_bins=num_bins, event_ndims=0)
    expected = _mixture_bin_probs(x, *MIXTURE, num_bins)
    np.testing.assert_allclose(jnp.exp(log_p), expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(jnp.exp(log_p).sum(), 1.0, rtol=1e-12)


def test_mixture_with_one_component_is_discretized_logistic(x64):
    x = RNG.integers(0, 256, size=(2, 5)) / 127.5 - 1.0
    mean, log_scale = RNG.normal(size=(2, 5)), RNG.normal(size=(2, 5)) - 2
    single = disc_lp(x, mean, log_scale)
    mixture = mix_lp(x, np.zeros((2, 5, 1)), mean[..., None], log_scale[..., None])
    np.testing.assert_allclose(mixture, single, rtol=1e-12)


def test_mixture_batched_image(x64):
    b, h, w, c, k = 2, 3, 3, 3, 4
    x = RNG.integers(0, 256, size=(b, h, w, c)) / 127.5 - 1.0
    logit_probs = RNG.normal(size=(b, h, w, c, k))
    means = RNG.uniform(-1, 1, size=(b, h, w, c, k))
    log_scales = RNG.normal(size=(b, h, w, c, k)) - 2
    expected = np.log(_mixture_bin_probs(x, logit_probs, means, log_scales, 256))
    got = mix_lp(x, logit_probs, means, log_scales)
    assert got.shape == (b,)
    np.testing.assert_allclose(got, expected.sum(axis=(1, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(mix_lp(x, logit_probs, means, log_scales, event_ndims=0),
                               expected, rtol=1e-9)
    # Parameters shared over the batch broadcast against x.
    np.testing.assert_allclose(
        mix_lp(x, logit_probs[:1], means[:1], log_scales[:1], event_ndims=0)[1],
        np.log(_mixture_bin_probs(x[1], logit_probs[0], means[0], log_scales[0], 256)),
        rtol=1e-9)


def test_mixture_gradients_finite_at_extremes():
    x = jnp.asarray(_grid(256), jnp.float32)[None, :]
    params = (jnp.array([1e4, -1e4, 0.0]), jnp.array([-30.0, 0.0, 30.0]),
              jnp.array([-20.0, 0.0, 20.0]))
    value, grads = jax.jit(jax.value_and_grad(
        lambda *p: discretized_logistic_mixture_log_prob(x, *p).sum(), argnums=(0, 1, 2)))(*params)
    assert bool(jnp.isfinite(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_mixture_errors_name_shapes():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"x of shape \(2, 3\).*\(2, 4, 5\)"):
        mix_lp(x, *(jnp.zeros((2, 4, 5)),) * 3)
    with pytest.raises(ValueError,
                       match=r"logit_probs of shape \(2, 3, 5\).*means of shape \(2, 3, 4\)"):
        mix_lp(x, jnp.zeros((2, 3, 5)), jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="trailing component axis"):
        mix_lp(x, jnp.float32(0.0), jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(TypeError, match="means must have a floating dtype"):
        mix_lp(x, jnp.zeros(2), jnp.zeros(2, jnp.int32), jnp.zeros(2))


@pytest.mark.parametrize("num_bins, n", [(8, 20_000), (256, 100_000)])
def test_mixture_sampler_hits_enumerated_pmf(num_bins, n):
    logit_probs, means, log_scales = MIXTURE
    if num_bins == 256:
        log_scales = log_scales + 1.5  # spread mass so every bin expects >= 5 counts
    params = [jnp.broadcast_to(jnp.asarray(p, jnp.float32), (n, 3))
              for p in (logit_probs, means, log_scales)]
    samples = mix_sample(jax.random.key(0), *params, num_bins=num_bins)
    assert samples.shape == (n,) and samples.dtype == jnp.float32
    j = np.rint((np.asarray(samples, np.float64) + 1) * (num_bins - 1) / 2).astype(int)
    np.testing.assert_allclose(samples, j * 2 / (num_bins - 1) - 1, atol=1e-6)  # on the grid
    counts = np.bincount(j, minlength=num_bins)
    pmf = _mixture_bin_probs(_grid(num_bins), logit_probs, means, log_scales, num_bins)
    assert n * pmf.min() >= 5
    # Reference: scipy.stats.chisquare against the exactly enumerated pmf.
    assert stats.chisquare(counts, n * pmf / pmf.sum()).pvalue > 1e-3


def test_mixture_sampler_broadcasts_parameters():
    samples = mix_sample(jax.random.key(1), jnp.zeros((4, 1, 5)), jnp.zeros((3, 5)),
                         jnp.zeros(5), num_bins=16)
    assert samples.shape == (4, 3)
    with pytest.raises(ValueError, match="do not broadcast together"):
        mix_sample(jax.random.key(1), jnp.zeros((2, 5)), jnp.zeros((2, 4)), jnp.zeros(5))
