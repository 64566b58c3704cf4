"""Posterior samplers for linear inverse problems against the closed-form Gaussian posterior.

Ground truth: with a Gaussian prior x ~ N(MU, SIGMA) in R^4 (here a 2x2 "image"), the
exact score of every noised marginal is `GaussianMixture.score` with one component, and
for y = A x + N(0, s^2 I) the posterior is N(m, C) from `gaussian_posterior` (Bishop
2006, Sec. 2.3.3), itself checked against the textbook Gaussian conditional
(Schur complement) computed in numpy. So each sampler run with the exact prior score is
compared with exact posterior draws:

* replacement / RePaint (noiseless masking): the unobserved pixels are tested against
  the Gaussian conditional with a kernel two-sample test (MMD permutation test, fixed
  seeds) whose negative control (draws of the prior's marginal) it rejects, plus
  moments within sampling error. Both methods are approximate (the unknown part is
  conditioned on a noised copy of y); at the settings used the excess conditional
  variance is 1-4% (measured with 5000 samples), below the 20% tolerance, which is
  ~4.5 standard errors of a variance at B = 1000. Over three seeds the MMD p-values
  were 0.03-0.56 (replacement) and 0.11-0.16 (RePaint); the control's is 0.005, the
  smallest possible with 200 permutations.
* DPS (noisy y, a dense 2x4 A): DPS is biased even with the exact score, so the test is
  a moment test with a loose, documented tolerance (at step_scale 0.1, K = 100 the mean
  is ~0.2 posterior standard deviations off in Mahalanobis distance, the stds within
  ~4%; the test allows 0.5 and 25%), plus the negative control that its mean is more than 10x closer to the
  posterior mean than the prior mean is.

Also: observed pixels reproduced, NFE counted at run time, a single trace per shape and
step count, and clear errors for shape mismatches.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.inverse.operators import make_operator, masking
from jgen.inverse.posterior import (
    dps_sample,
    gaussian_posterior,
    repaint_sample,
    repaint_schedule,
    replacement_sample,
)
from jgen.metrics.mmd import mmd_permutation_test
from jgen.sde.exact import gaussian_mixture
from jgen.sde.schedules import discrete_schedule, linear_betas
from jgen.sde.sde import VPSDE

MU = np.array([0.5, -0.3, 0.2, 1.0], np.float32)
_L = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [-0.5, 0.3, 0.7, 0], [0.4, -0.4, 0.3, 0.6]],
              np.float32)
SIGMA = _L @ _L.T  # correlations up to 0.6, eigenvalues 0.09 .. 1.9
PRIOR = gaussian_mixture([1.0], MU[None], SIGMA[None])
SDE = VPSDE()
SCHED = discrete_schedule(linear_betas(100))
MASK = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)  # pixels 0 and 2 observed
OBS, HID = np.array([0, 2]), np.array([1, 3])
X_TRUE = np.array([[1.0, 0.0], [-0.5, 0.0]], np.float32)
Y_MASK = X_TRUE * MASK
B = 1000
ALPHA = 0.01  # test level; fixed seeds make every outcome deterministic

mmd_test = jax.jit(mmd_permutation_test, static_argnames="num_permutations")


def image_score(x, t):
    """Exact score of the noised prior for 2x2 images [B, 2, 2]."""
    alpha, sigma = SDE.marginal(t)
    return PRIOR.score(x.reshape(-1, 4), alpha, sigma).reshape(x.shape)


def image_eps(x, n):
    """Exact noise prediction eps = -sigma_n * score at DDPM step index n."""
    alpha, sigma = SCHED.marginal(n)
    return -sigma[:, None, None] * PRIOR.score(x.reshape(-1, 4), alpha, sigma).reshape(x.shape)


def conditional():
    """The posterior of the unobserved pixels given the observed ones (noiseless masking)."""
    m, c = gaussian_posterior(MU, SIGMA, np.eye(4, dtype=np.float32)[OBS], Y_MASK.ravel()[OBS], 0.0)
    return np.asarray(m)[HID], np.asarray(c)[np.ix_(HID, HID)]


def test_gaussian_posterior_is_the_schur_complement():
    # Noiseless selection: the textbook conditional, computed independently in float64.
    s = SIGMA.astype(np.float64)
    y = Y_MASK.ravel()[OBS].astype(np.float64)
    gain = s[np.ix_(HID, OBS)] @ np.linalg.inv(s[np.ix_(OBS, OBS)])
    m, c = conditional()
    np.testing.assert_allclose(m, MU[HID] + gain @ (y - MU[OBS]), atol=1e-5)
    np.testing.assert_allclose(c, s[np.ix_(HID, HID)] - gain @ s[np.ix_(OBS, HID)], atol=1e-5)
    # Noisy dense A: the information form C^-1 = Sigma^-1 + A^T A / s^2, m = C(Sigma^-1 mu + A^T y / s^2).
    a = np.random.default_rng(0).normal(size=(3, 4))
    yv, s2 = np.array([0.3, -1.0, 2.0]), 0.5 ** 2
    prec = np.linalg.inv(s) + a.T @ a / s2
    m, c = gaussian_posterior(MU, SIGMA, a.astype(np.float32), yv.astype(np.float32), 0.5)
    np.testing.assert_allclose(c, np.linalg.inv(prec), atol=1e-5)
    np.testing.assert_allclose(m, np.linalg.solve(prec, np.linalg.solve(s, MU) + a.T @ yv / s2), atol=1e-5)
    with pytest.raises(ValueError, match=r"A_matrix \[M, D\].*\(3, 4\), \(2,\)"):
        gaussian_posterior(MU, SIGMA, a.astype(np.float32), yv[:2], 0.5)


def check_conditional(x, seed):
    """Hidden pixels of x [B, 2, 2] vs exact conditional draws; observed pixels equal y."""
    x = np.asarray(x).reshape(B, 4)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(x[:, OBS], np.broadcast_to(Y_MASK.ravel()[OBS], (B, 2)), atol=1e-6)
    m, c = conditional()
    h = x[:, HID]
    exact = jax.random.multivariate_normal(jax.random.PRNGKey(seed), m, c, (B,))
    key = jax.random.PRNGKey(seed + 1)
    assert float(mmd_test(key, h, exact, num_permutations=200)[1]) > ALPHA
    # Negative control: the prior's marginal of the hidden pixels (ignores y) is rejected.
    prior = PRIOR.sample(jax.random.PRNGKey(seed + 2), B)[:, HID]
    assert float(mmd_test(key, prior, exact, num_permutations=200)[1]) <= ALPHA
    se = np.sqrt(np.diag(c) / B)
    assert np.all(np.abs(h.mean(0) - m) < 4 * se), (h.mean(0), m, se)
    np.testing.assert_allclose(np.cov(h.T), c, rtol=0.2, atol=0.05)


def test_replacement_hits_the_gaussian_conditional():
    run = jax.jit(lambda k: replacement_sample(k, image_score, masking(MASK), Y_MASK, (B, 2, 2),
                                               sde=SDE, num_steps=100, corrector_steps=3))
    x, info = run(jax.random.PRNGKey(0))
    assert int(info.nfe) == 100 + 3 * 100 + 1
    check_conditional(x, 10)


def test_repaint_hits_the_gaussian_conditional():
    run = jax.jit(lambda k: repaint_sample(k, image_eps, MASK, Y_MASK, (B, 2, 2), schedule=SCHED,
                                           resample_steps=10))
    x, info = run(jax.random.PRNGKey(1))
    assert int(info.nfe) == 100 + 9 * 99  # every level but the last denoised U = 10 times
    check_conditional(x, 20)


def test_dps_approaches_the_noisy_posterior():
    a = np.array([[1.0, 0.5, 0.0, -0.5], [0.0, 1.0, -1.0, 0.5]], np.float32)
    A = make_operator(lambda x: jnp.einsum("bij,kij->bk", x, a.reshape(2, 2, 2)),
                      lambda v: jnp.einsum("bk,kij->bij", v, a.reshape(2, 2, 2)),
                      (2, 2), (2,), name="dense")
    s_y = 0.1
    y = a @ X_TRUE.ravel() + s_y * np.array([0.3, -0.8], np.float32)
    m, c = (np.asarray(v) for v in gaussian_posterior(MU, SIGMA, a, y, s_y))
    run = jax.jit(lambda k: dps_sample(k, image_score, A, y, (B, 2, 2), sde=SDE, num_steps=100,
                                       noise_std=s_y, step_scale=0.1))
    x, info = run(jax.random.PRNGKey(2))
    assert int(info.nfe) == 101
    x = np.asarray(x).reshape(B, 4)
    assert np.all(np.isfinite(x))

    def mahalanobis(v):
        return float(np.sqrt(v @ np.linalg.solve(c, v)))

    # DPS is biased: a loose tolerance. Measured over seeds 2, 4, 6: the mean is 0.21-0.24
    # posterior stds off (Mahalanobis), ~7x the sampling error, the stds within 4%.
    assert mahalanobis(x.mean(0) - m) < 0.5
    np.testing.assert_allclose(x.std(0), np.sqrt(np.diag(c)), rtol=0.25)
    # Negative control: the prior mean is ~12.5 posterior stds away; DPS is >10x closer.
    assert mahalanobis(x.mean(0) - m) < 0.1 * mahalanobis(MU - m)


SAMPLERS = {
    "replacement": lambda score, y: lambda k: replacement_sample(
        k, score, masking(MASK), y, (4, 2, 2), sde=SDE, num_steps=5, corrector_steps=2),
    "replacement_no_corrector": lambda score, y: lambda k: replacement_sample(
        k, score, masking(MASK), y, (4, 2, 2), sde=SDE, num_steps=5, corrector=False, denoise=False),
    "repaint_jump2": lambda eps, y: lambda k: repaint_sample(
        k, eps, MASK, y, (4, 2, 2), schedule=SCHED, resample_steps=3, jump_length=2),
    "dps": lambda score, y: lambda k: dps_sample(
        k, score, masking(MASK), y, (4, 2, 2), sde=SDE, num_steps=5, noise_std=0.0, step_scale=0.1),
}
NFE = {"replacement": 5 + 10 + 1, "replacement_no_corrector": 5,
       "repaint_jump2": 100 + 2 * 98, "dps": 6}
SITES = {"replacement": 3, "replacement_no_corrector": 1, "repaint_jump2": 1, "dps": 2}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_nfe_counted_single_trace_and_observed_pixels(name):
    traces, calls = [], []
    model = image_eps if name.startswith("repaint") else image_score

    def counted(x, t):
        traces.append(1)
        jax.debug.callback(lambda: calls.append(1))
        return model(x, t)

    run = jax.jit(lambda k, y: SAMPLERS[name](counted, y)(k))
    for seed in range(2):  # a new key and a new y: no retrace
        y = Y_MASK + seed
        x, info = run(jax.random.PRNGKey(seed), y)
        jax.effects_barrier()
        assert int(info.nfe) == NFE[name]
        x = np.asarray(x).reshape(4, 4)
        assert np.all(np.isfinite(x))
        obs = x[:, OBS] - y.ravel()[OBS]
        if name == "replacement_no_corrector":  # the noised y at t_min: sigma(t_min) ~ 0.01
            assert np.all(np.abs(obs) < 0.06)
        elif name != "dps":
            np.testing.assert_allclose(obs, 0.0, atol=1e-6)
    assert len(calls) == 2 * NFE[name]
    assert len(traces) == SITES[name]  # one trace per call site, shared by both calls


def test_repaint_schedule_is_algorithm_1_for_jump_1():
    # N = 3, U = 2: denoise 3->2, renoise 2->3, denoise 3->2, ..., the last step once.
    assert repaint_schedule(3, 2, 1).tolist() == [[2, 1], [2, 0], [2, 1], [1, 1], [1, 0],
                                                   [1, 1], [0, 1]]
    moves = repaint_schedule(7, 3, 2)
    assert moves[:, 1].sum() == 7 + 2 * 6 and moves[-1].tolist() == [0, 1]
    # Every move changes the level by one: the chain of levels is consistent.
    level = 7
    for n, d in moves:
        assert n == (level - 1 if d else level)
        level += -1 if d else 1
    assert level == 0


def test_shape_mismatches_raise_clear_errors():
    k, A = jax.random.PRNGKey(0), masking(MASK)
    kw = {"sde": SDE, "num_steps": 3}
    with pytest.raises(ValueError, match=r"shape \(4, 3, 2\) does not match A.in_shape \(2, 2\)"):
        replacement_sample(k, image_score, A, Y_MASK, (4, 3, 2), **kw)
    with pytest.raises(ValueError, match=r"y has shape \(3, 2, 2\).*batch is 4"):
        replacement_sample(k, image_score, A, np.zeros((3, 2, 2), np.float32), (4, 2, 2), **kw)
    with pytest.raises(ValueError, match=r"lacks the batch axis"):
        replacement_sample(k, image_score, A, Y_MASK, (2, 2), **kw)
    with pytest.raises(ValueError, match="LinearOperator"):
        dps_sample(k, image_score, np.eye(4), Y_MASK, (4, 2, 2), noise_std=0.1, **kw)
    with pytest.raises(ValueError, match=r"y has shape \(4,\).*A.out_shape is \(2, 2\)"):
        dps_sample(k, image_score, A, np.zeros(4, np.float32), (4, 2, 2), noise_std=0.1, **kw)
    with pytest.raises(ValueError, match="noise_std must be a finite number >= 0.*-1"):
        dps_sample(k, image_score, A, Y_MASK, (4, 2, 2), noise_std=-1.0, **kw)
    with pytest.raises(ValueError, match="num_steps must be a Python int >= 1.*0"):
        replacement_sample(k, image_score, A, Y_MASK, (4, 2, 2), sde=SDE, num_steps=0)
    with pytest.raises(ValueError, match=r"score_fn must return .* \[4, 2, 2\].*\[4, 4\]"):
        dps_sample(k, lambda x, t: x.reshape(4, 4), A, Y_MASK, (4, 2, 2), noise_std=0.1, **kw)
    with pytest.raises(ValueError, match=r"shape \(4, 4\) does not match mask.shape \(2, 2\)"):
        repaint_sample(k, image_eps, MASK, Y_MASK, (4, 4), schedule=SCHED)
    with pytest.raises(ValueError, match="only 0 and 1"):
        repaint_sample(k, image_eps, MASK * 0.5, Y_MASK, (4, 2, 2), schedule=SCHED)
    with pytest.raises(ValueError, match="resample_steps must be a Python int >= 1"):
        repaint_sample(k, image_eps, MASK, Y_MASK, (4, 2, 2), schedule=SCHED, resample_steps=0)
