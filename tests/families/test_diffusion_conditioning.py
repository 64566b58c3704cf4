"""The diffusion family's conditioning (vector, tokens, image through
`jgen.conditioning.ConditionEncoder`; labels through the legacy path), checked against
independent references:

- a dropped condition is the learned null embedding: the ScoreMLP's output equals a
  hand-written NumPy forward pass with the null embedding and a zero map, and (MLP and
  U-Net) does not depend on the condition; rows are independent;
- the image condition reaches the U-Net: d out / d condition is nonzero, and exactly zero
  when the condition is dropped;
- classifier-free guidance: the family's guided output is (1 + w) f(x, c) - w f(x, null)
  of the raw network, and a guidance weight of 0 gives samples bit-identical to a sampler
  assembled by hand from the raw network (tokens and image kinds);
- a vector-conditional ScoreMLP trained on two well-separated Gaussians samples the mode
  its condition selects, and its likelihood is higher given the right condition;
- bad conditions raise errors that name what was received and what was expected.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.conditioning import ConditionSpec
from jgen.config import base_config
from jgen.families.diffusion import (
    build,
    model_config,
    sample_with,
    tiny_variant,
    training_defaults,
)
from jgen.models.diffusion import ScoreMLP, UNet
from jgen.sde import get_sde, to_score

VOCAB = ("<pad>", "a", "b", "c", "d")


def _info(shape, **kw):
    return types.SimpleNamespace(image_shape=shape, num_classes=kw.pop("num_classes", None), **kw)


def _spec(shape, kind, info_kw=None, cond_p_uncond=0.1, **model):
    config = base_config(dataset="toy", model=model_config())
    training_defaults(config)
    tiny_variant(config)
    config.data.name = "toy"
    config.model.update({"network": "mlp", "mlp_hidden": (16,), "sample_steps": 6, **model})
    config.model.condition.kind = kind
    config.model.condition.embed_dim = 8
    config.model.condition.p_uncond = cond_p_uncond
    config.model.condition.text_layers = 1
    config.model.condition.text_heads = 2
    if kind == "image":
        config.model.condition.operator = "superres:2"
    return build(config, _info(shape, **(info_kw or {})))


def _perturb(params, seed):
    """Every parameter replaced by N(0, 0.3^2) draws (the zero-initialised layers too);
    `params` may be abstract (`jax.eval_shape` of an init: tracing only, no compile)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(tree, [jnp.asarray(0.3 * rng.standard_normal(v.shape), v.dtype)
                                               for v in leaves])


