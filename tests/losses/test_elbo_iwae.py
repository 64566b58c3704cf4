"""ELBO and IWAE on a linear-Gaussian model, where log p(x) and the ELBO are exact.

Model: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D), so p(x) = N(b, W W^T + s^2 I)
(the reference, from scipy.stats.multivariate_normal). The posterior used is a
deliberately imperfect diagonal Gaussian, so every bound is strictly below log p.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64
from scipy import stats

from jgen.distributions import diag_gaussian_log_prob
from jgen.losses import elbo_terms, iwae_bound, make_elbo_loss

D, LATENT, B = 5, 3, 4
SIGMA = 0.7


def _model():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(D, LATENT))
    b = rng.normal(size=(D,))
    x = rng.normal(size=(B, D)) * 2.0
    cov = W @ W.T + SIGMA**2 * np.eye(D)
    log_px = stats.multivariate_normal(mean=b, cov=cov).logpdf(x)
    # Exact posterior N(mu, S): S = (I + W^T W / s^2)^-1, mu = S W^T (x - b) / s^2.
    S = np.linalg.inv(np.eye(LATENT) + W.T @ W / SIGMA**2)
    mu = (x - b) @ W @ S.T / SIGMA**2
    q_mean = mu + 0.3  # imperfect mean
    q_log_std = 0.5 * np.log(np.diag(S)) * np.ones((B, 1)) + 0.2  # diagonal, too wide
    params = {"W": W, "b": b, "q_mean": q_mean, "q_log_std": q_log_std}

    def encode_fn(p, x):
        return p["q_mean"], p["q_log_std"]

    def log_likelihood_fn(p, x, z):
        mean = z @ p["W"].T + p["b"][None, :]
        return diag_gaussian_log_prob(x, mean, jnp.log(SIGMA) * jnp.ones_like(mean))

    # Closed-form ELBO: E_q log p(x|z) - KL(q || N(0, I)).
    s2 = np.exp(2 * q_log_std)
    resid = x - q_mean @ W.T - b
    exp_ll = -0.5 * D * np.log(2 * np.pi * SIGMA**2) - (
        np.sum(resid**2, -1) + np.sum(s2 * np.sum(W**2, 0), -1)
    ) / (2 * SIGMA**2)
    kl = 0.5 * np.sum(s2 + q_mean**2 - 1 - 2 * q_log_std, -1)
    return params, x, encode_fn, log_likelihood_fn, log_px, exp_ll - kl


def test_elbo_matches_closed_form():
    with enable_x64(True):
        params, x, enc, ll, _, exact_elbo = _model()
        # 200k samples: the Monte Carlo standard error of each entry is ~0.015 nats.
        terms = jax.jit(lambda k: elbo_terms(enc, ll, params, k, x, num_samples=200_000))(jax.random.PRNGKey(1))
        np.testing.assert_allclose(terms["elbo"], exact_elbo, rtol=0, atol=0.075)
        assert terms["elbo"].shape == (B,)


def test_bounds_are_ordered_and_iwae_approaches_log_px():
    with enable_x64(True):
        params, x, enc, ll, log_px, exact_elbo = _model()
        reps = 400

        def mean_bound(k, key):
            keys = jax.random.split(key, reps)
            vals = jax.vmap(lambda kk: iwae_bound(enc, ll, params, kk, x, num_samples=k))(keys)
            return np.asarray(vals.mean(0)), np.asarray(vals.std(0) / np.sqrt(reps))

        means, ses = {}, {}
        for i, k in enumerate((1, 10, 100, 1000)):
            means[k], ses[k] = mean_bound(k, jax.random.PRNGKey(10 + i))
            assert np.all(means[k] <= log_px + 3 * ses[k] + 1e-9), (k, means[k], log_px)
        # IWAE-1 is the ELBO (in expectation): within 4 standard errors of the closed form.
        assert np.all(np.abs(means[1] - exact_elbo) < 4 * ses[1]), (means[1], exact_elbo, ses[1])
        # Strictly increasing in K, by clear margins for this imperfect posterior.
        assert np.all(exact_elbo < means[10]) and np.all(means[10] < means[100]) and np.all(means[100] < means[1000])
        # The gap to log p(x) shrinks with K; with K = 5000 (chunked) it is small.
        big = iwae_bound(enc, ll, params, jax.random.PRNGKey(99), x, num_samples=5000, chunk_size=500)
        assert np.all(np.abs(np.asarray(big) - log_px) < np.abs(exact_elbo - log_px) / 10)
        assert np.all(np.abs(np.asarray(big) - log_px) < 0.05)


def test_iwae_chunking_is_memory_layout_only():
    """Chunked and one-shot IWAE are both unbiased for the same bound: equal in mean."""
    with enable_x64(True):
        params, x, enc, ll, _, _ = _model()
        f = jax.jit(lambda k, c: iwae_bound(enc, ll, params, k, x, num_samples=200, chunk_size=c), static_argnums=1)
        a = np.mean([f(jax.random.PRNGKey(i), 200) for i in range(100)], 0)
        b = np.mean([f(jax.random.PRNGKey(1000 + i), 20) for i in range(100)], 0)
        np.testing.assert_allclose(a, b, atol=0.03)


def test_iwae_chunk_must_divide():
    params, x, enc, ll, _, _ = _model()
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        iwae_bound(enc, ll, params, jax.random.PRNGKey(0), x, num_samples=100, chunk_size=30)


def test_elbo_loss_masks_padding():
    with enable_x64(True):
        params, x, enc, ll, _, _ = _model()
        loss_fn = make_elbo_loss(enc, ll)
        mask = jnp.array([1.0, 1.0, 0.0, 0.0])
        loss, aux = loss_fn(params, jax.random.PRNGKey(0), {"image": x, "mask": mask})
        assert set(aux) == {"nelbo", "nll_recon", "kl"} and aux["kl"].shape == (B,)
        np.testing.assert_allclose(loss, np.mean(np.asarray(aux["nelbo"])[:2]), rtol=1e-12)
