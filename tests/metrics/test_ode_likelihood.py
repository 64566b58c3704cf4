"""Tests for likelihoods through the probability-flow ODE and for the bits/dim of
dequantised 8-bit data (`jgen.metrics.ode_likelihood`).

Independent references: the closed-form log-density of a Gaussian's noised marginal
:math:`\\mathcal N(\\alpha\\mu, \\alpha^2\\Sigma + \\sigma^2 I)` (`jgen.sde.exact`), whose
exact score drives the ODE; the Hutchinson estimator's Monte-Carlo mean against the
exact-trace value; runtime callback counts for the NFE; hand computations for the
dequantisation arithmetic (a uniform density scores exactly 8 bits/dim).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.metrics.ode_likelihood import (
    dequantized_bits_per_dim,
    dequantized_log_prob_bound,
    ode_log_prob,
)
from jgen.sde import VESDE, VPSDE, gaussian_mixture

MEAN3 = [0.5, -1.0, 0.3]
COV3 = [[0.6, 0.2, -0.1], [0.2, 0.4, 0.05], [-0.1, 0.05, 0.3]]


def gaussian(mean, cov, dtype=jnp.float64):
    """A one-component GaussianMixture (the Gaussian case of the exact references)."""
    return gaussian_mixture([1.0], [mean], [cov], dtype=dtype)


def marginal_log_prob(gm, sde, t):
    """x -> log p_t(x), the exact density of the SDE's marginal at time t."""
    return lambda x: gm.log_prob(x, *sde.marginal(jnp.full((x.shape[0],), t, x.dtype)))


def exact_score(gm, sde):
    return lambda x, t: gm.score(x, *sde.marginal(t))


def test_exact_trace_log_prob_equals_the_gaussian_marginal_density_and_counts_nfe():
    counts = []
    with jax.enable_x64(True):
        gm, sde = gaussian(MEAN3, COV3), VPSDE()
        x = jnp.asarray(np.concatenate([np.random.default_rng(0).multivariate_normal(MEAN3, COV3, 5),
                                        [[2.0, 1.0, -1.0]]]))

        def counted_score(x, t):
            jax.debug.callback(lambda: counts.append(1))
            return exact_score(gm, sde)(x, t)

        @jax.jit
        def run(x):
            log_p, info = ode_log_prob(counted_score, x, sde=sde, trace="exact", rtol=1e-9, atol=1e-9)
            refs = {"p_tmin": marginal_log_prob(gm, sde, sde.t_min)(x),  # log p_{t_min}(x): exact
                    "p_T": marginal_log_prob(gm, sde, sde.T)(info.x_T),
                    "prior": sde.prior_log_prob(info.x_T), "data": gm.log_prob(x)}
            return log_p, info, refs

        log_p, info, refs = run(x)
        want = refs["p_tmin"]
        np.testing.assert_allclose(log_p, info.prior_log_prob + info.delta_log_prob, atol=1e-12)
        np.testing.assert_allclose(info.prior_log_prob, refs["prior"], atol=1e-12)
        # The ODE maps p_{t_min} to the exact p_T; the N(0, I) prior differs from p_T by
        # log pi(x_T) - log p_T(x_T) (alpha(T) ~ 7e-3: small, not zero). Without it the
        # result is the exact density to the solver's tolerance.
        mismatch = info.prior_log_prob - refs["p_T"]
        np.testing.assert_allclose(log_p - mismatch, want, rtol=0, atol=2e-6)
        assert np.all(np.abs(mismatch) < 0.05) and np.all(np.abs(log_p - want) < 0.05)
        # t_min = 1e-3 is tiny: the data density itself is close (not equal).
        np.testing.assert_allclose(log_p - mismatch, refs["data"], atol=2e-2)
        # NFE: diffrax's stats (1 + 6 per attempted Dopri5 step) = evaluations counted.
        assert int(info.nfe) == 1 + 6 * int(info.num_steps) == len(counts)


def test_hutchinson_log_prob_is_unbiased_on_ve():
    n = 128
    with jax.enable_x64(True):
        gm, sde = gaussian([0.5, -0.5], [[0.5, 0.3], [0.3, 0.4]]), VESDE(sigma_min=0.01, sigma_max=20.0)
        x = jnp.asarray(np.random.default_rng(1).multivariate_normal([0.5, -0.5], [[0.5, 0.3], [0.3, 0.4]], 3))
        score = exact_score(gm, sde)
        # The exact p_T as the prior: the exact-trace value is log p_{t_min}(x) itself.
        opts = {"sde": sde, "rtol": 1e-7, "atol": 1e-7,
                "prior_log_prob_fn": marginal_log_prob(gm, sde, sde.T)}

        @jax.jit
        def run(x, keys):
            est = {noise: jax.vmap(lambda k, noise=noise: ode_log_prob(
                score, x, key=k, trace="hutchinson", hutchinson_noise=noise, **opts)[0])(keys)
                for noise in ("rademacher", "gaussian")}
            return est, marginal_log_prob(gm, sde, sde.t_min)(x)

        est, exact = run(x, jax.random.split(jax.random.PRNGKey(2), n))
        for noise, values in est.items():
            values = np.asarray(values)  # [n, B]
            se = values.std(axis=0, ddof=1) / math.sqrt(n)
            assert np.all(se > 1e-4), (noise, se)  # genuinely random (off-diagonal covariance)
            z = (values.mean(axis=0) - exact) / se
            assert np.all(np.abs(z) < 4), (noise, z)


