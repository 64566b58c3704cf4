"""HMC: exact invariance, convergence to known targets, and the leapfrog integrator's
geometry (reversibility, volume preservation, second-order energy error).

References used as ground truth: exact Gaussian / Gaussian-mixture / half-normal
CDFs and samples (scipy.stats, numpy), the Jacobian determinant from `jax.jacobian`,
and the closed-form stationary variance of unadjusted leapfrog on a Gaussian.
All chains are independent, so the final positions of C chains are C independent
draws, which is what the Kolmogorov-Smirnov tests need.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.samplers import (
    effective_sample_size,
    hmc_init,
    hmc_sample,
    hmc_step,
    leapfrog,
    step_size_adapt_init,
    step_size_adapt_update,
)

# A correlated 2-D Gaussian: eigen-standard-deviations sqrt(1.9) = 1.38 and sqrt(0.1) = 0.32.
COV = np.array([[1.0, 0.9], [0.9, 1.0]])
PREC = np.linalg.inv(COV)
EVALS, EVECS = np.linalg.eigh(COV)  # ascending: EVALS[0] = 0.1 is the stiff direction
P_VALUE = 1e-3  # fixed seeds make every test deterministic; this only guards against bad luck


def gauss_log_prob(x):
    return -0.5 * jnp.sum((x @ jnp.asarray(PREC, x.dtype)) * x, axis=-1)


def whiten(x):
    """Maps N(0, COV) samples [N, 2] to N(0, I)."""
    return (np.asarray(x) @ EVECS) / np.sqrt(EVALS)


# A 1-D two-component Gaussian mixture.
MIX_W, MIX_MU, MIX_SD = np.array([0.3, 0.7]), np.array([-1.0, 1.2]), np.array([0.5, 0.6])


def mixture_log_prob(x):  # x [C, 1] -> [C]
    comp = (
        jnp.log(MIX_W)[None]
        - 0.5 * jnp.square((x - MIX_MU[None]) / MIX_SD[None])
        - jnp.log(MIX_SD * np.sqrt(2 * np.pi))[None]
    )
    return jax.nn.logsumexp(comp, axis=-1)


def mixture_cdf(v):
    z = (np.asarray(v)[:, None] - MIX_MU[None]) / MIX_SD[None]
    return np.sum(MIX_W[None] * stats.norm.cdf(z), axis=-1)


def final_positions(log_prob, key, x0, **kw):
    samples, info = jax.jit(lambda k, x: hmc_sample(log_prob, k, x, **kw))(key, x0)
    return np.asarray(samples), info


def test_correlated_gaussian_from_far_start_moments_and_ks():
    """1000 chains started at (3, 3), far in the tail: after 100 transitions their
    positions are independent draws from N(0, COV) (moments, KS per whitened axis,
    and chi-square(2) for the squared Mahalanobis distance)."""
    samples, info = final_positions(
        gauss_log_prob, jax.random.PRNGKey(0), jnp.full((1000, 2), 3.0),
        num_samples=100, step_size=0.3, num_leapfrog=7,
    )
    last = samples[-1]
    assert np.all(np.abs(last.mean(0)) < 4 * np.sqrt(np.diag(COV) / 1000))
    # Sample covariance of 1000 draws: sd of each entry <= sqrt(2/1000) * 1.
    np.testing.assert_allclose(np.cov(last.T), COV, atol=0.15)
    w = whiten(last)
    for j in range(2):
        assert stats.kstest(w[:, j], "norm").pvalue > P_VALUE
    assert stats.kstest(np.sum(w**2, -1), stats.chi2(2).cdf).pvalue > P_VALUE
    acc = np.asarray(info["acceptance_rate"])
    assert acc.shape == (1000,) and 0.6 < acc.mean() < 0.99
    # All kept draws: the mean's error is sd / sqrt(ESS), ESS from the sampler's own chains.
    tail = samples[50:]
    ess = np.asarray(effective_sample_size(tail))
    assert np.all(ess > 0.1 * tail.shape[0] * tail.shape[1])
    assert np.all(np.abs(tail.reshape(-1, 2).mean(0)) < 4 * np.sqrt(np.diag(COV) / ess))


def test_gaussian_mixture_two_sample_ks_against_exact_samples():
    rng = np.random.default_rng(0)
    n = 1000
    exact = rng.normal(MIX_MU, MIX_SD, size=(n, 2))[np.arange(n), rng.choice(2, n, p=MIX_W)]
    x0 = jnp.asarray(rng.normal(0.0, 3.0, size=(n, 1)))  # over-dispersed start
    samples, info = final_positions(
        mixture_log_prob, jax.random.PRNGKey(1), x0, num_samples=150, step_size=0.3, num_leapfrog=8,
    )
    last = samples[-1, :, 0]
    assert stats.ks_2samp(last, exact).pvalue > P_VALUE
    assert stats.kstest(last, mixture_cdf).pvalue > P_VALUE
    mean = np.sum(MIX_W * MIX_MU)
    var = np.sum(MIX_W * (MIX_SD**2 + MIX_MU**2)) - mean**2
    assert abs(last.mean() - mean) < 4 * np.sqrt(var / n)
    assert 0.5 < float(np.mean(info["acceptance_rate"])) < 1.0
    # The chains cross between the modes: both are populated in the right proportion.
    assert abs(np.mean(last < 0.0) - mixture_cdf(np.zeros(1))[0]) < 0.05


def test_large_step_size_metropolis_keeps_target_exact():
    """Step 0.55 is near the leapfrog stability limit 2 * 0.316 of the stiff axis:
    acceptance drops, but the corrected chain still targets N(0, COV) exactly, whereas
    always accepting (unadjusted HMC) inflates the stiff variance by the closed-form
    factor 1 / (1 - (eps * omega / 2)^2) ~ 4."""
    eps, num_leapfrog, c = 0.55, 5, 1000
    x0 = jnp.asarray(np.random.default_rng(2).normal(size=(c, 2)) * 2.0)
    samples, info = final_positions(
        gauss_log_prob, jax.random.PRNGKey(2), x0, num_samples=250, step_size=eps, num_leapfrog=num_leapfrog,
    )
    acc = float(np.mean(info["acceptance_rate"]))
    assert 0.05 < acc < 0.75, acc  # ~0.9 at half the step size
    w = whiten(samples[-1])
    for j in range(2):
        assert stats.kstest(w[:, j], "norm").pvalue > P_VALUE
    np.testing.assert_allclose(np.var(w, axis=0), 1.0, atol=0.15)

    def unadjusted(x, k):  # same proposal, no accept/reject
        p = jax.random.normal(k, x.shape, x.dtype)
        return leapfrog(gauss_log_prob, x, p, eps, num_leapfrog)[0], None

    keys = jax.random.split(jax.random.PRNGKey(3), 250)
    x_ula = np.asarray(jax.jit(lambda x: jax.lax.scan(unadjusted, x, keys)[0])(x0))
    omega = 1.0 / np.sqrt(EVALS[0])
    inflation = 1.0 / (1.0 - (eps * omega / 2) ** 2)
    var_stiff = np.var(whiten(x_ula)[:, 0])
    assert var_stiff > 2.0, var_stiff  # exact: 1
    np.testing.assert_allclose(var_stiff, inflation, rtol=0.2)


def test_half_normal_support_boundary_rejects_infinite_proposals():
    """log pi = -inf outside x > 0: proposals there have Delta H = inf and are rejected,
    so chains started inside sample the half-normal."""

    def log_prob(x):
        return jnp.where(x[:, 0] > 0, -0.5 * jnp.square(x[:, 0]), -jnp.inf)

    samples, info = final_positions(
        log_prob, jax.random.PRNGKey(4), jnp.full((1000, 1), 0.5),
        num_samples=60, step_size=0.3, num_leapfrog=5,
    )
    assert np.all(samples > 0)
    assert stats.kstest(samples[-1, :, 0], stats.halfnorm.cdf).pvalue > P_VALUE
    assert np.all(np.isfinite(np.asarray(info["state"].log_prob)))


def quartic_log_prob(x):
    """A non-Gaussian target (anharmonic), so the leapfrog checks are not linear algebra."""
    return -0.5 * jnp.sum((x @ jnp.asarray(PREC, x.dtype)) * x, axis=-1) - 0.25 * jnp.sum(x**4, axis=-1)


def test_leapfrog_reversible_per_chain_step_sizes():
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        x, p = jnp.asarray(rng.normal(size=(6, 2))), jnp.asarray(rng.normal(size=(6, 2)))
        eps = jnp.linspace(0.01, 0.1, 6)
        lf = jax.jit(lambda x, p, eps: leapfrog(quartic_log_prob, x, p, eps, 25))
        x1, p1, lp1, g1 = lf(x, p, eps)
        x2, p2, _, _ = lf(x1, -p1, eps)
        np.testing.assert_allclose(x2, x, atol=1e-11)
        np.testing.assert_allclose(-p2, p, atol=1e-11)
        np.testing.assert_allclose(lp1, quartic_log_prob(x1), rtol=1e-12)  # cached values are exact
        np.testing.assert_allclose(g1, jax.grad(lambda v: quartic_log_prob(v).sum())(x1), rtol=1e-12)
        # A per-chain step size acts chain by chain: chain 3 alone with its scalar step.
        x3, _, _, _ = leapfrog(quartic_log_prob, x[3:4], p[3:4], eps[3], 25)
        np.testing.assert_allclose(x3, x1[3:4], rtol=1e-12)


def test_leapfrog_volume_preserving():
    """det d(x', p') / d(x, p) = 1 (jax.jacobian of the whole 30-step map)."""
    with jax.enable_x64(True):
        def flow(z):
            x, p = z[None, :2], z[None, 2:]
            x1, p1, _, _ = leapfrog(quartic_log_prob, x, p, 0.1, 30)
            return jnp.concatenate([x1[0], p1[0]])

        z = jnp.asarray([0.3, -1.2, 0.8, 0.5])
        jac = jax.jacobian(flow)(z)
        assert not np.allclose(jac, np.eye(4), atol=0.1)  # a non-trivial map
        np.testing.assert_allclose(np.linalg.det(np.asarray(jac)), 1.0, atol=1e-10)


def test_leapfrog_energy_error_is_second_order():
    """At a fixed integration time eps * L = 1, |Delta H| = O(eps^2): halving eps
    divides the error by ~4 (empirical order ~2)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(6)
        x, p = jnp.asarray(rng.normal(size=(64, 2))), jnp.asarray(rng.normal(size=(64, 2)))

        @jax.jit  # eps and L traced: one compilation for all four step sizes
        def energy_error(eps, num_steps):
            x1, p1, lp1, _ = leapfrog(quartic_log_prob, x, p, eps, num_steps)
            h0 = -quartic_log_prob(x) + 0.5 * jnp.sum(p**2, -1)
            h1 = -lp1 + 0.5 * jnp.sum(p1**2, -1)
            return jnp.mean(jnp.abs(h1 - h0))

        errs = [float(energy_error(e, int(round(1.0 / e)))) for e in (0.1, 0.05, 0.025, 0.0125)]
        orders = np.log2(np.asarray(errs[:-1]) / np.asarray(errs[1:]))
        np.testing.assert_allclose(orders, 2.0, atol=0.15)


