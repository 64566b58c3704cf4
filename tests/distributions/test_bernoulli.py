"""Tests for jgen.distributions.bernoulli against scipy.stats.bernoulli."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jgen.distributions import bernoulli_logits_log_prob, bernoulli_logits_sample

RNG = np.random.default_rng(0)

# Jitted once per module: eager dispatch compiles every primitive separately.
log_prob = jax.jit(bernoulli_logits_log_prob, static_argnames="event_ndims")


@pytest.mark.parametrize(
    "x_shape, logits_shape, event_ndims, axes",
    [
        ((6,), (6,), None, ()),  # scalar event
        ((6, 4), (6, 4), None, (1,)),  # batched
        ((3, 2, 4), (4,), None, (1, 2)),  # logits shared across the batch
        ((3, 2, 4), (3, 2, 4), 1, (2,)),  # event_ndims=1
        ((3, 2), (3, 2), 0, ()),  # elementwise
    ],
)
def test_log_prob_matches_scipy(x64, x_shape, logits_shape, event_ndims, axes):
    x = RNG.integers(0, 2, size=x_shape).astype(np.float64)
    logits = RNG.normal(size=logits_shape) * 3
    # Reference: scipy.stats.bernoulli.logpmf with p = expit(logits).
    expected = stats.bernoulli.logpmf(x, special.expit(logits)).sum(axis=axes)
    got = log_prob(x, logits, event_ndims=event_ndims)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_continuous_targets_give_negative_cross_entropy(x64):
    x = RNG.uniform(size=(4, 5))
    logits = RNG.normal(size=(4, 5)) * 2
    # Reference: -H(x, sigmoid(l)) with scipy.special.log_expit.
    expected = (x * special.log_expit(logits) + (1 - x) * special.log_expit(-logits)).sum(1)
    np.testing.assert_allclose(log_prob(x, logits), expected, rtol=1e-12)


def test_extreme_logits_exact_and_gradients_finite():
    x = jnp.array([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]])
    logits = jnp.array([[1e4, -1e4, -1e4, 1e4, 100.0, -100.0]])
    got = bernoulli_logits_log_prob(x, logits, event_ndims=0)  # eager
    # Reference: scipy.special.log_expit(+-logits) in float64 (e^-100 terms are float32
    # denormals, which XLA on CPU flushes to zero, hence the atol).
    sign = np.where(np.asarray(x) == 1.0, 1.0, -1.0)
    expected = special.log_expit(sign * np.asarray(logits, np.float64))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)
    grad = jax.jit(jax.grad(lambda l: log_prob(x, l).sum()))(logits)
    assert bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_allclose(grad, x - jax.nn.sigmoid(logits), atol=1e-6)  # d/dl = x - p


def test_integer_or_bool_targets_raise_with_cast_hint():
    for dtype in (jnp.uint8, jnp.int32, jnp.bool_):
        with pytest.raises(TypeError,
                           match=r"x must have a floating dtype.*x.astype\(logits.dtype\)"):
            bernoulli_logits_log_prob(jnp.zeros((2, 3), dtype), jnp.zeros((2, 3)))


def test_wrong_shape_raises_naming_shapes():
    with pytest.raises(ValueError, match=r"x of shape \(2, 3\), logits of shape \(2, 4\)"):
        jax.jit(bernoulli_logits_log_prob)(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def test_sample_frequencies_match_sigmoid():
    logits = jnp.array([-3.0, 0.0, 2.5, 100.0, -100.0])
    n = 20_000
    samples = jax.jit(bernoulli_logits_sample)(jax.random.key(0), jnp.broadcast_to(logits, (n, 5)))
    assert samples.shape == (n, 5) and samples.dtype == jnp.float32
    assert set(np.unique(np.asarray(samples))) <= {0.0, 1.0}
    counts = np.asarray(samples.sum(axis=0)).astype(int)
    p = special.expit(np.asarray(logits, np.float64))
    for k, pk in zip(counts[:3], p[:3]):  # reference: scipy.stats.binomtest
        assert stats.binomtest(int(k), n, pk).pvalue > 1e-3
    assert counts[3] == n and counts[4] == 0


def test_sample_integer_logits_raise():
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        bernoulli_logits_sample(jax.random.key(0), jnp.zeros(3, jnp.int32))