def _tokens(b, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(1, len(VOCAB), (b, 3)).astype(np.int32)
    t[:, 2] = 0  # padding
    return jnp.asarray(t)


# -- the null condition ----------------------------------------------------------------------

def _swish(v):
    return v / (1.0 + np.exp(-v))


def _dense(p, v):
    return v @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_dropped_condition_is_the_null_embedding_in_numpy(kind):
    # ScoreMLP, by hand: temb = D1(swish(D0(sin-emb(t)))) + cond_proj(null); the input is
    # [x, 0-map] for an image condition (the dropped map is all zeros).
    shape = (4, 4, 1)
    spec = (ConditionSpec(kind="vector", p_uncond=0.1, embed_dim=6, image_shape=shape, vector_dim=3)
            if kind == "vector" else
            ConditionSpec(kind="image", p_uncond=0.1, embed_dim=6, image_shape=shape, operator="superres:2"))
    net = ScoreMLP(hidden=(5, 7), embed_dim=8, condition=spec)
    b, d = 3, 16
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, d)), jnp.float32)
    t = jnp.asarray([1.0, 200.0, 900.0])
    c1 = jnp.asarray(rng.random((b, *spec.shape)), jnp.float32)
    c2 = jnp.asarray(rng.random((b, *spec.shape)), jnp.float32)
    params = _perturb(jax.eval_shape(lambda k: net.init(k, x, t, cond=c1), jax.random.key(0)), 1)
    drop = jnp.ones(b, bool)
    out1 = np.asarray(net.apply(params, x, t, cond=c1, drop=drop))
    out2 = np.asarray(net.apply(params, x, t, cond=c2, drop=drop))
    np.testing.assert_array_equal(out1, out2)  # a dropped condition is ignored

    p = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), params["params"])
    half = 4  # DDPM's sinusoidal embedding of width 8: [sin(w_k t), cos(w_k t)], w_k = 10000^(-k / (half - 1))
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - 1))
    emb = np.asarray(t, np.float64)[:, None] * freqs[None]
    emb = np.concatenate([np.sin(emb), np.cos(emb)], axis=1)
    temb = _dense(p["temb_dense1"], _swish(_dense(p["temb_dense0"], emb)))
    null = np.broadcast_to(p["condition"]["null"], (b, 6))
    temb = temb + _dense(p["cond_proj"], null)
    h = np.asarray(x, np.float64)
    if kind == "image":
        h = np.concatenate([h, np.zeros((b, 16 * spec.map_channels))], axis=1)
    for i in range(2):
        h = _swish(_dense(p[f"dense_{i}"], h) + _dense(p[f"temb_proj_{i}"], _swish(temb)))
    np.testing.assert_allclose(out1, _dense(p["dense_out"], h), rtol=1e-4, atol=1e-5)
    # Not dropped: the condition matters.
    assert np.abs(np.asarray(net.apply(params, x, t, cond=c1, drop=~drop)) - out1).max() > 1e-3


