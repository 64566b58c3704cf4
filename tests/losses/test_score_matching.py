"""Score-matching objectives against closed forms on Gaussian models and the exact noised
score of a Gaussian mixture (`jgen.sde.exact`).

References used:
- For the unnormalised Gaussian model s(x) = -P (x - mu) (energy 1/2 (x-mu)^T P (x-mu)),
  grad s = -P, so Hyvarinen's objective is J(x) = -tr P + 1/2 ||P (x - mu)||^2 and its
  expectation under N(m, S) is -tr P + 1/2 tr(P^2 S) + 1/2 (m - mu)^T P^2 (m - mu),
  minimised at mu = m, P = S^-1 (Hyvarinen 2005, Sec. 3).
- For a nonlinear score, the trace from `jax.jacfwd` on single examples.
- The stochastic objectives (Hutchinson, SSM, SSM-VR) are unbiased for J: their means over
  many keys are compared with J within a multiple of their Monte-Carlo standard error.
- DSM's minimiser at noise level sigma is the noised score, `GaussianMixture.score(x, 1, sigma)`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.losses.score_matching import (
    denoising_score_matching,
    exact_score_matching,
    hutchinson_score_matching,
    sliced_score_matching,
)
from jgen.sde.exact import gaussian_mixture

M_TRUE = np.array([1.0, -0.5])
S_TRUE = np.array([[1.0, 0.5], [0.5, 2.0]])
P_MODEL = np.array([[1.5, -0.4], [-0.4, 0.8]])
MU_MODEL = np.array([0.3, 0.2])


def _gaussian_data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(M_TRUE, S_TRUE, size=n)


def _energy_score(mu, a):
    """s = -grad_x E(x) for E(x) = 1/2 (x - mu)^T P (x - mu), P = a a^T: the EBM form of the model."""

    def energy(x):
        p = a @ a.T
        d = x - mu[None, :]
        return 0.5 * jnp.einsum("bi,ij,bj->b", d, p, d)

    return lambda x: -jax.grad(lambda y: jnp.sum(energy(y)))(x)


def _linear_score(mu, p):
    return lambda x: -(x - mu[None, :]) @ p.T


def test_exact_matches_closed_form_per_example_and_in_expectation():
    with jax.enable_x64(True):
        x = jnp.asarray(_gaussian_data(4000))
        j = jax.jit(lambda x: exact_score_matching(_linear_score(jnp.asarray(MU_MODEL), jnp.asarray(P_MODEL)), x))(x)
        xn = np.asarray(x)
        # Per example, from grad s = -P (computed by hand, not by autodiff).
        ref = -np.trace(P_MODEL) + 0.5 * np.sum(((xn - MU_MODEL) @ P_MODEL.T) ** 2, axis=1)
        np.testing.assert_allclose(np.asarray(j), ref, rtol=1e-10, atol=1e-10)
        # In expectation under N(m, S): the population closed form, within the sampling error.
        p2 = P_MODEL @ P_MODEL
        d = M_TRUE - MU_MODEL
        expected = -np.trace(P_MODEL) + 0.5 * np.trace(p2 @ S_TRUE) + 0.5 * d @ p2 @ d
        se = np.std(ref) / np.sqrt(len(ref))
        assert abs(float(jnp.mean(j)) - expected) < 4 * se


def test_exact_trace_of_nonlinear_score_matches_jacobian():
    w = jnp.array([[0.7, -1.2, 0.3], [0.4, 0.5, -0.9], [1.1, 0.2, 0.6]])

    def score(x):  # [B, 3] -> [B, 3], per example, nonlinear
        return jnp.tanh(x @ w.T) * jnp.sin(x)

    @jax.jit
    def run(x):
        jac = jax.vmap(jax.jacfwd(lambda xi: score(xi[None])[0]))(x)  # [B, 3, 3]
        ref = jnp.trace(jac, axis1=1, axis2=2) + 0.5 * jnp.sum(score(x) ** 2, axis=1)
        return exact_score_matching(score, x), ref

    j, ref = run(jax.random.normal(jax.random.PRNGKey(0), (16, 3)))
    np.testing.assert_allclose(np.asarray(j), np.asarray(ref), rtol=1e-5, atol=1e-5)


_ESTIMATORS = {
    "hutchinson-rademacher": lambda f, k, x: hutchinson_score_matching(f, k, x, 2),
    "hutchinson-gaussian": lambda f, k, x: hutchinson_score_matching(f, k, x, 2, noise="gaussian"),
    "ssm": lambda f, k, x: sliced_score_matching(f, k, x, num_projections=2),
    "ssm-vr": lambda f, k, x: sliced_score_matching(f, k, x, num_projections=2, variance_reduction=True),
    "ssm-rademacher": lambda f, k, x: sliced_score_matching(f, k, x, noise="rademacher"),
}


def test_stochastic_objectives_are_unbiased_for_exact():
    with jax.enable_x64(True):
        x = jnp.asarray(_gaussian_data(16, seed=1))
        keys = jax.random.split(jax.random.PRNGKey(3), 3000)

        @jax.jit
        def run(x, keys):
            score = _energy_score(jnp.asarray(MU_MODEL), jnp.linalg.cholesky(jnp.asarray(P_MODEL)))
            draws = {name: jax.vmap(lambda k, fn=fn: fn(score, k, x))(keys) for name, fn in _ESTIMATORS.items()}
            return exact_score_matching(score, x), draws  # [B], {name: [K, B]}

        exact, draws = run(x, keys)
        for name, d in draws.items():
            mean, se = np.mean(d, 0), np.std(d, 0) / np.sqrt(keys.shape[0])
            assert np.max(se) > 0, name  # the estimator is genuinely random
            assert np.all(np.abs(mean - np.asarray(exact)) < 5 * se + 1e-12), name


def _fit(objective, key, steps=300, lr=0.05):
    """Minimises a score-matching objective over (mu, A), P = A A^T, from mu = 0, A = I."""
    x = jnp.asarray(_gaussian_data(2000, seed=2), jnp.float32)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.02))
    params = {"mu": jnp.zeros(2), "a": jnp.eye(2)}

    def loss(p, k):
        return jnp.mean(objective(_energy_score(p["mu"], p["a"]), k, x))

    @jax.jit
    def run(params, key):
        def body(carry, k):
            p, s = carry
            g = jax.grad(loss)(p, k)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, opt.init(params)), jax.random.split(key, steps))
        return p

    p = run(params, key)
    xn = np.asarray(x, np.float64)
    return np.asarray(p["mu"]), np.asarray(p["a"] @ p["a"].T), xn.mean(0), np.cov(xn.T, bias=True)


@pytest.mark.parametrize("name, objective", [
    ("exact", lambda f, k, x: exact_score_matching(f, x)),
    ("hutchinson", lambda f, k, x: hutchinson_score_matching(f, k, x)),
    ("ssm", lambda f, k, x: sliced_score_matching(f, k, x)),
    ("ssm-vr", lambda f, k, x: sliced_score_matching(f, k, x, variance_reduction=True)),
])
def test_minimising_recovers_mean_and_precision(name, objective):
    mu, p, m_hat, s_hat = _fit(objective, jax.random.PRNGKey(4))
    prec_true = np.linalg.inv(S_TRUE)
    # The empirical objective's minimiser is the sample mean and inverse (biased) sample
    # covariance; the stochastic objectives reach it up to the optimiser's noise.
    tol = 1e-3 if name == "exact" else 0.04
    np.testing.assert_allclose(mu, m_hat, atol=tol)
    np.testing.assert_allclose(p, np.linalg.inv(s_hat), atol=tol)
    # Against the truth, tolerances from n = 2000 (sd of the sample mean ~ 0.03, of the
    # precision entries ~ 0.03).
    np.testing.assert_allclose(mu, M_TRUE, atol=0.12)
    np.testing.assert_allclose(p, prec_true, atol=0.15)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.swish(nn.Dense(64)(x))
        h = nn.swish(nn.Dense(64)(h))
        return nn.Dense(2)(h)


def test_dsm_minimiser_is_the_noised_mixture_score():
    gm = gaussian_mixture([0.5, 0.5], [[-1.5, 0.0], [1.5, 0.0]], std=0.5)
    sigma, steps = 0.5, 2000
    net = _MLP()
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, steps))

    def loss(p, k):
        kd, kn = jax.random.split(k)
        return jnp.mean(denoising_score_matching(lambda y, s: net.apply(p, y), kn, gm.sample(kd, 256), sigma))

    @jax.jit
    def train_and_evaluate(key):
        k_init, k_train, k_x, k_n = jax.random.split(key, 4)
        params = net.init(k_init, jnp.zeros((1, 2)))

        def body(carry, k):
            p, s = carry
            g = jax.grad(loss)(p, k)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), jax.random.split(k_train, steps))
        # Held-out points from the noised density p_sigma, where it is non-negligible.
        x = gm.sample(k_x, 2000) + sigma * jax.random.normal(k_n, (2000, 2))
        return net.apply(params, x), gm.score(x, 1.0, sigma)

    s_hat, s_true = train_and_evaluate(jax.random.PRNGKey(0))
    err = np.linalg.norm(np.asarray(s_hat - s_true), axis=1)
    norm = np.linalg.norm(np.asarray(s_true), axis=1)
    assert np.sqrt(np.mean(err ** 2) / np.mean(norm ** 2)) < 0.1
    assert np.median(err / norm) < 0.1


def _scale_gradients(loss_fn, scales):
    """Per-example d loss / d c at each scale c: [len(scales), B]."""
    return jnp.stack([jax.jacfwd(loss_fn)(jnp.asarray(c, jnp.float32)) for c in scales])


@pytest.mark.parametrize("weighting", ["sigma2", "none"])
def test_dsm_exact_noised_score_is_the_minimiser_at_several_levels(weighting):
    gm = gaussian_mixture([0.3, 0.7], [[-1.0, 1.0], [1.0, 0.0]], std=0.4)
    sigmas = jnp.array([0.2, 0.6, 1.5])
    x = gm.sample(jax.random.PRNGKey(0), 20000)

    def loss_fn(c):
        score = lambda y, s: c * gm.score(y, 1.0, s)
        return denoising_score_matching(score, jax.random.PRNGKey(1), x, sigmas, weighting=weighting)

    g = jax.jit(lambda: _scale_gradients(loss_fn, [1.0, 1.25]))()
    mean, se = jnp.mean(g, 1), jnp.std(g, 1) / np.sqrt(x.shape[0])
    assert abs(float(mean[0])) < 4 * float(se[0])  # stationary at the exact score
    assert float(mean[1]) > 8 * float(se[1])  # and the test can tell a 25% error


def test_dsm_draws_levels_uniformly_and_single_level_form():
    sigmas = np.array([0.5, 1.0, 2.0])
    zero = lambda y, s: jnp.zeros_like(y)
    score = lambda y, s: -y * s[:, None]

    @jax.jit
    def run(key):
        # Unweighted with a zero score: loss = ||z||^2 / (2 sigma^2), E = D/2 * mean_l sigma_l^-2.
        levels = denoising_score_matching(zero, key, jnp.zeros((40000, 2)), sigmas, weighting="none")
        # Single level, sigma^2 weighting: loss = 1/2 ||sigma s(x + sigma z) + z||^2, z from the noise key.
        xs = jax.random.normal(jax.random.PRNGKey(6), (8, 2))
        z = jax.random.normal(jax.random.split(key)[1], xs.shape)
        ref = 0.5 * jnp.sum((0.7 * (-(xs + 0.7 * z) * 0.7) + z) ** 2, axis=1)
        return levels, denoising_score_matching(score, key, xs, 0.7), ref

    levels, got, ref = run(jax.random.PRNGKey(0))
    expected = 0.5 * 2 * np.mean(1.0 / sigmas ** 2)
    assert abs(float(jnp.mean(levels)) - expected) < 4 * float(jnp.std(levels)) / np.sqrt(levels.shape[0])
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
    x = jnp.ones((4, 2))
    score = lambda y: -y
    with pytest.raises(ValueError, match="weighting"):
        denoising_score_matching(lambda y, s: -y, jax.random.PRNGKey(0), x, 0.5, weighting="sigma")
    with pytest.raises(ValueError, match="> 0"):
        denoising_score_matching(lambda y, s: -y, jax.random.PRNGKey(0), x, [0.5, 0.0])
    with pytest.raises(ValueError, match="rademacher"):
        sliced_score_matching(score, jax.random.PRNGKey(0), x, noise="uniform")
    with pytest.raises(ValueError, match="num_projections"):
        sliced_score_matching(score, jax.random.PRNGKey(0), x, num_projections=0)
    with pytest.raises(ValueError, match=r"\[B, \.\.\.\]"):
        exact_score_matching(score, jnp.ones((4,)))
    with pytest.raises(ValueError, match="shaped like its input"):
        exact_score_matching(lambda y: y[:, :1], x)
