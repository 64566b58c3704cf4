"""Conditional coupling flows: for every context the flow is a normalised density
(grid quadrature), the context changes it, and a fitted label-conditional flow
recovers class-conditional Gaussians (entropy gap and Bayes classification)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.integrate import trapezoid

from jgen.bijectors import flow_log_prob
from jgen.distributions import standard_normal_log_prob
from jgen.models.flows.conditional import (
    ConditionalCouplingMLPs,
    make_conditional_coupling_flow,
)


def _random_params(nets, key, context):
    params = nets.init(key, jnp.zeros((1, nets.dim)), context)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    # Non-zero output layers, so the couplings are far from the identity.
    leaves = [leaf + 0.5 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, leaves)


def test_conditional_flow_is_normalised_for_every_label_and_depends_on_it():
    nets = ConditionalCouplingMLPs(num_layers=4, hidden=(16,), dim=2, context_features=4, num_classes=3)
    flow_fn = make_conditional_coupling_flow(nets, log_scale_bound=0.5)
    params = _random_params(nets, jax.random.PRNGKey(0), jnp.zeros((1,), jnp.int32))
    # Box [-24, 24]^2: 200k samples per label stay within |x| < 17 (checked when written).
    nodes = np.linspace(-24.0, 24.0, 801)
    grid = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    densities = []
    for label in range(3):
        ctx = jnp.full((grid.shape[0],), label, jnp.int32)
        logp = jax.jit(lambda p, c, g: flow_log_prob(flow_fn(p, c), standard_normal_log_prob, g))(params, ctx, grid)
        p = np.exp(np.asarray(logp, np.float64)).reshape(len(nodes), len(nodes))
        densities.append(p)
        total = trapezoid(trapezoid(p, nodes, axis=1), nodes)
        np.testing.assert_allclose(total, 1.0, atol=1e-4)
    # The label matters: the densities differ by far more than quadrature error.
    assert np.max(np.abs(densities[0] - densities[1])) > 1e-2


def test_label_conditional_flow_fits_class_gaussians():
    means = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], np.float32)
    sigma = 0.4
    nets = ConditionalCouplingMLPs(num_layers=4, hidden=(32,), dim=2, context_features=8, num_classes=3)
    flow_fn = make_conditional_coupling_flow(nets)
    params = nets.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))

    def sample(key, n):
        kl, kx = jax.random.split(key)
        labels = jax.random.randint(kl, (n,), 0, 3)
        return jnp.asarray(means)[labels] + sigma * jax.random.normal(kx, (n, 2)), labels

    def nll(p, x, c):
        return -flow_log_prob(flow_fn(p, c), standard_normal_log_prob, x)

    opt = optax.adam(3e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, s, key):
        x, c = sample(key, 256)
        g = jax.grad(lambda q: nll(q, x, c).mean())(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    for i in range(600):
        params, state = step(params, state, jax.random.PRNGKey(i))

    x, c = sample(jax.random.PRNGKey(10_000), 4000)
    gap = float(jnp.mean(nll(params, x, c))) - (1.0 + math.log(2 * math.pi * sigma**2))  # true entropy
    assert -0.05 < gap < 0.15, gap
    # Bayes rule with the learned class-conditional densities recovers the labels.
    scores = jnp.stack([-nll(params, x, jnp.full((x.shape[0],), k)) for k in range(3)], axis=1)
    accuracy = float(jnp.mean(jnp.argmax(scores, axis=1) == c))
    assert accuracy > 0.97, accuracy


def test_conditional_flow_errors_name_the_context():
    nets = ConditionalCouplingMLPs(num_layers=2, hidden=(8,), dim=2, num_classes=3)
    params = nets.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))
    flow_fn = make_conditional_coupling_flow(nets)
    with pytest.raises(ValueError, match="integer labels of shape \\[B\\]"):
        flow_fn(params, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="batch size 2"):
        flow_fn(params, jnp.zeros((2,), jnp.int32)).forward(jnp.zeros((5, 2)))
    vec = ConditionalCouplingMLPs(num_layers=2, hidden=(8,), dim=2)
    vparams = vec.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="shape \\[B, C\\]"):
        make_conditional_coupling_flow(vec)(vparams, jnp.zeros((4,)))
