"""DDPM ancestral sampling and DDIM against the exact score of a 2-D Gaussian mixture.

Ground truth: `jgen.sde.exact.GaussianMixture` gives the closed-form score of every
noised marginal, so eps_fn(x, n) = -sigma_n * score(x; alpha_n, sigma_n) is the ideal
network, and the samplers must reproduce the mixture itself. Checks are a kernel
two-sample test (MMD permutation test, fixed seeds) against exact mixture draws, with
negative controls that the same test rejects, moments within sampling error,
DDIM(eta=1, all steps) = DDPM(beta_tilde) in distribution, DDIM(eta=0)'s determinism and
first-order convergence, single tracing, NFE counted at run time, and sharding.

The schedule has N = 200 linear steps: DDPM's Gaussian reverse kernels are exact only as
N -> infinity, and at N = 200 the remaining bias (a few % on the variances, measured
with 20k samples) is well below what 1000 samples can detect.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import count_eqns
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jgen.metrics.mmd import mmd_permutation_test
from jgen.samplers.ddim import ddim_sample, ddim_timesteps
from jgen.samplers.ddpm import ddpm_sample
from jgen.sde.exact import gaussian_mixture
from jgen.sde.schedules import discrete_schedule, get_schedule, linear_betas

# Three anisotropic components with unequal weights (mode weights are what samplers get wrong).
MEANS = [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]
COVS = [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]], [[0.25, -0.1], [-0.1, 0.25]]]
GMM = gaussian_mixture([0.5, 0.3, 0.2], MEANS, COVS)
# Negative control: the same components with other weights.
GMM_REWEIGHTED = gaussian_mixture([0.4, 0.35, 0.25], MEANS, COVS)
SCHED = discrete_schedule(linear_betas(200))
B = 1000
ALPHA = 0.01  # test level; fixed seeds make every outcome deterministic

mmd_test = jax.jit(mmd_permutation_test, static_argnames="num_permutations")


def make_eps_fn(gmm, sched):
    def eps_fn(x, n):
        a, s = sched.marginal(n)
        return -s[:, None] * gmm.score(x, a, s)
    return eps_fn


EPS_FN = make_eps_fn(GMM, SCHED)


def gauss_eps_fn(x, n):
    """The exact eps for data N(0.5, 4 I): a cheap-to-compile model for the mechanical tests."""
    a, s = (v[:, None] for v in SCHED.marginal(n))
    return s * (x - 0.5 * a) / (4.0 * a ** 2 + s ** 2)


@functools.cache
def ddpm_fn(variance="beta", batch=B):
    """A jitted DDPM sampler key -> samples, cached so tests share its compilation."""
    return jax.jit(lambda k: ddpm_sample(k, EPS_FN, (batch, 2), schedule=SCHED, variance=variance))


def p_value(x, y, seed=7):
    return float(mmd_test(jax.random.PRNGKey(seed), x, y, num_permutations=200)[1])


@pytest.fixture(scope="module")
def exact():
    return GMM.sample(jax.random.PRNGKey(1234), B)


def assert_mixture(x, exact):
    """x is a draw from GMM: MMD does not reject, moments agree, and the controls are rejected."""
    x = np.asarray(x)
    assert np.all(np.isfinite(x))
    assert p_value(x, exact) > ALPHA
    mean, cov = np.asarray(GMM.mean()), np.asarray(GMM.covariance())
    se = np.sqrt(np.diag(cov) / B)
    assert np.all(np.abs(x.mean(0) - mean) < 4 * se), (x.mean(0), mean)
    # Sample variances of 1000 draws: relative sd about sqrt(2/1000) = 4.5%.
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.2, atol=0.1)
    # Control: the same test rejects these samples shifted by about one component std.
    assert p_value(x + np.array([[0.5, 0.0]], np.float32), exact) <= ALPHA


def test_two_sample_test_detects_wrong_mode_weights(exact):
    """The control for every sampler test here: at this sample size the test rejects
    exact draws of the mixture with weights (0.4, 0.35, 0.25) instead of (0.5, 0.3, 0.2)."""
    assert p_value(GMM_REWEIGHTED.sample(jax.random.PRNGKey(99), B), exact) <= ALPHA


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_samples_the_mixture(variance, exact):
    x, info = ddpm_fn(variance)(jax.random.PRNGKey(0))
    assert int(info.nfe) == 200
    assert_mixture(x, exact)


def test_ddim_deterministic_samples_the_mixture(exact):
    x, info = jax.jit(lambda k: ddim_sample(k, EPS_FN, (B, 2), schedule=SCHED, num_steps=100))(
        jax.random.PRNGKey(1))
    assert int(info.nfe) == 100
    assert_mixture(x, exact)


def test_ddim_eta1_full_sequence_is_ddpm_beta_tilde():
    """Eq. 16 with eta = 1 on all steps gives sigma^2 = beta_tilde and the Eq. 12 mean is
    the posterior mean: the same chain as DDPM(beta_tilde). In distribution (independent
    keys, two-sample test) and, since both fold the step index into the same key,
    path by path with a shared key."""
    ddim = jax.jit(lambda k: ddim_sample(k, EPS_FN, (B, 2), schedule=SCHED, num_steps=200, eta=1.0)[0])
    ddpm = ddpm_fn("beta_tilde")
    x_ddim, x_ddpm = ddim(jax.random.PRNGKey(2)), ddpm(jax.random.PRNGKey(3))[0]
    assert p_value(x_ddim, x_ddpm) > ALPHA
    np.testing.assert_allclose(ddim(jax.random.PRNGKey(3)), x_ddpm, atol=2e-4)
    # The control: DDPM with the other variance has the same law but not the same paths.
    assert np.max(np.abs(np.asarray(ddpm_fn("beta")(jax.random.PRNGKey(3))[0] - x_ddpm))) > 0.1


def test_ddim_eta0_is_deterministic_given_x_T():
    x_T = jax.random.normal(jax.random.PRNGKey(5), (16, 2))
    run = jax.jit(lambda k, xt: ddim_sample(k, gauss_eps_fn, (16, 2), schedule=SCHED, num_steps=20, x_T=xt)[0])
    a, b = run(jax.random.PRNGKey(0), x_T), run(jax.random.PRNGKey(1), x_T)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(run(jax.random.PRNGKey(0), -x_T), a)
    # With eta > 0 the key matters.
    noisy = jax.jit(lambda k: ddim_sample(k, gauss_eps_fn, (16, 2), schedule=SCHED, num_steps=20, eta=0.5,
                                          x_T=x_T)[0])
    assert not np.allclose(noisy(jax.random.PRNGKey(0)), noisy(jax.random.PRNGKey(1)))


def test_ddim_eta0_converges_with_first_order():
    """Deterministic DDIM is Euler's method for the probability-flow ODE in
    (x / sqrt(abar), sqrt(1 - abar) / sqrt(abar)), so its error against a 1000-step
    reference from the same x_T halves when the number of steps doubles (slope 1 in
    log-log). float64 so rounding does not pollute the fine-step errors."""
    with jax.enable_x64(True):
        sched = discrete_schedule(linear_betas(1000))
        eps_fn = make_eps_fn(GMM, sched)
        x_T = jax.random.normal(jax.random.PRNGKey(11), (64, 2), jnp.float64)

        def run(steps):
            return np.asarray(ddim_sample(jax.random.PRNGKey(0), eps_fn, (64, 2), schedule=sched,
                                          num_steps=steps, x_T=x_T, dtype=jnp.float64)[0])

        ref = run(1000)
        steps = np.array([10, 20, 40, 80])
        errors = np.array([np.mean(np.linalg.norm(run(int(s)) - ref, axis=1)) for s in steps])
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 0.8 < slope < 1.3, (slope, errors)
    assert np.all(np.diff(errors) < 0)



def counting_eps_fn(traces: list, calls: list):
    """An eps_fn that counts its Python traces and (via a debug callback) its run-time calls."""
    def eps_fn(x, n):
        traces.append(1)
        jax.debug.callback(lambda: calls.append(1))
        return gauss_eps_fn(x, n)
    return eps_fn


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_traces_once_counts_nfe_and_jaxpr_size_is_flat(sampler):
    def make(eps_fn, steps):
        if sampler == "ddpm":
            sched = get_schedule("cosine", steps)
            return lambda k: ddpm_sample(k, eps_fn, (4, 2), schedule=sched)
        return lambda k: ddim_sample(k, eps_fn, (4, 2), schedule=SCHED, num_steps=steps, eta=0.5)

    traces, calls = [], []
    run = jax.jit(make(counting_eps_fn(traces, calls), 7))
    for seed in range(3):
        _, info = run(jax.random.PRNGKey(seed))
        jax.effects_barrier()
        assert int(info.nfe) == 7
    assert len(traces) == 1  # one trace for three calls
    assert len(calls) == 3 * 7  # the NFE really is the number of evaluations
    sizes = [count_eqns(jax.make_jaxpr(make(gauss_eps_fn, s))(jax.random.PRNGKey(0)).jaxpr) for s in (10, 100)]
    assert sizes[0] == sizes[1], sizes


def test_explicit_timesteps_and_nfe():
    ts = ddim_timesteps(5, 200)
    np.testing.assert_array_equal(ts, [0, 50, 100, 149, 199])
    x_T = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
    a, info_a = ddim_sample(jax.random.PRNGKey(0), gauss_eps_fn, (8, 2), schedule=SCHED, num_steps=5, x_T=x_T)
    b, info_b = ddim_sample(jax.random.PRNGKey(0), gauss_eps_fn, (8, 2), schedule=SCHED, timesteps=list(ts),
                            x_T=x_T)
    np.testing.assert_array_equal(a, b)
    assert info_a.nfe == info_b.nfe == 5
    _, info = ddim_sample(jax.random.PRNGKey(0), gauss_eps_fn, (8, 2), schedule=SCHED, timesteps=[3, 17, 199])
    assert info.nfe == 3


def test_learned_variance_and_clipping():
    """model_var_fn returning log beta_tilde is variance="beta_tilde"; clipping at a bound
    the predictions never reach is the unclipped chain (checks the posterior-mean
    coefficients against Eq. 11); a tight clip bounds the output (the last step returns
    the clipped x0 prediction)."""
    key = jax.random.PRNGKey(4)
    log_bt = jnp.log(jnp.maximum(SCHED.posterior_variance(), 1e-20))
    base = ddpm_sample(key, gauss_eps_fn, (64, 2), schedule=SCHED, variance="beta_tilde")[0]
    learned = ddpm_sample(key, gauss_eps_fn, (64, 2), schedule=SCHED,
                          model_var_fn=lambda x, n: jnp.broadcast_to(log_bt[n][:, None], x.shape))[0]
    np.testing.assert_allclose(learned, base, atol=1e-5)
    loose = ddpm_sample(key, gauss_eps_fn, (64, 2), schedule=SCHED, variance="beta_tilde", clip_x0=1e6)[0]
    np.testing.assert_allclose(loose, base, atol=2e-4)
    tight = ddpm_sample(key, gauss_eps_fn, (64, 2), schedule=SCHED, clip_x0=1.0)[0]
    assert np.max(np.abs(tight)) <= 1.0 + 1e-6 and np.max(np.abs(base)) > 1.5
    tight = ddim_sample(key, gauss_eps_fn, (64, 2), schedule=SCHED, num_steps=10, clip_x0=1.0)[0]
    assert np.max(np.abs(tight)) <= 1.0 + 1e-6


def test_sharded_batch_matches_unsharded():
    """DDPM jitted over a batch sharded on 8 CPU devices gives the unsharded samples
    (per-example math; partitionable threefry draws the same noise however it is split)."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = NamedSharding(mesh, P("data"))
    x_T = jax.random.normal(jax.random.PRNGKey(8), (64, 2))

    def sample(key, x_T):
        return ddpm_sample(key, gauss_eps_fn, (64, 2), schedule=SCHED, x_T=x_T)[0]

    key = jax.random.PRNGKey(9)
    unsharded = jax.jit(sample)(key, x_T)
    sharded = jax.jit(sample, out_shardings=sharding)(key, jax.device_put(x_T, sharding))
    assert sharded.sharding.is_equivalent_to(sharding, 2)
    assert len(sharded.addressable_shards) == 8
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(unsharded), atol=1e-5)


