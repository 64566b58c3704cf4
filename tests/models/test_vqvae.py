"""The convolutional VQ-VAE: shapes, parameter layout, the straight-through path from
the reconstruction loss to the encoder, and a short training run on synthetic data.

Images are tiny (8x8, 12x12) and networks narrow: XLA's CPU convolutions are slow.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.distributions import bernoulli_logits_log_prob
from jgen.losses.vq import (
    CODEBOOK_PATH,
    codebook_perplexity,
    ema_codebook_init,
    get_codebook,
    make_vq_codes_fn,
    make_vq_ema_step,
    make_vqvae_loss,
    nearest_code,
)
from jgen.models.vae.vqvae import VQVAE, Codebook

TINY = dict(hidden_channels=8, res_channels=4, num_res_blocks=1)


@pytest.fixture(autouse=True)
def _cheap_rng_compiles():
    """Non-partitionable threefry for these tests: with the (default) partitionable
    implementation every random op of `model.init` compiles ~4x slower on CPU, and
    init dominated these tests' runtime. No test depends on particular random draws."""
    with jax.threefry_partitionable(False):
        yield


def _model(image_shape=(8, 8, 1), **kw):
    cfg = dict(TINY, num_codes=16, code_dim=4, downsample=4)
    cfg.update(kw)
    return VQVAE(image_shape=image_shape, **cfg)


def _fns(model):
    def encode_fn(p, x):
        return model.apply(p, x, method=VQVAE.encode)

    def decode_fn(p, z):
        return model.apply(p, z, method=VQVAE.decode)

    def recon_fn(x, logits):
        return -bernoulli_logits_log_prob(x, logits)

    return encode_fn, decode_fn, recon_fn


@pytest.mark.parametrize(
    "image_shape, downsample, out_channels, latent",
    [((8, 8, 1), 4, None, (2, 2)), ((8, 8, 1), 2, None, (4, 4)), ((12, 12, 3), 4, 6, (3, 3))],
)
def test_shapes_and_codebook_location(image_shape, downsample, out_channels, latent):
    model = _model(image_shape, downsample=downsample, out_channels=out_channels, num_codes=10, code_dim=5)
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, *image_shape))

    @jax.jit  # eager Flax dispatches (and compiles) every conv separately: slow on CPU
    def run(x):
        variables = model.init(jax.random.PRNGKey(0), x[:1])
        z = model.apply(variables, x, method=VQVAE.encode)
        out = model.apply(variables, z, method=VQVAE.decode)
        return variables, z, out, model.apply(variables, x), model.apply(variables, method=VQVAE.get_codebook)

    variables, z, out, full, codebook = run(x)
    assert z.shape == (3, *latent, 5) and model.latent_shape == latent
    c_out = image_shape[-1] if out_channels is None else out_channels
    assert out.shape == (3, *image_shape[:2], c_out)
    np.testing.assert_allclose(full, out, rtol=1e-6, atol=1e-6)
    # The codebook is where the loss looks for it.
    assert codebook.shape == (10, 5)
    np.testing.assert_array_equal(get_codebook(variables, CODEBOOK_PATH), codebook)
    np.testing.assert_array_equal(variables["params"]["codebook"]["embedding"], codebook)


def test_codebook_init_is_variance_scaled_uniform():
    cb = np.asarray(Codebook(4096, 16).init(jax.random.PRNGKey(1))["params"]["embedding"])
    limit = np.sqrt(3.0 / 16)  # U(-sqrt(3/D), sqrt(3/D)): variance 1/D
    assert np.all(np.abs(cb) <= limit)
    np.testing.assert_allclose(cb.var(), 1.0 / 16, rtol=0.03)
    np.testing.assert_allclose(np.mean(np.sum(cb**2, -1)), 1.0, rtol=0.03)


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="power of two.*3"):
        jax.eval_shape(_model(downsample=3).init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"\(10, 10, 1\).*downsample=4"):
        jax.eval_shape(_model((10, 10, 1)).init, jax.random.PRNGKey(0), jnp.zeros((1, 10, 10, 1)))
    model = _model()
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"\(8, 8, 1\).*\(2, 8, 8, 3\)"):
        model.apply(variables, jnp.zeros((2, 8, 8, 3)), method=VQVAE.encode)
    with pytest.raises(ValueError, match=r"code_dim=4.*\(2, 2, 2, 5\)"):
        model.apply(variables, jnp.zeros((2, 2, 2, 5)), method=VQVAE.decode)


