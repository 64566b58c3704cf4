"""Tests for the deterministic diffusion samplers: the probability-flow ODE
(`jgen.samplers.ode`), EDM's Heun / stochastic samplers (`jgen.samplers.edm`) and
DPM-Solver++(2M) (`jgen.samplers.dpm_solver`).

Independent references: the exact noised score of a 2-D Gaussian mixture
(`jgen.sde.exact`) and exact draws from it, compared by an MMD permutation test (with a
mixture of other weights as the negative control); for the order of convergence, a
tight-tolerance adaptive diffrax solution of the same ODE (written out here for EDM's
sigma-parametrised ODE); runtime callback counts for the number of score evaluations.
Compile time dominates, so each group of runs shares one `jax.jit`.
"""

import functools

import chex
import diffrax
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import count_eqns

from jgen.metrics.mmd import mmd_permutation_test
from jgen.samplers.dpm_solver import (
    dpm_solver_pp_2m_sample,
    dpm_solver_time_steps,
    x0_from_score,
)
from jgen.samplers.edm import denoiser_from_score, edm_sample
from jgen.samplers.ode import probability_flow_sample
from jgen.sde import VESDE, VPSDE, gaussian_mixture, to_x0

MEANS = [[-1.5, 0.5], [1.0, -0.5]]
COVS = [[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.4]]]
N_HALF = 400  # each sampler is called twice (two keys): 800 samples


@functools.cache
def mixture(weights=(0.3, 0.7), dtype=jnp.float32):
    return gaussian_mixture(weights, MEANS, COVS, dtype=dtype)


def score_fn(gm, sde):
    """The exact score of p_t for the SDE's marginal (alpha(t), sigma(t))."""
    return lambda x, t: gm.score(x, *sde.marginal(t))


def ve_denoiser(gm):
    """EDM's denoiser from the exact VE score: D(x; sigma) = x + sigma^2 score(x; 1, sigma)."""
    return denoiser_from_score(lambda x, sigma: gm.score(x, 1.0, sigma))


VP, VE = VPSDE(), VESDE(sigma_max=20.0)


def counting(counts, name, fn):
    """fn, plus a runtime count of its evaluations in counts[name] (a host callback)."""

    def wrapped(x, t):
        jax.debug.callback(lambda: counts.__setitem__(name, counts.get(name, 0) + 1))
        return fn(x, t)

    return wrapped


def _samplers(gm, counts):
    """name -> (key -> (samples [N_HALF, 2], info)), each driven by the exact score."""
    shape = (N_HALF, 2)
    score = lambda name, sde: counting(counts, name, score_fn(gm, sde))
    den = lambda name: counting(counts, name, ve_denoiser(gm))
    return {
        "pf_euler_vp": lambda k: probability_flow_sample(
            k, score("pf_euler_vp", VP), shape, sde=VP, method="euler", num_steps=100),
        "pf_heun_vp_denoise": lambda k: probability_flow_sample(
            k, score("pf_heun_vp_denoise", VP), shape, sde=VP, method="heun", num_steps=20, denoise=True),
        "pf_tsit5_ve": lambda k: probability_flow_sample(
            k, score("pf_tsit5_ve", VE), shape, sde=VE, method="tsit5", rtol=1e-4, atol=1e-4),
        "edm_heun": lambda k: edm_sample(k, den("edm_heun"), shape, num_steps=40),
        "edm_churn": lambda k: edm_sample(k, den("edm_churn"), shape, num_steps=64, s_churn=20.0,
                                          s_tmin=0.01, s_tmax=50.0, s_noise=1.0),
        # x0_fn = to_x0 of the exact score (prediction="score").
        "dpm_vp_logsnr": lambda k: dpm_solver_pp_2m_sample(
            k, counting(counts, "dpm_vp_logsnr",
                        lambda x, t: to_x0(score_fn(gm, VP)(x, t), x, *VP.marginal(t), "score")),
            shape, sde=VP, num_steps=15),
        "dpm_ve_logsnr": lambda k: dpm_solver_pp_2m_sample(
            k, x0_from_score(score("dpm_ve_logsnr", VE), VE), shape, sde=VE, num_steps=20),
    }


