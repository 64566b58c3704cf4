"""ULA, MALA and SGLD: exact invariance of MALA (and HMC) on known targets, convergence
from a bad start, the Metropolis ratio against a direct computation, and ULA's
closed-form discretisation bias.

References used as ground truth: exact draws from `jgen.sde.exact` mixtures (MMD
permutation test), scipy.stats CDFs (KS), scipy's multivariate normal density (the
MALA proposal), and the stationary law of the discretised Ornstein-Uhlenbeck process:
ULA on N(0, s^2) with step h is the AR(1) chain x' = (1 - h/2s^2) x + sqrt(h) z, with
stationary variance s^2 / (1 - h/4s^2) and, for M chains of N draws, an effective
sample size M N (1 - a) / (1 + a), a = 1 - h/2s^2.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.metrics.mmd import mmd_permutation_test
from jgen.samplers.diagnostics import effective_sample_size
from jgen.samplers.hmc import hmc_sample
from jgen.samplers.langevin import (
    langevin_init,
    mala_sample,
    mala_step,
    sgld_step,
    ula_sample,
    ula_step,
)
from jgen.sde.exact import ring_mixture

P_VALUE = 1e-3  # fixed seeds make the tests deterministic; this only guards against bad luck

COV = np.array([[1.0, 0.9], [0.9, 1.0]])
PREC = np.linalg.inv(COV)
EVALS, EVECS = np.linalg.eigh(COV)


def gauss_log_prob(x):
    return -0.5 * jnp.sum((x @ jnp.asarray(PREC, x.dtype)) * x, axis=-1)


def whiten(x):
    return (np.asarray(x) @ EVECS) / np.sqrt(EVALS)


RING = ring_mixture(num_modes=4, radius=2.0, std=0.4)

mmd_test = jax.jit(mmd_permutation_test, static_argnames="num_permutations")


def test_mala_and_hmc_leave_ring_mixture_invariant_and_ula_does_not():
    """512 chains started from exact draws of a 4-mode ring (std 0.4) stay exact draws
    after 60 MALA / 20 HMC transitions (MMD permutation test against fresh exact draws),
    while ULA with the same step inflates each mode's variance to about the closed form
    for one Gaussian, 0.16 / (1 - 0.3 / 0.64) = 0.30, and the same test rejects it (so
    the test has power)."""
    n, h = 512, 0.3
    x0 = RING.sample(jax.random.PRNGKey(0), n)
    fresh = RING.sample(jax.random.PRNGKey(1), n)
    run = jax.jit(lambda k, x: (
        mala_sample(k, RING.log_prob, x, step_size=h, num_steps=60)[0][-1],
        ula_sample(k, RING.log_prob, x, step_size=h, num_steps=60)[0][-1],
        hmc_sample(RING.log_prob, k, x, num_samples=20, step_size=0.15, num_leapfrog=5)[0][-1],
    ))
    mala_x, ula_x, hmc_x = run(jax.random.PRNGKey(2), x0)
    # Bandwidth at the components' scale (the median heuristic, ~ the ring's size, is
    # blind to the within-mode spread).
    test = lambda x: float(mmd_test(jax.random.PRNGKey(3), x, fresh, bandwidth=0.4, num_permutations=200)[1])
    assert test(mala_x) > P_VALUE and test(hmc_x) > P_VALUE, (test(mala_x), test(hmc_x))
    assert test(ula_x) < 0.01, test(ula_x)
    means = np.asarray(RING.means)
    for x, var in ((mala_x, 0.16), (hmc_x, 0.16), (ula_x, 0.16 / (1 - h / (4 * 0.16)))):
        x = np.asarray(x)
        mode = np.argmin(np.linalg.norm(x[:, None] - means[None], axis=-1), axis=1)
        # Each mode keeps its quarter of the mass; within-mode variance per axis.
        assert stats.chisquare(np.bincount(mode, minlength=4)).pvalue > P_VALUE
        np.testing.assert_allclose(np.var(x - means[mode]), var, rtol=0.12)


def test_mala_from_far_start_reaches_correlated_gaussian_with_ess():
    """1000 chains started at (3, 3) (3 sd out along the slow axis) reach N(0, COV):
    moments, KS per whitened axis, chi-square(2) for the squared Mahalanobis norm. The
    mean over all kept draws is within 4 sd / sqrt(ESS) of 0, ESS from the chains."""
    samples, info = jax.jit(lambda k, x: mala_sample(k, gauss_log_prob, x, step_size=0.1, num_steps=200,
                                                     num_burnin=300, thin=2))(
        jax.random.PRNGKey(4), jnp.full((1000, 2), 3.0))
    samples = np.asarray(samples)
    assert samples.shape == (100, 1000, 2)
    last = samples[-1]
    np.testing.assert_allclose(last.mean(0), 0.0, atol=4 * np.sqrt(1.0 / 1000))
    np.testing.assert_allclose(np.cov(last.T), COV, atol=0.15)
    w = whiten(last)
    for j in range(2):
        assert stats.kstest(w[:, j], "norm").pvalue > P_VALUE
    assert stats.kstest(np.sum(w**2, -1), stats.chi2(2).cdf).pvalue > P_VALUE
    acc = np.asarray(info["acceptance_rate"])
    assert acc.shape == (1000,) and 0.6 < acc.mean() < 0.99, acc.mean()
    ess = np.asarray(effective_sample_size(samples))
    print(f"MALA ESS per dim {ess} of {samples.shape[0] * samples.shape[1]} draws, acceptance {acc.mean():.3f}")
    # The slow axis (variance 1.9) moves ~h/(2 * 1.9) per step: AR(1) ~0.95 per kept draw, ESS ~2.6%.
    assert np.all(ess > 0.01 * samples.shape[0] * samples.shape[1])
    assert np.all(np.abs(samples.reshape(-1, 2).mean(0)) < 4 * np.sqrt(np.diag(COV) / ess))


def quartic_log_prob(x):
    return -0.5 * jnp.sum((x @ jnp.asarray(PREC, x.dtype)) * x, axis=-1) - 0.25 * jnp.sum(x**4, axis=-1)


def quartic_grad_np(x):
    return -(x @ PREC) - x**3


def test_mala_acceptance_matches_direct_metropolis_ratio():
    """One MALA step on a non-Gaussian target with per-chain step sizes: the reported
    ratio equals pi(x') q(x|x') / (pi(x) q(x'|x)) computed with scipy's Gaussian
    density and the analytic gradient, and the chains move exactly where accepted.
    Over many chains the accepted fraction matches the mean acceptance probability."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        x = rng.normal(size=(6, 2))
        h = np.linspace(0.05, 0.8, 6)
        state = langevin_init(quartic_log_prob, jnp.asarray(x))
        new, info = jax.jit(lambda k, s, h: mala_step(k, quartic_log_prob, s, step_size=h))(
            jax.random.PRNGKey(6), state, jnp.asarray(h))
        xp = np.asarray(info.proposal)
        lp = lambda v: float(quartic_log_prob(jnp.asarray(v)[None])[0])
        expected = []
        for c in range(6):
            fwd = stats.multivariate_normal(x[c] + 0.5 * h[c] * quartic_grad_np(x[c]), h[c] * np.eye(2))
            bwd = stats.multivariate_normal(xp[c] + 0.5 * h[c] * quartic_grad_np(xp[c]), h[c] * np.eye(2))
            expected.append(lp(xp[c]) + bwd.logpdf(x[c]) - lp(x[c]) - fwd.logpdf(xp[c]))
        np.testing.assert_allclose(info.log_accept_ratio, expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(info.accept_prob, np.minimum(1.0, np.exp(expected)), rtol=1e-9)
        acc = np.asarray(info.accepted)
        np.testing.assert_array_equal(new.position, np.where(acc[:, None], xp, x))
        np.testing.assert_allclose(new.log_prob, quartic_log_prob(new.position), rtol=1e-12)
        assert int(new.num_steps) == 1
        np.testing.assert_allclose(new.mean_accept_prob, info.accept_prob)

    # Accepted fraction vs mean acceptance probability: 20000 one-step chains.
    x = jnp.asarray(np.random.default_rng(7).normal(size=(20000, 2)), jnp.float32)
    _, info = jax.jit(lambda k, s: mala_step(k, quartic_log_prob, s, step_size=0.25))(
        jax.random.PRNGKey(8), langevin_init(quartic_log_prob, x))
    p = float(np.mean(info.accept_prob))
    assert 0.2 < p < 0.95, p
    assert abs(np.mean(info.accepted) - p) < 4 * np.sqrt(p * (1 - p) / 20000)


def test_ula_stationary_variance_and_ess_match_discretised_ou():
    """ULA on N(0, s^2), s = 1.5, at h/s^2 = 0.5 and 1.0: the empirical variance of
    2000 chains x 200 draws matches s^2 / (1 - h/4s^2) (+14% and +33%), ESS matches
    the AR(1) value M N (1 - a)/(1 + a), and MALA at the same step has variance s^2."""
    s2 = 1.5**2
    log_prob = lambda x: -0.5 * jnp.sum(x**2, axis=-1) / s2
    x0 = jnp.sqrt(s2) * jax.random.normal(jax.random.PRNGKey(9), (2000, 1))

    @jax.jit
    def run(key, h):
        ula, _ = ula_sample(key, log_prob, x0, step_size=h, num_steps=200, num_burnin=40)
        mala, info = mala_sample(key, log_prob, x0, step_size=h, num_steps=200, num_burnin=40)
        return ula, effective_sample_size(ula), mala, info["acceptance_rate"]

    for ratio in (0.5, 1.0):
        h = ratio * s2
        ula, ess, mala, acc = run(jax.random.PRNGKey(10), h)
        expected_var = s2 / (1.0 - h / (4 * s2))
        np.testing.assert_allclose(np.var(ula), expected_var, rtol=0.02)
        assert np.var(ula) > 1.1 * s2  # visibly biased
        a = 1.0 - h / (2 * s2)
        ess_ar1 = ula.shape[0] * ula.shape[1] * (1 - a) / (1 + a)
        print(f"h/s^2={ratio}: ULA var {np.var(ula):.4f} (closed form {expected_var:.4f}), "
              f"ESS {float(ess[0]):.0f} (AR(1) {ess_ar1:.0f}), MALA acceptance {float(np.mean(acc)):.3f}")
        np.testing.assert_allclose(float(ess[0]), ess_ar1, rtol=0.1)
        np.testing.assert_allclose(np.var(mala), s2, rtol=0.03)


def test_sgld_step_is_ula_with_noise_scale_and_clipping():
    """noise_scale = 1 reproduces `ula_step` exactly (same key); with noise scale lambda
    on N(0, 1) the stationary variance is lambda^2 / (1 - h/4) (closed form); clipping
    clamps to the given range."""
    x = jnp.asarray(np.random.default_rng(11).normal(size=(5, 3)), jnp.float32)
    grad_fn = lambda v: -v
    log_prob = lambda v: -0.5 * jnp.sum(v**2, axis=-1)
    key = jax.random.PRNGKey(12)
    state, _ = ula_step(key, log_prob, langevin_init(log_prob, x), step_size=0.2)
    np.testing.assert_allclose(sgld_step(key, x, grad_fn, step_size=0.2), state.position, rtol=1e-6)
    np.testing.assert_allclose(sgld_step(key, x, grad_fn, step_size=0.2, noise_scale=0.0), 0.9 * x, rtol=1e-6)
    clipped = sgld_step(key, 3.0 * x, grad_fn, step_size=0.2, clip=(-0.5, 0.25))
    assert float(clipped.min()) == -0.5 and float(clipped.max()) == 0.25
    np.testing.assert_array_equal(sgld_step(key, x, grad_fn, step_size=0.2, clip=0.3),
                                  jnp.clip(sgld_step(key, x, grad_fn, step_size=0.2), -0.3, 0.3))

    lam, h = 0.5, 0.5

    @jax.jit
    def chain(x0):
        def body(x, i):
            x = sgld_step(jax.random.fold_in(key, i), x, grad_fn, step_size=h, noise_scale=lam)
            return x, x
        return jax.lax.scan(body, x0, jnp.arange(100))[1][30:]

    draws = chain(jnp.zeros((4000, 1)))
    np.testing.assert_allclose(np.var(draws), lam**2 / (1 - h / 4), rtol=0.03)


def test_samplers_trace_once_and_log_prob_traces_independent_of_length():
    traces = []

    def log_prob(x):
        traces.append(1)
        return gauss_log_prob(x)

    def count(sample_fn, num_steps):
        traces.clear()
        jax.jit(lambda k, x: sample_fn(k, log_prob, x, step_size=0.1, num_steps=num_steps,
                                       num_burnin=3, thin=2)[0]).lower(jax.random.PRNGKey(0), jnp.zeros((4, 2)))
        return len(traces)

    for fn in (mala_sample, ula_sample):
        assert count(fn, 4) == count(fn, 400) <= 4  # loops on device, not unrolled

    @jax.jit
    @chex.assert_max_traces(n=1)
    def sample(key, x0, h):
        return mala_sample(key, gauss_log_prob, x0, step_size=h, num_steps=6, thin=3)

    a, _ = sample(jax.random.PRNGKey(0), jnp.zeros((4, 2)), 0.1)
    b, _ = sample(jax.random.PRNGKey(1), jnp.ones((4, 2)), 0.2)  # new key, values, step: no retrace
    assert a.shape == b.shape == (2, 4, 2) and not np.allclose(a, b)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mala_sample(jax.random.PRNGKey(0), gauss_log_prob, jnp.zeros(2), step_size=0.1, num_steps=3),
         r"shape \[C, \.\.\.\].*received shape \(2,\)"),
        (lambda: ula_sample(jax.random.PRNGKey(0), gauss_log_prob, jnp.zeros((3, 2)), step_size=0.1, num_steps=0),
         r"num_steps must be a Python int >= 1; received 0"),
        (lambda: mala_sample(jax.random.PRNGKey(0), gauss_log_prob, jnp.zeros((3, 2)), step_size=0.1, num_steps=2,
                             thin=3), r"num_steps=2 keeps .* thin=3"),
        (lambda: mala_sample(jax.random.PRNGKey(0), gauss_log_prob, jnp.zeros((3, 2)), step_size=jnp.ones(4),
                             num_steps=2), r"received shape \(4,\)"),
        (lambda: langevin_init(lambda x: jnp.sum(gauss_log_prob(x)), jnp.zeros((3, 2))), r"returned shape \(\)"),
        (lambda: sgld_step(jax.random.PRNGKey(0), jnp.zeros((3, 2)), lambda x: x[:, 0], step_size=0.1),
         r"returned shape \(3,\)"),
        (lambda: sgld_step(jax.random.PRNGKey(0), jnp.zeros((3, 2)), lambda x: x, step_size=0.1, clip="yes"),
         r"clip must be .* received 'yes'"),
    ],
)
def test_errors_name_what_was_received(call, match):
    with pytest.raises(ValueError, match=match):
        call()