def test_hmc_sample_traces_once_and_log_prob_traces_independent_of_length():
    traces = []

    def log_prob(x):
        traces.append(1)
        return gauss_log_prob(x)

    def run(num_samples):
        traces.clear()
        jax.jit(lambda k, x: hmc_sample(log_prob, k, x, num_samples=num_samples, step_size=0.2,
                                        num_leapfrog=3, num_burnin=2)[0]).lower(
            jax.random.PRNGKey(0), jnp.zeros((4, 2))
        )
        return len(traces)

    # The loop is a lax.scan: the body is traced a fixed number of times, not per step.
    assert run(3) == run(300) <= 4

    @jax.jit
    @chex.assert_max_traces(n=1)
    def sample(key, x0):
        return hmc_sample(gauss_log_prob, key, x0, num_samples=5, step_size=0.2, num_leapfrog=3)

    a, _ = sample(jax.random.PRNGKey(0), jnp.zeros((4, 2)))
    b, _ = sample(jax.random.PRNGKey(1), jnp.ones((4, 2)))  # new key and values: no retrace
    assert a.shape == b.shape == (5, 4, 2) and not np.allclose(a, b)


def test_hmc_step_info_and_running_diagnostics():
    state = hmc_init(gauss_log_prob, jnp.zeros((5, 2)))
    step = jax.jit(lambda k, s: hmc_step(gauss_log_prob, k, s, step_size=0.3, num_leapfrog=5))
    probs = []
    for i in range(3):
        state, info = step(jax.random.PRNGKey(i), state)
        assert info.accept_prob.shape == info.accepted.shape == info.energy_change.shape == (5,)
        assert info.accepted.dtype == jnp.bool_
        assert np.all((info.accept_prob >= 0) & (info.accept_prob <= 1))
        np.testing.assert_allclose(info.accept_prob, np.minimum(1.0, np.exp(-info.energy_change)), rtol=1e-6)
        probs.append(info.accept_prob)
    assert int(state.num_steps) == 3
    np.testing.assert_allclose(state.mean_accept_prob, np.mean(probs, 0), rtol=1e-6)
    np.testing.assert_allclose(state.log_prob, gauss_log_prob(state.position), rtol=1e-5)


