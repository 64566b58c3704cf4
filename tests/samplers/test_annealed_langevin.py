"""Annealed Langevin dynamics (NCSN) against exact scores.

Ground truth: the closed-form score of a 2-D Gaussian mixture convolved with
N(0, sigma^2 I) (`jgen.sde.exact`, alpha = 1), and for a Gaussian target the exact
law of the sampler's output (every step is linear-Gaussian, so mean and variance
follow a closed-form recursion, including the unadjusted-Langevin bias).

Annealed Langevin is only asymptotically exact: at step size alpha a Gaussian of
variance v is sampled with variance v / (1 - alpha / 4v), and a finite annealing
schedule leaves the mode weights slightly unequilibrated (towards equal weights; with
the settings below, about 1.5 percentage points on the heaviest mode, measured with 20k
samples). The mixture test allows that bias on top of sampling error, and its MMD test
at 1000 samples cannot see it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import count_eqns

from jgen.metrics.mmd import mmd_permutation_test
from jgen.samplers.annealed_langevin import annealed_langevin_sample
from jgen.sde.exact import gaussian_mixture
from jgen.sde.schedules import geometric_sigmas

MEANS = [[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]
COVS = [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]], [[0.25, -0.1], [-0.1, 0.25]]]
WEIGHTS = np.array([0.5, 0.3, 0.2])
GMM = gaussian_mixture(WEIGHTS, MEANS, COVS)
B = 1000
ALPHA = 0.01

mmd_test = jax.jit(mmd_permutation_test, static_argnames="num_permutations")


def gmm_score(x, sigma):
    """Score of the mixture convolved with N(0, sigma^2 I) (x = x0 + sigma eps)."""
    return GMM.score(x, jnp.ones_like(sigma), sigma)


def mode_weights(x):
    """Fraction of points nearest each component mean."""
    d = np.sum((np.asarray(x)[:, None] - np.asarray(MEANS)[None]) ** 2, axis=-1)
    return np.bincount(d.argmin(1), minlength=3) / len(x)


def test_samples_the_mixture():
    """sigma_1 = 5 (about the largest distance between modes, Song & Ermon 2020), 10
    levels down to 0.05, 100 steps each, step_lr = 1e-3 (step/variance ratio at most
    step_lr / 4 sigma_L^2 = 0.1), then the Tweedie denoising step."""
    sigmas = geometric_sigmas(10, 0.05, 5.0)
    x, info = jax.jit(lambda k: annealed_langevin_sample(
        k, gmm_score, (B, 2), sigmas=sigmas, steps_per_sigma=100, step_lr=1e-3))(jax.random.PRNGKey(0))
    assert int(info.nfe) == 10 * 100 + 1
    x = np.asarray(x)
    exact = GMM.sample(jax.random.PRNGKey(1234), B)
    key = jax.random.PRNGKey(7)
    assert float(mmd_test(key, x, exact, num_permutations=200)[1]) > ALPHA
    # Controls the same test rejects: a half-component-std shift, and wrong mode weights.
    assert float(mmd_test(key, x + np.array([[0.5, 0.0]], np.float32), exact, num_permutations=200)[1]) <= ALPHA
    reweighted = gaussian_mixture([0.4, 0.35, 0.25], MEANS, COVS).sample(jax.random.PRNGKey(99), B)
    assert float(mmd_test(key, reweighted, exact, num_permutations=200)[1]) <= ALPHA
    # Mode weights: binomial sd sqrt(w(1-w)/B) <= 0.016, plus the known 0.02 annealing bias.
    se = np.sqrt(WEIGHTS * (1 - WEIGHTS) / B)
    np.testing.assert_array_less(np.abs(mode_weights(x) - WEIGHTS), 4 * se + 0.02)
    np.testing.assert_allclose(np.cov(x.T), np.asarray(GMM.covariance()), rtol=0.2, atol=0.1)


def gaussian_prediction(m, v, sigmas, steps, step_lr, denoise):
    """Exact mean and variance (per coordinate) of the output for the target N(m, v I):
    with score -(x - m)/(v + sigma^2) a Langevin step maps (mu, s2) to
    (mu - a/2 (mu - m)/v_i, (1 - a/2v_i)^2 s2 + a), v_i = v + sigma_i^2."""
    mu, s2 = 0.0, sigmas[0] ** 2  # the N(0, sigma_1^2 I) start
    for sigma in sigmas:
        a, vi = step_lr * sigma ** 2 / sigmas[-1] ** 2, v + sigma ** 2
        for _ in range(steps):
            mu, s2 = mu - 0.5 * a * (mu - m) / vi, (1 - 0.5 * a / vi) ** 2 * s2 + a
    if denoise:  # x + sigma_L^2 score = m + (x - m) v / v_L
        shrink = v / (v + sigmas[-1] ** 2)
        mu, s2 = m + shrink * (mu - m), shrink ** 2 * s2
    return mu, s2


@pytest.mark.parametrize("denoise", [True, False])
def test_gaussian_target_matches_the_exact_recursion_including_its_bias(denoise):
    """Large steps on purpose: the output variance is biased (here about 10% above the
    target's), and the sample matches the predicted biased law, not the target."""
    m, v = 1.5, 1.0
    sigmas = geometric_sigmas(5, 0.5, 4.0)
    steps, step_lr, n = 20, 0.5, 4000
    x, _ = jax.jit(lambda k: annealed_langevin_sample(
        k, lambda x, s: -(x - m) / (v + s[:, None] ** 2), (n, 2), sigmas=sigmas,
        steps_per_sigma=steps, step_lr=step_lr, denoise=denoise))(jax.random.PRNGKey(3))
    mu, s2 = gaussian_prediction(m, v, sigmas, steps, step_lr, denoise)
    x = np.asarray(x).ravel()  # 2n independent coordinates
    var_target = v if denoise else v + sigmas[-1] ** 2
    assert abs(s2 / var_target - 1) > 0.05  # the bias is there, and larger than the noise below
    assert abs(x.mean() - mu) < 4 * np.sqrt(s2 / x.size)
    assert abs(x.var() / s2 - 1) < 4 * np.sqrt(2 / x.size)  # 4 sd of a sample variance



def test_traces_once_counts_nfe_and_jaxpr_size_is_flat():
    traces, calls = [], []

    def score(x, sigma):
        traces.append(1)
        jax.debug.callback(lambda: calls.append(1))
        return -x / (1.0 + sigma[:, None] ** 2)

    def make(score_fn, levels, steps, denoise=True):
        return lambda k: annealed_langevin_sample(k, score_fn, (4, 2), sigmas=geometric_sigmas(levels, 0.1, 2.0),
                                                  steps_per_sigma=steps, step_lr=1e-3, denoise=denoise)

    run = jax.jit(make(score, 3, 4))
    for seed in range(2):
        _, info = run(jax.random.PRNGKey(seed))
        jax.effects_barrier()
        assert int(info.nfe) == 3 * 4 + 1
    assert len(traces) == 2  # the loop body and the denoising step, traced once for both calls
    assert len(calls) == 2 * (3 * 4 + 1)
    _, info = make(lambda x, s: -x, 3, 4, denoise=False)(jax.random.PRNGKey(0))
    assert info.nfe == 12
    sizes = [count_eqns(jax.make_jaxpr(make(lambda x, s: -x, lv, st))(jax.random.PRNGKey(0)).jaxpr)
             for lv, st in ((10, 10), (100, 10), (10, 100))]
    assert len(set(sizes)) == 1, sizes


def test_bad_inputs_raise_naming_the_value():
    k, s = jax.random.PRNGKey(0), lambda x, sigma: -x
    kw = {"steps_per_sigma": 2, "step_lr": 1e-3}
    with pytest.raises(ValueError, match=r"strictly decreasing.*\[0\.1, 1\.0\]"):
        annealed_langevin_sample(k, s, (4, 2), sigmas=[0.1, 1.0], **kw)
    with pytest.raises(ValueError, match=r"positive noise levels.*-1"):
        annealed_langevin_sample(k, s, (4, 2), sigmas=[1.0, -1.0], **kw)
    with pytest.raises(ValueError, match="steps_per_sigma must be a positive Python int.*0"):
        annealed_langevin_sample(k, s, (4, 2), sigmas=[1.0, 0.1], steps_per_sigma=0, step_lr=1e-3)
    with pytest.raises(ValueError, match="step_lr must be a positive number.*-0.1"):
        annealed_langevin_sample(k, s, (4, 2), sigmas=[1.0, 0.1], steps_per_sigma=2, step_lr=-0.1)
    with pytest.raises(ValueError, match=r"score_fn must return .* \[4, 2\].*\[4\]"):
        annealed_langevin_sample(k, lambda x, sigma: sigma, (4, 2), sigmas=[1.0, 0.1], **kw)
    with pytest.raises(ValueError, match=r"x_init has shape \[3, 2\]"):
        annealed_langevin_sample(k, s, (4, 2), sigmas=[1.0, 0.1], x_init=jnp.zeros((3, 2)), **kw)
