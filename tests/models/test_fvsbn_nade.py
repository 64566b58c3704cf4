"""FVSBN and NADE: the exact likelihood sums to 1 over all 2^n binary vectors, equals
an independent position-by-position chain-rule computation, the autoregressive
property holds by the Jacobian, and ancestral samples hit the enumerated
distribution (chi-square)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.losses.autoregressive import bernoulli_autoregressive_log_prob
from jgen.models.autoregressive.fvsbn import FVSBN, NADE
from jgen.samplers.ancestral import ancestral_sample


def _random_params(module, key, dim, scale=1.0):
    params = module.init(key, jnp.zeros((1, dim)))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 7), len(leaves))
    leaves = [scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, leaves)


def _all_binary(n):
    return np.array(list(itertools.product([0, 1], repeat=n)), np.float32)


MODELS = {"fvsbn": lambda d: FVSBN(d), "nade": lambda d: NADE(d, hidden=7)}


def _chain_rule_reference(name, params, x):
    """log p(x) one conditional at a time, from the parameters, in float64 numpy."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)["params"]
    total = 0.0
    for i in range(len(x)):
        if name == "fvsbn":
            logit = p["b"][i] + sum(p["w"][i, j] * x[j] for j in range(i))
        else:
            a = p["c"] + sum(p["w"][j] * x[j] for j in range(i))
            logit = p["b"][i] + p["v"][i] @ (1.0 / (1.0 + np.exp(-a)))
        prob1 = 1.0 / (1.0 + np.exp(-logit))
        total += np.log(prob1 if x[i] == 1 else 1.0 - prob1)
    return total


@pytest.mark.parametrize("name", sorted(MODELS))
def test_exact_likelihood_normalises_and_matches_the_chain_rule(name):
    n = 10
    model = MODELS[name](n)
    params = _random_params(model, jax.random.PRNGKey(0), n)
    xs = _all_binary(n)
    logp = np.asarray(bernoulli_autoregressive_log_prob(model.apply(params, xs), xs), np.float64)
    np.testing.assert_allclose(np.exp(logp).sum(), 1.0, atol=1e-4)
    for idx in [0, 5, 333, 1023]:
        np.testing.assert_allclose(logp[idx], _chain_rule_reference(name, params, xs[idx]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_autoregressive_property_by_jacobian(name):
    n = 6
    model = MODELS[name](n)
    params = _random_params(model, jax.random.PRNGKey(1), n)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (1, n)), jnp.float32)
    jac = np.asarray(jax.jacobian(lambda v: model.apply(params, v[None])[0])(x[0]))
    assert np.all(jac[np.triu_indices(n)] == 0.0)  # d logit_i / d x_j == 0 for j >= i
    assert np.all(jac[np.tril_indices(n, k=-1)] != 0.0)  # and every earlier input is used


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ancestral_samples_match_the_enumerated_distribution(name):
    n = 4
    model = MODELS[name](n)
    params = _random_params(model, jax.random.PRNGKey(2), n, scale=1.5)
    xs = _all_binary(n)
    probs = np.exp(np.asarray(bernoulli_autoregressive_log_prob(model.apply(params, xs), xs), np.float64))
    num = 20_000
    sample = jax.jit(lambda k: ancestral_sample(k, lambda v: model.apply(params, v), jnp.zeros((num, n))))
    draws = np.asarray(sample(jax.random.PRNGKey(3))).astype(int)
    codes = draws @ (2 ** np.arange(n)[::-1])
    counts = np.bincount(codes, minlength=2**n)
    _, pval = stats.chisquare(counts, num * probs / probs.sum())
    assert pval > 1e-3, pval
    # Reproducible from the key.
    np.testing.assert_array_equal(np.asarray(sample(jax.random.PRNGKey(3))), draws)


def test_completion_keeps_observed_positions_and_samples_the_conditional():
    n = 4
    model = FVSBN(n)
    params = _random_params(model, jax.random.PRNGKey(4), n, scale=1.5)
    xs = _all_binary(n)
    logp = np.asarray(bernoulli_autoregressive_log_prob(model.apply(params, xs), xs), np.float64)
    observed = np.array([True, True, False, False])
    init = np.zeros((20_000, n), np.float32)
    init[:, :2] = [1.0, 0.0]
    draws = np.asarray(ancestral_sample(jax.random.PRNGKey(5), lambda v: model.apply(params, v), init,
                                        observed=observed)).astype(int)
    assert np.all(draws[:, :2] == [1, 0])
    # p(x3, x4 | x1=1, x2=0) by enumeration.
    rows = [i for i, x in enumerate(xs) if x[0] == 1 and x[1] == 0]
    cond = np.exp(logp[rows]) / np.exp(logp[rows]).sum()
    counts = np.bincount(draws[:, 2] * 2 + draws[:, 3], minlength=4)
    _, pval = stats.chisquare(counts, len(draws) * cond)
    assert pval > 1e-3, pval


def test_models_reject_wrong_shapes():
    with pytest.raises(ValueError, match="shape \\[B, 5\\]"):
        FVSBN(5).init(jax.random.PRNGKey(0), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="permutation"):
        ancestral_sample(jax.random.PRNGKey(0), lambda v: v, jnp.zeros((2, 3)), order=[0, 0, 1])
