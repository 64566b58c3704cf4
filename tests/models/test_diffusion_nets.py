"""Tests for the diffusion networks: time embeddings, the DDPM U-Net and the toy ScoreMLP.

References used as expected values: the DDPM paper's parameter count (35.7M for the
CIFAR-10 U-Net; exactly 35,746,307 in ports of the official code), a by-hand parameter
count from the paper's architecture description, DDPM's `get_timestep_embedding` and
NCSN++'s Fourier projection written directly in numpy, and structural properties
(zero-initialised layers are identities, attention is equivariant to permuting positions,
no statistics are shared across the batch).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.models.diffusion.embeddings import (
    GaussianFourierProjection,
    sinusoidal_embedding,
)
from jgen.models.diffusion.mlp import ScoreMLP
from jgen.models.diffusion.unet import AttnBlock, ResnetBlock, UNet

TINY = {"ch": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (4,), "num_groups": 4, "dropout": 0.1}
B, HW = 3, 8


def _num_params(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _abstract_init(model, x_shape, num_classes=0):
    """Parameter shapes without allocating anything (jax.eval_shape of model.init)."""
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    t = jax.ShapeDtypeStruct(x_shape[:1], jnp.float32)
    labels = jax.ShapeDtypeStruct(x_shape[:1], jnp.int32) if num_classes else None
    return jax.eval_shape(lambda k, x, t, y: model.init(k, x, t, y, train=False), jax.random.key(0), x, t, labels)


def _hand_count(ch, ch_mult, num_res_blocks, attn_resolutions, in_ch, size, out_ch=None, num_classes=0):
    """Counts the parameters of Ho et al. (2020) Appendix B's U-Net from its description."""
    conv = lambda a, b: 9 * a * b + b
    dense = lambda a, b: a * b + b
    gn = lambda c: 2 * c
    emb = 4 * ch

    def res(a, b):
        return gn(a) + conv(a, b) + dense(emb, b) + gn(b) + conv(b, b) + (dense(a, b) if a != b else 0)

    def attn(c):
        return gn(c) + 4 * dense(c, c)

    n = dense(ch, emb) + dense(emb, emb) + (num_classes + 1) * emb * (num_classes > 0) + conv(in_ch, ch)
    skips, c = [ch], ch
    for i, m in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            n += res(c, ch * m) + (attn(ch * m) if size in attn_resolutions else 0)
            c = ch * m
            skips.append(c)
        if i != len(ch_mult) - 1:
            n += conv(c, c)
            skips.append(c)
            size //= 2
    n += 2 * res(c, c) + attn(c)
    for i in reversed(range(len(ch_mult))):
        for _ in range(num_res_blocks + 1):
            n += res(c + skips.pop(), ch * ch_mult[i]) + (attn(ch * ch_mult[i]) if size in attn_resolutions else 0)
            c = ch * ch_mult[i]
        if i != 0:
            n += conv(c, c)
            size *= 2
    return n + gn(c) + conv(c, out_ch or in_ch)


def _perturb(variables, seed, scale=0.1):
    """Adds N(0, scale^2) noise to every parameter (brings zero-initialised layers to life).

    The noise is drawn on the host with numpy: one eager jax.random call per leaf would
    compile one XLA program per parameter shape.
    """
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda p: jnp.asarray(np.asarray(p) + scale * rng.standard_normal(p.shape), p.dtype),
                          variables["params"])
    return {**variables, "params": params}


def _key(seed):
    # "unsafe_rbg" keys compile much faster on XLA:CPU than threefry inside a jitted init
    # (flax folds the key in once per parameter); statistical quality is irrelevant here.
    return jax.random.key(seed, impl="unsafe_rbg")


def _init(module, *args, seed=0, **kwargs):
    """module.init under jit (eager init would compile every op separately)."""
    return jax.jit(functools.partial(module.init, **kwargs))(_key(seed), *args)


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.fixture(scope="module")
def tiny():
    """A tiny class-conditional U-Net (3 classes), its initial and perturbed variables,
    inputs, and jitted eval / train applies shared by the tests."""
    net = UNet(**TINY, num_classes=3)
    x = _normal(0, (B, HW, HW, 1))
    t = jnp.array([0.0, 10.0, 500.0])
    labels = jnp.array([0, 1, 3])  # 3 = the null label
    variables = _init(net, x, t, labels, train=False)

    jitted = jax.jit(lambda v, x, t, y, key, train: net.apply(v, x, t, y, train=train, rngs={"dropout": key}),
                     static_argnums=5)

    def apply(v, x, t, y, key=None, train=False):  # one signature: one eval and one train compile
        return jitted(v, x, t, y, _key(0) if key is None else key, train)

    return variables, _perturb(variables, 1), apply, x, t, labels