def test_straight_through_gradient_reaches_the_conv_encoder():
    model = _model()
    encode_fn, decode_fn, recon_fn = _fns(model)
    x = (jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 1)) < 0.5).astype(jnp.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
    batch = {"image": x}

    # beta = 0, ema=True: the loss is the reconstruction term alone.
    loss_fn = make_vqvae_loss(encode_fn, decode_fn, recon_fn, beta=0.0, ema=True)

    # Sanity reference: decoding z_q itself (no straight-through estimator).
    def no_straight_through(p):
        z_e = encode_fn(p, x)
        cb = get_codebook(p)
        z_q = jnp.take(cb, nearest_code(z_e, cb), axis=0)
        return jnp.mean(recon_fn(x, decode_fn(p, z_q)))

    @jax.jit
    def both(p):
        with_st = jax.grad(lambda p: loss_fn(p, jax.random.PRNGKey(0), batch)[0])(p)
        return with_st, jax.grad(no_straight_through)(p)

    grads, g_no = both(params)
    grads, g_no = grads["params"], g_no["params"]
    for path, g in jax.tree_util.tree_leaves_with_path(grads["encoder"]):
        assert np.any(np.asarray(g) != 0), f"encoder leaf {jax.tree_util.keystr(path)} got no gradient"
    np.testing.assert_array_equal(grads["codebook"]["embedding"], 0.0)
    for g in jax.tree.leaves(g_no["encoder"]):
        np.testing.assert_array_equal(g, 0.0)
    # The decoder sees the same forward values either way, so gets the same gradient.
    for a, b in zip(jax.tree.leaves(g_no["decoder"]), jax.tree.leaves(grads["decoder"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(g_no["decoder"]))


def _prototype_data(n=128, flip=0.03):
    """8x8 binary images: 4 random prototypes with 3% of pixels flipped."""
    rng = np.random.default_rng(0)
    protos = (rng.random((4, 8, 8, 1)) < 0.5).astype(np.float32)
    labels = rng.integers(0, 4, n)
    flips = rng.random((n, 8, 8, 1)) < flip
    return jnp.asarray(np.abs(protos[labels] - flips))


@pytest.mark.parametrize("ema", [False, True], ids=["codebook_loss", "ema_codebook"])
def test_training_reduces_reconstruction_and_uses_several_codes(ema):
    data = _prototype_data()
    model = VQVAE(
        image_shape=(8, 8, 1), num_codes=16, code_dim=4, hidden_channels=16, res_channels=8,
        num_res_blocks=1, downsample=4,
    )
    encode_fn, decode_fn, recon_fn = _fns(model)
    loss_fn = make_vqvae_loss(encode_fn, decode_fn, recon_fn, beta=0.25, ema=ema)
    ema_step = make_vq_ema_step(encode_fn, decay=0.99)
    optimizer = optax.adam(3e-3)
    params0 = jax.jit(model.init)(jax.random.PRNGKey(0), data[:1])

    def step(carry, i):
        params, opt_state, ema_state = carry
        key = jax.random.PRNGKey(i)
        batch = {"image": data[jax.random.choice(key, data.shape[0], (32,), replace=False)]}
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, key, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if ema:  # what the training step adds for an EMA codebook
            params, ema_state, _ = ema_step(params, ema_state, key, batch)
        return (params, opt_state, ema_state), aux["recon"].mean()

    @jax.jit
    def train(params):
        carry = (params, optimizer.init(params), ema_codebook_init(get_codebook(params)))
        (params, _, ema_state), recon = jax.lax.scan(step, carry, jnp.arange(300))
        return params, ema_state

    params, ema_state = train(params0)
    full = {"image": data}
    eval_loss = jax.jit(loss_fn)
    before = float(eval_loss(params0, jax.random.PRNGKey(0), full)[1]["recon"].mean())
    after = float(eval_loss(params, jax.random.PRNGKey(0), full)[1]["recon"].mean())
    # 64 Bernoulli pixels start near 64 log 2 = 44 nats; the flips alone cost ~8.6 nats.
    assert before > 40 and after < 0.35 * before, (before, after)
    _, idx = jax.jit(make_vq_codes_fn(encode_fn))(params, jax.random.PRNGKey(0), full)
    perplexity, used = codebook_perplexity(idx, 16)
    assert float(perplexity) > 2.0 and float(used) * 16 > 2, (perplexity, used)
    if ema:
        np.testing.assert_array_equal(get_codebook(params), ema_state.codebook)