# Model evaluations each configuration must report (the adaptive one: see below).
EXPECTED_NFE = {"pf_euler_vp": 100, "pf_heun_vp_denoise": 2 * 20 + 1, "edm_heun": 2 * 40 - 1,
                "edm_churn": 2 * 64 - 1, "dpm_vp_logsnr": 15, "dpm_ve_logsnr": 20}
SAMPLERS = list(_samplers(mixture(), {}))


@pytest.fixture(scope="module")
def two_sample():
    gm, counts = mixture(), {}
    samplers = _samplers(gm, counts)

    @jax.jit
    @chex.assert_max_traces(n=1)  # the second key must reuse the first call's trace
    def draw(key):
        return {name: f(jax.random.fold_in(key, i)) for i, (name, f) in enumerate(samplers.items())}

    a, b = draw(jax.random.PRNGKey(0)), draw(jax.random.PRNGKey(1))
    samples = {name: np.concatenate([a[name][0], b[name][0]]) for name in samplers}
    nfe = {name: (int(a[name][1].nfe), int(b[name][1].nfe)) for name in samplers}
    exact, wrong = jax.jit(lambda k: (gm.sample(jax.random.fold_in(k, 0), 2 * N_HALF),
                                      mixture((0.5, 0.5)).sample(jax.random.fold_in(k, 1), 2 * N_HALF)))(
        jax.random.PRNGKey(100))
    mmd = jax.jit(functools.partial(mmd_permutation_test, num_permutations=200))
    return samples, exact, wrong, mmd, (nfe, a["pf_tsit5_ve"][1], counts)


def test_mmd_negative_control_is_rejected(two_sample):
    # The test can tell the target from a mixture with weights (0.5, 0.5) at this size.
    _, exact, wrong, mmd, _ = two_sample
    assert float(mmd(jax.random.PRNGKey(2), exact, wrong)[1]) < 0.01


@pytest.mark.parametrize("name", SAMPLERS)
def test_samplers_with_the_exact_score_hit_the_mixture(two_sample, name):
    samples, exact, wrong, mmd, _ = two_sample
    x = samples[name]
    assert x.shape == (2 * N_HALF, 2) and np.all(np.isfinite(x))
    _, p_exact = mmd(jax.random.PRNGKey(2), x, exact)
    _, p_wrong = mmd(jax.random.PRNGKey(2), x, wrong)
    assert float(p_exact) > 0.05, (name, float(p_exact))
    assert float(p_wrong) < 0.01, (name, float(p_wrong))  # and it is not just anything nearby


def test_reported_nfe_matches_counted_evaluations_for_every_variant(two_sample):
    *_, (nfe, tsit5_info, counts) = two_sample
    for name, want in EXPECTED_NFE.items():  # both calls (two keys) together
        assert nfe[name] == (want, want) and counts[name] == 2 * want, (name, nfe[name], counts[name])
    # Adaptive Tsit5: 1 + 6 per attempted step from diffrax's stats, as counted at runtime.
    assert nfe["pf_tsit5_ve"][0] == 1 + 6 * int(tsit5_info.num_steps)
    assert counts["pf_tsit5_ve"] == sum(nfe["pf_tsit5_ve"])


# --- order of convergence and NFE (float64) -----------------------------------------

STEPS = (64, 128, 256)
B = 16


