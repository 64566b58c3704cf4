"""VAE architectures (jgen.models.vae): shapes of encode/decode for the MLP and conv
VAEs, with and without a label input; the conv modules' divisibility check; and that
the label really reaches the encoder and decoder (a conditional VAE is wired)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.models.vae import VAE, ConvDecoder, ConvEncoder, conv_vae, mlp_vae

B, LATENT, NUM_CLASSES = 2, 3, 10

# name -> (constructor(out_channels) -> VAE, image shape); kept tiny for 2 CPU cores.
MODELS = {
    "mlp-8x8": (lambda p: mlp_vae((16,), (16,), LATENT, (8, 8, 1), p), (8, 8, 1)),
    "conv-8x8": (lambda p: conv_vae((2, 4), LATENT, (8, 8, 1), p, hidden=8), (8, 8, 1)),
    "conv-28x28": (lambda p: conv_vae((2, 4), LATENT, (28, 28, 1), p, hidden=8), (28, 28, 1)),
    "conv-8x12x3": (lambda p: conv_vae((2, 4), LATENT, (8, 12, 3), p, hidden=8), (8, 12, 3)),
}


def _inputs(shape, conditional, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.random((B,) + shape), jnp.float32)
    y = jax.nn.one_hot(jnp.arange(B) % NUM_CLASSES, NUM_CLASSES) if conditional else None
    return x, y


def _random_params(model, *args, seed=0):
    """Parameters of `model` with N(0, 0.3^2) entries, built from `eval_shape` of init
    (compiling a conv init costs seconds on a loaded 2-core CPU; applying it does not)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype), shapes)


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "label"])
@pytest.mark.parametrize("out_channels", [1, 2])
@pytest.mark.parametrize("name", list(MODELS))
def test_encode_decode_shapes(name, out_channels, conditional):
    make, shape = MODELS[name]
    model = make(out_channels)
    x, y = _inputs(shape, conditional)

    def run(key):
        params = model.init(key, x, y)
        mean, log_std = model.apply(params, x, y, method=VAE.encode)
        return mean, log_std, model.apply(params, mean, y, method=VAE.decode), model.apply(params, x, y)

    mean, log_std, out, full = jax.eval_shape(run, jax.random.PRNGKey(0))  # shapes only
    assert mean.shape == log_std.shape == (B, LATENT)
    assert out.shape == full.shape == (B, shape[0], shape[1], shape[2] * out_channels)
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("name", ["mlp-8x8", "conv-8x8"])
def test_call_decodes_the_posterior_mean(name):
    make, shape = MODELS[name]
    model = make(2)
    x, _ = _inputs(shape, conditional=False)
    params = _random_params(model, x)
    mean, _ = model.apply(params, x, method=VAE.encode)
    out = np.asarray(model.apply(params, x))
    np.testing.assert_allclose(out, np.asarray(model.apply(params, mean, method=VAE.decode)), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(out)) and np.std(out) > 0


@pytest.mark.parametrize("shape", [(6, 8, 1), (8, 10, 1), (28, 30, 1)])
def test_conv_modules_need_sides_divisible_by_4(shape):
    h, w = shape[:2]
    x = jnp.zeros((1,) + shape)
    with pytest.raises(ValueError, match=f"ConvEncoder downsamples by 4: image height and width must be "
                                         f"multiples of 4, got {h}x{w}"):
        ConvEncoder((2, 4), LATENT, hidden=8).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=f"ConvDecoder downsamples by 4.*got {h}x{w}"):
        ConvDecoder((4, 2), shape, 1, hidden=8).init(jax.random.PRNGKey(0), jnp.zeros((1, LATENT)))
    with pytest.raises(ValueError, match="ConvEncoder downsamples by 4"):
        conv_vae((2, 4), LATENT, shape, 1, hidden=8).init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("name", ["mlp-8x8", "conv-8x8"])
def test_label_changes_encoder_and_decoder_outputs(name):
    make, shape = MODELS[name]
    model = make(1)
    x, y = _inputs(shape, conditional=True)
    other = jnp.roll(y, 1, axis=-1)  # a different class for every example
    z = jnp.asarray(np.random.default_rng(1).normal(size=(B, LATENT)), jnp.float32)

    params = _random_params(model, x, y)

    @jax.jit
    def run(params):
        dec = lambda labels: model.apply(params, z, labels, method=VAE.decode)  # noqa: E731
        enc = lambda labels: model.apply(params, x, labels, method=VAE.encode)[0]  # noqa: E731
        # d out / d label: nonzero iff the label is an input of the decoder.
        grad = jax.grad(lambda labels: jnp.sum(dec(labels) ** 2))(y)
        return dec(y), dec(other), enc(y), enc(other), grad

    dec_y, dec_other, enc_y, enc_other, grad = map(np.asarray, run(params))
    assert np.max(np.abs(dec_y - dec_other)) > 1e-4
    assert np.max(np.abs(enc_y - enc_other)) > 1e-4
    assert np.any(np.abs(grad) > 0)
    # The label enters the first dense layer of each side: NUM_CLASSES extra input rows
    # in the encoder's and the decoder's first kernel, and nothing else.
    def size(*args):
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
        return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))

    first_width = 16 if name.startswith("mlp") else 8
    assert size(x, y) - size(x) == NUM_CLASSES * 2 * first_width
