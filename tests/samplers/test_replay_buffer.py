"""The replay buffer (Du & Mordatch 2019): its noise is uniform on [-1, 1] (KS test), the
re-initialised fraction is binomial, slots are drawn uniformly without replacement
(a chi-square test with the without-replacement correction), write-backs touch exactly
the given slots (against a numpy reference), and the whole cycle compiles once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.samplers.replay_buffer import (
    ReplayBufferState,
    replay_init,
    replay_sample,
    replay_update,
)


@jax.jit
def _draw16(keys, state, reinit_prob):  # one compilation per buffer shape (reinit_prob is traced)
    return jax.vmap(lambda k: replay_sample(k, state, 16, reinit_prob=reinit_prob))(keys)


def _draws(state, num_batches, reinit_prob, seed=0):
    """num_batches independent draws of 16 (vmapped keys): x0 [R, 16, ...], indices [R, 16]."""
    keys = jax.random.split(jax.random.PRNGKey(seed), num_batches)
    x0, idx = _draw16(keys, state, jnp.float32(reinit_prob))
    return np.asarray(x0), np.asarray(idx)


def test_init_is_uniform_noise_on_the_symmetric_pixel_range():
    state = replay_init(jax.random.PRNGKey(0), (4, 4, 1), 256)
    assert state.samples.shape == (256, 4, 4, 1) and state.samples.dtype == jnp.float32
    assert int(state.num_updates) == 0
    # Reference: scipy's Uniform(-1, 1) CDF; 4096 values, fixed seed.
    assert stats.kstest(np.asarray(state.samples).ravel(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 0.01


def test_reinit_fraction_is_binomial_and_reinit_rows_are_fresh_noise():
    # A buffer of a sentinel value (5, outside [-1, 1]): a starting point differs from it
    # exactly when it was re-initialised.
    state = ReplayBufferState(samples=jnp.full((64, 3), 5.0), num_updates=jnp.zeros((), jnp.int32))
    x0, _ = _draws(state, num_batches=250, reinit_prob=0.05)
    fresh = np.all(x0 != 5.0, axis=-1)
    assert np.all(fresh | np.all(x0 == 5.0, axis=-1))  # a row is all stored or all fresh
    k, n = int(fresh.sum()), fresh.size  # 4000 independent Bernoulli(0.05) trials
    assert stats.binomtest(k, n, 0.05).pvalue > 0.01, (k, n)
    noise = x0[fresh].ravel()
    assert stats.kstest(noise, stats.uniform(loc=-1, scale=2).cdf).pvalue > 0.01
    # The endpoints of the probability range.
    assert np.all(_draws(state, 250, 0.0)[0] == 5.0)
    assert np.all(np.abs(_draws(state, 250, 1.0)[0]) <= 1.0)


def test_slots_are_uniform_and_distinct_and_x0_is_the_stored_rows():
    capacity, batch, num_batches = 64, 16, 400
    samples = jnp.arange(capacity, dtype=jnp.float32)[:, None] * jnp.ones((1, 2))  # row i holds i
    state = ReplayBufferState(samples=samples, num_updates=jnp.zeros((), jnp.int32))
    x0, idx = _draws(state, num_batches, reinit_prob=0.0, seed=1)
    np.testing.assert_array_equal(x0[..., 0], idx)  # the starting points are the drawn rows
    assert all(len(set(row)) == batch for row in idx)  # without replacement within a draw
    counts = np.bincount(idx.ravel(), minlength=capacity)
    expected = num_batches * batch / capacity
    # Without replacement the counts are multivariate hypergeometric per draw, whose
    # covariance is the multinomial's times (N - B) / (N - 1); rescaling Pearson's
    # statistic by the inverse makes it chi-square with N - 1 degrees of freedom.
    chi2 = np.sum((counts - expected) ** 2 / expected) * (capacity - 1) / (capacity - batch)
    assert stats.chi2.sf(chi2, capacity - 1) > 0.01, counts


def test_update_writes_exactly_the_given_slots():
    state = replay_init(jax.random.PRNGKey(2), (2, 3), 10)
    indices = jnp.array([7, 0, 3], jnp.int32)
    new = jax.random.normal(jax.random.PRNGKey(3), (3, 2, 3))
    updated = jax.jit(replay_update)(state, indices, new)
    reference = np.array(state.samples)  # numpy fancy-index assignment
    reference[np.asarray(indices)] = np.asarray(new)
    np.testing.assert_array_equal(np.asarray(updated.samples), reference)
    assert int(updated.num_updates) == 1


def test_sample_update_cycle_compiles_once_with_fixed_shapes():
    traces = {"n": 0}

    def cycle(state, key):
        traces["n"] += 1  # runs once per trace, never per call
        x0, idx = replay_sample(key, state, 8, reinit_prob=0.1)
        return replay_update(state, idx, 0.5 * x0)  # stands in for the Langevin chains

    cycle = jax.jit(cycle)
    state = replay_init(jax.random.PRNGKey(0), (3,), 32)
    for i in range(4):
        new = cycle(state, jax.random.PRNGKey(10 + i))
        assert new.samples.shape == state.samples.shape and new.samples.dtype == state.samples.dtype
        changed = np.any(np.asarray(new.samples) != np.asarray(state.samples), axis=-1)
        assert changed.sum() <= 8  # at most the batch's slots were rewritten
        state = new
    assert traces["n"] == 1 and cycle._cache_size() == 1
    assert int(state.num_updates) == 4


def test_bad_arguments_are_named():
    state = replay_init(jax.random.PRNGKey(0), (2,), 8)
    key = jax.random.PRNGKey(1)
    with pytest.raises(ValueError, match="batch_size=9 exceeds the buffer's capacity 8"):
        replay_sample(key, state, 9)
    with pytest.raises(ValueError, match="reinit_prob must be a probability in \\[0, 1\\]; received 1.5"):
        replay_sample(key, state, 4, reinit_prob=1.5)
    with pytest.raises(ValueError, match="capacity must be a Python int >= 1; received 0"):
        replay_init(key, (2,), 0)
    with pytest.raises(ValueError, match="init_fn\\(key, \\(8, 2\\)\\) must return"):
        replay_init(key, (2,), 8, init_fn=lambda k, s: jnp.zeros((8,)))
    with pytest.raises(ValueError, match="new_samples must be one sample per index, shape \\(2, 2\\)"):
        replay_update(state, jnp.array([0, 1]), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="indices must be a 1-D integer array"):
        replay_update(state, jnp.array([[0, 1]]), jnp.zeros((2, 2)))
