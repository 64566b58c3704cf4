"""GAN networks (`jgen.models.gan`): MLP and DCGAN generators/discriminators, the projection
discriminator, and spectral normalisation.

References used:
- Label concatenation: a numpy forward pass from the module's own parameters on
  [z, one_hot(y)] (MLP layers as x @ W + b).
- Projection discriminator (Miyato & Koyama 2018, Eq. 3): D(x, y) = psi(phi(x)) + <e_y, phi(x)>
  rebuilt from the sown features phi(x), the psi layer's parameters and the embedding table.
- Spectral norm: numpy's SVD (top singular value and vectors) of the kernel, conv kernels
  reshaped to [kh * kw * c_in, c_out] (Miyato et al. 2018); the derivative of the top singular
  value, d sigma / dW = u_1 v_1^T.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.models.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    SpectralConv,
    SpectralDense,
    spectral_normalize,
)

# A typed key with the "rbg" generator: initialisation compiles several times faster on CPU than
# with threefry (the default), which dominates these tests' time.
KEY = jax.random.key(0, impl="rbg")


def _leaky(x):
    return np.where(x > 0, x, 0.2 * x)


def _one_hot(y, k):
    return np.eye(k)[np.asarray(y)]


# --------------------------------------------------------------------------- MLP


def test_mlp_generator_concatenates_one_hot_label():
    g = MLPGenerator(hidden=(16, 8), data_shape=(3, 2), num_classes=4)
    z = jax.random.normal(KEY, (5, 6))
    y = jnp.array([0, 3, 1, 1, 2])
    params = g.init(KEY, z, y)["params"]["mlp"]
    out = jax.jit(g.apply)({"params": {"mlp": params}}, z, y)
    h = np.concatenate([np.asarray(z), _one_hot(y, 4)], axis=1)
    for i in range(3):
        h = h @ np.asarray(params[f"dense_{i}"]["kernel"]) + np.asarray(params[f"dense_{i}"]["bias"])
        h = np.maximum(h, 0) if i < 2 else np.tanh(h)
    assert out.shape == (5, 3, 2)
    np.testing.assert_allclose(out, h.reshape(5, 3, 2), rtol=1e-5, atol=1e-6)
    # The label matters: a different class gives a different sample from the same z.
    assert np.max(np.abs(np.asarray(out - g.apply({"params": {"mlp": params}}, z, (y + 1) % 4)))) > 1e-3


def test_mlp_generator_range_and_identity_output():
    g = MLPGenerator(hidden=(16,), data_shape=(2,))
    z = 50.0 * jax.random.normal(KEY, (64, 4))  # large inputs saturate tanh
    variables = g.init(KEY, z)
    x = np.asarray(g.apply(variables, z))
    assert np.all(np.abs(x) <= 1.0) and np.max(np.abs(x)) > 0.999
    g_id = MLPGenerator(hidden=(16,), data_shape=(2,), output="identity")
    x_id = np.asarray(g_id.apply(variables, z))
    np.testing.assert_allclose(x, np.tanh(x_id), rtol=1e-5, atol=1e-6)  # same params, tanh is the only difference
    assert np.max(np.abs(x_id)) > 1.0


def test_mlp_discriminator_concatenates_label_and_returns_one_value_per_example():
    d = MLPDiscriminator(hidden=(8,), num_classes=3)
    x = jax.random.normal(KEY, (4, 2, 2))
    y = jnp.array([2, 0, 1, 2])
    params = d.init(KEY, x, y)["params"]
    out = d.apply({"params": params}, x, y)
    h = np.concatenate([np.asarray(x).reshape(4, -1), _one_hot(y, 3)], axis=1)
    h = _leaky(h @ np.asarray(params["dense_0"]["kernel"]) + np.asarray(params["dense_0"]["bias"]))
    h = h @ np.asarray(params["dense_1"]["kernel"]) + np.asarray(params["dense_1"]["bias"])
    assert out.shape == (4,)
    np.testing.assert_allclose(out, h[:, 0], rtol=1e-5, atol=1e-6)


def test_conditional_nets_reject_missing_or_malformed_labels():
    z, x = jnp.zeros((2, 4)), jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="is conditional"):
        MLPGenerator(hidden=(8,), data_shape=(3,), num_classes=5).init(KEY, z)
    with pytest.raises(ValueError, match="is conditional"):
        MLPDiscriminator(hidden=(8,), num_classes=5).init(KEY, x)
    with pytest.raises(ValueError, match="unconditional"):
        MLPDiscriminator(hidden=(8,)).init(KEY, x, jnp.array([0, 1]))
    with pytest.raises(ValueError, match="argmax"):
        MLPGenerator(hidden=(8,), data_shape=(3,), num_classes=5).init(KEY, z, jnp.eye(5)[:2])
    with pytest.raises(ValueError, match="is conditional"):
        DCGANDiscriminator((28, 28, 1), features=4, num_classes=10).init(KEY, jnp.zeros((2, 28, 28, 1)))


# --------------------------------------------------------------------------- DCGAN


@pytest.mark.parametrize("image_shape", [(28, 28, 1), (32, 32, 3)])
def test_dcgan_shapes_and_generator_range(image_shape):
    g = DCGANGenerator(image_shape, features=4, num_classes=10)
    d = DCGANDiscriminator(image_shape, features=4)

    @jax.jit
    def run(key, z, y):
        g_vars = g.init(key, z, y)
        # Scale the last layer up so its pre-activations reach far outside [-1, 1].
        big = jax.tree_util.tree_map(lambda p: 100.0 * p, g_vars["params"]["out"])
        g_vars = {"params": {**g_vars["params"], "out": big}}
        x, inter = g.apply(g_vars, z, y, capture_intermediates=lambda mdl, _: mdl.name == "out",
                           mutable=["intermediates"])
        logits = d.apply(d.init(key, x), x)
        return x, inter["intermediates"]["out"]["__call__"][0], logits

    x, pre, logits = run(KEY, jax.random.normal(KEY, (3, 8)), jnp.array([1, 5, 9]))
    assert x.shape == (3,) + image_shape and logits.shape == (3,)
    np.testing.assert_allclose(x, np.tanh(np.asarray(pre)), rtol=1e-5, atol=1e-6)  # output = tanh(last conv)
    assert float(jnp.max(jnp.abs(pre))) > 5.0
    assert float(jnp.max(jnp.abs(x))) <= 1.0


def test_dcgan_rejects_unsupported_or_mismatched_image_sizes():
    with pytest.raises(ValueError, match="H = W in"):
        DCGANGenerator((64, 64, 3), features=4).init(KEY, jnp.zeros((1, 8)))
    with pytest.raises(ValueError, match="H = W in"):
        DCGANDiscriminator((28, 32, 1), features=4).init(KEY, jnp.zeros((1, 28, 32, 1)))
    d = DCGANDiscriminator((28, 28, 1), features=4)
    with pytest.raises(ValueError, match=r"built for images of shape \[28, 28, 1\]"):
        d.init(KEY, jnp.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match="unknown norm"):
        DCGANGenerator((28, 28, 1), features=4, norm="batch").init(KEY, jnp.zeros((1, 8)))


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_projection_discriminator_decomposes(spectral_norm):
    k = 5
    d = DCGANDiscriminator((28, 28, 1), features=4, num_classes=k, spectral_norm=spectral_norm)
    x = jax.random.normal(KEY, (4, 28, 28, 1))
    y = jnp.array([0, 2, 4, 1])
    y2 = jnp.array([3, 3, 0, 4])
    kw = {"update_stats": False} if spectral_norm else {}

    @jax.jit
    def run(key, x):
        variables = d.init(key, x, y, **kw)
        variables = {c: v for c, v in variables.items() if c != "intermediates"}
        out, inter = d.apply(variables, x, y, mutable=["intermediates"], **kw)
        return variables, out, inter["intermediates"]["features"][0], d.apply(variables, x, y2, **kw)

    variables, out, phi, out2 = run(KEY, x)
    phi = np.asarray(phi, np.float64)
    embed = np.asarray(variables["params"]["embed"]["embedding"], np.float64)
    assert phi.shape == (4, 7 * 7 * 8) and embed.shape == (k, phi.shape[1])
    # psi(phi): the output layer, recomputed (spectrally normalised kernel where used).
    w = np.asarray(variables["params"]["psi"]["kernel"], np.float64)
    if spectral_norm:  # the layer runs one power iteration from the stored u
        w_n, _, _ = spectral_normalize(variables["params"]["psi"]["kernel"], variables["spectral"]["psi"]["u"], 1)
        w = np.asarray(w_n, np.float64)
    psi = phi @ w[:, 0] + float(variables["params"]["psi"]["bias"][0])
    np.testing.assert_allclose(out, psi + np.sum(embed[np.asarray(y)] * phi, axis=1), rtol=1e-4, atol=1e-4)
    # Changing only the label changes the output by exactly <e_y' - e_y, phi(x)>.
    np.testing.assert_allclose(out2 - out, np.sum((embed[np.asarray(y2)] - embed[np.asarray(y)]) * phi, axis=1),
                               rtol=1e-4, atol=1e-4)
    assert np.max(np.abs(np.asarray(out2 - out))) > 1e-3


# --------------------------------------------------------------------------- spectral normalisation


@pytest.mark.parametrize("shape", [(6, 4), (3, 3, 2, 5)], ids=["dense", "conv"])
def test_power_iteration_converges_to_top_singular_value(shape):
    with jax.enable_x64(True):
        kernel = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float64)
        u0 = jax.random.normal(jax.random.PRNGKey(2), (shape[-1],), jnp.float64)
        u0 = u0 / jnp.linalg.norm(u0)
        w_sn, u, sigma = jax.jit(spectral_normalize, static_argnums=2)(kernel, u0, 200)

        # The training-time use: one iteration per step, u threaded through the steps.
        def step(u, _):
            _, u, s = spectral_normalize(kernel, u, 1)
            return u, s

        _, sigmas = jax.lax.scan(step, u0, None, length=200)
        grad_sigma = jax.grad(lambda k: spectral_normalize(k, u, 0)[2])(kernel)
    mat = np.asarray(kernel).reshape(-1, shape[-1])  # [kh * kw * c_in, c_out]
    left, svals, right_t = np.linalg.svd(mat)
    np.testing.assert_allclose(sigma, svals[0], rtol=1e-10)
    np.testing.assert_allclose(sigmas[-1], svals[0], rtol=1e-10)
    assert np.all(np.diff(np.asarray(sigmas)) >= -1e-12)  # power iteration's estimate only increases
    assert w_sn.shape == shape
    np.testing.assert_allclose(np.linalg.norm(np.asarray(w_sn).reshape(mat.shape), ord=2), 1.0, rtol=1e-10)
    # d sigma / dW = u_1 v_1^T (top singular vectors; the outer product is sign-invariant).
    np.testing.assert_allclose(np.asarray(grad_sigma).reshape(mat.shape), np.outer(left[:, 0], right_t[0]),
                               atol=1e-8)


def test_spectral_normalize_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"u must have shape \[d_out\] = \[4\]"):
        spectral_normalize(jnp.ones((6, 4)), jnp.ones(6))
    with pytest.raises(ValueError, match="n_iter must be an int >= 0"):
        spectral_normalize(jnp.ones((6, 4)), jnp.ones(4), -1)


def _train_spectral(module, x, steps):
    """Threads the "spectral" collection through `steps` calls with update_stats=True."""
    variables = module.init(KEY, x, update_stats=False)
    apply = jax.jit(lambda v, x: module.apply(v, x, update_stats=True, mutable=["spectral"]))
    for _ in range(steps):
        _, updates = apply(variables, x)
        variables = {**variables, "spectral": updates["spectral"]}
    return variables


def test_spectral_dense_layer_threads_u_and_normalises():
    layer = SpectralDense(3)
    x = jax.random.normal(KEY, (4, 5))
    v0 = layer.init(KEY, x, update_stats=False)
    # update_stats=False mutates nothing.
    _, same = layer.apply(v0, x, update_stats=False, mutable=["spectral"])
    np.testing.assert_array_equal(same["spectral"]["u"], v0["spectral"]["u"])
    variables = _train_spectral(layer, x, 60)
    w = np.asarray(variables["params"]["kernel"])
    top = np.linalg.svd(w, compute_uv=False)[0]
    np.testing.assert_allclose(variables["spectral"]["sigma"], top, rtol=1e-4)
    out = layer.apply(variables, x, update_stats=False)
    np.testing.assert_allclose(out, np.asarray(x) @ (w / top) + np.asarray(variables["params"]["bias"]),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="update_stats"):
        layer.apply(variables, x, update_stats=None)


def test_spectral_conv_layer_matches_a_conv_with_the_normalised_kernel():
    layer = SpectralConv(4, (4, 4), (2, 2))
    x = jax.random.normal(KEY, (2, 8, 8, 3))
    variables = _train_spectral(layer, x, 60)
    k = np.asarray(variables["params"]["kernel"])
    top = np.linalg.svd(k.reshape(-1, 4), compute_uv=False)[0]  # [4 * 4 * 3, 4]
    np.testing.assert_allclose(variables["spectral"]["sigma"], top, rtol=1e-4)
    ref = nn.Conv(4, (4, 4), strides=(2, 2), padding="SAME").apply(
        {"params": {"kernel": k / top, "bias": variables["params"]["bias"]}}, x)
    out = layer.apply(variables, x, update_stats=False)
    assert out.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_spectral_discriminators_require_update_stats():
    x = jnp.zeros((2, 28, 28, 1))
    d = DCGANDiscriminator((28, 28, 1), features=4, spectral_norm=True)
    with pytest.raises(TypeError, match="update_stats=True"):
        d.init(KEY, x)
    variables = jax.eval_shape(lambda k: d.init(k, x, update_stats=False), KEY)  # structure only, no compile
    assert {"params", "spectral"} <= set(variables)
    assert {n: variables["spectral"][n]["u"].shape for n in variables["spectral"]} == {
        "conv_0": (4,), "conv_1": (8,), "psi": (1,)}
    with pytest.raises(TypeError, match="update_stats=True"):
        MLPDiscriminator(hidden=(4,), spectral_norm=True).init(KEY, jnp.zeros((2, 3)))
