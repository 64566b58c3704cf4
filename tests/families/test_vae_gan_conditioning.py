"""The shared conditioning interface (`jgen.conditioning`) in the VAE and GAN families.

References: a two-mode toy whose condition determines the mode (samples given c = k must
land in mode k, and a CVAE's mean sample must match the known pixel probabilities);
Gauss-Hermite quadrature of the ELBO and of log p(x|c) for a 1-d latent, written out
from the module pieces (closed-form Gaussian KL, hand-written Bernoulli likelihood); the
projection discriminator recomputed from its parameters; exact zero / nonzero patterns
of gradients (words absent from a batch get no gradient).
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.conditioning import ConditionEncoder
from jgen.config import base_config
from jgen.data import dataset_info, gather, get_source
from jgen.families import gan as gan_family
from jgen.families import vae as vae_family
from jgen.models.gan import DCGANDiscriminator, MLPDiscriminator, MLPGenerator
from jgen.models.vae import VAE, MLPDecoder, mlp_vae

TOY = types.SimpleNamespace(image_shape=(4, 4, 1), num_classes=None, num_examples={}, vector_dim=2)
# Mode 0: the top half of a 4x4 image is on; mode 1: the bottom half. Each pixel of an
# example is flipped with probability FLIP, so P(pixel on | c = k) = 1 - FLIP on mode k's
# half and FLIP elsewhere.
TEMPLATES = np.stack([np.repeat([[1.0], [1.0], [0.0], [0.0]], 4, axis=1),
                      np.repeat([[0.0], [0.0], [1.0], [1.0]], 4, axis=1)])[..., None]  # [2, 4, 4, 1]
FLIP = 0.1


def toy_batch(seed, *shape):
    """Examples of the two-mode toy (numpy, so no random draws are compiled into the
    training loops): uint8 images [*shape, 4, 4, 1] and one-hot vectors [*shape, 2]."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 2, shape)
    tmpl = TEMPLATES[cls]
    img = np.where(rng.random(tmpl.shape) < FLIP, 1.0 - tmpl, tmpl)
    index = np.broadcast_to(np.arange(shape[-1], dtype=np.int32), shape)
    return {"image": (255 * img).astype(np.uint8), "vector": np.eye(2, dtype=np.float32)[cls], "index": index}


def random_params(init, seed=0, scale=0.3):
    """Parameters shaped like `init`'s, with N(0, scale^2) entries (from `eval_shape`: no
    init is compiled, which costs seconds on a loaded 2-core CPU)."""
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(0.0, scale, a.shape), a.dtype), shapes)


def mode_of(images):
    """0 where the top half is brighter than the bottom half, 1 otherwise."""
    x = np.asarray(images).reshape(len(images), 4, 4)
    return (x[:, 2:].mean(axis=(1, 2)) > x[:, :2].mean(axis=(1, 2))).astype(int)


def vae_config(kind="vector", latent_dim=2, **condition):
    m = vae_family.model_config(encoder_hidden=(32,), decoder_hidden=(32,), latent_dim=latent_dim)
    m.condition.kind = kind
    m.condition.embed_dim = 8
    for k, v in condition.items():
        m.condition[k] = v
    config = base_config(dataset="toy", model=m)
    config.data.preprocess = config.data.eval_preprocess = "unit_interval"  # the toy's pixels are 0 or 1
    config.eval.iwae_k = ()
    return config


def gan_config(kind="vector", architecture="mlp"):
    m = gan_family.model_config(architecture=architecture, g_hidden=(32,), d_hidden=(32,), latent_dim=4,
                                features=4)
    m.condition.kind = kind
    m.condition.embed_dim = 8
    config = base_config(dataset="toy", model=m)
    gan_family.training_defaults(config)
    config.optim.learning_rate = 2e-3
    return config


# ----------------------------------------------------------------------------- VAE