@pytest.fixture(scope="module")
def convergence():
    """Errors against a tight adaptive reference for every fixed-step sampler and N,
    and the NFE each run reports next to the evaluations counted at runtime."""
    counts = {}
    counted = functools.partial(counting, counts)

    with jax.enable_x64(True):
        gm = mixture(dtype=jnp.float64)
        x_T = jax.random.normal(jax.random.PRNGKey(3), (B, 2), jnp.float64)
        vp_score = score_fn(gm, VP)
        den = ve_denoiser(gm)
        sigma_max, sigma_min = 80.0, 0.002

        def edm_reference(x):
            # dx/dsigma = (x - D(x; sigma)) / sigma from sigma_max to sigma_min, then the
            # same final map as the sampler's last (Euler) step into sigma = 0: x -> D(x).
            full = lambda s: jnp.full((B,), s, x.dtype)
            term = diffrax.ODETerm(lambda s, y, _: (y - den(y, full(s))) / s)
            sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), sigma_max, sigma_min, -0.01, x,
                                      stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11),
                                      max_steps=10_000)
            return den(sol.ys[-1], full(sigma_min))

        def run(x):
            out, nfe = {}, {}
            ref, info = probability_flow_sample(None, counted("ref", vp_score), (B, 2), sde=VP,
                                                method="dopri5", rtol=1e-11, atol=1e-11, x_T=x)
            out["ref"], nfe["ref"] = ref, info
            out["edm_ref"] = edm_reference(sigma_max * x)
            for n in STEPS:
                for method in ("euler", "heun"):
                    key = f"{method}_{n}"
                    out[key], info = probability_flow_sample(
                        None, counted(key, vp_score), (B, 2), sde=VP, method=method, num_steps=n, x_T=x)
                    nfe[key] = info.nfe
                key = f"edm_{n}"
                out[key], info = edm_sample(None, counted(key, den), (B, 2), num_steps=n,
                                            sigma_min=sigma_min, sigma_max=sigma_max, x_T=sigma_max * x)
                nfe[key] = info.nfe
                key = f"dpm_{n}"
                out[key], info = dpm_solver_pp_2m_sample(
                    None, counted(key, x0_from_score(vp_score, VP)), (B, 2), sde=VP, num_steps=n, x_T=x)
                nfe[key] = info.nfe
            return out, nfe

        out, nfe = jax.tree.map(np.asarray, jax.jit(run)(x_T))
    return out, nfe, counts