def test_image_shaped_data_and_dequantized_bits_per_dim_match_the_exact_density():
    # A 4-D Gaussian on [-1, 1]-scaled pixels of 2x2x1 "images".
    with jax.enable_x64(True):
        cov = 0.05 * np.eye(4) + 0.02
        gm, sde = gaussian([0.1, -0.2, 0.0, 0.3], cov), VPSDE()
        pixels = jnp.asarray(np.random.default_rng(3).integers(80, 176, (3, 2, 2, 1)), jnp.int32)

        def score(x, t):  # per example: flatten, exact score, reshape back
            s = gm.score(jnp.reshape(x, (x.shape[0], 4)), *sde.marginal(t))
            return jnp.reshape(s, x.shape)

        prior = lambda z: marginal_log_prob(gm, sde, sde.T)(jnp.reshape(z, (z.shape[0], 4)))
        ode = lambda k, y: ode_log_prob(score, y, sde=sde, trace="exact", rtol=1e-9, atol=1e-9,
                                        prior_log_prob_fn=prior)[0]
        exact = lambda k, y: marginal_log_prob(gm, sde, sde.t_min)(jnp.reshape(y, (y.shape[0], 4)))
        key = jax.random.PRNGKey(4)
        bpd = jax.jit(lambda p: (dequantized_bits_per_dim(key, ode, p, num_samples=2),
                                 dequantized_bits_per_dim(key, exact, p, num_samples=2)))
        got, want = bpd(pixels)
        assert got.shape == (3,)
        np.testing.assert_allclose(got, want, atol=1e-6)  # the same u: only the ODE error


def test_dequantization_arithmetic_by_hand():
    key = jax.random.PRNGKey(5)
    pixels = jnp.asarray([[0, 17, 255], [128, 3, 200]], jnp.uint8)  # B = 2, D = 3
    d = 3
    # A density uniform on the data range scores log2(256) = 8 bits/dim exactly:
    # [-1, 1]^D: log p = -D log 2 and bound = -D log 2 + D log(2/256) = -D log 256.
    uniform_pm1 = lambda k, y: jnp.full(y.shape[:1], -d * math.log(2.0))
    np.testing.assert_allclose(dequantized_bits_per_dim(key, uniform_pm1, pixels), [8.0, 8.0], rtol=1e-6)
    uniform_01 = lambda k, y: jnp.zeros(y.shape[:1])
    np.testing.assert_allclose(dequantized_bits_per_dim(key, uniform_01, pixels, scale=1.0, shift=0.0),
                               [8.0, 8.0], rtol=1e-6)
    # The bound's log-volume term: log p + D log(a / K).
    np.testing.assert_allclose(dequantized_log_prob_bound(jnp.asarray(-3.0), 4, scale=2.0, num_levels=256),
                               -3.0 + 4 * math.log(2.0 / 256.0), rtol=1e-6)

    # y = 2 (k + u) / 256 - 1 lands in pixel k's bin; with log p(y) = sum(y) the MC mean
    # over u is sum(2 (k + 1/2) / 256 - 1) (E u = 1/2), within its standard error.
    seen = []

    def linear(k, y):
        jax.debug.callback(lambda y: seen.append(np.asarray(y)), y)
        return jnp.sum(y, axis=1)

    s = 2000
    bpd = dequantized_bits_per_dim(key, linear, pixels, num_samples=s)
    y = np.stack(seen)  # [S, B, D]
    assert y.shape == (s, 2, 3)
    np.testing.assert_array_equal(np.floor((y + 1) / 2 * 256), np.broadcast_to(pixels, y.shape))
    k = np.asarray(pixels, np.float64)
    mean_log_p = np.sum(2 * (k + 0.5) / 256 - 1, axis=1)
    want = -(mean_log_p + d * math.log(2 / 256)) / (d * math.log(2))
    se = (2 / 256) * math.sqrt(d / 12 / s) / (d * math.log(2))  # sd of sum(2u/256) / sqrt(S)
    np.testing.assert_allclose(bpd, want, atol=4 * se)
    # ...and the bpd is the same arithmetic applied to this run's draws.
    np.testing.assert_allclose(bpd, -(y.sum(-1).mean(0) + d * math.log(2 / 256)) / (d * math.log(2)),
                               rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
    sde, x = VPSDE(), jnp.zeros((2, 2))
    score = lambda x, t: -x
    with pytest.raises(ValueError, match="'brute'"):
        ode_log_prob(score, x, sde=sde, trace="brute")
    with pytest.raises(ValueError, match="'rk4'"):
        ode_log_prob(score, x, sde=sde, trace="exact", method="rk4")
    with pytest.raises(ValueError, match="'uniform'"):
        ode_log_prob(score, x, sde=sde, key=jax.random.PRNGKey(0), hutchinson_noise="uniform")
    with pytest.raises(ValueError, match="key=None"):
        ode_log_prob(score, x, sde=sde)  # Hutchinson by default needs a key
    with pytest.raises(ValueError, match="num_steps=None"):
        ode_log_prob(score, x, sde=sde, trace="exact", method="heun")
    with pytest.raises(ValueError, match="t_start"):
        ode_log_prob(score, x, sde=sde, trace="exact", t_start=0.0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ode_log_prob(score, jnp.zeros(2), sde=sde, trace="exact")
    with pytest.raises(TypeError, match="LinearSDE"):
        ode_log_prob(score, x, sde="vp", trace="exact")
    with pytest.raises(TypeError, match="float32"):
        dequantized_bits_per_dim(jax.random.PRNGKey(0), lambda k, y: y[:, 0], x)
    with pytest.raises(ValueError, match="num_samples"):
        dequantized_bits_per_dim(jax.random.PRNGKey(0), lambda k, y: y[:, 0], x.astype(jnp.int32),
                                 num_samples=0)