def test_cvae_samples_given_the_condition_match_that_mode():
    spec = vae_family.build(vae_config(), TOY)
    opt = optax.adam(1e-2)

    def step(carry, inputs):
        params, state = carry
        key, batch = inputs
        grads = jax.grad(lambda p: spec.loss_fn(p, key, batch)[0])(params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    @jax.jit
    def train(key, batches):
        params = spec.init(key)
        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (jax.random.split(key, 300), batches))
        return params

    params = train(jax.random.PRNGKey(0), toy_batch(0, 300, 64))
    c = jnp.repeat(jnp.eye(2), 200, axis=0)  # 200 draws given c = e_0, then 200 given e_1
    means = np.asarray(jax.jit(spec.sample, static_argnums=2)(params, jax.random.PRNGKey(1), 400, c))
    modes = mode_of(means)
    # Every draw given c = k is in mode k (an unconditional model would split ~50/50).
    assert (modes[:200] == 0).mean() >= 0.95 and (modes[200:] == 1).mean() >= 0.95
    # E_z[decoder mean | c] is P(pixel on | c): 1 - FLIP on the mode's half, FLIP off it.
    for k in range(2):
        expected = (1 - FLIP) * TEMPLATES[k] + FLIP * (1 - TEMPLATES[k])
        np.testing.assert_allclose(means[200 * k: 200 * (k + 1)].mean(axis=0), expected, atol=0.1)


def test_cvae_elbo_and_iwae_equal_quadrature_from_the_module_pieces():
    config = vae_config(latent_dim=1)
    config.eval.iwae_k = (1000,)
    config.eval.iwae_chunk = 1000
    spec = vae_family.build(config, TOY)
    params = random_params(spec.init, seed=3)
    batch = toy_batch(4, 4)
    keys = jax.random.split(jax.random.PRNGKey(5), 64)
    out = jax.jit(jax.vmap(lambda k: spec.eval_fn(params, k, batch)))(keys)
    nelbo, niwae = np.asarray(out["ELBO"], np.float64), np.asarray(out["IWAE-1000"], np.float64)  # [64, B]

    # The same network, rebuilt from its pieces; a 1-d latent, so Gauss-Hermite quadrature
    # (n nodes, exact for polynomials of degree 2n - 1) gives the integrals.
    model = mlp_vae((32,), (32,), 1, (4, 4, 1), 1, condition=spec.condition)
    x = batch["image"].astype(np.float64) / 255.0
    vec, _ = model.apply(params, batch["vector"], method=VAE.embed)
    mean, log_std = (np.asarray(a, np.float64)[:, 0]
                     for a in model.apply(params, jnp.asarray(x, jnp.float32), vec, method=VAE.encode))
    std = np.exp(log_std)
    t, w = np.polynomial.hermite.hermgauss(100)
    log_w = np.log(w / np.sqrt(np.pi))[:, None]  # [n, 1]

    def log_lik(z):  # Bernoulli log p(x|z, c) at z [n, B], written out
        n = z.shape[0]
        logits = model.apply(params, jnp.asarray(z.reshape(-1, 1), jnp.float32), jnp.tile(vec, (n, 1)),
                             method=VAE.decode)
        logits = np.asarray(logits, np.float64).reshape(n, *x.shape)
        ll = x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits)
        return ll.sum(axis=(2, 3, 4))

    kl = 0.5 * (mean ** 2 + std ** 2 - 1.0) - log_std  # KL(N(m, s^2) || N(0, 1))
    elbo = np.sum(np.exp(log_w) * log_lik(mean + np.sqrt(2.0) * std * t[:, None]), axis=0) - kl
    prior_nodes = np.broadcast_to(np.sqrt(2.0) * t[:, None], (len(t), len(x)))
    log_px = np.logaddexp.reduce(log_w + log_lik(prior_nodes), axis=0)  # log p(x|c) = log E_N(0,1) p(x|z,c)
    # eval_fn reports -ELBO per example; its mean over 64 keys matches to its Monte Carlo error.
    stderr = nelbo.std(axis=0) / np.sqrt(len(keys))
    assert np.all(np.abs(nelbo.mean(axis=0) + elbo) < 4 * stderr + 1e-3), (nelbo.mean(axis=0), -elbo, stderr)
    gap = log_px - elbo
    assert np.all(gap > 0)  # the ELBO is a lower bound...
    # ... and IWAE-1000 closes most of the gap to log p(x|c).
    assert np.all(np.abs(niwae.mean(axis=0) + log_px) < 0.1 * gap + 0.02), (niwae.mean(axis=0), -log_px, gap)


