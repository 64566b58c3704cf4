"""Predictor-corrector sampling of the VP / VE SDEs against the exact score of a 2-D
Gaussian mixture.

Ground truth: `jgen.sde.exact.GaussianMixture.score(x, *sde.marginal(t))` is the exact
score of every marginal p_t, so PC sampling must reproduce the mixture up to its
discretisation error (at K = 100 steps the moments and mode weights agree with the
target within 1-2%, measured with 20k samples, below what 1000 samples can detect).
Checks: a kernel two-sample test (MMD permutation test, fixed seeds) with negative
controls it rejects, moments within sampling error, NFE counted at run time, single
tracing, flat jaxpr size, sharding, and bad-input errors.
"""

import jax
import numpy as np
import pytest
from helpers import count_eqns
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jgen.metrics.mmd import mmd_permutation_test
from jgen.samplers.pc import euler_maruyama_predictor, langevin_corrector, pc_sample
from jgen.sde.exact import gaussian_mixture
from jgen.sde.sde import VESDE, VPSDE

MEANS = [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]
COVS = [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]], [[0.25, -0.1], [-0.1, 0.25]]]
GMM = gaussian_mixture([0.5, 0.3, 0.2], MEANS, COVS)
B = 1000
ALPHA = 0.01

mmd_test = jax.jit(mmd_permutation_test, static_argnames="num_permutations")


def exact_score(sde):
    def score_fn(x, t):
        alpha, sigma = sde.marginal(t)
        return GMM.score(x, alpha, sigma)
    return score_fn


def gauss_score(sde):
    """Exact score for data N(0.5, I): a cheap-to-compile model for the mechanical tests."""
    def score_fn(x, t):
        alpha, sigma = (v[:, None] for v in sde.marginal(t))
        return -(x - 0.5 * alpha) / (alpha ** 2 + sigma ** 2)
    return score_fn


@pytest.fixture(scope="module")
def exact():
    return GMM.sample(jax.random.PRNGKey(1234), B)


@pytest.mark.parametrize("sde, predictor", [
    (VPSDE(), "euler_maruyama"),
    (VESDE(sigma_max=10.0), "reverse_diffusion"),  # sigma_max ~ the largest distance between modes
], ids=["vp-euler_maruyama", "ve-reverse_diffusion"])
def test_pc_samples_the_mixture(sde, predictor, exact):
    x, info = jax.jit(lambda k: pc_sample(k, exact_score(sde), (B, 2), sde=sde, num_steps=100,
                                          predictor=predictor, corrector="langevin", snr=0.16))(
        jax.random.PRNGKey(0))
    assert int(info.nfe) == 2 * 100 + 1
    x = np.asarray(x)
    assert np.all(np.isfinite(x))
    key = jax.random.PRNGKey(7)
    assert float(mmd_test(key, x, exact, num_permutations=200)[1]) > ALPHA
    # Controls the same test rejects: a half-component-std shift, and wrong mode weights.
    assert float(mmd_test(key, x + np.array([[0.5, 0.0]], np.float32), exact, num_permutations=200)[1]) <= ALPHA
    reweighted = gaussian_mixture([0.4, 0.35, 0.25], MEANS, COVS).sample(jax.random.PRNGKey(99), B)
    assert float(mmd_test(key, reweighted, exact, num_permutations=200)[1]) <= ALPHA
    cov = np.asarray(GMM.covariance())
    se = np.sqrt(np.diag(cov) / B)
    assert np.all(np.abs(x.mean(0) - np.asarray(GMM.mean())) < 4 * se)
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.2, atol=0.1)



