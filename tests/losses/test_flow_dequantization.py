"""Variational dequantization (Flow++) against the exact discrete likelihood of a
logit-normal model, whose cell probabilities are differences of normal CDFs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from jgen.bijectors import Affine, Chain, Sigmoid
from jgen.distributions import standard_normal_log_prob
from jgen.losses.flow import (
    make_flow_nll_loss,
    make_variational_dequantization_nll_loss,
    make_variational_dequantizer,
)
from jgen.models.flows.conditional import (
    ConditionalCouplingMLPs,
    make_conditional_coupling_flow,
)

K = 4  # pixel values 0..3
MU, LOG_SIGMA = np.array([0.3, -0.5]), np.array([-0.2, 0.4])


def model_flow(params):
    """The fixed model p(y) on (0, 1)^2: y = sigmoid(mu + sigma z), a logit-normal."""
    del params
    return Chain([Affine(jnp.asarray(MU, jnp.float32), jnp.asarray(LOG_SIGMA, jnp.float32)), Sigmoid()])


def exact_nll(x):
    """-log P(x) = -sum_d log [Phi((logit b - mu)/s) - Phi((logit a - mu)/s)], a = x/K, b = (x+1)/K."""
    a, b = x / K, (x + 1) / K
    with np.errstate(divide="ignore"):
        la, lb = np.log(a) - np.log1p(-a), np.log(b) - np.log1p(-b)
    sigma = np.exp(LOG_SIGMA)
    p = stats.norm.cdf((lb - MU) / sigma) - stats.norm.cdf((la - MU) / sigma)
    return -np.log(p).sum(axis=-1)


@pytest.fixture(scope="module")
def setup():
    x = np.array([[i, j] for i in range(K) for j in range(K)], np.uint8)  # all 16 images
    nets = ConditionalCouplingMLPs(num_layers=2, hidden=(16,), dim=2, context_features=8)
    deq = make_variational_dequantizer(make_conditional_coupling_flow(nets),
                                       context_fn=lambda v: v / (K - 1) - 0.5)
    deq_params = nets.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1, 2)))
    loss = make_variational_dequantization_nll_loss(model_flow, standard_normal_log_prob, deq, num_bins=K)
    return x, deq_params, loss


def _mc_nll(loss, params, x, key, reps=400):
    batch = {"image": jnp.asarray(np.repeat(x, reps, axis=0))}
    _, aux = jax.jit(loss)(params, key, batch)
    nll = np.asarray(aux["nll"]).reshape(len(x), reps)
    return nll.mean(axis=1), nll.std(axis=1) / np.sqrt(reps)


def test_variational_dequantization_bounds_exact_discrete_nll_and_training_closes_gap(setup):
    x, deq_params, loss = setup
    truth = exact_nll(x.astype(np.float64))
    params = {"flow": {}, "dequantizer": deq_params}
    mean0, se0 = _mc_nll(loss, params, x, jax.random.PRNGKey(1))
    # An upper bound on the discrete NLL for every image (up to Monte-Carlo error).
    assert np.all(mean0 >= truth - 4 * se0 - 1e-4), (mean0, truth)
    gap0 = float(np.mean(mean0 - truth))
    assert gap0 > 0.05  # the untrained q (a logit-normal on the cell) is visibly loose

    opt = optax.adam(1e-2)
    state = opt.init(params["dequantizer"])
    batch = {"image": jnp.asarray(np.repeat(x, 16, axis=0))}

    @jax.jit
    def step(dp, state, key):
        g = jax.grad(lambda d: loss({"flow": {}, "dequantizer": d}, key, batch)[0])(dp)
        upd, state = opt.update(g, state, dp)
        return optax.apply_updates(dp, upd), state

    dp = params["dequantizer"]
    for i in range(300):
        dp, state = step(dp, state, jax.random.PRNGKey(100 + i))
    mean1, se1 = _mc_nll(loss, {"flow": {}, "dequantizer": dp}, x, jax.random.PRNGKey(2))
    assert np.all(mean1 >= truth - 4 * se1 - 1e-4), (mean1, truth)
    gap1 = float(np.mean(mean1 - truth))
    assert gap1 < 0.3 * gap0, (gap0, gap1)


def test_uniform_dequantizer_reduces_to_the_uniform_bound(setup):
    x, _, _ = setup

    def uniform(params, key, xv):
        del params
        return jax.random.uniform(key, xv.shape), jnp.zeros((xv.shape[0],))

    vd = make_variational_dequantization_nll_loss(model_flow, standard_normal_log_prob, uniform, num_bins=K)
    key = jax.random.PRNGKey(3)
    batch = {"image": jnp.asarray(x)}
    _, aux = vd({"flow": {}, "dequantizer": {}}, key, batch)
    # The same u by hand, through the uniform-dequantization loss.
    u = jax.random.uniform(key, x.shape)
    y = (jnp.asarray(x, jnp.float32) + u) / K
    plain = make_flow_nll_loss(model_flow, standard_normal_log_prob, nll_offset=2 * math.log(K))
    _, aux2 = plain({}, key, {"image": y})
    np.testing.assert_allclose(aux["nll"], aux2["nll"], rtol=1e-5, atol=1e-5)


def test_variational_dequantization_rejects_float_pixels(setup):
    _, deq_params, loss = setup
    with pytest.raises(TypeError, match="integer pixels"):
        loss({"flow": {}, "dequantizer": deq_params}, jax.random.PRNGKey(0), {"image": jnp.zeros((2, 2))})
