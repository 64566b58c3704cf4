"""Property tests over a table of bijectors (flowjax `tests/test_bijections`):
invertibility, log-det against a brute-force `slogdet` of the Jacobian, jit/vmap,
shapes, and readable shape errors. Then `Chain` and `Inverse` composition.
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.bijectors import (
    ActNorm,
    Affine,
    Chain,
    Conv1x1LU,
    Exp,
    Inverse,
    MaskedCoupling,
    Permute,
    RationalQuadraticSpline,
    Reverse,
    Sigmoid,
    SplineCoupling,
    Squeeze,
    Tanh,
    channel_mask,
    checkerboard_mask,
    conv1x1_init,
    half_mask,
)

B = 3  # batch size used throughout


def mlp_conditioner(key, event_shape, *, kind="affine", scale=1.0):
    """A fixed random 1-hidden-layer MLP over the flattened event: x_masked -> params.

    Weights are drawn in float64-capable numpy so the same function serves x64 tests.
    """
    d = int(np.prod(event_shape))
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    n_out = 2 * d if kind == "affine" else d
    w1 = rng.normal(size=(d, 16)) / np.sqrt(d)
    b1 = rng.normal(size=(16,))
    w2 = scale * rng.normal(size=(16, n_out)) / 4.0
    b2 = 0.3 * rng.normal(size=(n_out,))

    def conditioner(h):
        flat = h.reshape(h.shape[0], d)
        hidden = jnp.tanh(flat @ jnp.asarray(w1, h.dtype) + jnp.asarray(b1, h.dtype)[None])
        out = hidden @ jnp.asarray(w2, h.dtype) + jnp.asarray(b2, h.dtype)[None]
        if kind == "additive":
            return out.reshape(h.shape)
        return out[:, :d].reshape(h.shape), out[:, d:].reshape(h.shape)

    return conditioner


def _normal(key, shape, scale=1.0):
    """Normal draws in float64 under `jax.enable_x64(True)`, else float32."""
    return scale * jax.random.normal(key, shape, jnp.zeros(()).dtype)


def spline_conditioner(key, event_shape, num_bins, *, scale=1.0):
    """A fixed random MLP: x_masked -> raw spline params [B, *event, K], [.., K], [.., K-1]."""
    d, k = int(np.prod(event_shape)), num_bins
    per = 3 * k - 1
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    w1 = rng.normal(size=(d, 16)) / np.sqrt(d)
    w2 = scale * rng.normal(size=(16, d * per)) / 4.0
    b2 = rng.normal(size=(d * per,))

    def conditioner(h):
        hidden = jnp.tanh(h.reshape(h.shape[0], d) @ jnp.asarray(w1, h.dtype))
        out = hidden @ jnp.asarray(w2, h.dtype) + jnp.asarray(b2, h.dtype)[None]
        out = out.reshape(*h.shape, per)
        return out[..., :k], out[..., k : 2 * k], out[..., 2 * k :]

    return conditioner


def random_spline(key, param_shape, num_bins, **kwargs):
    """A RationalQuadraticSpline with normal raw params of shape [*param_shape, K]."""
    ks = [jax.random.fold_in(key, i) for i in range(3)]
    return RationalQuadraticSpline(
        _normal(ks[0], (*param_shape, num_bins)),
        _normal(ks[1], (*param_shape, num_bins)),
        _normal(ks[2], (*param_shape, num_bins - 1), 2.0),
        **kwargs,
    )


def random_conv1x1(key, channels, **kwargs):
    """conv1x1_init (a rotation) with its LU leaves perturbed, so |det W| != 1."""
    conv = conv1x1_init(key, channels, **kwargs)
    ks = [jax.random.fold_in(key, i) for i in range(1, 4)]
    return dataclasses.replace(
        conv,
        l_raw=conv.l_raw + _normal(ks[0], (channels, channels), 0.3),
        u_raw=conv.u_raw + _normal(ks[1], (channels, channels), 0.3),
        log_s=conv.log_s + _normal(ks[2], (channels,), 0.3),
    )


# name -> (constructor(key) -> bijector, event shape). Params are float64 arrays; the
# tests run under jax.enable_x64(True).
BIJECTORS = {
    "affine_shared": (
        lambda k: Affine(_normal(k, (4,)), _normal(jax.random.fold_in(k, 1), (4,), 0.5)),
        (4,),
    ),
    "affine_per_example": (
        lambda k: Affine(_normal(k, (B, 4)), _normal(jax.random.fold_in(k, 1), (B, 4), 0.5)),
        (4,),
    ),
    "affine_scalar_image": (
        lambda k: Affine(0.5, -0.7, event_ndims=3),
        (2, 2, 3),
    ),
    "tanh": (lambda k: Tanh(), (4,)),
    "sigmoid": (lambda k: Sigmoid(), (4,)),
    "exp": (lambda k: Exp(), (4,)),
    "permute": (lambda k: Permute((2, 0, 3, 1)), (4,)),
    "permute_channels": (lambda k: Permute((1, 2, 0), event_ndims=3), (2, 2, 3)),
    "reverse": (lambda k: Reverse(), (5,)),
    "coupling_affine_half": (
        lambda k: MaskedCoupling(half_mask(5), mlp_conditioner(k, (5,), scale=2.0)),
        (5,),
    ),
    "coupling_affine_half_flip_unbounded": (
        lambda k: MaskedCoupling(
            half_mask(5, flip=True), mlp_conditioner(k, (5,)), log_scale_bound=None
        ),
        (5,),
    ),
    "coupling_additive_half": (
        lambda k: MaskedCoupling(
            half_mask(4), mlp_conditioner(k, (4,), kind="additive"), kind="additive"
        ),
        (4,),
    ),
    "coupling_checkerboard": (
        lambda k: MaskedCoupling(checkerboard_mask((4, 4, 1)), mlp_conditioner(k, (4, 4, 1))),
        (4, 4, 1),
    ),
    "coupling_channel": (
        lambda k: MaskedCoupling(
            channel_mask((2, 2, 4), flip=True), mlp_conditioner(k, (2, 2, 4), scale=2.0)
        ),
        (2, 2, 4),
    ),
    "squeeze": (lambda k: Squeeze(), (4, 2, 3)),
    "actnorm_vector": (
        lambda k: ActNorm(_normal(k, (4,)), _normal(jax.random.fold_in(k, 1), (4,), 0.5)),
        (4,),
    ),
    "actnorm_image": (
        lambda k: ActNorm(
            _normal(k, (3,)), _normal(jax.random.fold_in(k, 1), (3,), 0.5), event_ndims=3
        ),
        (2, 2, 3),
    ),
    "conv1x1_image": (lambda k: random_conv1x1(k, 3), (2, 2, 3)),
    "conv1x1_vector": (lambda k: random_conv1x1(k, 4, event_ndims=1), (4,)),
    # bound=2 so that some of the normal inputs land in the identity tails.
    "spline_vector": (lambda k: random_spline(k, (4,), 4, bound=2.0), (4,)),
    "spline_image_shared_over_pixels": (
        lambda k: random_spline(k, (), 3, bound=1.5, event_ndims=3),
        (2, 2, 2),
    ),
    "spline_coupling_half": (
        lambda k: SplineCoupling(half_mask(5), spline_conditioner(k, (5,), 4), bound=2.0),
        (5,),
    ),
    "chain_glow_step": (
        lambda k: Chain(
            [
                ActNorm(_normal(k, (2,), 0.3), _normal(jax.random.fold_in(k, 1), (2,), 0.3),
                        event_ndims=3),
                random_conv1x1(jax.random.fold_in(k, 2), 2),
                SplineCoupling(
                    channel_mask((1, 2, 2)),
                    spline_conditioner(jax.random.fold_in(k, 3), (1, 2, 2), 3),
                ),
            ]
        ),
        (1, 2, 2),
    ),
    "inverse_affine": (
        lambda k: Inverse(Affine(_normal(k, (3,)), _normal(jax.random.fold_in(k, 1), (3,)))),
        (3,),
    ),
    "inverse_sigmoid": (lambda k: Inverse(Sigmoid()), (3,)),  # acts on (0, 1)
    "chain_vector": (
        lambda k: Chain(
            [
                MaskedCoupling(half_mask(4), mlp_conditioner(k, (4,), scale=2.0)),
                Reverse(),
                MaskedCoupling(half_mask(4), mlp_conditioner(jax.random.fold_in(k, 1), (4,))),
                Affine(_normal(jax.random.fold_in(k, 2), (4,)), jnp.full((4,), 0.3)),
                Tanh(),
            ]
        ),
        (4,),
    ),
    "chain_image_multiscale": (
        lambda k: Chain(
            [
                MaskedCoupling(checkerboard_mask((4, 4, 1)), mlp_conditioner(k, (4, 4, 1))),
                Squeeze(),
                MaskedCoupling(
                    channel_mask((2, 2, 4)), mlp_conditioner(jax.random.fold_in(k, 1), (2, 2, 4))
                ),
                Permute((3, 2, 1, 0), event_ndims=3),
                Affine(0.1, 0.2, event_ndims=3),
            ]
        ),
        (4, 4, 1),
    ),
}

# --- Autoregressive flows (jgen.bijectors.autoregressive): MAF / IAF, affine and
# rational-quadratic spline, each on a small random MADE with a non-identity order.
from jgen.bijectors import IAF, MAF, SplineIAF, SplineMAF
from jgen.models.autoregressive import MADE, made_masks


def made_test_conditioner(key, dim, num_params, hidden=(8,)):
    """A fixed random MADE as an autoregressive conditioner x [B, D] -> [B, D, P]:
    random order and degrees, all params (biases too) N(0, 0.5^2), cast to x's dtype
    so the same function serves the x64 tests."""
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    order = jnp.asarray(rng.permutation(dim))
    masks = made_masks(jax.random.fold_in(key, 1), dim, hidden, order=order)
    made = MADE(hidden, dim, num_params, activation=jnp.tanh)
    shapes = jax.eval_shape(made.init, key, jnp.zeros((1, dim)), masks)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape), shapes)

    def conditioner(x):
        return made.apply(jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params), x, masks)

    return conditioner


BIJECTORS.update({
    "maf_affine": (lambda k: MAF(made_test_conditioner(k, 5, 2)), (5,)),
    "iaf_affine_unbounded": (
        lambda k: IAF(made_test_conditioner(k, 4, 2), log_scale_bound=None), (4,)),
    # bound=2 so that some of the normal inputs land in the identity tails.
    "maf_spline": (lambda k: SplineMAF(made_test_conditioner(k, 4, 3 * 4 - 1), bound=2.0), (4,)),
    "iaf_spline": (lambda k: SplineIAF(made_test_conditioner(k, 5, 3 * 3 - 1), bound=2.0), (5,)),
})

# --- Multi-scale architectures (jgen.bijectors.multiscale): a two-level Real NVP/Glow
# style FactorOut recursion on [4, 4, 1], and an image flow seen on flat vectors.
from jgen.bijectors import FactorOut, Flattened


def _two_level_multiscale(k):
    """squeeze -> [2, 2, 4] -> (factor out 2 channels; the kept 2 are squeezed to
    [1, 1, 8] and coupled) -> 1x1 conv and coupling on [2, 2, 4] -> unsqueeze."""
    inner = Chain([
        Squeeze(),
        MaskedCoupling(channel_mask((1, 1, 8)), mlp_conditioner(jax.random.fold_in(k, 1), (1, 1, 8))),
        Inverse(Squeeze()),
    ])
    return Chain([
        Squeeze(),
        FactorOut(inner, num_kept=2),
        random_conv1x1(jax.random.fold_in(k, 2), 4),
        MaskedCoupling(channel_mask((2, 2, 4), flip=True),
                       mlp_conditioner(jax.random.fold_in(k, 3), (2, 2, 4), scale=2.0)),
        Inverse(Squeeze()),
    ])


BIJECTORS.update({
    "factor_out_two_level": (_two_level_multiscale, (4, 4, 1)),
    "flattened_image_flow": (
        lambda k: Flattened(
            Chain([MaskedCoupling(checkerboard_mask((2, 2, 2)), mlp_conditioner(k, (2, 2, 2))),
                   random_conv1x1(jax.random.fold_in(k, 1), 2)]),
            (2, 2, 2)),
        (8,),
    ),
})

# --- Continuous normalizing flow (jgen.bijectors.cnf): the ODE flow of a random
# time-dependent tanh MLP field, solved on device by diffrax. Fixed steps of an
# 8th-order solver: accurate to ~1e-12 here (so invertible and matching the Jacobian of
# the discretised map), the same in float32, and cheaper to reverse-differentiate.
from jgen.bijectors import ContinuousFlow


def cnf_test_field(key, dim, hidden=8):
    """A fixed random row-wise field f(t, z) = tanh(z W1 + t c + b1) W2 + b2."""
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    w1, c, b1 = rng.normal(size=(dim, hidden)) / np.sqrt(dim), rng.normal(size=(1, hidden)), \
        rng.normal(size=(hidden,))
    w2, b2 = 1.5 * rng.normal(size=(hidden, dim)) / np.sqrt(hidden), 0.3 * rng.normal(size=(dim,))

    def vector_field(t, z):
        cast = lambda a: jnp.asarray(a, z.dtype)
        h = jnp.tanh(z @ cast(w1) + t * cast(c) + cast(b1)[None])
        return h @ cast(w2) + cast(b2)[None]

    return vector_field


BIJECTORS.update({
    "cnf_fixed_step": (
        lambda k: ContinuousFlow(cnf_test_field(k, 3), t0=0.2, t1=1.1, solver="dopri8",
                                 adaptive=False, num_steps=10),
        (3,),
    ),
})

# Bijectors whose input domain is not all of R^n: map a normal draw into it.
_DOMAIN = {"inverse_sigmoid": jax.nn.sigmoid}


def _setup(name, seed=0):
    make, event_shape = BIJECTORS[name]
    key = jax.random.PRNGKey(seed)
    bij = make(jax.random.fold_in(key, 0))
    x = _normal(jax.random.fold_in(key, 1), (B, *event_shape))
    x2 = _normal(jax.random.fold_in(key, 2), (B, *event_shape))
    to_domain = _DOMAIN.get(name, lambda a: a)
    # y is drawn from the range of the bijector by pushing an independent x2 forward.
    return bij, event_shape, to_domain(x), bij.forward(to_domain(x2))


def _brute_force_log_det(fn, x):
    """log|det J| per example by slogdet of jax.jacobian over the flattened batch.

    The Jacobian of the whole batch [B*D, B*D] must be block diagonal (examples do not
    interact); each diagonal [D, D] block is one example's Jacobian (the reference).
    """
    n, d = x.shape[0], x[0].size
    flat_fn = lambda v: fn(v.reshape(x.shape)).reshape(-1)
    jac = jax.jacobian(flat_fn)(x.reshape(-1))
    assert jac.shape == (n * d, n * d), "bijector changed the number of entries"
    jac = jac.reshape(n, d, n, d)
    blocks = jnp.stack([jac[i, :, i, :] for i in range(n)])
    off_diagonal = jac * (1.0 - jnp.eye(n))[:, None, :, None]
    # Returned with the log-dets so the test can check that examples do not interact.
    return jnp.linalg.slogdet(blocks)[1], jnp.max(jnp.abs(off_diagonal))


@functools.cache
def _x64_results(name):
    """Everything the float64 property tests compare, computed in one jit per bijector
    (eager op-by-op dispatch is the slow part on a shared CPU)."""
    with jax.enable_x64(True):
        bij, _, x, y = _setup(name)

        @jax.jit
        def compute(bij, x, y):
            fwd_y, fwd_ld = bij.forward_and_log_det(x)
            inv_x, inv_ld = bij.inverse_and_log_det(y)
            return {
                "x": x,
                "y": y,
                "x_round_trip": bij.inverse(fwd_y),
                "y_round_trip": bij.forward(inv_x),
                "fwd_ld": fwd_ld,
                "inv_ld": inv_ld,
                "inv_ld_at_fwd_y": bij.inverse_and_log_det(fwd_y)[1],
                "fwd_ld_at_inv_x": bij.forward_and_log_det(inv_x)[1],
                "ref_fwd_ld": _brute_force_log_det(bij.forward, x)[0],
                "ref_inv_ld": _brute_force_log_det(bij.inverse, y)[0],
                "cross_example_jac": jnp.maximum(
                    _brute_force_log_det(bij.forward, x)[1],
                    _brute_force_log_det(bij.inverse, y)[1],
                ),
            }

        out = jax.tree.map(np.asarray, compute(bij, x, y))
    assert all(v.dtype == np.float64 for v in out.values())
    return out


@pytest.mark.parametrize("name", sorted(BIJECTORS))
def test_bijector_invertible(name):
    r = _x64_results(name)
    np.testing.assert_allclose(r["x_round_trip"], r["x"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(r["y_round_trip"], r["y"], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(BIJECTORS))
def test_bijector_log_det_matches_jacobian(name):
    r = _x64_results(name)
    assert r["fwd_ld"].shape == (B,) and r["inv_ld"].shape == (B,)
    # Reference: slogdet of the brute-force Jacobian (flowjax's test).
    np.testing.assert_allclose(r["fwd_ld"], r["ref_fwd_ld"], atol=1e-9)
    np.testing.assert_allclose(r["inv_ld"], r["ref_inv_ld"], atol=1e-9)
    assert r["cross_example_jac"] == 0.0  # the batch Jacobian is block diagonal
    # At corresponding points, forward and inverse log-dets are negatives.
    np.testing.assert_allclose(r["inv_ld_at_fwd_y"], -r["fwd_ld"], atol=1e-10)
    np.testing.assert_allclose(r["fwd_ld_at_inv_x"], -r["inv_ld"], atol=1e-10)


@pytest.mark.parametrize("name", sorted(BIJECTORS))
def test_bijector_jit_vmap_and_shapes(name):
    bij, _, x, y = _setup(name)  # float32 here; values are checked in x64
    y_eager, ld_eager = bij.forward_and_log_det(x)  # eager reference for jit

    @jax.jit
    def compute(bij, x, y):
        # vmap over a batch of size-1 batches must give the batched result.
        unbatched = lambda f: jax.vmap(lambda v: jax.tree.map(lambda a: a[0], f(v[None])))
        return {
            "fwd": bij.forward_and_log_det(x),
            "inv": bij.inverse_and_log_det(y),
            # Per-example parameters do not vmap this way; vmap the shared ones only.
            "vmap_fwd": None if name == "affine_per_example" else unbatched(
                bij.forward_and_log_det)(x),
            "vmap_inv": None if name == "affine_per_example" else unbatched(
                bij.inverse_and_log_det)(y),
        }

    r = compute(bij, x, y)  # the bijector is a pytree: passed through jit as an argument
    (jy, jld), (jx, jild) = r["fwd"], r["inv"]
    np.testing.assert_allclose(jy, y_eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jld, ld_eager, rtol=1e-5, atol=1e-5)
    assert jy.dtype == x.dtype and jld.dtype == x.dtype and jild.dtype == x.dtype
    assert jld.shape == (B,) and jild.shape == (B,)
    assert jy.size == x.size and jx.shape == x.shape
    if name not in ("squeeze", "chain_image_multiscale"):
        assert jy.shape == x.shape
    if r["vmap_fwd"] is not None:
        for got, want in zip(r["vmap_fwd"] + r["vmap_inv"], r["fwd"] + r["inv"]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BIJECTORS))
def test_bijector_rejects_input_without_batch_axis(name):
    bij, _, x, y = _setup(name)
    with pytest.raises(ValueError, match=r"received shape"):
        bij.forward(x[0])
    with pytest.raises(ValueError, match=r"received shape"):
        jax.jit(bij.inverse)(y[0])


@pytest.mark.parametrize(
    "bij, bad_shape, match",
    [
        (Permute((1, 0, 2)), (B, 4), r"size 3.*received shape \(3, 4\)"),
        (Squeeze(), (B, 3, 4, 1), r"divisible by 2.*received shape \(3, 3, 4, 1\)"),
        (Affine(jnp.zeros(3), jnp.zeros(3)), (B, 4), r"shift of shape \(3,\)"),
        (
            MaskedCoupling(half_mask(4), lambda h: (h, h)),
            (B, 5),
            r"\[B, 4\]; received shape \(3, 5\)",
        ),
        (
            MaskedCoupling(half_mask(4), lambda h: (h[:, :2], h)),
            (B, 4),
            r"shift must have the input's shape \(3, 4\); received shape \(3, 2\)",
        ),
        (MaskedCoupling(half_mask(4), lambda h: h), (B, 4), r"pair \(shift, raw_log_scale\)"),
        (ActNorm(jnp.zeros(3), jnp.zeros(3)), (B, 4), r"shift must have shape \[C\] = \(4,\)"),
        (
            Conv1x1LU((1, 0, 2), jnp.zeros((3, 3)), jnp.zeros((3, 3)), jnp.zeros(3),
                      (1.0, -1.0, 1.0)),
            (B, 2, 2, 4),
            r"size C = 3; received shape \(3, 2, 2, 4\)",
        ),
        (
            RationalQuadraticSpline(jnp.zeros((3, 4)), jnp.zeros((3, 4)), jnp.zeros((3, 3))),
            (B, 4),
            r"widths of shape \(3, 4\) does not broadcast.*\(3, 4, 4\)",
        ),
        (
            RationalQuadraticSpline(jnp.zeros((4, 4)), jnp.zeros((4, 4)), jnp.zeros((4, 4))),
            (B, 4),
            r"K - 1; received shapes \(4, 4\), \(4, 4\), \(4, 4\)",
        ),
        (
            SplineCoupling(half_mask(4), lambda h: (h, h, h)),
            (B, 4),
            r"\[B, \*event, K\].*received shapes \(\(3, 4\), \(3, 4\), \(3, 4\)\)",
        ),
        (SplineCoupling(half_mask(4), lambda h: (h, h)), (B, 4), r"triple"),
    ],
)
def test_bijector_wrong_event_shape_errors(bij, bad_shape, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bij.forward(jnp.zeros(bad_shape))


def test_bijector_squeeze_layout():
    # Reference: each output pixel stacks its 2x2 patch row-major, then channels.
    x = jnp.arange(4 * 4 * 2, dtype=jnp.float32).reshape(1, 4, 4, 2)
    y = Squeeze().forward(x)
    assert y.shape == (1, 2, 2, 8)
    expected = jnp.concatenate([x[0, 0, 0], x[0, 0, 1], x[0, 1, 0], x[0, 1, 1]])
    np.testing.assert_array_equal(y[0, 0, 0], expected)
    np.testing.assert_array_equal(y[0, 1, 0], x[0, 2:4, 0:2].reshape(-1))


def test_bijector_masks():
    np.testing.assert_array_equal(half_mask(5), [True, True, False, False, False])
    np.testing.assert_array_equal(half_mask(5, flip=True), [False, False, True, True, True])
    board = checkerboard_mask((2, 3, 2))
    np.testing.assert_array_equal(board[..., 0], [[True, False, True], [False, True, False]])
    np.testing.assert_array_equal(board[..., 0], board[..., 1])
    np.testing.assert_array_equal(checkerboard_mask((2, 3, 2), flip=True), ~board)
    chan = channel_mask((2, 2, 4))
    np.testing.assert_array_equal(chan[0, 0], [True, True, False, False])
    for bad in (lambda: half_mask(1), lambda: checkerboard_mask((4, 4)),
                lambda: channel_mask((4, 4, 1))):
        with pytest.raises(ValueError, match="received"):
            bad()


def test_bijector_coupling_keeps_masked_entries_and_ignores_their_params():
    mask = half_mask(4)
    # The conditioner returns huge params everywhere; masked entries must stay exact.
    cond = lambda h: (jnp.full(h.shape, 1e3), jnp.full(h.shape, 1e3))
    bij = MaskedCoupling(mask, cond, log_scale_bound=2.0)
    x = jnp.ones((2, 4))
    y, log_det = bij.forward_and_log_det(x)
    np.testing.assert_array_equal(y[:, :2], x[:, :2])
    # log_scale is clamped to 2 * tanh(1e3 / 2) = 2 on each of the 2 transformed entries.
    np.testing.assert_allclose(log_det, [4.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(y[:, 2:], 1.0 * np.exp(2.0) + 1e3, rtol=1e-6)


def test_bijector_constructor_errors():
    with pytest.raises(ValueError, match=r"permutation.*received \(0, 0, 1\)"):
        Permute((0, 0, 1))
    with pytest.raises(ValueError, match=r"kind.*received 'spline'"):
        MaskedCoupling(half_mask(4), lambda h: h, kind="spline")
    with pytest.raises(ValueError, match="log_scale_bound"):
        MaskedCoupling(half_mask(4), lambda h: h, log_scale_bound=0.0)
    with pytest.raises(TypeError, match="event_ndims must be a Python int"):
        Tanh(event_ndims=1.0)
    with pytest.raises(TypeError, match="expected a jgen.bijectors.Bijector"):
        Inverse(jnp.tanh)
    with pytest.raises(ValueError, match="empty"):
        Chain([])
    with pytest.raises(ValueError, match=r"perm must be a permutation.*received \(0, 0\)"):
        Conv1x1LU((0, 0), jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.zeros(2), (1.0, 1.0))
    with pytest.raises(ValueError, match=r"sign must be 2 values.*received \(1.0, 0.5\)"):
        Conv1x1LU((0, 1), jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.zeros(2), (1.0, 0.5))
    with pytest.raises(ValueError, match=r"bound must be a positive float; received -1.0"):
        RationalQuadraticSpline(jnp.zeros(3), jnp.zeros(3), jnp.zeros(2), bound=-1.0)
    with pytest.raises(TypeError, match="conditioner must be a function"):
        SplineCoupling(half_mask(4), None)
    with pytest.raises(ValueError, match=r"same event_ndims.*Tanh: 1.*Squeeze: 3"):
        Chain([Tanh(), Squeeze()])


def test_bijector_chain_order_and_log_det_sum():
    with jax.enable_x64(True):
        a = Affine(jnp.float64(1.0), jnp.log(jnp.float64(2.0)))
        t = Tanh()
        x = _normal(jax.random.PRNGKey(3), (B, 2))
        y, log_det = Chain([a, t]).forward_and_log_det(x)
        # Reference: reading order, tanh(2x + 1), not 2 tanh(x) + 1.
        np.testing.assert_allclose(y, jnp.tanh(2.0 * x + 1.0), rtol=1e-12)
        _, ld_a = a.forward_and_log_det(x)
        _, ld_t = t.forward_and_log_det(a.forward(x))
        np.testing.assert_allclose(log_det, ld_a + ld_t, rtol=1e-12)
        # The inverse of a chain is the reversed chain of inverses.
        rev = Chain([Inverse(t), Inverse(a)])
        for got, want in zip(Chain([a, t]).inverse_and_log_det(y), rev.forward_and_log_det(y)):
            np.testing.assert_allclose(got, want, rtol=1e-12)
        # Inverse(Inverse(b)) == b; Chain of one is the bijector itself.
        for other in (Inverse(Inverse(a)), Chain([a])):
            for got, want in zip(other.forward_and_log_det(x), a.forward_and_log_det(x)):
                np.testing.assert_allclose(got, want, rtol=1e-12)
        # Nested chains flatten to the same map.
        nested = Chain([Chain([a, t]), Inverse(t)])
        np.testing.assert_allclose(nested.forward(x), a.forward(x), rtol=1e-10)


def test_bijector_params_are_leaves_no_recompile_and_grad():
    """Affine params are pytree leaves: new values reuse the trace, grads flow."""

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fwd(bij, x):
        return bij.forward_and_log_det(x)

    x = jnp.ones((2, 3))
    fwd(Affine(jnp.zeros(3), jnp.zeros(3)), x)
    y, log_det = fwd(Affine(jnp.ones(3), jnp.full((3,), 0.5, jnp.float32)), x)
    np.testing.assert_allclose(y, 1.0 + np.exp(0.5), rtol=1e-6)
    np.testing.assert_allclose(log_det, [1.5, 1.5], rtol=1e-6)
    assert len(jax.tree.leaves(Chain([Affine(jnp.zeros(3), jnp.zeros(3)), Tanh()]))) == 2

    # d/d log_scale of sum(log_det) is 1 per example per entry (closed form).
    grad = jax.grad(lambda s: jnp.sum(Affine(jnp.zeros(3), s).forward_and_log_det(x)[1]))
    np.testing.assert_allclose(grad(jnp.zeros(3)), [2.0, 2.0, 2.0])


def test_bijector_squashing_log_dets_stable_in_the_tails():
    # Closed forms for large |x|: log(1 - tanh^2 x) -> log 4 - 2|x|, and
    # log sigmoid'(x) -> -|x|; naive formulas give log(0) = -inf in float32 here.
    x = jnp.array([[-60.0, 60.0]], jnp.float32)
    _, ld_tanh = Tanh().forward_and_log_det(x)
    _, ld_sigmoid = Sigmoid().forward_and_log_det(x)
    np.testing.assert_allclose(ld_tanh, [2 * (np.log(4.0) - 120.0)], rtol=1e-6)
    np.testing.assert_allclose(ld_sigmoid, [-120.0], rtol=1e-6)