def test_text_condition_reaches_encoder_and_decoder():
    info = dataset_info("captioned_digits")
    config = vae_config(kind="tokens", text_layers=1, text_heads=2, p_uncond=0.0)  # no dropped captions
    config.data.name = "captioned_digits"
    spec = vae_family.build(config, info)
    params = random_params(spec.init)
    batch = gather(get_source("captioned_digits", "test"), np.arange(4))
    batch = {k: jnp.asarray(batch[k]) for k in ("image", "tokens", "index")}
    grads = jax.jit(jax.grad(lambda p: spec.loss_fn(p, jax.random.PRNGKey(1), batch)[0]))(params)
    row_norms = np.linalg.norm(np.asarray(grads["params"]["condition"]["text"]["token_embed"]["embedding"]), axis=1)
    used = np.zeros(len(info.vocab), bool)
    used[np.unique(np.asarray(batch["tokens"]))] = True
    used[0] = False  # padding is masked out of attention and of the pool
    # Exactly the words of the batch's captions receive gradient.
    assert np.all(row_norms[used] > 0) and np.all(row_norms[~used] == 0)
    # Both q(z|x,c) and p(x|z,c) read the embedding: their first layers' weights on its
    # inputs (the last embed_dim rows: [x, vec] and [z, vec] are concatenated) get gradient.
    d = spec.condition.embed_dim
    for part in ("encoder", "decoder"):
        kernel = np.asarray(grads["params"][part]["mlp"]["dense_0"]["kernel"])
        assert np.all(np.linalg.norm(kernel[-d:], axis=1) > 0), part


def test_superres_condition_map_reaches_the_conv_vae():
    config = vae_config(kind="image", operator="superres:2")
    config.model.architecture, config.model.conv_channels, config.model.conv_hidden = "conv", (2, 4), 8
    info = types.SimpleNamespace(image_shape=(8, 8, 1), num_classes=None, num_examples={})
    spec = vae_family.build(config, info)
    params = random_params(spec.init)
    low = jax.random.uniform(jax.random.PRNGKey(1), (2, 4, 4, 1))
    sample = jax.jit(spec.sample, static_argnums=2)
    a, b = sample(params, jax.random.PRNGKey(2), 2, low), sample(params, jax.random.PRNGKey(2), 2, low)
    np.testing.assert_array_equal(a, b)  # deterministic given the key
    # Changing one low-resolution pixel changes the decoded images (through the map).
    c = sample(params, jax.random.PRNGKey(2), 2, low.at[:, 0, 0, 0].add(0.5))
    assert np.all(np.abs(np.asarray(c) - np.asarray(a)).max(axis=(1, 2, 3)) > 1e-4)
    with pytest.raises(ValueError, match=r"must have shape \[2, 4, 4, 1\]"):
        spec.sample(params, jax.random.PRNGKey(2), 2, jnp.zeros((2, 8, 8, 1)))


# ----------------------------------------------------------------------------- GAN


def test_conditional_gan_samples_given_the_condition_land_in_that_mode():
    config = gan_config()
    config.train.num_steps = 300
    spec = gan_family.build(config, TOY)

    def step(carry, inputs):
        params, state = carry
        key, batch = inputs
        params, state, _ = spec.update(params, state, key, batch)
        return (params, state), None

    @jax.jit
    def train(key, batches):
        init = spec.init(key)
        (params, _), _ = jax.lax.scan(step, (init, spec.optimizer.init(init)), (jax.random.split(key, 300), batches))
        return init, params

    init, params = train(jax.random.PRNGKey(0), toy_batch(1, 300, 64))
    for player in ("g", "d"):  # each player owns a condition encoder, and its loss trains it
        before, after = init[player]["params"]["condition"], params[player]["params"]["condition"]
        for name in ("vector_in", "vector_out"):
            assert not np.allclose(before[name]["kernel"], after[name]["kernel"]), (player, name)
        # The GAN never drops the condition, so the null embedding gets no gradient.
        np.testing.assert_array_equal(before["null"], after["null"])
    c = jnp.repeat(jnp.eye(2), 200, axis=0)
    x = np.asarray(jax.jit(spec.sample, static_argnums=2)(params, jax.random.PRNGKey(1), 400, c))
    modes = mode_of(x)
    # Given c = k the samples are in mode k (an unconditional generator would split ~50/50).
    assert (modes[:200] == 0).mean() >= 0.9 and (modes[200:] == 1).mean() >= 0.9, modes.reshape(2, -1).mean(1)