# --- parameter counts -------------------------------------------------------------------


def test_ddpm_cifar10_parameter_count():
    # Ho et al. 2020, Appendix B: "Our CIFAR10 model has 35.7 million parameters".
    shapes = _abstract_init(UNet(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,)),
                            (1, 32, 32, 3))
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(shapes))  # nothing allocated
    n = _num_params(shapes["params"])
    assert abs(n - 35.7e6) / 35.7e6 < 0.005
    assert n == 35_746_307  # the count of ports of the official TF code
    assert n == _hand_count(128, (1, 2, 2, 2), 2, (16,), in_ch=3, size=32)


def test_tiny_parameter_count_matches_description():
    net = UNet(ch=16, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(4, 8), num_groups=4, out_ch=2, num_classes=5)
    shapes = _abstract_init(net, (1, 8, 8, 1), num_classes=5)
    assert _num_params(shapes["params"]) == _hand_count(16, (1, 2, 2), 2, (4, 8), in_ch=1, size=8,
                                                        out_ch=2, num_classes=5)


# --- embeddings -------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [128, 7, 2])
def test_sinusoidal_embedding_matches_numpy(dim):
    t = np.array([0.0, 1.0, 17.0, 999.0])
    # DDPM `get_timestep_embedding`, written directly in numpy.
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / max(half - 1, 1))
    expected = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], axis=1)
    if dim % 2:
        expected = np.pad(expected, ((0, 0), (0, 1)))
    got = jax.jit(sinusoidal_embedding, static_argnums=1)(jnp.asarray(t, jnp.float32), dim)
    assert got.shape == (4, dim)
    np.testing.assert_allclose(got, expected, atol=2e-4)  # float32 sin of args up to 999
    with pytest.raises(ValueError, match=r"shape \[B\].*\(4, 1\)"):
        sinusoidal_embedding(jnp.zeros((4, 1)), dim)
    with pytest.raises(ValueError, match="dim must be an int >= 2; received 1"):
        sinusoidal_embedding(jnp.zeros((4,)), 1)


def test_fourier_projection_formula_and_frozen_frequencies():
    proj = GaussianFourierProjection(embedding_size=2048, scale=16.0)
    t = jnp.array([-1.0, 0.0, 0.3])
    variables = proj.init(jax.random.key(1), t)
    assert set(variables) == {"constants"}  # outside "params": optimisers over params never see them
    w = np.asarray(variables["constants"]["W"])
    assert w.shape == (2048,)
    assert abs(w.std() / 16.0 - 1.0) < 0.05 and abs(w.mean()) < 16.0 * 4 / math.sqrt(2048)  # N(0, 16^2)
    other = proj.init(jax.random.key(2), t)["constants"]["W"]
    assert not np.allclose(w, other)  # drawn from the init key
    proj_np = np.asarray(t)[:, None] * w[None, :] * 2 * np.pi
    np.testing.assert_allclose(proj.apply(variables, t), np.concatenate([np.sin(proj_np), np.cos(proj_np)], 1),
                               atol=2e-4)
    with pytest.raises(ValueError, match="'constants' collection.*whole dict returned by init"):
        proj.apply({"params": {}}, t)


def test_fourier_frequencies_get_zero_gradient():
    # Even when a train step differentiates the whole variables dict, W's gradient is 0.
    net = ScoreMLP(hidden=(32, 32), embed_dim=16, embedding="fourier")
    x, t = _normal(0, (5, 2)), jnp.linspace(0.0, 1.0, 5)
    variables = _init(net, x, t)
    assert "W" in variables["constants"]["fourier"] and "fourier" not in variables["params"]
    grads = jax.jit(jax.grad(lambda v: jnp.sum(net.apply(v, x, t) ** 2)))(variables)
    assert np.all(np.asarray(grads["constants"]["fourier"]["W"]) == 0.0)
    assert np.abs(np.asarray(grads["params"]["temb_dense0"]["kernel"])).max() > 0  # time does reach the loss


# --- the U-Net ------------------------------------------------------------------------


