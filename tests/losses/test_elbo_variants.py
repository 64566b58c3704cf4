"""ELBO variants: Monte Carlo KL vs closed form, free bits, KL annealing, and the
IWAE reparameterised gradient's unbiasedness for the K-sample bound."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.distributions import diag_gaussian_log_prob
from jgen.losses import elbo_terms, iwae_bound, linear_kl_warmup, make_elbo_loss


def _gaussian_model(latent=4, d=6, b=3, seed=0):
    rng = np.random.default_rng(seed)
    W, x = rng.normal(size=(d, latent)), rng.normal(size=(b, d))
    params = {"W": W, "q_mean": rng.normal(size=(b, latent)), "q_log_std": rng.normal(size=(b, latent)) * 0.3}

    def enc(p, x):
        return p["q_mean"], p["q_log_std"]

    def ll(p, x, z):
        mean = z @ p["W"].T
        return diag_gaussian_log_prob(x, mean, jnp.zeros_like(mean))

    return params, x, enc, ll


def test_monte_carlo_kl_matches_closed_form_within_standard_error():
    with jax.enable_x64(True):
        params, x, enc, ll = _gaussian_model()
        n = 4000
        keys = jax.random.split(jax.random.PRNGKey(0), n)
        mc = jax.vmap(lambda k: elbo_terms(enc, ll, params, k, x, kl_estimator="mc")["kl"])(keys)  # [n, B]
        closed = elbo_terms(enc, ll, params, keys[0], x)["kl"]
        se = np.asarray(mc.std(0)) / np.sqrt(n)
        z = np.abs(np.asarray(mc.mean(0)) - np.asarray(closed)) / se
        assert np.all(z < 4), (mc.mean(0), closed, se)
        with pytest.raises(ValueError, match="kl_estimator='exact'"):
            elbo_terms(enc, ll, params, keys[0], x, kl_estimator="exact")


def test_free_bits_floor_and_annealing():
    params, x, enc, ll = _gaussian_model()
    key = jax.random.PRNGKey(0)
    terms = elbo_terms(enc, ll, params, jax.random.split(key)[1], x)
    kl_dims = np.asarray(terms["kl_per_dim"]).mean(0)
    lam = float(np.median(kl_dims))
    loss, aux = make_elbo_loss(enc, ll, free_bits=lam)(params, key, {"image": x})
    expected = float(np.mean(-terms["log_likelihood"]) + np.sum(np.maximum(kl_dims, lam)))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(aux["kl"], terms["kl"], rtol=1e-6)  # aux reports the true KL

    sched = linear_kl_warmup(100)
    anneal = make_elbo_loss(enc, ll, beta=sched)
    l0, _ = anneal(params, key, {"image": x, "step": jnp.int32(0)})
    l50, _ = anneal(params, key, {"image": x, "step": jnp.int32(50)})
    l200, _ = anneal(params, key, {"image": x, "step": jnp.int32(200)})
    recon, kl = float(np.mean(-terms["log_likelihood"])), float(np.mean(terms["kl"]))
    np.testing.assert_allclose([l0, l50, l200], [recon, recon + 0.5 * kl, recon + kl], rtol=1e-5)
    with pytest.raises(ValueError, match="free_bits needs"):
        make_elbo_loss(enc, ll, free_bits=0.1, kl_estimator="mc")


# --- IWAE gradient: a 1-D model where L_K can be computed by Gauss-Hermite quadrature.
# p(z) = N(0, 1), p(x|z) = N(a z, 0.5^2); q(z|x) = N(m, exp(ls)^2); theta = (m, ls, a).
X = 1.3


def _parts():
    """The model as encode / log-likelihood functions of theta = (m, ls, a)."""

    def enc(p, x):
        return jnp.full((1, 1), p[0]), jnp.full((1, 1), p[1])

    def ll(p, x, z):
        mean = p[2] * z
        return diag_gaussian_log_prob(x, mean, jnp.full_like(mean, jnp.log(0.5)))

    return enc, ll


def _bound_by_quadrature(theta, k, nodes):
    """L_K = E_{eps_1..K ~ N(0,1)} log mean_k w(m + s eps_k), by tensor Gauss-Hermite."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / np.sqrt(2 * np.pi)
    m, ls, a = theta
    s = np.exp(ls)
    total = 0.0
    for idx in itertools.product(range(nodes), repeat=k):
        eps = t[list(idx)]
        z = m + s * eps
        log_w = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)) + (
            -0.5 * ((X - a * z) / 0.5) ** 2 - np.log(0.5) - 0.5 * np.log(2 * np.pi)
        ) - (-0.5 * eps**2 - ls - 0.5 * np.log(2 * np.pi))
        mx = log_w.max()
        total += np.prod(w[list(idx)]) * (mx + np.log(np.mean(np.exp(log_w - mx))))
    return total


@pytest.mark.parametrize("k,nodes", [(2, 40), (3, 16)])
def test_iwae_gradient_is_unbiased_for_the_bound(k, nodes):
    theta = np.array([0.4, -0.6, 0.9])
    h = 1e-4
    fd = np.array([
        (_bound_by_quadrature(theta + h * e, k, nodes) - _bound_by_quadrature(theta - h * e, k, nodes)) / (2 * h)
        for e in np.eye(3)
    ])
    with jax.enable_x64(True):
        enc, ll = _parts()
        x = jnp.full((1, 1), X)

        def estimate(th, key):
            return iwae_bound(enc, ll, th, key, x, num_samples=k)[0]

        n = 40000
        grads = jax.jit(jax.vmap(jax.grad(estimate), in_axes=(None, 0)))(jnp.asarray(theta), jax.random.split(jax.random.PRNGKey(k), n))
        mean, se = np.asarray(grads.mean(0)), np.asarray(grads.std(0)) / np.sqrt(n)
    assert np.all(np.abs(mean - fd) < 4 * se + 1e-3), (mean, fd, se)
    # And the bound itself: the Monte Carlo mean of L_K matches the quadrature value.
    with jax.enable_x64(True):
        vals = np.asarray(jax.vmap(lambda kk: estimate(jnp.asarray(theta), kk))(jax.random.split(jax.random.PRNGKey(7), n)))
    np.testing.assert_allclose(vals.mean(), _bound_by_quadrature(theta, k, nodes), atol=4 * vals.std() / np.sqrt(n))
