"""Noise-contrastive estimation: the loss against a direct numpy evaluation, and recovery
of an unnormalised Gaussian's mean, precision and log-normaliser c = -log Z.

References used as ground truth: the NCE objective written out in numpy/scipy
(Gutmann & Hyvärinen 2012, eq. 8 scaled by 1/T_d), and the closed-form normaliser of a
diagonal Gaussian, -log Z = sum_d 0.5 log(prec_d / 2 pi).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats
from scipy.special import expit

from jgen.losses.ebm import nce_loss

# Data: N(MU, diag(SD^2)); noise: a broader diagonal Gaussian covering it.
MU, SD = np.array([1.0, -0.5]), np.array([0.5, 1.5])
NOISE_MU, NOISE_SD = np.array([0.5, 0.0]), np.array([1.5, 3.0])


def log_model(params, x):
    """Unnormalised diagonal Gaussian with a learned log-normaliser c."""
    prec = jnp.exp(params["log_prec"])
    return -0.5 * jnp.sum(prec[None] * jnp.square(x - params["mu"][None]), axis=-1) + params["c"]


def noise_sample(key, n):
    return jnp.asarray(NOISE_MU, jnp.float32)[None] + jnp.asarray(NOISE_SD, jnp.float32)[None] * jax.random.normal(
        key, (n, 2))


def noise_log_prob(x):
    z = (x - jnp.asarray(NOISE_MU, x.dtype)[None]) / jnp.asarray(NOISE_SD, x.dtype)[None]
    return jnp.sum(-0.5 * z**2 - jnp.log(jnp.asarray(NOISE_SD, x.dtype))[None] - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def test_nce_loss_matches_direct_evaluation():
    """nu = 3 noise samples per example, noise sample i paired with example i // 3."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(5, 2))
        y = rng.normal(size=(15, 2)) * 2.0
        params = {"mu": jnp.asarray([0.3, -0.2]), "log_prec": jnp.asarray([0.1, -0.4]), "c": jnp.asarray(-1.3)}
        loss, aux = nce_loss(log_model, params, jax.random.PRNGKey(0), jnp.asarray(x),
                             lambda k, n: jnp.asarray(y[:n]), noise_log_prob, nu=3)

        def g(u):  # G = log p_m - log nu - log p_n
            prec = np.exp(np.asarray(params["log_prec"]))
            lm = -0.5 * np.sum(prec * (u - np.asarray(params["mu"])) ** 2, axis=-1) + float(params["c"])
            ln = stats.multivariate_normal(NOISE_MU, np.diag(NOISE_SD**2)).logpdf(u)
            return lm - np.log(3) - ln

        data_term = -np.log(expit(g(x)))
        noise_term = -np.log(1 - expit(g(y))).reshape(5, 3).sum(1)
        np.testing.assert_allclose(aux["data_term"], data_term, rtol=1e-10)
        np.testing.assert_allclose(aux["noise_term"], noise_term, rtol=1e-10)
        np.testing.assert_allclose(loss, np.mean(data_term + noise_term), rtol=1e-10)


def test_nce_recovers_unnormalised_gaussian_and_its_normaliser():
    """4000 data points, nu = 4 noise samples each (fixed), 400 Adam steps: the mean,
    precisions and c come out within a few standard errors of the truth (mean sd ~
    SD / sqrt(n), precision relative sd ~ sqrt(2 / n), inflated for NCE's efficiency
    loss), and c matches -log Z of the *learned* precisions (the model self-normalises)."""
    n = 4000
    x = jnp.asarray(MU[None] + SD[None] * np.random.default_rng(1).normal(size=(n, 2)), jnp.float32)
    params = {"mu": jnp.zeros(2), "log_prec": jnp.zeros(2), "c": jnp.zeros(())}
    opt = optax.adam(0.05)
    key = jax.random.PRNGKey(2)  # same key every step: a fixed noise sample, a deterministic objective

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fit(params):
        def step(carry, _):
            p, s = carry
            (loss, _), g = jax.value_and_grad(nce_loss, argnums=1, has_aux=True)(
                log_model, p, key, x, noise_sample, noise_log_prob, nu=4)
            updates, s = opt.update(g, s)
            return (optax.apply_updates(p, updates), s), loss
        return jax.lax.scan(step, (params, opt.init(params)), None, length=400)

    (params, _), losses = fit(params)
    losses = np.asarray(losses)
    assert losses[-1] < losses[0] and abs(losses[-1] - losses[-20]) < 1e-4  # converged
    mu, prec, c = np.asarray(params["mu"]), np.exp(np.asarray(params["log_prec"])), float(params["c"])
    true_prec = 1.0 / SD**2
    true_c = np.sum(0.5 * np.log(true_prec / (2 * np.pi)))
    print(f"NCE: mu {mu} (true {MU}), prec {prec} (true {true_prec}), c {c:.4f} (true {true_c:.4f})")
    assert np.all(np.abs(mu - MU) < 5 * 1.5 * SD / np.sqrt(n)), mu
    assert np.all(np.abs(prec / true_prec - 1) < 5 * 1.5 * np.sqrt(2 / n)), prec
    assert abs(c - true_c) < 0.1
    assert abs(c - np.sum(0.5 * np.log(prec / (2 * np.pi)))) < 0.05


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"nu": 0}, r"nu .* must be a Python int >= 1; received 0"),
        ({"noise_sample_fn": lambda k, n: jnp.zeros((n, 3))}, r"shaped like the data, \(8, 2\); .* \(8, 3\)"),
        ({"log_model_fn": lambda p, u: jnp.sum(u)}, r"log_model_fn must return .* shape \(4,\); .* shape \(\)"),
        ({"x_data": jnp.zeros(())}, r"x_data must be a batch \[B, \.\.\.\] .* received shape \(\)"),
    ],
)
def test_nce_errors_name_what_was_received(kw, match):
    args = {"log_model_fn": log_model, "params": {"mu": jnp.zeros(2), "log_prec": jnp.zeros(2), "c": jnp.zeros(())},
                "key": jax.random.PRNGKey(0), "x_data": jnp.zeros((4, 2)), "noise_sample_fn": noise_sample,
                "noise_log_prob_fn": noise_log_prob, "nu": 2}
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        nce_loss(**args)