def test_bad_inputs_raise_naming_the_value():
    k = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"strictly increasing.*\[0, 50, 50, 199\]"):
        ddim_sample(k, gauss_eps_fn, (4, 2), schedule=SCHED, timesteps=[0, 50, 50, 199])
    with pytest.raises(ValueError, match=r"\[0, 199\].*\[0, 200\]"):
        ddim_sample(k, gauss_eps_fn, (4, 2), schedule=SCHED, timesteps=[0, 200])
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\].*1\.5"):
        ddim_sample(k, gauss_eps_fn, (4, 2), schedule=SCHED, num_steps=10, eta=1.5)
    with pytest.raises(ValueError, match="exactly one of num_steps"):
        ddim_sample(k, gauss_eps_fn, (4, 2), schedule=SCHED, num_steps=10, timesteps=[0, 5])
    with pytest.raises(ValueError, match=r"num_steps must be an int in \[1, 200\].*500"):
        ddim_sample(k, gauss_eps_fn, (4, 2), schedule=SCHED, num_steps=500)
    with pytest.raises(ValueError, match="unknown variance 'fixed_large'"):
        ddpm_sample(k, gauss_eps_fn, (4, 2), schedule=SCHED, variance="fixed_large")
    with pytest.raises(ValueError, match=r"x_T has shape \[4, 3\]"):
        ddpm_sample(k, gauss_eps_fn, (4, 2), schedule=SCHED, x_T=jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"eps_fn must return .* \[4, 2\].*\[4\]"):
        ddim_sample(k, lambda x, n: x[:, 0], (4, 2), schedule=SCHED, num_steps=3)
    with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
        ddpm_sample(k, gauss_eps_fn, 4, schedule=SCHED)