def test_unet_tokens_drop_is_per_row_and_ignores_the_condition():
    shape = (8, 8, 1)
    spec = ConditionSpec(kind="tokens", p_uncond=0.1, embed_dim=8, image_shape=shape, vocab=VOCAB, max_tokens=3,
                         text_layers=1, text_heads=2)
    net = UNet(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0, num_groups=4, condition=spec)
    b = 4
    x = jnp.asarray(np.random.default_rng(2).standard_normal((b, *shape)), jnp.float32)
    t = jnp.asarray([1.0, 50.0, 300.0, 900.0])
    c1, c2 = _tokens(b, 3), _tokens(b, 4)
    params = _perturb(jax.eval_shape(lambda k: net.init({"params": k}, x, t, train=False, cond=c1), jax.random.key(0)), 5)
    f = jax.jit(lambda c, drop: net.apply(params, x, t, train=False, cond=c, drop=drop))
    all_drop, none_drop = jnp.ones(b, bool), jnp.zeros(b, bool)
    np.testing.assert_array_equal(np.asarray(f(c1, all_drop)), np.asarray(f(c2, all_drop)))
    some = jnp.asarray([True, False, True, False])
    mixed = np.asarray(f(c1, some))
    np.testing.assert_allclose(mixed[0::2], np.asarray(f(c2, all_drop))[0::2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed[1::2], np.asarray(f(c1, none_drop))[1::2], rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(f(c1, none_drop)) - np.asarray(f(c2, none_drop))).max() > 1e-3


def test_image_condition_reaches_the_unet_and_not_when_dropped():
    shape = (8, 8, 3)
    spec = ConditionSpec(kind="image", p_uncond=0.1, embed_dim=8, image_shape=shape, operator="superres:2")
    net = UNet(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0, num_groups=4, condition=spec)
    b = 2
    x = jnp.asarray(np.random.default_rng(6).standard_normal((b, *shape)), jnp.float32)
    t = jnp.asarray([10.0, 500.0])
    y = jnp.asarray(np.random.default_rng(7).random((b, 4, 4, 3)), jnp.float32)
    params = _perturb(jax.eval_shape(lambda k: net.init({"params": k}, x, t, train=False, cond=y), jax.random.key(0)), 8)
    grad_fn = jax.jit(jax.grad(lambda y, drop: jnp.sum(net.apply(params, x, t, train=False, cond=y, drop=drop) ** 2)))

    def grad(drop):
        return np.asarray(grad_fn(y, drop))
    g = grad(jnp.zeros(b, bool))
    assert (np.abs(g) > 0).mean() > 0.9  # every low-res pixel of every example feeds the output
    np.testing.assert_array_equal(grad(jnp.ones(b, bool)), 0.0)
    g_half = grad(jnp.asarray([True, False]))
    np.testing.assert_array_equal(g_half[0], 0.0)
    np.testing.assert_allclose(g_half[1], g[1], rtol=1e-5, atol=1e-7)  # rows are independent


# -- classifier-free guidance ----------------------------------------------------------------

def _raw_network(spec):
    """The family's MLP network rebuilt from the public module (the reference)."""
    return ScoreMLP(hidden=(16,), condition=spec, embedding="sinusoidal")


@pytest.mark.parametrize("kind", ["tokens", "image"])
def test_guidance_zero_is_bit_identical_to_the_plain_conditional_sampler(kind):
    shape = (4, 4, 3) if kind == "image" else (4, 4, 1)
    spec = _spec(shape, kind, info_kw={"vocab": VOCAB, "max_tokens": 3}, guidance_scale=2.0)
    cond = spec.condition
    params = _perturb(jax.eval_shape(spec.init, jax.random.key(0)), 9)
    num, steps, key = 6, 4, jax.random.key(3)
    c = _tokens(num, 10) if kind == "tokens" else jnp.asarray(np.random.default_rng(11).random((num, 2, 2, 3)),
                                                                   jnp.float32)
    fns = spec.sampler_fns  # model.guidance_scale = 2
    sde = get_sde("vp", t_min=1e-3, beta_min=0.1, beta_max=20.0)
    net = _raw_network(cond)
    d = int(np.prod(shape))

    def raw(x, time, drop):
        out = net.apply(params, x.reshape((x.shape[0], d)), time, cond=c, drop=drop)
        return out.reshape(x.shape)

    def plain_score(x, t):  # the unguided conditional score, assembled by hand
        alpha, sigma = sde.marginal(t)
        return to_score(raw(x, 1000.0 * t, jnp.zeros(num, bool)), x, alpha, sigma, "eps")

    plain = jax.jit(lambda k: sample_with("dpm_solver_pp_2m", k, plain_score, sde, (num, *shape), steps)[0])(key)
    got0 = jax.jit(lambda k: fns.run("dpm_solver_pp_2m", params, k, num, steps, c, guidance_scale=0)[0])(key)
    np.testing.assert_array_equal(np.asarray(got0), np.asarray(plain))
    if kind == "tokens":
        return
    # One guided network evaluation: (1 + w) f(x, c) - w f(x, null), with w from the call
    # (traced: one compile for every w) or by default model.guidance_scale = 2.
    x = jnp.asarray(np.random.default_rng(12).standard_normal((num, *shape)), jnp.float32)
    time = jnp.full((num,), 500.0)
    f_c, f_null = jax.jit(lambda: (raw(x, time, jnp.zeros(num, bool)), raw(x, time, jnp.ones(num, bool))))()
    guided = jax.jit(lambda w: fns.forward(params, x, c, guidance_scale=w))
    for w in (2.0, 0.5):
        np.testing.assert_allclose(np.asarray(guided(jnp.float32(w))), np.asarray((1 + w) * f_c - w * f_null),
                                   rtol=1e-4, atol=1e-4)
    # SamplerFns.with_condition binds the condition and w (for callers that pass neither,
    # e.g. `jgen bench samplers`); w = 0 is the raw conditional network, bit for bit.
    bound = fns.with_condition(c, guidance_scale=0)
    default, plain_out = jax.jit(lambda: (fns.forward(params, x, c), bound.forward(params, x)))()
    np.testing.assert_allclose(np.asarray(default), np.asarray(3 * f_c - 2 * f_null), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(plain_out), np.asarray(f_c))
    assert np.abs(np.asarray(f_c) - np.asarray(f_null)).max() > 1e-2  # the guidance acts


# -- learning: the condition selects the mode ------------------------------------------------

MODES = np.array([48.0, 208.0])  # pixel values (x = k / 127.5 - 1: -0.62 and +0.63)
SD = 16.0


@pytest.fixture(scope="module")
def two_mode_model():
    """A vector-conditional ScoreMLP trained (200 Adam steps) on 2-pixel images whose
    pixels are N(MODES[k], SD^2) given the condition one_hot(k), k ~ Bernoulli(1/2)."""
    spec = _spec((1, 2, 1), "vector", info_kw={"vector_dim": 2}, mlp_hidden=(64, 64), sample_steps=20,
                 ode_rtol=1e-3, ode_atol=1e-3)

    def batch_of(key, b=128):
        k1, k2 = jax.random.split(key)
        mode = jax.random.bernoulli(k1, 0.5, (b,)).astype(jnp.int32)
        means = jnp.asarray(MODES, jnp.float32)[mode]
        pixels = means[:, None, None, None] + SD * jax.random.normal(k2, (b, 1, 2, 1))
        return {"image": pixels, "vector": jax.nn.one_hot(mode, 2)}

    opt = optax.adam(3e-3)
    params = spec.init(jax.random.key(0))

    def step(carry, key):
        p, s = carry
        kb, kl = jax.random.split(key)
        loss, g = jax.value_and_grad(lambda p: spec.loss_fn(p, kl, batch_of(kb))[0])(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    (params, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), jax.random.split(
        jax.random.key(1), 200)))(params)
    assert float(losses[-50:].mean()) < float(losses[:10].mean())
    return spec, params