@pytest.mark.parametrize("architecture", ["mlp", "dcgan"])
def test_projection_discriminator_on_the_condition_embedding(architecture):
    shape = (16, 16, 1) if architecture == "dcgan" else (4, 4, 1)
    info = types.SimpleNamespace(image_shape=shape, num_classes=None, num_examples={}, vector_dim=2)
    spec = gan_family.build(gan_config(architecture=architecture), info)
    d = random_params(spec.init)["d"]
    pixels = np.random.default_rng(1).integers(0, 256, (3, *shape)).astype(np.uint8)
    x = jnp.asarray(pixels, jnp.float32) / 127.5 - 1.0  # data.preprocess = "symmetric"
    c = jax.random.normal(jax.random.PRNGKey(2), (3, 2))
    if architecture == "dcgan":
        disc, psi = DCGANDiscriminator(shape, features=4, condition=spec.condition), "psi"
    else:
        disc, psi = MLPDiscriminator((32,), condition=spec.condition), "dense_1"
    out, inter = disc.apply(d, x, c, mutable=["intermediates"])
    # The family's critic is this network, given the batch's own condition.
    critic = spec.eval_fn({"g": random_params(spec.init)["g"], "d": d}, jax.random.PRNGKey(0),
                          {"image": pixels, "vector": c})["critic_real"]
    np.testing.assert_allclose(critic, out, rtol=1e-5, atol=1e-5)
    phi = np.asarray(inter["intermediates"]["features"][0], np.float64)
    p = d["params"]
    vec, _ = ConditionEncoder(spec.condition).apply({"params": p["condition"]}, c)
    vec = np.asarray(vec, np.float64)
    expected = (phi @ np.asarray(p[psi]["kernel"], np.float64)[:, 0] + float(p[psi]["bias"][0])
                + np.sum((vec @ np.asarray(p["project"]["kernel"], np.float64)) * phi, axis=1))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- errors


def test_conditions_a_model_cannot_use_are_named():
    digits = types.SimpleNamespace(image_shape=(4, 4, 1), num_classes=10, num_examples={})
    for build, config in ((vae_family.build, vae_config()), (gan_family.build, gan_config())):
        with pytest.raises(ValueError, match="needs a dataset with a 'vector' feature"):
            build(config, digits)
        config.model.conditional = True
        with pytest.raises(ValueError, match="model.conditional=True means class labels"):
            build(config, TOY)
    vae = vae_family.build(vae_config(), TOY)
    gan = gan_family.build(gan_config(), TOY)
    batch = toy_batch(0, 4)
    for spec in (vae, gan):
        params = {"g": None, "d": None}  # each error is raised before the parameters are read
        with pytest.raises(KeyError, match=r"needs batch\['vector'\]"):
            spec.loss_fn(params, jax.random.PRNGKey(1), {"image": batch["image"], "index": batch["index"]})
        with pytest.raises(ValueError, match=r"must have shape \[4, 2\]; received float32 \[4, 3\]"):
            spec.sample(params, jax.random.PRNGKey(1), 4, jnp.zeros((4, 3)))
        with pytest.raises(ValueError, match="needs a condition of shape"):
            spec.sample(params, jax.random.PRNGKey(1), 4)
    unconditional = vae_family.build(vae_config(kind="none"), TOY)
    with pytest.raises(ValueError, match="this model is unconditional"):
        unconditional.sample(None, jax.random.PRNGKey(1), 4, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="either num_classes"):
        MLPGenerator((8,), (4, 4, 1), num_classes=3, condition=vae.condition).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"condition map must be \[B, H, W, C'\] = \[2, 4, 4, C'\]"):
        jax.eval_shape(lambda: MLPDecoder((8,), (4, 4, 1)).init(jax.random.PRNGKey(0), jnp.zeros((2, 3)), None,
                                                                  jnp.zeros((2, 2, 2, 2))))
    tokens_spec = vae_family.build(vae_config(kind="tokens"), dataset_info("captioned_digits"))
    with pytest.raises(ValueError, match="integer ids"):
        tokens_spec.sample(None, jax.random.PRNGKey(1), 2, jnp.zeros((2, 10)))
