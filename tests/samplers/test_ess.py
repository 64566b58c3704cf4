"""effective_sample_size against the AR(1) closed form.

For x_t = rho x_{t-1} + e_t the autocorrelation is rho^t, so the integrated
autocorrelation time is (1 + rho) / (1 - rho) and M chains of N draws have
ESS -> M N (1 - rho) / (1 + rho). The chains are simulated with scipy.signal.lfilter
from their stationary distribution; 32 independent dimensions are replicates.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from jgen.samplers import effective_sample_size

ess_fn = jax.jit(effective_sample_size)

N, M, D = 4000, 4, 32


def ar1(rho, seed, n=N, m=M, d=D):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, m, d))
    e[0] /= np.sqrt(1.0 - rho**2)  # start in the stationary distribution
    return signal.lfilter([1.0], [1.0, -rho], e, axis=0)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, -0.5])
def test_ess_matches_ar1_closed_form(rho):
    ess = np.asarray(ess_fn(jnp.asarray(ar1(rho, seed=int(100 * (rho + 1))))))
    expected = N * M * (1 - rho) / (1 + rho)
    assert ess.shape == (D,)
    # The mean over 32 replicates within 5% (its sd is ~1.5% at rho = 0.9); each within 30%.
    np.testing.assert_allclose(ess.mean(), expected, rtol=0.05)
    np.testing.assert_allclose(ess, expected, rtol=0.3)


def test_ess_single_chain_and_event_shape():
    x = ar1(0.5, seed=7, m=1, d=6).reshape(N, 1, 2, 3)
    ess = np.asarray(ess_fn(jnp.asarray(x)))
    assert ess.shape == (2, 3)
    np.testing.assert_allclose(ess.mean(), N / 3, rtol=0.1)
    assert np.ndim(ess_fn(jnp.asarray(x[:, :, 0, 0]))) == 0


def test_ess_sees_chains_that_disagree():
    """Well-mixed chains around different means: each alone looks iid, but the
    between-chain variance makes the pooled ESS tiny."""
    x = ar1(0.0, seed=8, d=2) + np.arange(M)[None, :, None] * 3.0
    ess = np.asarray(ess_fn(jnp.asarray(x)))
    assert np.all(ess < 0.01 * N * M)
    per_chain = np.asarray(ess_fn(jnp.asarray(x[:, :1])))
    np.testing.assert_allclose(per_chain, N, rtol=0.15)


@pytest.mark.parametrize("shape", [(100,), (3, 2)])
def test_ess_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match=rf"received shape \({shape[0]},"):
        effective_sample_size(jnp.zeros(shape))