def test_vector_condition_selects_the_mode(two_mode_model):
    spec, params = two_mode_model
    num = 200
    # One compile for every (condition, w): both are traced arguments.
    draw = jax.jit(lambda c, w: spec.sample(params, jax.random.key(4), num, c, guidance_scale=w))
    for mode, w in [(0, 0.0), (1, 0.0), (0, 1.0), (1, 1.0)]:
        c = jnp.asarray(np.eye(2, dtype=np.float32)[np.full(num, mode)])
        pixel = 255.0 * np.asarray(draw(c, jnp.float32(w))).reshape(num, 2).mean(axis=1)  # back to 0..255
        # The modes are 160 levels (10 SD) apart; unconditional samples would land half in each.
        near = np.abs(pixel - MODES[mode]) < 60.0
        assert near.mean() > 0.97, (mode, w, near.mean())
        assert abs(np.median(pixel) - MODES[mode]) < 20.0, (mode, w, np.median(pixel))


def test_likelihood_is_higher_given_the_right_condition(two_mode_model):
    spec, params = two_mode_model
    b = 8
    pixels = jnp.asarray(np.concatenate([np.full((4, 1, 2, 1), 48.0), np.full((4, 1, 2, 1), 208.0)]), jnp.float32)
    right = jnp.asarray(np.eye(2, dtype=np.float32)[[0, 0, 0, 0, 1, 1, 1, 1]])
    ev = jax.jit(spec.eval_fn)
    nll_right = np.asarray(ev(params, jax.random.key(5), {"image": pixels, "vector": right})["ODE"])
    nll_wrong = np.asarray(ev(params, jax.random.key(5), {"image": pixels, "vector": right[:, ::-1]})["ODE"])
    assert nll_right.shape == (b,)
    # Closed form at the mode: two pixels of a discretized N(mode, SD^2), each of mass
    # ~ 1 / (SD sqrt(2 pi)) (one pixel level wide); the model's bound comes within a nat.
    exact = 2 * (np.log(SD) + 0.5 * np.log(2 * np.pi))
    assert abs(nll_right.mean() - exact) < 1.0, (nll_right, exact)
    # The wrong mode is 160 pixel levels (10 SD) away: its NLL is far larger.
    assert (nll_wrong - nll_right).min() > 20.0, (nll_right, nll_wrong)