def test_step_size_adaptation_reaches_target_and_freezes_after_burnin():
    x0 = jnp.asarray(np.random.default_rng(8).normal(size=(200, 2)))
    run = jax.jit(
        lambda k, n: hmc_sample(gauss_log_prob, k, x0, num_samples=n, num_burnin=300, step_size=2.0,
                                num_leapfrog=5, adapt_step_size=True, target_accept=0.7),
        static_argnums=1,
    )
    samples, info = run(jax.random.PRNGKey(8), 100)
    # Same key, one kept sample: identical burn-in, so identical (frozen) step sizes.
    np.testing.assert_array_equal(run(jax.random.PRNGKey(8), 1)[1]["step_size"], info["step_size"])
    eps = np.asarray(info["step_size"])
    assert eps.shape == (200,) and np.all(eps < 0.7)  # came down from 2.0 (unstable above 0.63)
    assert 0.55 < float(np.mean(info["acceptance_rate"])) < 0.85
    w = whiten(samples[-1])
    assert stats.kstest(w[:, 0], "norm").pvalue > P_VALUE


def test_step_size_adapt_rule():
    """Wu et al.'s rule: x1.02 when the averaged acceptance is above target, x0.98 below, clipped."""
    s = step_size_adapt_init(0.1, 3, target_accept=0.65)
    s = step_size_adapt_update(s, jnp.array([1.0, 0.0, 0.65]), max_step_size=0.1005)
    np.testing.assert_allclose(s.avg_accept_prob, [0.9 * 0.65 + 0.1, 0.9 * 0.65, 0.65], rtol=1e-6)
    np.testing.assert_allclose(s.step_size, [0.1005, 0.098, 0.098], rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: hmc_init(gauss_log_prob, jnp.zeros(2)), r"shape \[C, \.\.\.\].*received shape \(2,\)"),
        (lambda: hmc_init(lambda x: jnp.sum(gauss_log_prob(x)), jnp.zeros((3, 2))), r"returned shape \(\)"),
        (lambda: leapfrog(gauss_log_prob, jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.ones(4), 2),
         r"received shape \(4,\)"),
        (lambda: hmc_sample(gauss_log_prob, jax.random.PRNGKey(0), jnp.zeros((3, 2)), num_samples=0,
                            step_size=0.1, num_leapfrog=2), "num_samples must be a Python int"),
        (lambda: step_size_adapt_init(jnp.ones(2), 3), r"shape \(3,\)"),
    ],
)
def test_errors_name_what_was_received(call, match):
    with pytest.raises(ValueError, match=match):
        call()
