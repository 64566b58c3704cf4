"""Autoregressive log-likelihood helpers against direct loops and scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jgen.losses.autoregressive import (
    bernoulli_autoregressive_log_prob,
    categorical_autoregressive_log_prob,
    make_bernoulli_autoregressive_loss,
)


def test_bernoulli_log_prob_matches_scipy_including_extreme_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 2, 4)) * 5
    logits[0, 0, 0] = 60.0  # sigmoid rounds to 1 in float32; the log must not
    x = rng.integers(0, 2, size=(3, 2, 4))
    ref = stats.bernoulli.logpmf(x, special.expit(logits)).reshape(3, -1).sum(1)
    ref[0] = (x[0] * -np.logaddexp(0, -logits[0]) + (1 - x[0]) * -np.logaddexp(0, logits[0])).sum()
    got = bernoulli_autoregressive_log_prob(jnp.asarray(logits, jnp.float32), jnp.asarray(x))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_categorical_log_prob_matches_a_loop():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 7))
    x = rng.integers(0, 7, size=(2, 5))
    ref = [sum(special.log_softmax(logits[b, i])[x[b, i]] for i in range(5)) for b in range(2)]
    np.testing.assert_allclose(categorical_autoregressive_log_prob(jnp.asarray(logits), jnp.asarray(x)), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="integer x"):
        categorical_autoregressive_log_prob(jnp.asarray(logits), jnp.asarray(x, jnp.float32))


def test_bernoulli_loss_flattens_images_and_reports_per_example_nll():
    x = jnp.asarray(np.random.default_rng(2).integers(0, 2, (4, 2, 2, 1)), jnp.float32)
    loss = make_bernoulli_autoregressive_loss(lambda p, v: jnp.zeros_like(v) + p)
    value, aux = loss(0.0, jax.random.PRNGKey(0), {"image": x})
    np.testing.assert_allclose(aux["nll"], 4 * np.log(2.0), rtol=1e-6)  # every pixel at p = 1/2
    np.testing.assert_allclose(value, 4 * np.log(2.0), rtol=1e-6)
