"""MADE (jgen.models.autoregressive): the autoregressive property checked from the
Jacobian of the network (independently of how the masks are built), for several
orderings and mask seeds, with and without context / direct connection / mask bias;
that the allowed connections are used; masks drawn under jit and vmap (a mask
ensemble); the masked linear layer against a hand computation; zero-init; and
readable errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.models.autoregressive import MADE, MADEMasks, made_conditioner, made_masks

D, B, C = 5, 3, 2  # dimensions, batch, context features


def _random_params(made, x, masks, context=None, seed=0, scale=0.5):
    """Every parameter (biases too) N(0, scale^2): a generic network."""
    shapes = jax.eval_shape(made.init, jax.random.PRNGKey(0), x, masks, context)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, scale, s.shape), s.dtype), shapes)


def _positions(order):
    """pos[d] = position of dimension d in the ordering (reference, numpy)."""
    pos = np.empty(len(order), int)
    pos[np.asarray(order)] = np.arange(len(order))
    return pos


@jax.jit
@chex.assert_max_traces(n=1)
def _draw_random_order_masks(key):
    """New ordering and connectivity per key, one compile (order-agnostic training)."""
    return made_masks(key, D, (16, 16), random_order=True)


# name -> (order: "natural" | "reversed" | "random" | explicit list, mask seed or None
# (deterministic degrees), hidden, MADE keyword arguments, with context). Context cases
# draw conditional masks (hidden units of degree -1) except the no-hidden one.
CASES = {
    "natural_deterministic_tanh": ("natural", None, (16, 16), {"activation": jnp.tanh}, False),
    "reversed_seed0": ("reversed", 0, (16, 16), {}, False),
    "random_order_seed1_context": ("random", 1, (16, 16), {}, True),
    "random_order_seed2_direct": ("random", 2, (8,), {"direct_connection": True}, False),
    "random_order_seed3_three_layers_context_direct": (
        "random", 3, (16, 16, 16), {"direct_connection": True}, True),
    "given_order_no_hidden_context": ([3, 1, 4, 0, 2], 4, (), {}, True),
    "random_order_seed5_mask_bias": ("random", 5, (16, 16), {"mask_bias": True}, False),
    "given_order_deterministic_tanh_direct": (
        [2, 4, 0, 1, 3], None, (12,), {"activation": jnp.tanh, "direct_connection": True}, True),
}


def _masks_for(order, seed, hidden, conditional):
    key = None if seed is None else jax.random.PRNGKey(seed)
    if order == "random":
        if hidden == (16, 16) and not conditional:
            return _draw_random_order_masks(key)
        return made_masks(key, D, hidden, random_order=True, conditional=conditional)
    if isinstance(order, str):
        explicit = {"natural": None, "reversed": jnp.arange(D)[::-1]}[order]
    else:
        explicit = jnp.asarray(order)
    return made_masks(key, D, hidden, order=explicit, conditional=conditional)


@pytest.mark.parametrize("name", list(CASES))
def test_made_jacobian_is_autoregressive_in_the_order(name):
    order, seed, hidden, kwargs, with_context = CASES[name]
    masks = _masks_for(order, seed, hidden, conditional=with_context)
    pos = _positions(masks.order)
    if order == "natural":
        np.testing.assert_array_equal(pos, np.arange(D))
    elif isinstance(order, list):
        np.testing.assert_array_equal(masks.order, order)
    num_params = 3
    made = MADE(hidden, D, num_params, **kwargs)
    rng = np.random.default_rng(10 + (seed or 0))
    x = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
    context = jnp.asarray(rng.normal(size=(B, C)), jnp.float32) if with_context else None
    params = _random_params(made, x, masks, context, seed=seed or 0)

    @jax.jit
    def jacobians(x, context):
        def single(xi, ci):
            ci = None if ci is None else ci[None]
            return made.apply(params, xi[None], masks, ci)[0]  # [D, P]

        jac_x = jax.vmap(jax.jacobian(single, argnums=0))(x, context)
        jac_c = None if context is None else jax.vmap(jax.jacobian(single, argnums=1))(x, context)
        return made.apply(params, x, masks, context), jac_x, jac_c

    out, jac_x, jac_c = jacobians(x, context)
    assert out.shape == (B, D, num_params)
    assert jac_x.shape == (B, D, num_params, D)  # [b, i, p, j] = d out[b, i, p] / d x[b, j]
    jac_x = np.asarray(jac_x)
    forbidden = pos[None, :] >= pos[:, None]  # [i, j]: j not before i in the order
    # The property: exactly zero, whatever the weights.
    assert np.all(jac_x[:, forbidden[:, None, :].repeat(num_params, 1)] == 0.0)
    # The allowed connections are used (random weights make them generically nonzero).
    used = np.any(jac_x != 0.0, axis=0)  # [i, p, j], over the batch
    allowed = ~forbidden[:, None, :].repeat(num_params, 1)
    fraction_used = used[allowed].mean()
    if seed is None and kwargs.get("activation") is jnp.tanh:
        # Deterministic degrees cover every degree in each layer, so every allowed
        # (j, i) pair has a path; tanh has no dead units.
        assert fraction_used == 1.0
    else:
        assert fraction_used >= 0.75, fraction_used
    if jac_c is not None:
        # Context feeds every output, the first in the order included.
        assert jac_c.shape == (B, D, num_params, C)
        first = int(masks.order[0])
        assert np.all(np.any(np.asarray(jac_c)[:, first] != 0.0, axis=-1))


def test_made_masks_jit_and_vmap_ensemble():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    orders = [np.asarray(_draw_random_order_masks(k).order) for k in keys]
    for o in orders:
        assert sorted(o.tolist()) == list(range(D))
    assert len({tuple(o) for o in orders}) > 1  # new orderings, one compile (asserted)

    # A mask ensemble evaluated with vmap equals the masks applied one at a time.
    ensemble = jax.vmap(lambda k: made_masks(k, D, (16, 16), random_order=True))(keys)
    assert isinstance(ensemble, MADEMasks) and ensemble.order.shape == (4, D)
    made = MADE((16, 16), D, 1)
    x = jax.random.normal(jax.random.PRNGKey(1), (B, D))
    params = _random_params(made, x, made_masks(None, D, (16, 16)))
    stacked = jax.jit(jax.vmap(lambda m: made.apply(params, x, m)))(ensemble)
    assert stacked.shape == (4, B, D, 1)
    apply = jax.jit(lambda m: made.apply(params, x, m))
    for e in range(4):
        single = apply(jax.tree.map(lambda a, e=e: a[e], ensemble))
        np.testing.assert_allclose(stacked[e], single, rtol=1e-5, atol=1e-6)
    # Deterministic degrees (key=None): cyclic 0, 1, ..., D-2 in the first layer.
    masks = made_masks(None, D, (6,))
    np.testing.assert_array_equal(masks.hidden[0].sum(axis=0), [1, 2, 3, 4, 1, 2])


def test_made_masked_linear_layer_by_hand():
    # hidden=(): out = x (W * M) + b with M[j, d*P + q] = [pos(j) < pos(d)], plus the
    # direct term x (A * M); reference computed in numpy from the ordering alone.
    order = [3, 1, 4, 0, 2]
    pos = _positions(order)
    masks = made_masks(None, D, (), order=jnp.asarray(order))
    made = MADE((), D, 2, direct_connection=True)
    x = jax.random.normal(jax.random.PRNGKey(2), (B, D))
    params = _random_params(made, x, masks, seed=3)
    p = jax.tree.map(np.asarray, params["params"])
    m = np.repeat(pos[:, None] < pos[None, :], 2, axis=1)
    want = np.asarray(x) @ ((p["output"]["kernel"] + p["direct"]["kernel"]) * m)
    want = (want + p["output"]["bias"][None]).reshape(B, D, 2)
    np.testing.assert_allclose(made.apply(params, x, masks), want, rtol=1e-5, atol=1e-5)
    # made_conditioner is the same function of x.
    cond = made_conditioner(made, params, masks)
    np.testing.assert_allclose(cond(x), want, rtol=1e-5, atol=1e-5)


def test_made_zero_init_output_and_one_dimension():
    masks = made_masks(jax.random.PRNGKey(0), D, (8,), order=jnp.arange(D)[::-1])
    made = MADE((8,), D, 4, zero_init_output=True, direct_connection=True)
    x = jax.random.normal(jax.random.PRNGKey(1), (B, D))
    ctx = jnp.ones((B, C))
    out = jax.jit(lambda k: made.apply(made.init(k, x, masks, ctx), x, masks, ctx))(
        jax.random.PRNGKey(2))
    np.testing.assert_array_equal(out, np.zeros((B, D, 4)))
    # D = 1: the single output depends on no input, only on the context: linearly
    # (through the output layer) with plain masks, nonlinearly with conditional masks
    # (hidden units of degree -1). Reference: d out / d c is constant iff linear.
    contexts = jax.random.normal(jax.random.PRNGKey(3), (2, C))
    for conditional in (False, True):
        masks1 = made_masks(jax.random.PRNGKey(0), 1, (4,), conditional=conditional)
        made1 = MADE((4,), 1, 2, activation=jnp.tanh)
        params1 = _random_params(made1, x[:, :1], masks1, ctx)

        @jax.jit
        def jacobians(params1, masks1, made1=made1):
            apply = lambda v, c: made1.apply(params1, v, masks1, c)
            jac = jax.jacobian(apply)(x[:, :1], ctx)
            jac_c = jax.vmap(jax.jacobian(lambda c: apply(x[:1, :1], c[None])[0]))(contexts)
            return jac, jac_c

        jac, jac_c = jacobians(params1, masks1)
        np.testing.assert_array_equal(jac, np.zeros((B, 1, 2, B, 1)))
        assert np.any(jac_c != 0.0)
        assert np.array_equal(jac_c[0], jac_c[1]) != conditional


def test_made_errors():
    masks = made_masks(None, D, (8,))
    made = MADE((8,), D, 2)
    x = jnp.zeros((B, D))
    params = made.init(jax.random.PRNGKey(0), x, masks)
    with pytest.raises(ValueError, match=r"\[B, 5\]; received shape \(3, 6\)"):
        made.apply(params, jnp.zeros((B, D + 1)), masks)
    with pytest.raises(ValueError, match=r"received shape \(5,\)"):
        made.apply(params, jnp.zeros((D,)), masks)
    with pytest.raises(TypeError, match="must be floating"):
        made.apply(params, jnp.zeros((B, D), jnp.int32), masks)
    with pytest.raises(ValueError, match=r"masks do not fit.*made_masks\(key, 5, \(8,\)\)"):
        made.apply(params, x, made_masks(None, D, (8, 8)))
    with pytest.raises(TypeError, match="must be a MADEMasks"):
        made.apply(params, x, tuple(masks.hidden))
    with pytest.raises(ValueError, match=r"context must have shape \[B, C\] with B = 3"):
        made.apply(params, x, masks, jnp.zeros((B + 1, C)))
    with pytest.raises(ValueError, match="num_params must be a positive int"):
        MADE((8,), D, 0).init(jax.random.PRNGKey(0), x, masks)
    with pytest.raises(ValueError, match=r"permutation of 0..4; received \[0, 0, 1, 2, 3\]"):
        made_masks(None, D, (8,), order=jnp.array([0, 0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"shape \(5,\).*received.*shape \(4,\)"):
        made_masks(None, D, (8,), order=jnp.arange(4))
    with pytest.raises(ValueError, match="needs a key and no explicit order"):
        made_masks(None, D, (8,), random_order=True)
    with pytest.raises(ValueError, match="needs a key and no explicit order"):
        made_masks(jax.random.PRNGKey(0), D, (8,), order=jnp.arange(D), random_order=True)
    with pytest.raises(ValueError, match=r"hidden must be a sequence of positive ints.*\(8, 0\)"):
        made_masks(None, D, (8, 0))
    with pytest.raises(ValueError, match=r"dim must be a positive Python int.*received 0 of type int"):
        made_masks(None, 0, (8,))
