"""Temperature / top-k / top-p filters against a brute-force reference in plain
Python, renormalisation, and the sampler's frequencies (chi-square, fixed seed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.samplers.categorical import (
    apply_temperature,
    sample_categorical,
    top_k_filter,
    top_p_filter,
)


def _ranked(probs):
    """Indices by decreasing probability, ties by increasing index."""
    return sorted(range(len(probs)), key=lambda i: (-probs[i], i))


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _ref_top_k(row, k):
    return set(_ranked(list(row))[:k])


def _ref_top_p(row, p):
    probs = _softmax(np.asarray(row, np.float64))
    kept, mass = set(), 0.0
    for i in _ranked(list(probs)):
        if mass >= p:
            break
        kept.add(i)
        mass += probs[i]
    return kept


def _rows():
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=10) * 2 for _ in range(20)]
    rows.append(np.array([1.0, 3.0, 3.0, 0.5, 3.0, -1.0, 0.0, 0.0, 2.0, 2.0]))  # ties
    rows.append(np.zeros(10))  # all tied
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
def test_top_k_keeps_exactly_the_k_largest_and_renormalizes(k):
    logits = _rows()
    out = np.asarray(top_k_filter(jnp.asarray(logits), k))
    for row, filtered in zip(logits, out):
        support = set(np.flatnonzero(np.isfinite(filtered)))
        assert support == _ref_top_k(row, k)
        np.testing.assert_array_equal(filtered[list(support)], row[list(support)])
        q = np.asarray(jax.nn.softmax(jnp.asarray(filtered)))
        p = _softmax(row.astype(np.float64))
        expected = np.zeros(10)
        expected[list(support)] = p[list(support)] / p[list(support)].sum()
        np.testing.assert_allclose(q, expected, atol=1e-6)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_top_p_keeps_the_smallest_nucleus_and_renormalizes(p):
    logits = _rows()
    out = np.asarray(jax.jit(top_p_filter)(jnp.asarray(logits), p))
    for row, filtered in zip(logits, out):
        support = set(np.flatnonzero(np.isfinite(filtered)))
        probs = _softmax(row.astype(np.float64))
        ref = _ref_top_p(row, p)
        # float32 vs float64 cumulative sums may disagree only where the mass lands on p.
        if support != ref:
            ranked = _ranked(list(probs))
            boundary = np.cumsum(probs[ranked])
            assert np.min(np.abs(boundary - p)) < 1e-5, (support, ref)
            continue
        assert probs[list(support)].sum() >= p - 1e-6
        q = np.asarray(jax.nn.softmax(jnp.asarray(filtered)))
        expected = np.zeros(10)
        expected[list(support)] = probs[list(support)] / probs[list(support)].sum()
        np.testing.assert_allclose(q, expected, atol=1e-6)


def test_temperature_scales_logits_and_filters_compose():
    logits = jnp.asarray(_rows())
    np.testing.assert_allclose(apply_temperature(logits, 0.5), 2.0 * logits, rtol=1e-6)
    composed = top_p_filter(top_k_filter(apply_temperature(logits, 0.7), 4), 0.8)
    support = np.isfinite(np.asarray(composed)).sum(axis=-1)
    assert np.all((support >= 1) & (support <= 4))


def test_sample_categorical_hits_the_filtered_distribution():
    logits = jnp.asarray([0.0, 1.0, 2.0, 0.5, -1.0, 1.5])
    n = 40_000
    draws = sample_categorical(jax.random.PRNGKey(0), jnp.broadcast_to(logits, (n, 6)),
                               temperature=0.8, top_k=4, top_p=0.9)
    target = np.asarray(jax.nn.softmax(top_p_filter(top_k_filter(logits / 0.8, 4), 0.9)), np.float64)
    counts = np.bincount(np.asarray(draws), minlength=6)
    assert np.all(counts[target == 0] == 0)
    kept = target > 0
    target = target / target[kept].sum()
    _, pval = stats.chisquare(counts[kept], n * target[kept])
    assert pval > 1e-3, (counts, n * target)


def test_filters_reject_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        top_k_filter(jnp.zeros((2, 5)), 0)
    with pytest.raises(ValueError, match="p must be in"):
        top_p_filter(jnp.zeros((2, 5)), 1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(jnp.zeros((2, 5)), 0.0)
    with pytest.raises(TypeError, match="floating"):
        top_k_filter(jnp.zeros((2, 5), jnp.int32), 2)
