"""The autoregressive family's ModelSpec on tiny images: every architecture's
exact NLL (and MADE's mask ensemble) normalises over all binary images,
ancestral samples (in MADE's drawn order) hit the enumerated distribution,
and bad configs are named."""

import itertools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.config import base_config
from jgen.families.autoregressive import build, model_config


def _spec(shape, num_classes=0, preprocess=None, **model):
    config = base_config(dataset="digits", model=model_config(**model))
    if preprocess:
        config.data.preprocess = config.data.eval_preprocess = preprocess
    info = types.SimpleNamespace(image_shape=shape, num_classes=num_classes)
    return build(config, info)


def _all_images(shape):
    n = int(np.prod(shape))
    bits = np.array(list(itertools.product([0, 1], repeat=n)), np.uint8)
    return (bits * 255).reshape((-1, *shape)), bits


def _perturbed(params, key, scale=0.5):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


CASES = {
    "fvsbn": {"architecture": "fvsbn"},
    "nade": {"architecture": "nade", "hidden": 5},
    "made": {"architecture": "made", "made_hidden": (12,)},
    "made_ensemble": {"architecture": "made", "made_hidden": (12, 12), "num_masks": 4, "order_agnostic": True},
    "pixelcnn": {"architecture": "pixelcnn", "channels": 4, "num_layers": 1, "first_kernel_size": 3},
    "gated_pixelcnn": {"architecture": "gated_pixelcnn", "channels": 4, "num_layers": 2, "first_kernel_size": 3},
    "pixelcnn_conditional": {"architecture": "pixelcnn", "channels": 4, "num_layers": 1, "first_kernel_size": 3,
                             "conditional": True, "num_classes": 3},
    "transformer": {"architecture": "transformer", "d_model": 16, "num_heads": 2, "num_layers": 1},
    "transformer_conditional": {"architecture": "transformer", "d_model": 16, "num_heads": 2, "num_layers": 1,
                                "conditional": True, "num_classes": 2},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_nll_normalises_over_all_3x3_binary_images(name):
    spec = _spec((3, 3, 1), **CASES[name])
    params = _perturbed(spec.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    images, _ = _all_images((3, 3, 1))
    totals = []
    for label in range(max(spec.num_classes, 1)):
        batch = {"image": images, "index": np.arange(len(images), dtype=np.int32),
                 "label": np.full(len(images), label, np.int32)}
        nll = np.asarray(jax.jit(spec.eval_fn)(params, jax.random.PRNGKey(2), batch)["exact"], np.float64)
        np.testing.assert_allclose(np.exp(-nll).sum(), 1.0, atol=1e-4)
        totals.append(nll)
    if spec.num_classes:
        assert np.max(np.abs(totals[0] - totals[1])) > 1e-3  # the label matters


def test_pixelcnn_pp_normalises_over_all_256_squared_images_of_a_1x2_grayscale_image():
    spec = _spec((1, 2, 1), preprocess="symmetric", architecture="pixelcnn_pp", channels=4, num_layers=1,
                 num_mixtures=2)
    params = _perturbed(spec.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), scale=0.3)
    values = np.arange(256, dtype=np.uint8)
    images = np.stack(np.meshgrid(values, values, indexing="ij"), -1).reshape(-1, 1, 2, 1)
    nll = np.asarray(jax.jit(spec.eval_fn)(params, jax.random.PRNGKey(2), {"image": images})["exact"], np.float64)
    np.testing.assert_allclose(np.exp(-nll).sum(), 1.0, atol=1e-4)
    # Sampling the second pixel given the first hits that conditional (chi-square on 8 coarse bins).
    first = 100
    rows = images[:, 0, 0, 0] == first
    cond = np.exp(-nll[rows]) / np.exp(-nll[rows]).sum()
    x = np.full((8000, 1, 2, 1), first / 127.5 - 1.0, np.float32)
    observed = np.array([True, False]).reshape(1, 1, 2, 1)
    draws = np.asarray(jax.jit(spec.complete)(params, jax.random.PRNGKey(3), x, observed))
    assert np.all(np.round(draws[:, 0, 0, 0] * 255) == first)
    got = np.round(draws[:, 0, 1, 0] * 255).astype(int)
    counts = np.bincount(got // 32, minlength=8)
    expected = np.array([cond[i * 32:(i + 1) * 32].sum() for i in range(8)]) * len(got)
    keep = expected > 5
    _, pval = stats.chisquare(counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum())
    assert pval > 1e-3, (counts, expected)


def test_made_ensemble_members_differ_and_training_draws_them():
    spec = _spec((3, 3, 1), **CASES["made_ensemble"])
    params = _perturbed(spec.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    images, _ = _all_images((3, 3, 1))
    batch = {"image": images[:64], "index": np.arange(64, dtype=np.int32)}
    losses = {float(spec.loss_fn(params, jax.random.PRNGKey(k), batch)[0]) for k in range(12)}
    assert len(losses) >= 3  # several connectivities are visited


def test_made_samples_follow_its_drawn_order_and_hit_the_distribution():
    model = {"architecture": "made", "made_hidden": (16,), "num_masks": 3, "order_agnostic": True, "mask_seed": 5}
    spec = _spec((2, 2, 1), **model)
    params = _perturbed(spec.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), scale=1.0)
    # The first member's distribution, by enumeration (a one-mask spec with the same first mask).
    from jgen.families.autoregressive import _bernoulli_network

    m = model_config(**model)
    _, logits_fn, _ = _bernoulli_network(m, 4)
    _, bits = _all_images((2, 2, 1))
    logits = logits_fn(params, jnp.asarray(bits, jnp.float32), 0)
    logp = np.asarray(-jnp.sum(jnp.asarray(bits) * jax.nn.softplus(-logits) + (1 - jnp.asarray(bits))
                               * jax.nn.softplus(logits), axis=1), np.float64)
    np.testing.assert_allclose(np.exp(logp).sum(), 1.0, atol=1e-5)
    draws = np.asarray(jax.jit(spec.sample, static_argnums=2)(params, jax.random.PRNGKey(3), 20_000)).reshape(-1, 4)
    codes = draws.astype(int) @ (2 ** np.arange(4)[::-1])
    _, pval = stats.chisquare(np.bincount(codes, minlength=16), 20_000 * np.exp(logp) / np.exp(logp).sum())
    assert pval > 1e-3, pval


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="Unknown model.architecture='pixelrnn'"):
        _spec((2, 2, 1), architecture="pixelrnn")
    config = base_config(dataset="digits", model=model_config(architecture="nade"))
    config.data.preprocess = "dequantize_uniform"
    with pytest.raises(ValueError, match="binary pixels: set data.preprocess"):
        build(config, types.SimpleNamespace(image_shape=(2, 2, 1), num_classes=0))
    with pytest.raises(ValueError, match="num_masks must be >= 1"):
        _spec((2, 2, 1), architecture="made", num_masks=0)
    with pytest.raises(ValueError, match="8-bit pixels on the \\[-1, 1\\] grid: set data.preprocess"):
        _spec((2, 2, 1), architecture="pixelcnn_pp")
    with pytest.raises(ValueError, match="needs a labelled dataset"):
        _spec((2, 2, 1), architecture="pixelcnn", conditional=True)
    with pytest.raises(ValueError, match="conditional=True is available for"):
        _spec((2, 2, 1), num_classes=3, architecture="nade", conditional=True)


def test_transformer_completion_matches_the_enumerated_conditional_with_and_without_cache():
    model = {"architecture": "transformer", "d_model": 16, "num_heads": 2, "num_layers": 1}
    spec = _spec((2, 2, 1), **model)
    params = _perturbed(spec.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), scale=0.5)
    images, bits = _all_images((2, 2, 1))
    batch = {"image": images, "index": np.arange(16, dtype=np.int32)}
    nll = np.asarray(spec.eval_fn(params, jax.random.PRNGKey(2), batch)["exact"], np.float64)
    rows = (bits[:, 0] == 1) & (bits[:, 1] == 0)  # observed top row: 1, 0
    cond = np.exp(-nll[rows]) / np.exp(-nll[rows]).sum()
    x = np.zeros((8000, 2, 2, 1), np.float32)
    x[:, 0, 0, 0] = 1.0
    observed = np.array([[True, True], [False, False]]).reshape(1, 2, 2, 1)
    draws = np.asarray(spec.complete(params, jax.random.PRNGKey(3), x, observed)).reshape(-1, 4).astype(int)
    assert np.all(draws[:, :2] == [1, 0])
    counts = np.bincount(draws[:, 2] * 2 + draws[:, 3], minlength=4)
    _, pval = stats.chisquare(counts, len(draws) * cond)
    assert pval > 1e-3, (counts, cond)
    uncached = _spec((2, 2, 1), kv_cache=False, **model)
    np.testing.assert_array_equal(
        np.asarray(uncached.complete(params, jax.random.PRNGKey(3), x[:64], observed)).reshape(-1, 4), draws[:64])
    with pytest.raises(ValueError, match="raster-order prefix"):
        spec.complete(params, jax.random.PRNGKey(3), x[:4], np.array([[False, True], [False, False]]).reshape(1, 2, 2, 1))


@pytest.mark.parametrize("name", ["nade", "gated_pixelcnn", "transformer"])
def test_sampling_sharded_over_eight_devices_draws_the_same_images(name):
    # Sampling is written per batch; jit with the batch axis sharded over the 8-device mesh
    # (as training shards it) must give the same draws as the unsharded program.
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    spec = _spec((3, 3, 1), **CASES[name])
    params = _perturbed(spec.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = jax.jit(lambda p, k: spec.sample(p, k, 16), out_shardings=NamedSharding(mesh, P("data")))
    plain = jax.jit(lambda p, k: spec.sample(p, k, 16))
    x_sharded = sharded(params, jax.random.PRNGKey(2))
    assert len(x_sharded.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(x_sharded), np.asarray(plain(params, jax.random.PRNGKey(2))))