def test_unet_zero_output_at_init_and_shapes(tiny):
    variables, _, apply, x, t, labels = tiny
    out = apply(variables, x, t, labels)
    assert out.shape == x.shape
    assert np.all(np.asarray(out) == 0.0)  # zero-initialised final conv (DDPM)
    assert np.all(np.asarray(variables["params"]["conv_out"]["kernel"]) == 0.0)
    # Learned variance (out_ch = 2C) and the Fourier embedding, by shape only (cheap).
    net2 = UNet(**TINY, out_ch=2, embedding="fourier")
    x2 = jax.ShapeDtypeStruct((B, HW, HW, 1), jnp.float32)
    t2 = jax.ShapeDtypeStruct((B,), jnp.float32)
    out2, v2 = jax.eval_shape(lambda k, x, t: net2.init_with_output(k, x, t, train=False), _key(0), x2, t2)
    assert out2.shape == (B, HW, HW, 2)
    assert v2["constants"]["fourier"]["W"].shape == (8,) and "fourier" not in v2["params"]


def test_unet_depends_on_time_and_labels_per_example(tiny):
    _, pert, apply, x, t, labels = tiny
    out = np.asarray(apply(pert, x, t, labels))
    assert np.abs(out).max() > 1e-3
    xs = jnp.broadcast_to(x[:1], x.shape)  # the same image three times
    same_t = np.asarray(apply(pert, xs, jnp.full((B,), 10.0, jnp.float32), jnp.zeros((B,), jnp.int32)))
    np.testing.assert_allclose(same_t[0], same_t[1], atol=1e-6)  # identical inputs, identical outputs
    diff_t = np.asarray(apply(pert, xs, jnp.array([10.0, 11.0, 500.0]), jnp.zeros((B,), jnp.int32)))
    diff_y = np.asarray(apply(pert, xs, jnp.full((B,), 10.0, jnp.float32), jnp.array([0, 1, 3])))
    for out_b in (diff_t, diff_y):
        assert np.abs(out_b[0] - out_b[1]).max() > 1e-3 and np.abs(out_b[0] - out_b[2]).max() > 1e-3
    # No batch statistics: each example's output is a function of its own (x, t, label).
    np.testing.assert_allclose(same_t[0], diff_t[0], atol=1e-5)
    np.testing.assert_allclose(diff_t[0], diff_y[0], atol=1e-5)
    shuffled = np.asarray(apply(pert, x[::-1], t[::-1], labels[::-1]))
    np.testing.assert_allclose(shuffled, out[::-1], atol=1e-5)


def test_unet_dropout(tiny):
    _, pert, apply, x, t, labels = tiny
    evaluate = apply(pert, x, t, labels, _key(0))
    np.testing.assert_array_equal(apply(pert, x, t, labels, _key(9)), evaluate)  # train=False ignores the rng
    a, b = apply(pert, x, t, labels, _key(0), train=True), apply(pert, x, t, labels, _key(1), train=True)
    assert np.abs(np.asarray(a - b)).max() > 1e-3 and np.abs(np.asarray(a - evaluate)).max() > 1e-3
    np.testing.assert_array_equal(apply(pert, x, t, labels, _key(0), train=True), a)  # the key fixes the mask


def test_attention_block_is_permutation_equivariant():
    block = AttnBlock(num_groups=4)
    x = _normal(0, (2, 4, 4, 8))
    variables = _init(block, x)
    apply = jax.jit(block.apply)
    assert np.all(np.asarray(apply(variables, x)) == np.asarray(x))  # zero-initialised projection
    pert = _perturb(variables, 2, scale=0.3)
    perm = np.random.default_rng(3).permutation(16)
    permute = lambda a: a.reshape(2, 16, 8)[:, perm].reshape(2, 4, 4, 8)
    y = apply(pert, x)
    assert np.abs(np.asarray(y - x)).max() > 1e-2  # the perturbed block is not the identity
    np.testing.assert_allclose(apply(pert, permute(x)), permute(y), atol=1e-5)