@pytest.mark.parametrize("method, order", [("euler", 1.0), ("heun", 2.0), ("edm", 2.0), ("dpm", 2.0)])
def test_fixed_step_samplers_converge_with_their_order(convergence, method, order):
    out, _, _ = convergence
    ref = out["edm_ref"] if method == "edm" else out["ref"]
    # Root-mean-square error over the batch (smoother in N than the max).
    errors = np.array([np.sqrt(np.mean((out[f"{method}_{n}"] - ref) ** 2)) for n in STEPS])
    slope = -np.polyfit(np.log(STEPS), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.25, (method, errors, slope)
    assert errors[-1] < 0.01, (method, errors)


def test_nfe_matches_counted_evaluations(convergence):
    _, nfe, counts = convergence
    for n in STEPS:
        expected = {f"euler_{n}": n, f"heun_{n}": 2 * n, f"edm_{n}": 2 * n - 1, f"dpm_{n}": n}
        for key, want in expected.items():
            assert int(nfe[key]) == want == counts[key], (key, nfe[key], counts[key])
    # Adaptive: diffrax's step statistics give 1 + 6 * attempted steps (FSAL Dopri5),
    # which must match the evaluations counted at runtime.
    info = nfe["ref"]
    assert int(info.nfe) == 1 + 6 * int(info.num_steps) == counts["ref"]
    assert int(info.num_steps) == int(info.num_accepted_steps) + int(info.num_rejected_steps)


# --- compilation -----------------------------------------------------------------------



@pytest.mark.parametrize("name", ["euler", "heun", "edm", "edm_churn", "dpm"])
def test_program_size_and_traces_do_not_grow_with_steps(name):
    gm = mixture()
    traces = []

    def score(x, t):
        traces.append(1)
        return gm.score(x, *VP.marginal(t))

    def den(x, sigma):
        traces.append(1)
        return x + sigma[:, None] ** 2 * gm.score(x, 1.0, sigma)

    def make(n):
        shape = (4, 2)
        if name in ("euler", "heun"):
            return lambda k: probability_flow_sample(k, score, shape, sde=VP, method=name, num_steps=n)
        if name.startswith("edm"):
            churn = 5.0 if name == "edm_churn" else 0.0
            return lambda k: edm_sample(k, den, shape, num_steps=n, s_churn=churn)
        return lambda k: dpm_solver_pp_2m_sample(k, x0_from_score(score, VP), shape, sde=VP, num_steps=n)

    sizes, num_traces = [], []
    for n in (10, 100):
        traces.clear()
        sizes.append(count_eqns(jax.make_jaxpr(make(n))(jax.random.PRNGKey(0)).jaxpr))
        num_traces.append(len(traces))
    # The step loop is a lax.fori_loop: the same program and the same number of model
    # traces (1 or 2 in the loop body, 1 or 2 outside) for 10 and 100 steps.
    assert sizes[0] == sizes[1], sizes
    assert num_traces[0] == num_traces[1] <= 4, num_traces


# --- time grids ---------------------------------------------------------------------------


def test_dpm_solver_logsnr_time_steps_are_uniform_in_lambda():
    grid = jax.jit(dpm_solver_time_steps, static_argnums=(0, 1, 2), static_argnames="dtype")
    with jax.enable_x64(True):
        for sde in (VP, VE):
            ts = grid(sde, 10, sde.t_min, dtype=jnp.float64)
            alpha, sigma = sde.marginal(ts)
            lam = np.log(alpha) - np.log(sigma)
            assert ts[0] == sde.T and ts[-1] == sde.t_min and np.all(np.diff(ts) < 0)
            np.testing.assert_allclose(np.diff(lam), np.full(10, (lam[-1] - lam[0]) / 10), rtol=1e-9)
        # VE closed form: lambda = -log sigma(t) uniform <=> t uniform (sigma geometric in t).
        ts = grid(VE, 8, VE.t_min, dtype=jnp.float64)
        np.testing.assert_allclose(ts, np.linspace(VE.T, VE.t_min, 9), rtol=1e-9)


# --- errors ----------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    key, shape = jax.random.PRNGKey(0), (4, 2)
    s = lambda x, t: -x
    with pytest.raises(ValueError, match="'rk4'"):
        probability_flow_sample(key, s, shape, sde=VP, method="rk4", num_steps=10)
    with pytest.raises(ValueError, match="num_steps=None"):
        probability_flow_sample(key, s, shape, sde=VP, method="heun")
    with pytest.raises(ValueError, match="2.5"):
        probability_flow_sample(key, s, shape, sde=VP, method="euler", num_steps=2.5)
    with pytest.raises(ValueError, match="t_end"):
        probability_flow_sample(key, s, shape, sde=VP, method="euler", num_steps=3, t_end=1.5)
    with pytest.raises(ValueError, match=r"rtol=0\.0"):
        probability_flow_sample(key, s, shape, sde=VP, method="tsit5", rtol=0.0)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        probability_flow_sample(key, s, shape, sde=VP, method="euler", num_steps=3, x_T=jnp.zeros((3, 2)))
    with pytest.raises(TypeError, match="LinearSDE"):
        probability_flow_sample(key, s, shape, sde="vp", method="euler", num_steps=3)
    with pytest.raises(ValueError, match="num_steps"):
        edm_sample(key, s, shape, num_steps=0)
    with pytest.raises(ValueError, match="sigma_min=90"):
        edm_sample(key, s, shape, sigma_min=90.0)
    with pytest.raises(ValueError, match="s_churn=-1"):
        edm_sample(key, s, shape, s_churn=-1.0)
    with pytest.raises(ValueError, match="key is None"):
        edm_sample(None, s, shape, s_churn=1.0, x_T=jnp.zeros(shape))
    with pytest.raises(ValueError, match="'cosine'"):
        dpm_solver_pp_2m_sample(key, s, shape, sde=VP, num_steps=5, time_schedule="cosine")
    with pytest.raises(ValueError, match="num_steps"):
        dpm_solver_pp_2m_sample(key, s, shape, sde=VP, num_steps=None)
    with pytest.raises(ValueError, match=r"\[B, \.\.\.\]"):
        dpm_solver_pp_2m_sample(key, s, (2,), sde=VP, num_steps=5)
    with pytest.raises(ValueError, match="key is None"):
        dpm_solver_pp_2m_sample(None, s, shape, sde=VP, num_steps=5)
    with pytest.raises(ValueError, match="key is None"):
        probability_flow_sample(None, s, shape, sde=VP, method="euler", num_steps=5)
