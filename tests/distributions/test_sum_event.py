"""Tests for jgen.distributions._util.sum_event, the one event-axis reduction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.distributions import sum_event

X = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)


@pytest.mark.parametrize(
    "event_ndims, expected",
    [
        (None, X.sum(axis=(1, 2))),  # reference: numpy sum over all axes but the first
        (0, X),
        (1, X.sum(axis=2)),
        (2, X.sum(axis=(1, 2))),
        (3, X.sum()),
    ],
)
def test_sum_event_matches_numpy(event_ndims, expected):
    np.testing.assert_allclose(sum_event(X, event_ndims), expected)
    jitted = jax.jit(sum_event, static_argnames="event_ndims")
    np.testing.assert_allclose(jitted(X, event_ndims=event_ndims), expected)


def test_sum_event_scalar_event_is_identity():
    x = jnp.arange(5.0)
    np.testing.assert_array_equal(sum_event(x), x)


def test_sum_event_rejects_0d_without_event_ndims():
    with pytest.raises(ValueError, match="0-d array.*event_ndims=0"):
        sum_event(jnp.float32(1.0))
    assert sum_event(jnp.float32(1.0), event_ndims=0) == 1.0


@pytest.mark.parametrize("bad", [-1, 4])
def test_sum_event_out_of_range(bad):
    with pytest.raises(ValueError, match=r"\[0, 3\].*\(2, 3, 4\)"):
        sum_event(X, bad)


@pytest.mark.parametrize("bad", [1.0, True, jnp.int32(1)])
def test_sum_event_non_int(bad):
    with pytest.raises(TypeError, match="Python int"):
        sum_event(X, bad)
