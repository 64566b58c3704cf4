"""Diffusion objectives against closed forms for Gaussian (mixture) data.

References used:
- Gaussian data x0 ~ N(0, s^2 I) noised as x_n = a x0 + g eps has Gaussian posteriors:
  E[x0 | x_n] = a s^2 x_n / V, E[eps | x_n] = g x_n / V with V = a^2 s^2 + g^2, and
  Var(y | x_n) = Var(y) - Cov(y, x_n)^2 / V for any linear target y (eps, x0, v). These give
  the exact predictors, the irreducible simple loss, and the expected value of every term
  of the DDPM bound, written here in numpy float64 independently of the library.
- The exact noised score of a Gaussian mixture (`jgen.sde.exact.GaussianMixture.score`) and
  Tweedie's formula E[x0 | x] = x + sigma^2 grad log p_sigma(x) for the EDM denoiser.
- A minimiser test: for a model c * (exact conditional mean), the per-example derivative of
  the loss in c averages to 0 at c = 1 (within 4 standard errors) and not at c = 1.25.
- scipy.stats.norm for the discretized decoder's bin masses, scipy.integrate for a KL,
  scipy.stats.binomtest for label dropping.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jgen.losses.diffusion import (
    classifier_free_guidance,
    ddpm_loss,
    ddpm_vlb_terms,
    discretized_gaussian_log_prob,
    drop_labels,
    edm_loss,
    edm_precondition,
    gaussian_kl,
    guided,
    sde_loss,
)
from jgen.sde.exact import gaussian_mixture
from jgen.sde.schedules import cosine_betas, discrete_schedule, get_schedule
from jgen.sde.sde import VESDE, VPSDE, SubVPSDE

S = 0.5  # data std of the Gaussian test data
H = 0.5 * math.log(2 * math.pi * S ** 2) + 0.5  # its entropy = the exact NLL per dimension, nats


def _minimiser_check(loss_of_scale, *, power_scale=1.25, power_se=8.0):
    """Per-example d loss / d c at c = 1 averages to ~0, and at `power_scale` clearly does not.

    Returns the per-example loss at c = 1."""

    @jax.jit
    def run():
        one = jnp.float32(1.0)
        loss, g1 = jax.jvp(loss_of_scale, (one,), (one,))
        return loss, jnp.stack([g1, jax.jvp(loss_of_scale, (jnp.float32(power_scale),), (one,))[1]])

    loss, g = run()
    mean, se = np.asarray(jnp.mean(g, 1)), np.asarray(jnp.std(g, 1)) / np.sqrt(g.shape[1])
    assert abs(mean[0]) < 4 * se[0], (mean, se)
    assert mean[1] > power_se * se[1], (mean, se)
    return loss


# -- discretized decoder and Gaussian KL ---------------------------------------------------

@pytest.mark.parametrize("mean, log_scale", [(0.0, 0.0), (0.3, -3.0), (0.99, -7.0), (-3.0, 1.0), (0.5, -9.0)])
def test_discretized_gaussian_sums_to_one_and_matches_scipy(mean, log_scale):
    with jax.enable_x64(True):
        grid = np.linspace(-1.0, 1.0, 256)  # the 8-bit values 2k/255 - 1
        logp = np.asarray(discretized_gaussian_log_prob(jnp.asarray(grid), jnp.float64(mean), jnp.float64(log_scale)))
        grads = jax.grad(lambda m, s: jnp.sum(discretized_gaussian_log_prob(jnp.asarray(grid), m, s)), (0, 1))(
            jnp.float64(mean), jnp.float64(log_scale))
    assert abs(np.sum(np.exp(logp)) - 1.0) < 1e-10
    assert np.all(np.isfinite(grads))  # also at the open-ended edge bins
    sd, h = math.exp(log_scale), 1.0 / 255
    hi = np.where(grid > 1 - h, np.inf, grid + h)
    lo = np.where(grid < -1 + h, -np.inf, grid - h)
    # Differences of cdfs below the mean and of survival functions above it (no cancellation).
    upper = grid > mean
    ref = np.where(upper, stats.norm.sf(lo, mean, sd) - stats.norm.sf(hi, mean, sd),
                   stats.norm.cdf(hi, mean, sd) - stats.norm.cdf(lo, mean, sd))
    ok = ref > 1e-200
    np.testing.assert_allclose(np.exp(logp[ok]), ref[ok], rtol=1e-6, atol=1e-300)


def test_gaussian_kl_matches_numerical_integral():
    for m1, v1, m2, v2 in [(0.3, 0.5, -0.2, 1.7), (1.0, 2.0, 1.0, 2.0001), (0.0, 1e-3, 0.1, 2e-3)]:
        q, p = stats.norm(m1, math.sqrt(v1)), stats.norm(m2, math.sqrt(v2))
        lim = 12 * math.sqrt(v1)
        integrand = lambda x, q=q, p=p: q.pdf(x) * (q.logpdf(x) - p.logpdf(x))
        ref = integrate.quad(integrand, m1 - lim, m1 + lim, epsabs=1e-13)[0]
        with jax.enable_x64(True):
            got = float(gaussian_kl(jnp.float64(m1), jnp.log(v1), jnp.float64(m2), jnp.log(v2)))
        assert abs(got - ref) < 1e-9 + 1e-7 * abs(ref)


# -- DDPM ------------------------------------------------------------------------------------

def _posterior_moments(schedule, n):
    """Gaussian-data conditional means of (eps, x0, v) given x_n, as coefficients on x_n, [B, 1]."""
    ab = schedule.alphas_cumprod[n][:, None]
    a, g = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
    var = a ** 2 * S ** 2 + g ** 2
    e_eps, e_x0 = g / var, a * S ** 2 / var
    return {"eps": e_eps, "x0": e_x0, "v": a * e_eps - g * e_x0}


def _exact_model(schedule, prediction):
    """model_fn(params = c, x_n, n, labels) = c * E[target | x_n] for Gaussian data N(0, S^2 I)."""
    return lambda c, x, n, labels: c * _posterior_moments(schedule, n)[prediction] * x


def _irreducible_mse(betas, prediction):
    """E_n Var(target | x_n) for uniform n (numpy float64)."""
    ab = np.cumprod(1.0 - np.asarray(betas, np.float64))
    a2, g2 = ab, 1.0 - ab
    var = a2 * S ** 2 + g2
    a, g = np.sqrt(a2), np.sqrt(g2)
    var_y = {"eps": 1.0, "x0": S ** 2, "v": a2 + g2 * S ** 2}[prediction]
    cov = {"eps": g, "x0": a * S ** 2, "v": a * g * (1.0 - S ** 2)}[prediction]
    return float(np.mean(var_y - cov ** 2 / var))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddpm_simple_loss_exact_predictor_attains_analytic_minimum(prediction):
    schedule = get_schedule("linear", 1000)
    x0 = S * jax.random.normal(jax.random.PRNGKey(0), (20000, 2))
    model = _exact_model(schedule, prediction)

    def loss_of_scale(c):
        return ddpm_loss(model, c, jax.random.PRNGKey(1), x0, schedule=schedule, prediction=prediction)[0]

    loss = _minimiser_check(loss_of_scale)
    expected = _irreducible_mse(np.asarray(schedule.betas), prediction)
    assert abs(float(jnp.mean(loss)) - expected) < 4 * float(jnp.std(loss)) / np.sqrt(loss.shape[0])


def _vlb_closed_form(betas, variance):
    """Expected DDPM bound terms for N(0, S^2) data, 1-D, exact posterior-mean predictor.

    Returns (prior, per-step expected terms [N] with the decoder at index 0, total), nats.
    `variance` is "large", "small" or "exact" (the true reverse variance)."""
    b = np.asarray(betas, np.float64)
    ab = np.cumprod(1.0 - b)
    ab_prev = np.r_[1.0, ab[:-1]]
    post = b * (1.0 - ab_prev) / (1.0 - ab)
    post_clipped = np.r_[post[1], post[1:]]
    c1 = b * np.sqrt(ab_prev) / (1.0 - ab)
    var_x0 = S ** 2 * (1.0 - ab) / (ab * S ** 2 + 1.0 - ab)  # Var(x0 | x_n)
    true_rev = post_clipped + c1 ** 2 * var_x0
    true_rev[0] = var_x0[0]
    model_var = {"large": b, "small": post_clipped, "exact": true_rev}[variance]
    # E KL(N(mu~, bt) || N(mu_model, s2)) with E (mu~ - mu_model)^2 = c1^2 Var(x0 | x_n):
    kl = 0.5 * (np.log(model_var / post_clipped) + (post_clipped + c1 ** 2 * var_x0) / model_var - 1.0)
    decoder = 0.5 * np.log(2 * np.pi * model_var[0]) + var_x0[0] / (2 * model_var[0])
    steps = np.r_[decoder, kl[1:]]
    prior = 0.5 * (ab[-1] * S ** 2 - ab[-1] - np.log(1.0 - ab[-1]))
    return prior, steps, prior + steps.sum()


def _vlb_terms(schedule, x0, key, *, prediction="eps", fixed_variance="large"):
    model = _exact_model(schedule, prediction)
    return jax.jit(lambda x0, k: ddpm_vlb_terms(model, 1.0, x0, schedule=schedule, key=k, prediction=prediction,
                                                fixed_variance=fixed_variance, decoder="gaussian"))(x0, key)


@pytest.mark.parametrize("prediction, fixed_variance", [("eps", "large"), ("x0", "small")])
def test_ddpm_vlb_terms_match_closed_form(prediction, fixed_variance):
    betas = cosine_betas(10)
    schedule = discrete_schedule(betas)
    x0 = S * jax.random.normal(jax.random.PRNGKey(0), (20000, 1))
    out = _vlb_terms(schedule, x0, jax.random.PRNGKey(1), prediction=prediction, fixed_variance=fixed_variance)
    _, steps, total = _vlb_closed_form(betas, fixed_variance)
    # L_T per example: KL(N(sqrt(ab_N) x0, 1 - ab_N) || N(0, 1)).
    ab_n = np.prod(1.0 - betas)
    x = np.asarray(x0[:, 0], np.float64)
    prior_ref = 0.5 * (ab_n * x ** 2 + (1 - ab_n) - 1 - np.log(1 - ab_n))
    np.testing.assert_allclose(np.asarray(out["prior"]), prior_ref, rtol=1e-3, atol=1e-7)
    # Every step's term against its expectation, within 5 standard errors.
    per_step = np.asarray(out["per_step"], np.float64)  # [B, N]
    se = per_step.std(0) / np.sqrt(per_step.shape[0])
    np.testing.assert_array_less(np.abs(per_step.mean(0) - steps), 5 * se)
    np.testing.assert_allclose(np.asarray(out["decoder"]), per_step[:, 0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["diffusion"]), per_step[:, 1:].sum(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["total"]),
                               np.asarray(out["prior"] + out["diffusion"] + out["decoder"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["bits_per_dim"]), np.asarray(out["total"]) / math.log(2), rtol=1e-6)
    t = np.asarray(out["total"], np.float64)
    assert abs(t.mean() - total) < 4 * t.std() / np.sqrt(len(t))


def test_ddpm_vlb_bounds_the_nll_and_tightens_as_steps_grow():
    x0 = S * jax.random.normal(jax.random.PRNGKey(0), (10000, 1))
    gaps = []
    for num_steps in (10, 100, 1000):
        betas = cosine_betas(num_steps)
        t = np.asarray(_vlb_terms(discrete_schedule(betas), x0, jax.random.PRNGKey(num_steps))["total"], np.float64)
        se = t.std() / np.sqrt(len(t))
        _, _, total = _vlb_closed_form(betas, "large")
        assert abs(t.mean() - total) < 4 * se  # the estimate has the closed-form mean
        assert t.mean() > H - 4 * se  # an upper bound on the exact NLL (in expectation)
        gaps.append(total - H)
        if num_steps == 10:
            assert t.mean() - H > 3 * se  # visibly loose with 10 steps
    assert all(g > 0 for g in gaps)
    assert gaps[0] > 5 * gaps[1] > 25 * gaps[2]  # the gap shrinks like 1/N


def test_ddpm_learned_variance_endpoints_and_exact_variance_closes_the_gap():
    betas = cosine_betas(10)
    schedule = discrete_schedule(betas)
    x0 = S * jax.random.normal(jax.random.PRNGKey(0), (20000, 1))
    mean_model = _exact_model(schedule, "eps")

    def with_v(v_of_n):
        def model(c, x, n, labels):
            return jnp.concatenate([mean_model(c, x, n, labels), jnp.broadcast_to(v_of_n(n)[:, None], x.shape)], -1)
        return model

    # v interpolating to the true reverse variance makes the Gaussian reverse process exact.
    b = np.asarray(betas, np.float64)
    ab = np.cumprod(1 - b)
    ab_prev = np.r_[1.0, ab[:-1]]
    post = b * (1 - ab_prev) / (1 - ab)
    log_small = np.log(np.r_[post[1], post[1:]])
    c1 = b * np.sqrt(ab_prev) / (1 - ab)
    var_x0 = S ** 2 * (1 - ab) / (ab * S ** 2 + 1 - ab)
    true_rev = np.exp(log_small) + c1 ** 2 * var_x0
    true_rev[0] = var_x0[0]
    v_exact = jnp.asarray((np.log(true_rev) - log_small) / (np.log(b) - log_small), jnp.float32)

    @jax.jit
    def totals(x0):
        def total(model, **kw):
            return ddpm_vlb_terms(model, 1.0, x0, schedule=schedule, key=jax.random.PRNGKey(1), decoder="gaussian",
                                  **kw)["total"]

        learned = {v: total(with_v(lambda n, v=v: jnp.full(n.shape, v)), learned_variance=True) for v in (0.0, 1.0)}
        fixed = {v: total(mean_model, fixed_variance=name) for v, name in ((0.0, "small"), (1.0, "large"))}
        return learned, fixed, total(with_v(lambda n: v_exact[n]), learned_variance=True)

    learned, fixed, exact = totals(x0)
    # v = 1 is the "large" variance beta, v = 0 the "small" one beta_tilde (Improved DDPM Eq. 15).
    for v in (0.0, 1.0):
        np.testing.assert_allclose(np.asarray(learned[v]), np.asarray(fixed[v]), rtol=1e-5, atol=1e-5)
    # With the exact reverse variance the bound equals the NLL (in expectation).
    exact = np.asarray(exact, np.float64)
    assert abs(exact.mean() - H) < 4 * exact.std() / np.sqrt(len(exact))
    assert abs(_vlb_closed_form(betas, "exact")[2] - H) < 1e-4


def test_ddpm_loss_vlb_estimate_is_unbiased_for_the_full_bound():
    betas = cosine_betas(10)
    schedule = discrete_schedule(betas)
    x0 = S * jax.random.normal(jax.random.PRNGKey(0), (40000, 1))
    model = _exact_model(schedule, "v")
    loss, aux = jax.jit(lambda x0: ddpm_loss(model, 1.0, jax.random.PRNGKey(2), x0, schedule=schedule,
                                             prediction="v", loss_type="vlb", decoder="gaussian"))(x0)
    vlb = np.asarray(aux["vlb"], np.float64)
    assert abs(vlb.mean() - _vlb_closed_form(betas, "large")[2]) < 4 * vlb.std() / np.sqrt(len(vlb))
    np.testing.assert_allclose(np.asarray(loss), vlb / math.log(2), rtol=1e-5)  # bits/dim, D = 1
    np.testing.assert_allclose(np.asarray(aux["vlb_bpd"]), np.asarray(loss), rtol=1e-6)


def test_ddpm_hybrid_loss_trains_the_variance_only_through_the_vlb():
    schedule = get_schedule("cosine", 50)
    x0 = jnp.round(S * jax.random.normal(jax.random.PRNGKey(0), (64, 4, 4, 3)) * 127.5) / 127.5  # on the 8-bit grid
    x0 = jnp.clip(x0, -1, 1)

    def mean_model(c, x, n, labels):
        return c * _posterior_moments(schedule, n)["eps"][:, :, None, None] * x

    def model(p, x, n, labels):
        return jnp.concatenate([mean_model(p["c"], x, n, labels), jnp.broadcast_to(p["v"], x.shape)], -1)

    params = {"c": jnp.float32(0.9), "v": jnp.float32(0.3)}
    key = jax.random.PRNGKey(3)

    def mean_loss(model, p, loss_type, **kw):
        return jnp.mean(ddpm_loss(model, p, key, x0, schedule=schedule, loss_type=loss_type, **kw)[0])

    @jax.jit
    def grads(params):
        g = lambda loss_type: jax.grad(lambda p: mean_loss(model, p, loss_type, learned_variance=True))(params)
        return g("hybrid"), g("vlb"), jax.grad(lambda c: mean_loss(mean_model, c, "simple"))(params["c"])

    hybrid, vlb, simple_c = grads(params)
    np.testing.assert_allclose(float(hybrid["c"]), float(simple_c), rtol=1e-5)  # stop-gradient on the mean
    np.testing.assert_allclose(float(hybrid["v"]), 1e-3 * float(vlb["v"]), rtol=1e-4)  # lambda = 0.001
    assert abs(float(vlb["c"])) > 0 and abs(float(vlb["v"])) > 0


# -- continuous-time SDE loss ----------------------------------------------------------------

_GM = gaussian_mixture([0.4, 0.6], [[-1.0, 0.5], [1.0, -0.5]], std=0.5)


@pytest.mark.parametrize("sde", [VESDE(sigma_min=0.01, sigma_max=10.0), VPSDE(), SubVPSDE()],
                         ids=["ve", "vp", "subvp"])
@pytest.mark.parametrize("likelihood_weighting", [False, True], ids=["sigma2", "g2"])
def test_sde_loss_exact_score_is_the_minimiser(sde, likelihood_weighting):
    x0 = _GM.sample(jax.random.PRNGKey(0), 20000)
    prediction = "score" if likelihood_weighting else "eps"

    def model(c, x, t, labels):
        alpha, sigma = sde.marginal(t)
        score = _GM.score(x, alpha, sigma)
        return c * (score if prediction == "score" else -sigma[:, None] * score)

    def loss_of_scale(c):
        return sde_loss(model, c, jax.random.PRNGKey(1), x0, sde=sde, prediction=prediction,
                        likelihood_weighting=likelihood_weighting, t_eps=0.01)[0]

    _minimiser_check(loss_of_scale, power_se=5.0)


def test_sde_loss_formula_and_time_range():
    sde = VPSDE()
    x0 = _GM.sample(jax.random.PRNGKey(0), 4096)
    key = jax.random.PRNGKey(7)
    eps_model = lambda p, x, t, labels: p * x  # any eps-predictor

    @jax.jit
    def run(x0):
        # By hand: t ~ U(t_min, 1), x_t = alpha x0 + sigma eps, loss = ||eps_hat - eps||^2 (lambda = sigma^2);
        # with likelihood weighting g(t)^2 ||s + eps / sigma||^2 with s = -eps_hat / sigma.
        k_t, k_noise = jax.random.split(key)
        t = jax.random.uniform(k_t, (4096,), minval=sde.t_min, maxval=1.0)
        eps = jax.random.normal(k_noise, x0.shape)
        a, s = sde.marginal(t)
        x_t = a[:, None] * x0 + s[:, None] * eps
        g2 = sde.diffusion(t) ** 2
        refs = (jnp.sum((0.3 * x_t - eps) ** 2, 1), s ** 2, g2 * jnp.sum(((-0.3 * x_t + eps) / s[:, None]) ** 2, 1), g2)
        return sde_loss(eps_model, 0.3, key, x0, sde=sde), sde_loss(eps_model, 0.3, key, x0, sde=sde,
                                                                     likelihood_weighting=True), refs

    (loss, aux), (loss_g, aux_g), (ref, w, ref_g, w_g) = run(x0)
    np.testing.assert_allclose(np.asarray(loss), np.asarray(ref), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(aux["weight"]), np.asarray(w), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(loss_g), np.asarray(ref_g), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(aux_g["weight"]), np.asarray(w_g), rtol=1e-5)
    t = np.asarray(aux["t"])
    assert t.min() >= sde.t_min and t.max() <= 1.0
    assert stats.kstest(t, stats.uniform(sde.t_min, 1 - sde.t_min).cdf).pvalue > 1e-3


# -- EDM -------------------------------------------------------------------------------------

def test_edm_preconditioning_matches_table_1():
    sd = 0.5
    raw = lambda w, x_in, c_noise, labels: w * x_in + c_noise[:, None]
    denoiser = edm_precondition(raw, sigma_data=sd)
    sigma = np.array([0.002, 0.1, 0.5, 3.0, 80.0])
    x = np.random.default_rng(0).normal(size=(5, 3)) * np.sqrt(sigma[:, None] ** 2 + sd ** 2)
    got = np.asarray(jax.jit(denoiser)(1.7, jnp.asarray(x, jnp.float32), jnp.asarray(sigma, jnp.float32)))
    # Karras et al. (2022) Table 1, "Ours" column, in float64:
    c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
    c_out = sigma * sd / np.sqrt(sigma ** 2 + sd ** 2)
    c_in = 1 / np.sqrt(sigma ** 2 + sd ** 2)
    c_noise = np.log(sigma) / 4
    ref = c_skip[:, None] * x + c_out[:, None] * (1.7 * c_in[:, None] * x + c_noise[:, None])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_edm_loss_exact_denoiser_is_the_minimiser_and_sigma_is_log_normal():
    sd, p_mean, p_std = 0.5, -1.2, 1.2

    def raw(c, x_in, c_noise, labels):
        # Inverts the preconditioning so that D = c * E[x0 | x] (Tweedie) exactly.
        sigma = jnp.exp(4 * c_noise)
        x = x_in * jnp.sqrt(sigma ** 2 + sd ** 2)[:, None]
        d_exact = x + sigma[:, None] ** 2 * _GM.score(x, 1.0, sigma)
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / jnp.sqrt(sigma ** 2 + sd ** 2)
        return (c * d_exact - c_skip[:, None] * x) / c_out[:, None]

    denoiser = edm_precondition(raw, sigma_data=sd)
    x0 = _GM.sample(jax.random.PRNGKey(0), 20000)

    def loss_of_scale(c):
        return edm_loss(denoiser, c, jax.random.PRNGKey(1), x0, sigma_data=sd, p_mean=p_mean, p_std=p_std)[0]

    _minimiser_check(loss_of_scale, power_se=5.0)
    identity = lambda p, x, sigma, labels: x  # the noise levels do not depend on the denoiser
    _, aux = jax.jit(lambda: edm_loss(identity, None, jax.random.PRNGKey(1), x0))()
    log_sigma = np.log(np.asarray(aux["sigma"], np.float64))
    n = len(log_sigma)
    assert abs(log_sigma.mean() - p_mean) < 4 * p_std / np.sqrt(n)
    assert abs(log_sigma.std() - p_std) < 4 * p_std / np.sqrt(2 * n)
    assert stats.kstest(log_sigma, stats.norm(p_mean, p_std).cdf).pvalue > 1e-3
    sig = np.asarray(aux["sigma"], np.float64)
    np.testing.assert_allclose(np.asarray(aux["weight"]), (sig ** 2 + sd ** 2) / (sig * sd) ** 2, rtol=1e-4)


# -- classifier-free guidance ----------------------------------------------------------------

def test_drop_labels_fraction_and_values():
    labels = jnp.arange(10000, dtype=jnp.int32) % 7
    dropped = np.asarray(jax.jit(lambda k: drop_labels(k, labels, p_uncond=0.2, null_label=7))(jax.random.PRNGKey(0)))
    changed = dropped != np.asarray(labels)
    assert np.all(dropped[changed] == 7)  # only ever replaced by the null label
    assert stats.binomtest(int(changed.sum()), changed.size, 0.2).pvalue > 1e-3
    # One-hot labels: whole rows are replaced by the null vector.
    onehot = jax.nn.one_hot(labels[:2000], 7)
    out = np.asarray(drop_labels(jax.random.PRNGKey(1), onehot, p_uncond=0.5, null_label=jnp.zeros(7)))
    rows = np.all(out == 0, axis=1)
    np.testing.assert_array_equal(out[~rows], np.asarray(onehot)[~rows])
    assert stats.binomtest(int(rows.sum()), rows.size, 0.5).pvalue > 1e-3
    np.testing.assert_array_equal(drop_labels(jax.random.PRNGKey(2), labels, p_uncond=0.0, null_label=7), labels)
    assert np.all(np.asarray(drop_labels(jax.random.PRNGKey(2), labels, p_uncond=1.0, null_label=7)) == 7)


def test_guidance_formula_and_guided_model():
    cond, uncond = jnp.array([[1.0, 2.0]]), jnp.array([[0.5, -1.0]])
    np.testing.assert_allclose(np.asarray(guided(cond, uncond, 0.0)), [[1.0, 2.0]])
    np.testing.assert_allclose(np.asarray(guided(cond, uncond, 2.0)), [[3 * 1.0 - 2 * 0.5, 3 * 2.0 + 2 * 1.0]])
    np.testing.assert_allclose(np.asarray(guided(jnp.ones((2, 1)), jnp.zeros((2, 1)), jnp.array([0.0, 1.0]))),
                               [[1.0], [2.0]])

    def model(params, x, t, labels):  # a label-dependent toy network
        return params * x * (1.0 + labels[:, None].astype(x.dtype)) + t[:, None]

    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    t = np.linspace(0.1, 0.9, 4, dtype=np.float32)
    labels = np.array([0, 1, 2, 3])
    # The same toy network in numpy: out = 2 x (1 + label) + t.
    cond = 2.0 * x * (1.0 + labels[:, None]) + t[:, None]
    uncond = 2.0 * x * 11.0 + t[:, None]
    for w in (0.0, 1.5):
        got = jax.jit(classifier_free_guidance(model, scale=w, null_label=10))(2.0, x, t, labels)
        np.testing.assert_allclose(np.asarray(got), (1 + w) * cond - w * uncond, rtol=1e-5)


# -- errors ----------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    schedule = get_schedule("linear", 100)
    x0 = jnp.zeros((4, 2))
    key = jax.random.PRNGKey(0)
    model = lambda p, x, n, labels: x
    with pytest.raises(ValueError, match=r"unknown prediction 'score'.*\('eps', 'x0', 'v'\)"):
        ddpm_loss(model, None, key, x0, schedule=schedule, prediction="score")
    with pytest.raises(ValueError, match="unknown loss_type 'kl'"):
        ddpm_loss(model, None, key, x0, schedule=schedule, loss_type="kl")
    with pytest.raises(ValueError, match=r"labels must have one entry per example.*B = 4.*\[3\]"):
        ddpm_loss(model, None, key, x0, schedule=schedule, labels=jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="needs loss_type 'hybrid' or 'vlb'"):
        ddpm_loss(model, None, key, x0, schedule=schedule, learned_variance=True)
    with pytest.raises(ValueError, match=r"twice the channels.*\[4, 4\]"):  # traced only, not compiled
        jax.eval_shape(lambda: ddpm_loss(model, None, key, x0, schedule=schedule, learned_variance=True,
                                         loss_type="hybrid"))
    with pytest.raises(TypeError, match="DiscreteSchedule"):
        ddpm_loss(model, None, key, x0, schedule=np.linspace(1e-4, 0.02, 10))
    with pytest.raises(ValueError, match="unknown prediction 'epsilon'"):
        sde_loss(model, None, key, x0, sde=VPSDE(), prediction="epsilon")
    with pytest.raises(ValueError, match="labels must have one entry per example"):
        sde_loss(model, None, key, x0, sde=VPSDE(), labels=jnp.zeros((2, 1)))
    with pytest.raises(ValueError, match="t_eps"):
        sde_loss(model, None, key, x0, sde=VPSDE(), t_eps=1.0)
    with pytest.raises(ValueError, match="labels must have one entry per example"):
        edm_loss(edm_precondition(model), None, key, x0, labels=jnp.zeros(5))
    with pytest.raises(ValueError, match=r"sigma must be per-example"):
        jax.eval_shape(lambda: edm_precondition(model)(None, x0, jnp.float32(0.5)))
    for p in (1.5, -0.1):
        with pytest.raises(ValueError, match=r"p_uncond .* \[0, 1\]"):
            drop_labels(key, jnp.zeros(4, jnp.int32), p_uncond=p, null_label=0)
    with pytest.raises(ValueError, match="needs labels"):
        classifier_free_guidance(model, scale=1.0, null_label=0)(None, x0, jnp.zeros(4), None)