def test_resnet_block_is_identity_with_zero_output_conv():
    x, temb = _normal(0, (2, 4, 4, 8)), _normal(1, (2, 32))
    block = ResnetBlock(num_groups=4, dropout=0.5)
    variables = _init(block, x, temb, train=False)
    assert np.all(np.asarray(variables["params"]["conv2"]["kernel"]) == 0.0)
    apply = jax.jit(lambda v, train: block.apply(v, x, temb, train=train, rngs={"dropout": _key(3)}),
                    static_argnums=1)
    for train in (False, True):
        np.testing.assert_array_equal(apply(variables, train), x)
    assert np.abs(np.asarray(apply(_perturb(variables, 4), False) - x)).max() > 1e-2
    # With a width change and zero conv2 the block is its 1x1 shortcut: x @ W + b.
    wide = ResnetBlock(out_ch=12, num_groups=4)
    y, vw = jax.jit(functools.partial(wide.init_with_output, train=False))(_key(5), x, temb)
    shortcut = vw["params"]["nin_shortcut"]
    np.testing.assert_allclose(y, np.asarray(x) @ np.asarray(shortcut["kernel"]) + np.asarray(shortcut["bias"]),
                               atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, x_shape, t_shape, labels, match",
    [
        ({}, (2, 8, 8), (2,), None, r"\[B, H, W, C\].*\(2, 8, 8\)"),
        ({}, (2, 7, 8, 1), (2,), None, r"divisible by 2\^\(len\(ch_mult\) - 1\) = 2.*H=7, W=8"),
        ({"ch": 12, "num_groups": 8}, (2, 8, 8, 1), (2,), None, r"num_groups=8.*12"),
        ({}, (2, 8, 8, 1), (2,), np.array([0, 1]), r"unconditional \(num_classes=0\)"),
        ({"num_classes": 3}, (2, 8, 8, 1), (2,), None, r"num_classes=3.*null label.*jnp.full\(\(2,\), 3\)"),
        ({"num_classes": 3}, (2, 8, 8, 1), (2,), np.array([0, 4]), r"\[0, 3\].*from 0 to 4"),
        ({"num_classes": 3}, (2, 8, 8, 1), (2,), np.array([0.0, 1.0]), r"integer class ids.*float"),
        ({}, (2, 8, 8, 1), (), None, r"t must have shape \[B\] = \(2,\).*\(\)"),
        ({"embedding": "fourir"}, (2, 8, 8, 1), (2,), None, r"'fourir'"),
    ],
)
def test_unet_bad_input(kwargs, x_shape, t_shape, labels, match):
    net = UNet(**{**TINY, **kwargs})
    with pytest.raises(ValueError, match=match):
        net.init(jax.random.key(0), jnp.zeros(x_shape), jnp.zeros(t_shape), labels, train=False)


# --- the toy ScoreMLP -------------------------------------------------------------------


def test_score_mlp_conditioning_and_rowwise():
    net = ScoreMLP(hidden=(32, 32), embed_dim=16, num_classes=2)
    x = _normal(0, (4, 2))
    t = jnp.array([0.1, 0.1, 0.9, 0.1])
    labels = jnp.array([0, 1, 0, 2])  # 2 = the null label
    variables = _init(net, x, t, labels)
    f = functools.partial(net.apply, variables, t=t, labels=labels)
    xs = jnp.broadcast_to(x[:1], x.shape)  # example 0's input four times
    out, jac = jax.jit(lambda z: (f(z), jax.jacobian(f)(z)))(xs)  # jac: [4, 2, 4, 2]
    out, jac = np.asarray(out), np.asarray(jac)
    assert out.shape == (4, 2)
    for j in (1, 2, 3):  # label 1, time 0.9, null label each change the output of example 0's input
        assert np.abs(out[0] - out[j]).max() > 1e-4
    # Each output row depends only on its own input row: the batch Jacobian is block diagonal.
    off_diagonal = jac * (1 - np.eye(4))[:, None, :, None]
    assert np.all(off_diagonal == 0.0) and np.abs(jac).max() > 1e-3
    out3, _ = jax.eval_shape(ScoreMLP(hidden=(8,), out_dim=3).init_with_output, _key(0), x, t)
    assert out3.shape == (4, 3)


@pytest.mark.parametrize(
    "kwargs, x_shape, t_shape, labels, match",
    [
        ({}, (4, 2, 1), (4,), None, r"\[B, D\].*\(4, 2, 1\)"),
        ({}, (4, 2), (3,), None, r"t must have shape \[B\] = \(4,\).*\(3,\)"),
        ({}, (4, 2), (4,), np.zeros(4, int), r"unconditional"),
        ({"num_classes": 2}, (4, 2), (4,), None, r"num_classes=2"),
    ],
)
def test_score_mlp_bad_input(kwargs, x_shape, t_shape, labels, match):
    with pytest.raises(ValueError, match=match):
        ScoreMLP(**kwargs).init(jax.random.key(0), jnp.zeros(x_shape), jnp.zeros(t_shape), labels)
