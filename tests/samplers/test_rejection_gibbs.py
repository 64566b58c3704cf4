"""Rejection sampling is exact and accepts at rate Z_p / M; block Gibbs on a tiny RBM
hits its enumerated distribution.

References used as ground truth: target CDFs and normalisers by scipy quadrature (and
closed forms where they exist), the envelope constant from a hand bound, and the RBM's
joint p(v, h) by brute-force enumeration of all (v, h) pairs in numpy float64.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jgen.samplers.gibbs import gibbs_init, gibbs_run, gibbs_sample, gibbs_step
from jgen.samplers.rejection import rejection_sample

P_VALUE = 1e-3

# Case 1: p~(x) = exp(-x^2/2) (1 + cos 2x), three bumps, from q = N(0, 2^2).
# p~/q = 2 sqrt(2 pi) exp(-3x^2/8) (1 + cos 2x) <= 4 sqrt(2 pi) (attained at 0), and
# Z_p = sqrt(2 pi) (1 + e^-2) in closed form, so the acceptance rate is (1 + e^-2) / 4.
COS_LOG_M = np.log(4 * np.sqrt(2 * np.pi))


def cos_target_np(x):
    return np.exp(-0.5 * x**2) * (1 + np.cos(2 * x))


def cos_case():
    return {
        "log_target_fn": lambda x: -0.5 * x[:, 0] ** 2 + jnp.log1p(jnp.cos(2 * x[:, 0])),
        "proposal_sample_fn": lambda k, n: 2.0 * jax.random.normal(k, (n, 1)),
        "proposal_log_prob_fn": lambda x: -(x[:, 0] ** 2) / 8 - jnp.log(2 * jnp.sqrt(2 * jnp.pi)),
    }


# Case 2: a bimodal Gaussian mixture truncated to [0, 3], from q = U(0, 3).
# sup p~ <= 0.3 / (0.3 sqrt(2 pi)) + 0.7 / (0.5 sqrt(2 pi)) = 2.4 / sqrt(2 pi), M = 3 sup p~.
MIX = ((0.3, 0.5, 0.3), (0.7, 2.0, 0.5))
TRUNC_LOG_M = np.log(3 * 2.4 / np.sqrt(2 * np.pi))


def trunc_target_np(x):
    inside = (x >= 0) & (x <= 3)
    return inside * sum(w * stats.norm.pdf(x, m, s) for w, m, s in MIX)


def trunc_case():
    def log_target(x):
        v = x[:, 0]
        comp = jnp.stack([jnp.log(w) - 0.5 * ((v - m) / s) ** 2 - jnp.log(s * jnp.sqrt(2 * jnp.pi)) for w, m, s in MIX])
        return jnp.where((v >= 0) & (v <= 3), jax.nn.logsumexp(comp, axis=0), -jnp.inf)

    return {
        "log_target_fn": log_target,
        "proposal_sample_fn": lambda k, n: jax.random.uniform(k, (n, 1), minval=0.0, maxval=3.0),
        "proposal_log_prob_fn": lambda x: jnp.full(x.shape[:1], -jnp.log(3.0)),
    }


def quadrature_cdf(density, lo, hi):
    grid = np.linspace(lo, hi, 200_001)
    cum = integrate.cumulative_trapezoid(density(grid), grid, initial=0.0)
    z = integrate.quad(density, lo, hi, points=[0.0], limit=200)[0]
    return (lambda v: np.interp(v, grid, cum) / z), z


@pytest.mark.parametrize(
    "case, log_m, density, lo, hi, z_closed",
    [
        (cos_case, COS_LOG_M, cos_target_np, -12.0, 12.0, np.sqrt(2 * np.pi) * (1 + np.exp(-2))),
        (trunc_case, TRUNC_LOG_M, trunc_target_np, 0.0, 3.0, None),
    ],
    ids=["cosine-bumps-gaussian-proposal", "truncated-mixture-uniform-proposal"],
)
def test_rejection_sampling_is_exact_with_acceptance_z_over_m(case, log_m, density, lo, hi, z_closed):
    """4000 draws pass a KS test against the target CDF (quadrature); the acceptance
    rate matches Z_p / M within 4 binomial standard errors."""
    cdf, z = quadrature_cdf(density, lo, hi)
    if z_closed is not None:
        np.testing.assert_allclose(z, z_closed, rtol=1e-8)  # the quadrature is right
    fns = case()
    run = jax.jit(lambda k: rejection_sample(k, **fns, log_m=log_m, num=4000, max_rounds=100, batch_size=1000))
    samples, info = run(jax.random.PRNGKey(0))
    assert int(info["num_accepted"]) == 4000 and bool(np.all(info["filled"]))
    assert not bool(info["envelope_violated"]) and float(info["max_log_ratio"]) <= 1e-5
    x = np.asarray(samples[:, 0])
    assert stats.kstest(x, cdf).pvalue > P_VALUE
    rate, n = float(info["acceptance_rate"]), int(info["num_proposed"])
    expected = z / np.exp(log_m)
    print(f"acceptance {rate:.4f} vs Z/M = {expected:.4f} over {n} proposals")
    assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_envelope_violation_raises_eagerly_and_poisons_under_jit():
    fns = cos_case()
    bad_log_m = COS_LOG_M - 0.5  # M too small near x = 0
    with pytest.raises(ValueError, match=r"envelope M q\(x\) >= p~\(x\) is violated: with log_m=1\.8.*> 0"):
        rejection_sample(jax.random.PRNGKey(1), **fns, log_m=bad_log_m, num=200, max_rounds=10)
    samples, info = jax.jit(lambda k: rejection_sample(k, **fns, log_m=bad_log_m, num=200, max_rounds=10))(
        jax.random.PRNGKey(1))
    assert bool(info["envelope_violated"]) and np.all(np.isnan(samples))
    # The largest log-ratio seen is at most the 0.5 shortfall (reached at x = 0).
    assert 0.0 < float(info["max_log_ratio"]) <= 0.5 + 1e-5
    # Opting out of the check keeps the (inexact) samples for inspection.
    samples, info = rejection_sample(jax.random.PRNGKey(1), **fns, log_m=bad_log_m, num=200, max_rounds=10,
                                     check_envelope=False)
    assert bool(info["envelope_violated"]) and np.all(np.isfinite(samples))


def test_rejection_max_rounds_partial_fill_and_traces_once():
    """With one round of 100 proposals at acceptance ~0.284, about 28 of 500 rows are
    filled; the rest are flagged unfilled. A new key does not retrace."""
    fns = cos_case()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(key):
        return rejection_sample(key, **fns, log_m=COS_LOG_M, num=500, max_rounds=1, batch_size=100)

    for seed in (2, 3):
        samples, info = run(jax.random.PRNGKey(seed))
        count = int(info["num_accepted"])
        assert int(info["num_proposed"]) == 100 and 10 < count < 50
        np.testing.assert_array_equal(info["filled"], np.arange(500) < count)
        assert np.all(samples[count:] == 0) and np.all(samples[:count] != 0)
        np.testing.assert_allclose(float(info["acceptance_rate"]), count / 100)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num": 0}, r"num must be a Python int >= 1; received 0"),
        ({"proposal_sample_fn": lambda k, n: jax.random.normal(k, (n + 1, 1))},
         r"proposal_sample_fn\(key, 10\) must return \[10, \.\.\.\] proposals; it returned shape \(11, 1\)"),
        ({"log_target_fn": lambda x: jnp.sum(x)}, r"log_target_fn must return .* returned shape \(\)"),
        ({"log_m": jnp.zeros(2)}, r"log_m must be a scalar .* received shape \(2,\)"),
    ],
)
def test_rejection_errors_name_what_was_received(kw, match):
    args = dict(cos_case(), log_m=COS_LOG_M, num=10, max_rounds=2)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        rejection_sample(jax.random.PRNGKey(0), **args)


# ---------------------------------------------------------------- Gibbs on a tiny RBM


def tiny_rbm(seed, num_visible=4, num_hidden=3, scale=1.0):
    rng = np.random.default_rng(seed)
    return {
        "W": rng.normal(0.0, scale, (num_visible, num_hidden)),
        "b": rng.normal(0.0, 0.5, num_visible),
        "c": rng.normal(0.0, 0.5, num_hidden),
    }


def brute_force_joint(p):
    """p(v, h) over all (v, h) pairs, [2^V, 2^H], states in binary_states order."""
    v_states = np.array(list(itertools.product([0, 1], repeat=p["b"].size)))[:, ::-1]  # bit i = unit i
    h_states = np.array(list(itertools.product([0, 1], repeat=p["c"].size)))[:, ::-1]
    neg_e = v_states @ p["b"][:, None] + (h_states @ p["c"])[None] + v_states @ p["W"] @ h_states.T
    joint = np.exp(neg_e - neg_e.max())
    return joint / joint.sum()


def state_index(s):
    return (np.asarray(s) * (1 << np.arange(s.shape[-1]))).sum(-1).astype(int)


def test_gibbs_hits_enumerated_joint_of_tiny_rbm():
    """4000 chains from all-zeros, 40 burn-in steps: the final (v, h) are independent
    draws from p(v, h) (chi-square over the 16 visible states, and over the 128 joint
    states with cells of expected count < 5 pooled)."""
    p_np = tiny_rbm(0, scale=1.5)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in p_np.items()}
    joint = brute_force_joint(p_np)
    c = 4000
    v, info = jax.jit(lambda k: gibbs_sample(k, params, jnp.zeros((c, 4)), num_steps=10, num_burnin=30, thin=5))(
        jax.random.PRNGKey(0))
    assert v.shape == (2, c, 4) and info["hidden"].shape == (2, c, 3)
    vi, hi = state_index(v[-1]), state_index(info["hidden"][-1])
    counts_v = np.bincount(vi, minlength=16)
    assert stats.chisquare(counts_v, c * joint.sum(1)).pvalue > P_VALUE
    expected = c * joint.ravel()
    counts = np.bincount(vi * 8 + hi, minlength=128).astype(float)
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    assert stats.chisquare(obs, exp).pvalue > P_VALUE
    assert int(info["state"].num_steps) == 40  # 30 burn-in + 10 kept-phase steps


def test_gibbs_step_keeps_exact_draws_exact_and_run_equals_steps():
    """Starting from exact joint draws (v from p(v), h from gibbs_init), one step leaves
    the visible marginal exact; gibbs_run(k) is k gibbs_step calls with fold_in keys."""
    p_np = tiny_rbm(1, scale=2.0)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in p_np.items()}
    pv = brute_force_joint(p_np).sum(1)
    rng = np.random.default_rng(2)
    idx = rng.choice(16, size=4000, p=pv)
    v0 = jnp.asarray((idx[:, None] >> np.arange(4)) & 1, jnp.float32)
    state = gibbs_init(jax.random.PRNGKey(3), params, v0)
    state = jax.jit(lambda k, s: gibbs_step(k, params, s))(jax.random.PRNGKey(4), state)
    assert stats.chisquare(np.bincount(state_index(state.visible), minlength=16), 4000 * pv).pvalue > P_VALUE

    small = gibbs_init(jax.random.PRNGKey(5), params, v0[:8])
    key = jax.random.PRNGKey(6)
    ran = gibbs_run(key, params, small, 3)
    stepped = small
    for i in range(3):
        stepped = gibbs_step(jax.random.fold_in(key, i), params, stepped)
    np.testing.assert_array_equal(ran.visible, stepped.visible)
    np.testing.assert_array_equal(ran.hidden, stepped.hidden)


def test_gibbs_traces_once_and_errors():
    params = {k: jnp.asarray(v, jnp.float32) for k, v in tiny_rbm(3).items()}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(key, params, v0):
        return gibbs_sample(key, params, v0, num_steps=4)[0]

    a = run(jax.random.PRNGKey(0), params, jnp.zeros((5, 4)))
    b = run(jax.random.PRNGKey(1), jax.tree.map(lambda x: 2 * x, params), jnp.ones((5, 4)))
    assert a.shape == b.shape == (4, 5, 4)
    with pytest.raises(ValueError, match=r"must be binary .* received values such as \[0\.5\]"):
        gibbs_init(jax.random.PRNGKey(0), params, jnp.asarray([[0.0, 1.0, 0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \[B, 4\]; received shape \(2, 5\)"):
        gibbs_sample(jax.random.PRNGKey(0), params, jnp.zeros((2, 5)), num_steps=2)
    with pytest.raises(ValueError, match=r"num_steps must be a Python int >= 1; received 0"):
        gibbs_sample(jax.random.PRNGKey(0), params, jnp.zeros((2, 4)), num_steps=0)