# -- errors ------------------------------------------------------------------------------------

def test_bad_conditions_raise_clear_errors():
    spec = _spec((4, 4, 1), "tokens", info_kw={"vocab": VOCAB, "max_tokens": 3})
    params = _perturb(jax.eval_shape(spec.init, jax.random.key(0)), 0)
    fns = spec.sampler_fns
    with pytest.raises(ValueError, match=r"needs a condition of shape \[2, 3\] \(int32\)"):
        spec.sample(params, jax.random.key(1), 2)
    with pytest.raises(ValueError, match=r"must have shape \[2, 3\]; received int32 \[2, 4\]"):
        spec.sample(params, jax.random.key(1), 2, jnp.ones((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="integer ids; received dtype float32"):
        fns.forward(params, jnp.zeros((2, 4, 4, 1)), jnp.ones((2, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\); received values 0..7"):
        fns.run("ode_euler", params, jax.random.key(1), 2, 2, jnp.asarray([[1, 7, 0], [1, 1, 0]]))
    unconditional = _spec((4, 4, 1), "none")
    with pytest.raises(ValueError, match="this model is unconditional; received a condition"):
        unconditional.sample(None, jax.random.key(1), 2, jnp.ones((2, 3)))
    image = ConditionSpec(kind="image", p_uncond=0.1, embed_dim=4, image_shape=(8, 8, 1), operator="superres:2")
    net = UNet(ch=4, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), num_groups=2, condition=image)
    x, t = jnp.zeros((2, 4, 4, 1)), jnp.zeros(2)
    with pytest.raises(ValueError, match=r"made for 8x8 images .* received 4x4 inputs"):
        net.init(jax.random.key(0), x, t, train=False, cond=jnp.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"UNet: the image condition must have shape \[2, 4, 4, 1\]; received "
                                         r"float32 \[2, 8, 8, 1\]"):
        net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), t, train=False, cond=jnp.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="either num_classes .* or condition"):
        UNet(ch=4, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), num_groups=2, condition=image,
             num_classes=3).init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), t, jnp.zeros(2, jnp.int32), train=False,
                                 cond=jnp.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"ScoreMLP: received a condition .* no condition spec"):
        ScoreMLP(hidden=(4,)).init(jax.random.key(0), jnp.zeros((2, 3)), t, cond=jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"drop must be bool \[B\] = \(2,\)"):
        net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), t, train=False, cond=jnp.zeros((2, 4, 4, 1)),
                 drop=jnp.zeros(3, bool))


def test_label_kind_keeps_the_legacy_label_path():
    info = {"num_classes": 3}
    legacy = _spec((4, 4, 1), "none", info_kw=info, conditional=True, p_uncond=0.2)
    new = _spec((4, 4, 1), "label", info_kw=info)
    p = jax.eval_shape(legacy.init, jax.random.key(0))
    assert "label_emb" in p["params"] and "condition" not in p["params"]
    assert jax.tree_util.tree_structure(p) == jax.tree_util.tree_structure(jax.eval_shape(new.init, jax.random.key(0)))
    assert legacy.num_classes == new.num_classes == 3 and legacy.condition.kind == "label"
    # The same loss (the same label dropout draws) with the legacy p_uncond and the new one.
    new = _spec((4, 4, 1), "label", info_kw=info, cond_p_uncond=0.2)
    p = _perturb(p, 3)
    batch = {"image": jnp.asarray(np.random.default_rng(4).integers(0, 256, (16, 4, 4, 1)), jnp.uint8),
             "label": jnp.arange(16, dtype=jnp.int32) % 3}
    a, b = jax.jit(lambda k: (legacy.loss_fn(p, k, batch)[0], new.loss_fn(p, k, batch)[0]))(jax.random.key(1))
    assert float(a) == float(b)
