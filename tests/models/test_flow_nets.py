"""Conditioner networks of the flow family (jgen.models.flows): the zero-initialised
output layer makes every coupling the identity at initialisation; output shapes follow
the input; a convolutional conditioner's receptive field is what its architecture says
(read off the Jacobian)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.bijectors import MaskedCoupling, channel_mask, checkerboard_mask
from jgen.models.flows import ConvConditioner, ConvConditioners, CouplingMLPs


def _random_params(net, seed, *inputs, scale=0.3):
    """N(0, scale^2) parameters of the module's shapes (numpy draws: no XLA compile per
    parameter shape, unlike Flax's init on CPU)."""
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), *inputs)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), jnp.float32), shapes)


@pytest.mark.parametrize("mask_fn", [checkerboard_mask, channel_mask])
def test_conv_coupling_is_the_identity_at_init(mask_fn):
    shape = (4, 4, 2)
    net = ConvConditioner(width=4, num_blocks=1)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, *shape))
    params = net.init(jax.random.PRNGKey(0), x)
    shift, raw = net.apply(params, x)
    assert shift.shape == x.shape and raw.shape == x.shape
    # Zero-initialised last conv: both outputs are exactly 0 whatever the input.
    np.testing.assert_array_equal(shift, 0.0)
    np.testing.assert_array_equal(raw, 0.0)
    coupling = MaskedCoupling(mask_fn(shape), lambda h: net.apply(params, h))
    y, log_det = jax.jit(coupling.forward_and_log_det)(x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(log_det, np.zeros(3))


def test_conv_conditioner_receptive_field():
    """With num_blocks=0 (3x3, 1x1, 3x3 convs) an output pixel depends on the input pixels
    within Chebyshev distance 2 exactly (random weights); one residual block adds two 3x3
    convs: distance 4. (A ReLU can cut a path at one input, so the dependence is the
    union over a few random inputs.)"""
    for num_blocks, radius in ((0, 2), (1, 4)):
        net = ConvConditioner(width=6, num_blocks=num_blocks)
        x = jax.random.normal(jax.random.PRNGKey(2), (4, 1, 9, 9, 1))
        params = _random_params(net, 1, x[0])
        centre = jax.jit(jax.vmap(jax.grad(lambda v, net=net, p=params: net.apply(p, v)[0][0, 4, 4, 0])))(x)
        depends = np.any(np.abs(np.asarray(centre[:, 0, :, :, 0])) > 0, axis=0)
        i, j = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
        expected = np.maximum(np.abs(i - 4), np.abs(j - 4)) <= radius
        np.testing.assert_array_equal(depends, expected)


def test_conv_conditioners_run_one_net_per_coupling():
    nets = ConvConditioners(num_nets=2, width=4, num_blocks=0, additive=True)
    xs = [jnp.ones((1, 4, 4, 1)), jnp.ones((1, 2, 2, 4))]
    params = _random_params(nets, 1, xs)
    outs = nets.apply(params, xs)
    for i, x in enumerate(xs):
        got = nets.apply(params, x, i, method=ConvConditioners.condition)
        assert got.shape == x.shape  # additive: the shift alone, the input's shape
        np.testing.assert_allclose(got, outs[i], rtol=1e-6)
        # Net i alone, from its own parameters, gives the same output.
        alone = ConvConditioner(width=4, num_blocks=0, additive=True)
        np.testing.assert_allclose(alone.apply({"params": params["params"][f"coupling_{i}"]}, x), got, rtol=1e-6)
    with pytest.raises(ValueError, match=r"one example input per net \(2\); received 1"):
        nets.init(jax.random.PRNGKey(0), xs[:1])
    with pytest.raises(ValueError, match=r"images \[B, H, W, C\]; received shape \(2, 16\)"):
        ConvConditioner(width=4).init(jax.random.PRNGKey(0), jnp.ones((2, 16)))


def test_additive_mlp_conditioner_returns_a_zero_shift_at_init():
    nets = CouplingMLPs(num_layers=2, hidden=(8,), dim=6, additive=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 6))
    params = nets.init(jax.random.PRNGKey(1), x)
    shift = nets.apply(params, x, 1, method=CouplingMLPs.condition)
    assert shift.shape == (3, 6)
    np.testing.assert_array_equal(shift, 0.0)
    # The affine default is unchanged: a (shift, raw_log_scale) pair.
    pair = CouplingMLPs(1, (8,), 6).apply(CouplingMLPs(1, (8,), 6).init(jax.random.PRNGKey(1), x), x, 0,
                                          method=CouplingMLPs.condition)
    assert len(pair) == 2 and pair[0].shape == pair[1].shape == (3, 6)
