"""AIS on a linear-Gaussian model, where log p(x) and the ELBO are exact.

Model: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D), so p(x) = N(b, W W^T + s^2 I)
(the reference, from scipy.stats.multivariate_normal). The encoder is a
deliberately imperfect diagonal Gaussian (shifted mean, too wide), as in
tests/losses/test_elbo_iwae.py, so init="posterior" has work to do.

Each run uses 256 chains per example. Their single-chain log weights estimate
E[log w], a lower bound on log p(x) (Jensen); splitting them into 16 groups of 16
gives 16 independent AIS estimates with 16 chains each.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.distributions import diag_gaussian_log_prob, standard_normal_log_prob
from jgen.metrics.ais import ais_log_marginal, geometric_schedule, sigmoid_schedule

D, LATENT, B = 5, 3, 4
SIGMA = 0.7
GROUPS, PER_GROUP = 16, 16
CHAINS = GROUPS * PER_GROUP


def _model():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(D, LATENT))
    b = rng.normal(size=(D,))
    x = rng.normal(size=(B, D)) * 2.0
    log_px = stats.multivariate_normal(mean=b, cov=W @ W.T + SIGMA**2 * np.eye(D)).logpdf(x)
    # Exact posterior N(mu, S): S = (I + W^T W / s^2)^-1, mu = S W^T (x - b) / s^2.
    S = np.linalg.inv(np.eye(LATENT) + W.T @ W / SIGMA**2)
    mu = (x - b) @ W @ S.T / SIGMA**2
    q_mean = mu + 0.3
    q_log_std = 0.5 * np.log(np.diag(S)) * np.ones((B, 1)) + 0.2
    params = {"W": W, "b": b, "q_mean": q_mean, "q_log_std": q_log_std}
    # Closed-form ELBO of q: E_q log p(x|z) - KL(q || N(0, I)).
    s2 = np.exp(2 * q_log_std)
    resid = x - q_mean @ W.T - b
    exp_ll = -0.5 * D * np.log(2 * np.pi * SIGMA**2) - (
        np.sum(resid**2, -1) + np.sum(s2 * np.sum(W**2, 0), -1)
    ) / (2 * SIGMA**2)
    elbo = exp_ll - 0.5 * np.sum(s2 + q_mean**2 - 1 - 2 * q_log_std, -1)
    return params, x, log_px, elbo


def encode_fn(p, x):
    return p["q_mean"], p["q_log_std"]


def log_likelihood_fn(p, x, z):
    x = x.reshape(x.shape[0], -1)  # accepts image-shaped x too
    mean = z @ p["W"].T + p["b"][None, :]
    return diag_gaussian_log_prob(x, mean, jnp.log(SIGMA) * jnp.ones((1, 1)))


def run_ais(init, num_steps, x_shape=(B, D), seed=0):
    params, x, log_px, elbo = _model()
    fn = jax.jit(
        lambda key, x: ais_log_marginal(
            standard_normal_log_prob, log_likelihood_fn, params, key, x,
            num_chains=CHAINS, num_steps=num_steps, num_leapfrog=5, init=init,
            encode_fn=encode_fn if init == "posterior" else None,
            latent_dim=LATENT if init == "prior" else None,
        )
    )
    log_px_hat, info = fn(jax.random.PRNGKey(seed), jnp.asarray(x).reshape(x_shape))
    log_w = np.asarray(info["log_weights"])
    assert log_px_hat.shape == (B,) and log_w.shape == (B, CHAINS)
    # 16 independent 16-chain estimates per example, and their delta-method standard errors.
    groups = log_w.reshape(B, GROUPS, PER_GROUP)
    group_est = np.log(np.mean(np.exp(groups - groups.max(-1, keepdims=True)), -1)) + groups.max(-1)
    w = np.exp(groups - groups.max(-1, keepdims=True))
    group_se = w.std(-1, ddof=1) / (np.sqrt(PER_GROUP) * w.mean(-1))
    return np.asarray(log_px_hat), info, log_w, group_est, group_se, log_px, elbo


@pytest.mark.parametrize("init, few, many", [("prior", 10, 300), ("posterior", 3, 150)])
def test_ais_converges_to_exact_log_px_from_below(init, few, many):
    with jax.enable_x64(True):
        results = {t: run_ais(init, t, seed=t) for t in (few, many)}
        gaps_single, gaps_group = {}, {}
        for t, (est, info, log_w, group_est, group_se, log_px, _) in results.items():
            # Lower bound in expectation, single chains: E[log w] <= log p(x) (Jensen).
            se_single = log_w.std(-1, ddof=1) / np.sqrt(CHAINS)
            gaps_single[t] = log_w.mean(-1) - log_px
            assert np.all(gaps_single[t] < 3 * se_single), (t, gaps_single[t], se_single)
            # ... and the 16-chain estimates: their mean over 16 repeats is <= log p(x) + noise.
            se_mean = group_est.std(-1, ddof=1) / np.sqrt(GROUPS)
            gaps_group[t] = group_est.mean(-1) - log_px
            assert np.all(gaps_group[t] < 3 * se_mean + 1e-3), (t, gaps_group[t], se_mean)
        # More temperatures: closer. The Jensen gap of single chains shrinks from nats
        # to ~0.1 nats, and the 16-chain estimates spread less around log p(x).
        assert np.all(gaps_single[few] < -1.0) and np.all(gaps_single[many] > -0.3)
        spread = {t: results[t][3].std(-1) for t in (few, many)}
        assert np.all(spread[many] < 0.5 * spread[few]), spread
        # With many temperatures the 256-chain estimate is within 0.1 nats and a few
        # reported standard errors of the exact value.
        est, info, _, group_est, group_se, log_px, _ = results[many]
        stderr = np.asarray(info["log_px_stderr"])
        assert np.all(np.abs(est - log_px) < 0.1), (est - log_px)
        assert np.all(np.abs(est - log_px) < 4 * stderr + 0.01), (est - log_px, stderr)
        # The reported standard errors are calibrated: most 16-chain estimates lie within 2 of them.
        z = (group_est - log_px[:, None]) / group_se
        assert np.mean(np.abs(z) < 2) > 0.8, z
        acc = np.asarray(info["acceptance_rate"])
        assert acc.shape == (B,) and np.all((0.5 < acc) & (acc < 0.95)), acc
        assert np.asarray(info["step_size"]).shape == (B, CHAINS)
        ess = np.asarray(info["weights_ess"])
        assert np.all((ess >= 1) & (ess <= CHAINS) & (ess > 0.3 * CHAINS))


def test_one_temperature_is_importance_sampling_from_the_encoder():
    """T = 1 with init="posterior" is plain importance sampling from q(z|x): the mean
    single-chain log weight is the closed-form ELBO, and the estimate is IWAE-256
    (between the ELBO and log p(x)). Image-shaped x [B, 1, D] goes through unchanged."""
    with jax.enable_x64(True):
        est, info, log_w, _, _, log_px, elbo = run_ais("posterior", 1, x_shape=(B, 1, D))
        se = log_w.std(-1, ddof=1) / np.sqrt(CHAINS)
        assert np.all(np.abs(log_w.mean(-1) - elbo) < 4 * se), (log_w.mean(-1), elbo, se)
        assert np.all((elbo < est) & (est < log_px + 4 * np.asarray(info["log_px_stderr"])))
        assert np.all(np.isnan(np.asarray(info["acceptance_rate"])))


@pytest.mark.parametrize("schedule", [sigmoid_schedule, geometric_schedule])
def test_schedules_run_from_zero_to_one(schedule):
    betas = np.asarray(schedule(50))
    assert betas.shape == (51,) and betas[0] == 0.0 and betas[-1] == 1.0
    assert np.all(np.diff(betas) > 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(init="bogus", latent_dim=LATENT), "received init='bogus'"),
        (dict(init="posterior"), "pass encode_fn"),
        (dict(init="prior"), "pass latent_dim"),
        (dict(init="prior", latent_dim=LATENT, num_steps=0), "received 0"),
        (dict(init="prior", latent_dim=LATENT, num_chains=2.0), "received 2.0"),
    ],
)
def test_ais_errors_name_what_was_received(kwargs, match):
    params, x, _, _ = _model()
    kwargs = {"num_chains": 2, "num_steps": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        ais_log_marginal(
            standard_normal_log_prob, log_likelihood_fn, params, jax.random.PRNGKey(0), jnp.asarray(x), **kwargs
        )
