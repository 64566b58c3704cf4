"""Adapters between sampler conventions, checked with exact Gaussian-mixture scores:
each adapted function must equal the exact quantity computed directly in the target
sampler's own coordinates (Tweedie's formula E[x0 | x] = (x + sigma^2 score) / alpha)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.sde import VESDE, VPSDE, SubVPSDE, ring_mixture
from jgen.sde.adapters import (
    discrete_schedule_from_sde,
    edm_denoiser_from_x0,
    edm_sigma_range,
    eps_fn_from_score,
    sigma_ratio,
    time_from_sigma_ratio,
)

SDES = [VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=20.0)]


def _gmm():
    return ring_mixture(4, radius=2.0, std=0.3, dtype=jnp.float64)


def _exact_fns(sde, gmm):
    def score_fn(x, t):
        alpha, sigma = sde.marginal(t)
        return gmm.score(x, alpha, sigma)

    def x0_fn(x, t):  # Tweedie
        alpha, sigma = sde.marginal(t)
        return (x + sigma[:, None] ** 2 * score_fn(x, t)) / alpha[:, None]

    return score_fn, x0_fn


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_edm_denoiser_and_time_inversion(sde):
    with jax.enable_x64(True):
        t = jnp.linspace(0.01, 0.99, 7)
        np.testing.assert_allclose(time_from_sigma_ratio(sde, sigma_ratio(sde, t)), t, rtol=1e-9)
        gmm = _gmm()
        _, x0_fn = _exact_fns(sde, gmm)
        denoiser = edm_denoiser_from_x0(x0_fn, sde)
        x = jax.random.normal(jax.random.key(0), (7, 2), jnp.float64) * 3
        sig = jnp.array([0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0])
        lo, hi = edm_sigma_range(sde)
        sig = jnp.clip(sig, lo * 1.01, hi * 0.99)
        direct = x + sig[:, None] ** 2 * gmm.score(x, jnp.ones(7), sig)  # Tweedie in EDM coordinates
        np.testing.assert_allclose(denoiser(x, sig), direct, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("sde", SDES[:2], ids=lambda s: type(s).__name__)
def test_discrete_schedule_and_eps_adapter_match_direct_ddpm_quantities(sde):
    with jax.enable_x64(True):
        n_steps = 50
        sched = discrete_schedule_from_sde(sde, n_steps)
        gmm = _gmm()
        score_fn, _ = _exact_fns(sde, gmm)
        eps_fn = eps_fn_from_score(score_fn, sde, n_steps)
        n = jnp.array([0, 10, 25, 49])
        a, s = sched.marginal(n)
        np.testing.assert_allclose(a ** 2 + s ** 2, 1.0, rtol=1e-6)
        t = sde.t_min + (sde.T - sde.t_min) * n / (n_steps - 1)
        alpha, sigma = sde.marginal(t)
        np.testing.assert_allclose(a / s, alpha / sigma, rtol=1e-3)  # same SNR (schedules are stored float32)
        y = jax.random.normal(jax.random.key(1), (4, 2), jnp.float64)
        direct = -s[:, None] * gmm.score(y, a, s)  # eps in the DDPM's own coordinates
        np.testing.assert_allclose(eps_fn(y, n), direct, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="num_steps >= 2"):
        discrete_schedule_from_sde(VPSDE(), 1)
