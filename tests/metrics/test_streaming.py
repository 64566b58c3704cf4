"""Streaming accumulators: moments from uneven and masked batches equal numpy's mean and
unbiased np.cov (ddof = 1, the FID convention) in float32 with a 1e4 offset where the
raw-sums formula cancels catastrophically; merge is associative and order-free; a
jitted update with the batch sharded over the 8-device mesh equals the unsharded one
and traces once; the class-probability state reproduces the one-split Inception Score;
clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.metrics.frechet import fid_from_features, frechet_distance
from jgen.metrics.inception_score import inception_score
from jgen.metrics.streaming import (
    ClassProbState,
    MomentState,
    class_probs_finalize,
    class_probs_init,
    class_probs_merge,
    class_probs_update,
    moments_finalize,
    moments_init,
    moments_merge,
    moments_update,
)
from jgen.train.mesh import batch_sharding, make_mesh, replicated

_update = jax.jit(moments_update)
_finalize = jax.jit(moments_finalize)


def _offset_features(seed, n, d, offset=1e4, scale=0.5):
    """float32 features around `offset` with spread `scale` and some correlation."""
    rng = np.random.default_rng(seed)
    mix = np.eye(d) + 0.3 * rng.normal(size=(d, d))
    return (offset + scale * rng.normal(size=(n, d)) @ mix).astype(np.float32)


def _stream(features, sizes, state=None):
    state = moments_init(features.shape[1]) if state is None else state
    start = 0
    for size in sizes:
        state = _update(state, jnp.asarray(features[start:start + size]))
        start += size
    assert start == len(features)
    return state


def test_moments_match_numpy_in_float32_with_a_large_offset():
    n = 20000
    f = _offset_features(0, n, 6)
    # Uneven batches, one of a single row, then many of 500.
    state = _stream(f, [1, 255, 300, 44, 400] + [500] * 38)
    mu, sigma = _finalize(state)
    ref = f.astype(np.float64)  # the exact statistics of the float32 data
    ref_cov = np.cov(ref, rowvar=False)  # ddof = 1, the FID convention
    assert int(state.count) == n and mu.dtype == sigma.dtype == jnp.float32
    # The mean is exact to float32 resolution at 1e4 (half an ulp ~ 5e-4), the
    # covariance to ~1e-6 of its own scale: no cancellation against the 1e8-sized raw
    # moments and no drift over 43 updates.
    np.testing.assert_allclose(np.asarray(mu), ref.mean(axis=0), rtol=0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(sigma), ref_cov, rtol=0, atol=1e-5 * np.abs(ref_cov).max())
    # The raw-sums formula in float32 on the same data is off by O(1): the test can see it.
    f32 = jnp.asarray(f)
    naive = (f32.T @ f32 - n * jnp.outer(f32.mean(0), f32.mean(0))) / (n - 1)
    assert np.abs(np.asarray(naive) - ref_cov).max() > 100 * np.abs(np.asarray(sigma) - ref_cov).max()
    # Feeding the streamed moments to the Fréchet distance agrees with the float64 path.
    g = _offset_features(1, 800, 6, scale=0.7)
    fid_stream = frechet_distance(mu, sigma, *_finalize(_stream(g, [800])))
    assert fid_stream == pytest.approx(fid_from_features(f, g), rel=1e-3)


def test_masked_rows_are_ignored():
    f = _offset_features(2, 64, 4)
    mask = np.random.default_rng(3).uniform(size=64) < 0.6
    mask[0] = False  # the empty state's reference row must skip masked rows
    padded = np.where(mask[:, None], f, np.float32(-7e5))  # garbage in the padding
    state = jax.jit(moments_update)(moments_init(4), jnp.asarray(padded), mask=jnp.asarray(mask))
    mu, sigma = moments_finalize(state)
    kept = f[mask].astype(np.float64)
    assert int(state.count) == mask.sum()
    np.testing.assert_allclose(np.asarray(mu), kept.mean(0), atol=2e-3)
    np.testing.assert_allclose(np.asarray(sigma), np.cov(kept, rowvar=False), atol=2e-4)


def test_merge_is_associative_and_matches_the_whole_stream():
    f = _offset_features(4, 600, 5)
    a, b, c = (_stream(f[s], [len(f[s])]) for s in (slice(0, 100), slice(100, 350), slice(350, 600)))
    left = moments_merge(moments_merge(a, b), c)
    right = moments_merge(a, moments_merge(b, c))
    swapped = moments_merge(c, moments_merge(b, a))
    whole = _stream(f, [600])
    scale = float(jnp.abs(whole.m2).max())
    for s in (left, right, swapped):
        assert int(s.count) == 600
        # Different shifts (each part's first row) are reconciled without rounding the
        # means at the 1e4 scale: agreement to float32 round-off of the spread.
        np.testing.assert_allclose(np.asarray(moments_finalize(s)[0]),
                                   np.asarray(moments_finalize(whole)[0]), atol=2e-3)
        np.testing.assert_allclose(np.asarray(s.m2), np.asarray(whole.m2), atol=1e-6 * scale)
    # Merging with an empty state is the identity.
    empty = moments_init(5)
    for s in (moments_merge(empty, a), moments_merge(a, empty)):
        np.testing.assert_allclose(np.asarray(s.m2), np.asarray(a.m2), rtol=1e-6)
        assert int(s.count) == 100


def test_sharded_update_equals_unsharded_and_traces_once():
    mesh = make_mesh(8)
    f = _offset_features(5, 3 * 64, 8)
    p = jax.nn.softmax(jnp.asarray(np.random.default_rng(6).normal(size=(3 * 64, 10)) * 3.0), -1)
    traces = []

    def counted_update(state, features, probs_state, probs):
        traces.append(None)
        return moments_update(state, features), class_probs_update(probs_state, probs)

    sharded = jax.jit(
        counted_update,
        in_shardings=(replicated(mesh), batch_sharding(mesh), replicated(mesh), batch_sharding(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)),
    )
    plain = jax.jit(moments_update)
    # The initial states go on the mesh too: an uncommitted state's type has no mesh,
    # so the second call would otherwise trace again.
    s_sh, c_sh = jax.device_put((moments_init(8), class_probs_init(10)), replicated(mesh))
    s_pl, c_pl = moments_init(8), class_probs_init(10)
    for i in range(3):
        rows = slice(64 * i, 64 * (i + 1))
        batch = jax.device_put(jnp.asarray(f[rows]), batch_sharding(mesh))
        assert len(batch.sharding.device_set) == 8
        s_sh, c_sh = sharded(s_sh, batch, c_sh, jax.device_put(p[rows], batch_sharding(mesh)))
        s_pl = plain(s_pl, jnp.asarray(f[rows]))
        c_pl = class_probs_update(c_pl, p[rows])
    assert len(traces) == 1  # same shapes and dtypes every step: no retrace
    assert isinstance(s_sh, MomentState) and isinstance(c_sh, ClassProbState)
    assert int(s_sh.count) == int(s_pl.count) == 192
    np.testing.assert_allclose(np.asarray(s_sh.shift), np.asarray(s_pl.shift), rtol=0)
    np.testing.assert_allclose(np.asarray(s_sh.shifted_mean), np.asarray(s_pl.shifted_mean),
                               atol=1e-6 * float(jnp.abs(s_pl.shifted_mean).max()))
    np.testing.assert_allclose(np.asarray(s_sh.m2), np.asarray(s_pl.m2),
                               atol=1e-5 * float(jnp.abs(s_pl.m2).max()))
    assert float(class_probs_finalize(c_sh)) == pytest.approx(float(class_probs_finalize(c_pl)), rel=1e-5)


def test_class_prob_state_gives_the_one_split_inception_score():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(90, 6)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[:5] = np.eye(6)[:5]  # exact zeros: 0 log 0 = 0
    with jax.enable_x64(True):
        p = jnp.asarray(probs)
        a = class_probs_update(class_probs_init(6, jnp.float64), p[:30])
        b = class_probs_update(class_probs_init(6, jnp.float64), p[30:])
        streamed = float(class_probs_finalize(class_probs_merge(a, b)))
        direct, _ = inception_score(p, num_splits=1)
    assert streamed == pytest.approx(float(direct), rel=1e-12)
    # The documented identity, in numpy.
    p_bar = probs.mean(0)
    plogp = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    assert streamed == pytest.approx(np.exp(plogp.sum(1).mean() - np.sum(p_bar * np.log(p_bar))), rel=1e-12)


def test_errors_are_clear():
    state = moments_init(4)
    with pytest.raises(ValueError, match=r"feature dimension 3 \(shape \(5, 3\)\).*feature dimension 4"):
        moments_update(state, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"\[batch, feature dimension\].*\(5,\)"):
        moments_update(state, jnp.ones((5,)))
    with pytest.raises(ValueError, match=r"mask must have shape \[batch\] = \(5,\)"):
        moments_update(state, jnp.ones((5, 4)), mask=jnp.ones((4,), bool))
    with pytest.raises(ValueError, match="at least 2 rows; the state has count = 1"):
        moments_finalize(moments_update(state, jnp.ones((1, 4))))
    with pytest.raises(ValueError, match="different feature dimensions"):
        moments_merge(state, moments_init(5))
    with pytest.raises(ValueError, match="positive int; received 0"):
        moments_init(0)
    cstate = class_probs_init(10)
    with pytest.raises(ValueError, match=r"number of classes 8.*number of classes 10"):
        class_probs_update(cstate, jnp.full((3, 8), 1 / 8))
    with pytest.raises(ValueError, match="different numbers of classes"):
        class_probs_merge(cstate, class_probs_init(8))
    with pytest.raises(ValueError, match="state is empty"):
        class_probs_finalize(cstate)
    # Under jit nothing can be checked: too few rows give NaN, not a silent number.
    _, sigma = jax.jit(moments_finalize)(moments_update(state, jnp.ones((1, 4))))
    assert bool(jnp.all(jnp.isnan(sigma)))