@pytest.mark.parametrize("predictor, corrector, corrector_steps, denoise, nfe", [
    ("euler_maruyama", "langevin", 1, True, 2 * 5 + 1),
    ("reverse_diffusion", "langevin", 2, False, 3 * 5),
    ("reverse_diffusion", None, 1, True, 5 + 1),
    (None, "langevin", 3, True, 3 * 5 + 1),
])
def test_nfe_is_the_number_of_evaluations_and_traces_once(predictor, corrector, corrector_steps, denoise, nfe):
    sde = VPSDE()
    traces, calls = [], []

    def score_fn(x, t):
        traces.append(1)
        jax.debug.callback(lambda: calls.append(1))
        return gauss_score(sde)(x, t)

    run = jax.jit(lambda k: pc_sample(k, score_fn, (4, 2), sde=sde, num_steps=5, predictor=predictor,
                                      corrector=corrector, corrector_steps=corrector_steps, denoise=denoise))
    for seed in range(2):
        _, info = run(jax.random.PRNGKey(seed))
        jax.effects_barrier()
        assert int(info.nfe) == nfe
    assert len(calls) == 2 * nfe
    # One trace per call site (predictor, corrector, denoiser), shared by both calls.
    assert len(traces) == (predictor is not None) + (corrector is not None) + denoise


def test_jaxpr_size_is_flat_and_functions_compose_like_names():
    sde = VESDE(sigma_max=5.0)

    def make(num_steps, corrector_steps=1, **kw):
        return lambda k: pc_sample(k, gauss_score(sde), (4, 2), sde=sde, num_steps=num_steps,
                                   corrector_steps=corrector_steps, **kw)[0]

    sizes = [count_eqns(jax.make_jaxpr(make(k, m))(jax.random.PRNGKey(0)).jaxpr)
             for k, m in ((10, 1), (100, 1), (10, 10))]
    assert len(set(sizes)) == 1, sizes
    # Practice 7: names are only a registry over the step functions.
    key = jax.random.PRNGKey(3)
    by_name = make(20, predictor="euler_maruyama", corrector="langevin", snr=0.1)(key)
    by_fn = make(20, predictor=euler_maruyama_predictor,
                 corrector=lambda *a: langevin_corrector(*a, snr=0.1))(key)
    np.testing.assert_array_equal(by_name, by_fn)


def test_sharded_batch_matches_unsharded():
    """PC (whose corrector step uses batch-mean norms) jitted over a batch sharded on 8
    CPU devices gives the unsharded samples: under jit the mean is global."""
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = NamedSharding(mesh, P("data"))
    sde = VPSDE()
    x_T = jax.random.normal(jax.random.PRNGKey(8), (64, 2))

    def sample(key, x_T):
        return pc_sample(key, gauss_score(sde), (64, 2), sde=sde, num_steps=20, x_T=x_T)[0]

    key = jax.random.PRNGKey(9)
    unsharded = jax.jit(sample)(key, x_T)
    sharded = jax.jit(sample, out_shardings=sharding)(key, jax.device_put(x_T, sharding))
    assert len(sharded.addressable_shards) == 8
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(unsharded), atol=1e-5)


def test_bad_inputs_raise_naming_the_value():
    k, sde, s = jax.random.PRNGKey(0), VPSDE(), gauss_score(VPSDE())
    with pytest.raises(ValueError, match="unknown predictor 'heun'"):
        pc_sample(k, s, (4, 2), sde=sde, num_steps=5, predictor="heun")
    with pytest.raises(ValueError, match="unknown corrector 'ald'"):
        pc_sample(k, s, (4, 2), sde=sde, num_steps=5, corrector="ald")
    with pytest.raises(ValueError, match="both None"):
        pc_sample(k, s, (4, 2), sde=sde, num_steps=5, predictor=None, corrector=None)
    with pytest.raises(ValueError, match="num_steps must be a positive Python int.*0"):
        pc_sample(k, s, (4, 2), sde=sde, num_steps=0)
    with pytest.raises(ValueError, match="snr must be a positive number.*-0.1"):
        pc_sample(k, s, (4, 2), sde=sde, num_steps=5, snr=-0.1)
    with pytest.raises(ValueError, match=r"score_fn must return .* \[4, 2\].*\[4\]"):
        pc_sample(k, lambda x, t: t, (4, 2), sde=sde, num_steps=5)
