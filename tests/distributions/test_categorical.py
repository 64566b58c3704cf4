"""Tests for jgen.distributions.categorical against scipy.stats.multinomial and a
direct log-softmax sum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jgen.distributions import categorical_log_prob, categorical_sample

RNG = np.random.default_rng(0)

# Jitted once per module: eager dispatch compiles every primitive separately.
log_prob = jax.jit(categorical_log_prob, static_argnames="event_ndims")


def _direct_log_prob(x, logits, axes):
    """Reference: log_softmax(logits)[x] by numpy fancy indexing, summed over axes."""
    log_p = special.log_softmax(logits, axis=-1)
    log_p = np.broadcast_to(log_p, x.shape + logits.shape[-1:])
    picked = np.take_along_axis(log_p, x[..., None], axis=-1)[..., 0]
    return picked.sum(axis=axes)


def test_one_hot_matches_scipy_multinomial(x64):
    logits = RNG.normal(size=(5, 4))
    x = RNG.integers(0, 4, size=5)
    # Reference: scipy.stats.multinomial.logpmf of the one-hot count vector with n=1.
    expected = [stats.multinomial.logpmf(np.eye(4)[x[b]], n=1, p=special.softmax(logits[b]))
                for b in range(5)]
    np.testing.assert_allclose(log_prob(x, logits), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "x_shape, logits_shape, event_ndims, axes",
    [
        ((6,), (6, 5), None, ()),  # scalar event, one distribution per example
        ((3, 2, 2), (3, 2, 2, 7), None, (1, 2)),  # image-like [B, H, W] with K=7
        ((4, 3), (5,), None, (1,)),  # one distribution shared by every element
        ((4, 3), (1, 3, 5), 1, (1,)),  # logits broadcast over the batch; event_ndims=1
        ((4, 3), (4, 3, 5), 0, ()),  # elementwise
    ],
)
def test_log_prob_matches_direct_sum(x64, x_shape, logits_shape, event_ndims, axes):
    k = logits_shape[-1]
    x = RNG.integers(0, k, size=x_shape)
    logits = RNG.normal(size=logits_shape) * 3
    expected = _direct_log_prob(x, logits, axes)
    got = log_prob(x, logits, event_ndims=event_ndims)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_probabilities_sum_to_one_by_enumeration(x64):
    logits = RNG.normal(size=(2, 6)) * 4
    x = jnp.broadcast_to(jnp.arange(6), (2, 6))  # every category of each distribution
    log_p = log_prob(x, logits[:, None, :], event_ndims=0)
    np.testing.assert_allclose(jnp.exp(log_p).sum(axis=1), 1.0, rtol=1e-14)


def test_out_of_range_gives_nan():
    got = categorical_log_prob(jnp.array([0, 3, -1, 2]), jnp.zeros(3), event_ndims=0)  # eager
    np.testing.assert_allclose(got[0], -np.log(3.0), rtol=1e-6)
    assert bool(jnp.isnan(got[1])) and bool(jnp.isnan(got[2]))


def test_masked_and_extreme_logits_finite_with_finite_gradients():
    logits = jnp.array([[1e4, -1e4, 0.0, -jnp.inf], [-jnp.inf, 3.0, -1e4, 1e4]])
    x = jnp.array([1, 2])
    got = log_prob(x, logits, event_ndims=0)
    np.testing.assert_allclose(got, [-2e4, -2e4], rtol=1e-6)  # l_x - max l
    grad = jax.jit(jax.grad(lambda l: log_prob(x, l).sum()))(logits)
    assert bool(jnp.all(jnp.isfinite(grad)))
    # d/dl log softmax(l)[x] = onehot(x) - softmax(l); masked entries get 0.
    np.testing.assert_allclose(grad, jax.nn.one_hot(x, 4) - jax.nn.softmax(logits), atol=1e-6)


def test_float_targets_raise():
    with pytest.raises(TypeError, match=r"integer category indices; received dtype float32"):
        categorical_log_prob(jnp.zeros((2,), jnp.float32), jnp.zeros((2, 3)))


def test_wrong_shapes_raise_naming_shapes():
    with pytest.raises(ValueError, match=r"x of shape \(4, 3\).*logits of shape \(4, 5\)"):
        jax.jit(categorical_log_prob)(jnp.zeros((4, 3), jnp.int32), jnp.zeros((4, 5)))
    with pytest.raises(ValueError, match="trailing category axis"):
        categorical_log_prob(jnp.zeros((4,), jnp.int32), jnp.float32(0.0))


def test_sample_hits_softmax_chisquare():
    logits = jnp.array([1.0, -0.5, 0.0, 2.0, -jnp.inf])
    n = 20_000
    samples = jax.jit(categorical_sample)(jax.random.key(0), jnp.broadcast_to(logits, (n, 5)))
    assert samples.shape == (n,) and samples.dtype == jnp.int32
    counts = np.bincount(np.asarray(samples), minlength=5)
    assert counts[4] == 0  # masked category never drawn
    probs = special.softmax(np.asarray(logits[:4], np.float64))
    # Reference: scipy.stats.chisquare against the softmax probabilities.
    assert stats.chisquare(counts[:4], n * probs).pvalue > 1e-3
