"""The SDE contract: marginals solve the SDE's moment equations, schedules match their
papers' formulas, parametrisations round-trip, and the exact Gaussian-mixture scores
match scipy and finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jgen.sde import (
    VESDE,
    VPSDE,
    SubVPSDE,
    cosine_betas,
    discrete_schedule,
    gaussian_mixture,
    get_schedule,
    get_sde,
    karras_sigmas,
    linear_betas,
    ring_mixture,
    target,
    to_eps,
    to_score,
    to_x0,
)

SDES = [VESDE(sigma_min=0.01, sigma_max=50.0), VPSDE(), SubVPSDE()]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_marginals_solve_the_moment_equations(sde):
    # For dx = f(t) x dt + g(t) dw: d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2
    # (Saerkkae & Solin 2019, Eqs. 5.50-5.51), checked by autodiff at several times.
    with jax.enable_x64(True):
        for t0 in (0.05, 0.3, 0.7, 0.95):
            t = jnp.array([t0])
            alpha = lambda s: sde.marginal(jnp.array([s]))[0][0]
            var = lambda s: sde.marginal(jnp.array([s]))[1][0] ** 2
            f, g = sde.drift_coeff(t)[0], sde.diffusion(t)[0]
            if not isinstance(sde, VESDE):
                np.testing.assert_allclose(jax.grad(alpha)(t0), f * alpha(t0), rtol=1e-10)
            np.testing.assert_allclose(jax.grad(var)(t0), 2 * f * var(t0) + g ** 2, rtol=1e-8)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_perturb_has_the_marginal_moments_and_the_prior_matches_t_equals_T(sde):
    x0 = jnp.full((20000, 1), 0.7)
    t = jnp.full((20000,), 0.4)
    xt, _ = sde.perturb(jax.random.key(0), x0, t)
    alpha, sigma = sde.marginal(t[:1])
    np.testing.assert_allclose(xt.mean(), alpha[0] * 0.7, atol=4 * sigma[0] / math.sqrt(20000))
    np.testing.assert_allclose(xt.std(), sigma[0], rtol=0.03)
    a_T, s_T = sde.marginal(jnp.array([sde.T]))
    if not isinstance(sde, VESDE):
        assert float(a_T[0]) < 1e-2 and abs(float(s_T[0]) - sde.prior_std) < 1e-3  # alpha(1) = e^{-5.025}
    x = jax.random.normal(jax.random.key(1), (4, 3))
    np.testing.assert_allclose(sde.prior_log_prob(x),
                               scipy.stats.norm(0, sde.prior_std).logpdf(np.asarray(x)).sum(1), rtol=1e-5)


def test_time_shape_errors_and_unknown_sde():
    with pytest.raises(ValueError, match="shape \\[B\\]"):
        VPSDE().drift(jnp.ones((3, 2)), jnp.array(0.5))
    with pytest.raises(ValueError, match="batch size"):
        VPSDE().perturb(jax.random.key(0), jnp.ones((3, 2)), jnp.ones((2,)))
    with pytest.raises(ValueError, match="'vpp'"):
        get_sde("vpp")


def test_schedules_match_their_formulas():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    s = discrete_schedule(b)
    np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1 - b), rtol=1e-5)
    # Nichol & Dhariwal Eq. 17: abar_n = f(n)/f(0), f(t) = cos^2((t/N + s)/(1 + s) pi/2)
    cb = cosine_betas(50)
    f = lambda n: np.cos((n / 50 + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(np.cumprod(1 - cb)[:-1], f(np.arange(1, 50)) / f(0), rtol=1e-9)
    pv = get_schedule("linear", 50).posterior_variance()
    ab = np.cumprod(1 - linear_betas(50))
    np.testing.assert_allclose(pv[1:], linear_betas(50)[1:] * (1 - ab[:-1]) / (1 - ab[1:]), rtol=1e-4)  # float32 storage
    k = karras_sigmas(18)
    assert k[0] == pytest.approx(80.0) and k[-2] == pytest.approx(0.002) and k[-1] == 0 and np.all(np.diff(k) < 0)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        discrete_schedule([0.1, 1.5])
    with pytest.raises(ValueError, match="use num_steps >= 21"):
        linear_betas(10)
    with pytest.raises(ValueError, match="'quadratic'"):
        get_schedule("quadratic", 10)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
def test_parametrisations_round_trip(prediction):
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jax.random.normal(k1, (5, 3))
    eps = jax.random.normal(k2, (5, 3))
    alpha = jnp.linspace(0.2, 0.9, 5)
    sigma = jnp.sqrt(1 - alpha ** 2)
    xt = alpha[:, None] * x0 + sigma[:, None] * eps
    out = target(x0, eps, alpha, sigma, prediction)  # the exact network output
    np.testing.assert_allclose(to_eps(out, xt, alpha, sigma, prediction), eps, atol=1e-5)
    np.testing.assert_allclose(to_x0(out, xt, alpha, sigma, prediction), x0, atol=1e-5)
    np.testing.assert_allclose(to_score(out, xt, alpha, sigma, prediction), -eps / sigma[:, None], atol=1e-4)


def test_gaussian_mixture_log_prob_and_score_match_scipy():
    with jax.enable_x64(True):
        covs = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, 0.0], [0.0, 2.0]]])
        g = gaussian_mixture([0.3, 0.7], [[1.0, -1.0], [-2.0, 0.5]], covs, dtype=jnp.float64)
        x = np.array([[0.1, 0.2], [-1.0, 3.0], [2.0, -2.0]])
        alpha, sigma = 0.6, 0.8
        ref = np.log(sum(w * scipy.stats.multivariate_normal(alpha * m, alpha ** 2 * c + sigma ** 2 * np.eye(2)).pdf(x)
                         for w, m, c in zip([0.3, 0.7], np.asarray(g.means), covs)))
        np.testing.assert_allclose(g.log_prob(jnp.asarray(x), alpha, sigma), ref, rtol=1e-10)
        h = 1e-6  # central finite differences of scipy's log-density
        fd = np.stack([(np.asarray(g.log_prob(jnp.asarray(x + h * e), alpha, sigma))
                        - np.asarray(g.log_prob(jnp.asarray(x - h * e), alpha, sigma))) / (2 * h) for e in np.eye(2)], 1)
        np.testing.assert_allclose(g.score(jnp.asarray(x), alpha, sigma), fd, rtol=1e-6)
        s = g.sample(jax.random.key(0), 40000)
        np.testing.assert_allclose(s.mean(0), g.mean(), atol=0.04)
        np.testing.assert_allclose(np.cov(np.asarray(s).T), g.covariance(), atol=0.08)
    r = ring_mixture(4, radius=2.0, std=0.1)
    np.testing.assert_allclose(r.means[1], [0.0, 2.0], atol=1e-6)
    with pytest.raises(ValueError, match="weights must be"):
        gaussian_mixture([1.0], [[0.0, 0.0], [1.0, 1.0]], std=1.0)
