"""The flow family: its NLL is the exact flow density (checked against a brute-force
Jacobian, independent of the bijectors' own log-dets) plus the dequantization term
D log 256, for every architecture (coupling_mlp, NICE, Real NVP, Glow); at init the
image flows are the logit trick (up to Glow's rotations); the data-dependent init
standardises every ActNorm and the training loop runs it on fresh starts only; bad
preprocessing and bad architecture settings are refused with the fix."""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO_ROOT
from scipy import stats

from jgen.bijectors import ActNorm, actnorm_init
from jgen.bijectors.base import Bijector, bijector_dataclass, static_field
from jgen.config import apply_overrides, load_config
from jgen.data import DatasetInfo, get_preprocess
from jgen.families import build_model
from jgen.families import flow as flow_family
from jgen.losses.elbo import preprocessed_input

CONFIG = os.path.join(REPO_ROOT, "experiments/flows/configs/digits_realnvp.py:tiny")
INFO = DatasetInfo(image_shape=(1, 4, 1), num_classes=None, num_examples={"train": 8})


def test_nll_is_the_exact_density_plus_dequantization_term():
    with jax.enable_x64(True):
        config = load_config(CONFIG)
        spec = build_model(config, INFO)
        params = spec.init(jax.random.PRNGKey(0))
        # Random weights everywhere (the family zero-initialises the last layers).
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        params = jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, l.shape, jnp.float64) for k, l in zip(keys, leaves)])
        images = np.array([[[[10], [200], [0], [255]]], [[[128], [3], [77], [250]]]], np.uint8)
        batch = {"image": images, "index": np.arange(2, dtype=np.int32), "label": np.zeros(2, np.int32)}
        key = jax.random.PRNGKey(2)
        nll = np.asarray(spec.eval_fn(params, key, batch)["exact (uniform dequantization)"])

        # The same dequantized y the evaluator saw (same key split), then the density by brute force.
        from jgen.data import get_preprocess
        from jgen.losses.elbo import preprocessed_input

        y, _ = preprocessed_input(get_preprocess("dequantize_uniform"), key, batch)
        y = np.asarray(y, np.float64).reshape(2, 4)
        _, make = flow_family.make_flow(config.model, 4)
        flow_fn = make(params)
        inverse = lambda v: flow_fn.inverse(v[None])[0]
        for b in range(2):
            z = inverse(jnp.asarray(y[b]))
            _, logdet = jnp.linalg.slogdet(jax.jacobian(inverse)(jnp.asarray(y[b])))
            log_p = stats.norm.logpdf(np.asarray(z)).sum() + float(logdet)
            # The evaluator runs on float32 dequantized data: agree to float32 round-off.
            np.testing.assert_allclose(nll[b], -log_p + 4 * math.log(256.0), rtol=0, atol=3e-3)


def test_flow_needs_dequantized_data():
    config = apply_overrides(load_config(CONFIG), ["data.preprocess=binarize_dynamic"])
    with pytest.raises(ValueError, match="data.preprocess='dequantize_uniform'"):
        build_model(config, INFO)


def test_every_dimension_is_transformed():
    """With random conditioners, the Jacobian of the couplings has off-diagonal entries
    reaching every dimension (no half of the input passes through untouched)."""
    config = load_config(CONFIG)
    _, make = flow_family.make_flow(config.model, 4)
    params = build_model(config, INFO).init(jax.random.PRNGKey(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])
    jac = np.asarray(jax.jacobian(lambda v: make(params).inverse(v[None])[0])(jnp.full((4,), 0.3)))
    off_diagonal = np.abs(jac - np.diag(np.diag(jac)))
    assert np.all(off_diagonal.max(axis=1) > 1e-6), jac


# --- NICE, Real NVP and Glow (model.architecture) ---------------------------------------

IMAGE_INFO = DatasetInfo(image_shape=(4, 4, 1), num_classes=None, num_examples={"train": 8})
TINY_MODELS = {
    "nice": ["model.num_layers=2", "model.hidden=(8,)"],
    "realnvp": ["model.num_levels=2", "model.num_steps=1", "model.width=4", "model.num_blocks=0"],
    "glow": ["model.num_levels=2", "model.num_steps=1", "model.width=4", "model.num_blocks=0"],
}


def _arch_config(arch, *extra):
    return apply_overrides(load_config(CONFIG), [f"model.architecture={arch}", *TINY_MODELS[arch], *extra])


@functools.cache
def _built(arch):
    """(config, spec, flow_fn, initial params) of a tiny model on 4x4x1 images, shared by
    the tests below (Flax's init compiles one threefry per kernel: slow on CPU)."""
    config = _arch_config(arch)
    spec = build_model(config, IMAGE_INFO)
    flow_fn = flow_family.make_flow_model(config.model, (4, 4, 1), seed=config.seed).flow_fn
    return config, spec, flow_fn, spec.init(jax.random.PRNGKey(0))


def _random_like(params, seed, scale=0.3, dtype=jnp.float32):
    """N(0, scale^2) arrays of the params' shapes (numpy: no compile per shape)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(scale * rng.normal(size=leaf.shape), dtype), params)


def _image_batch(n, seed=0, shape=(4, 4, 1)):
    images = np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.uint8)
    return {"image": images, "index": np.arange(n, dtype=np.int32), "label": np.zeros(n, np.int32)}


@pytest.mark.parametrize("arch", sorted(TINY_MODELS))
def test_image_flow_is_invertible_and_its_nll_is_the_brute_force_density(arch):
    """Random weights everywhere; reference: slogdet of jax.jacobian of the whole
    flattened data -> base map (float64) and scipy's normal log-density."""
    with jax.enable_x64(True):
        _, spec, flow_fn, params = _built(arch)
        params = _random_like(params, 1, dtype=jnp.float64)
        batch, key = _image_batch(2), jax.random.PRNGKey(2)
        nll = np.asarray(jax.jit(spec.eval_fn)(params, key, batch)["exact (uniform dequantization)"])
        y, _ = preprocessed_input(get_preprocess("dequantize_uniform"), key, batch)
        y = jnp.asarray(y, jnp.float64).reshape(2, 16)

        @jax.jit
        def compute(params, y):
            flow = flow_fn(params)
            z, inv_ld = flow.inverse_and_log_det(y)
            y_back, fwd_ld = flow.forward_and_log_det(z)
            jac = jax.vmap(jax.jacfwd(lambda v: flow.inverse(v[None])[0]))(y)
            return z, inv_ld, y_back, fwd_ld, jnp.linalg.slogdet(jac)[1]

        z, inv_ld, y_back, fwd_ld, ref_ld = map(np.asarray, compute(params, y))
    np.testing.assert_allclose(y_back, y, rtol=0, atol=1e-9)
    np.testing.assert_allclose(inv_ld, ref_ld, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fwd_ld, -inv_ld, rtol=0, atol=1e-8)
    log_p = stats.norm.logpdf(z).sum(axis=1) + ref_ld
    # The evaluator runs in float32 (the bijectors cast to the data's dtype): agree to
    # float32 round-off.
    np.testing.assert_allclose(nll, -log_p + 16 * math.log(256.0), rtol=2e-5, atol=3e-3)


@pytest.mark.parametrize("arch", sorted(TINY_MODELS))
def test_image_flow_at_init_is_the_logit_trick_up_to_a_rotation(arch):
    """Zero-initialised conditioners (identity couplings), zero ActNorm/scaling params:
    NICE and Real NVP start as the logit trick alone; Glow adds its random-rotation 1x1
    convs, which keep the norm and the volume. Reference: the closed form of
    z = logit(a + (1 - 2a) y) and its log-det sum log((1 - 2a) / (s (1 - s)))."""
    config, _, flow_fn, params = _built(arch)
    y = jax.random.uniform(jax.random.PRNGKey(1), (3, 16))
    z, log_det = jax.jit(lambda p, v: flow_fn(p).inverse_and_log_det(v))(params, y)
    a = config.model.alpha
    s = a + (1 - 2 * a) * np.asarray(y, np.float64)
    logit = np.log(s) - np.log1p(-s)
    expected_log_det = np.sum(np.log(1 - 2 * a) - np.log(s) - np.log1p(-s), axis=1)
    np.testing.assert_allclose(log_det, expected_log_det, rtol=1e-5)
    if arch == "glow":
        np.testing.assert_allclose(np.linalg.norm(z, axis=1), np.linalg.norm(logit, axis=1), rtol=1e-5)
        assert np.max(np.abs(np.asarray(z) - logit)) > 1e-2  # but not the identity
    else:
        np.testing.assert_allclose(z, logit, rtol=1e-5, atol=1e-5)


@bijector_dataclass
class _Spy(Bijector):
    """Wraps an ActNorm and hands its data -> base output to `record` (test only)."""

    inner: Bijector
    record: object = static_field()

    @property
    def event_ndims(self):
        return self.inner.event_ndims

    def forward_and_log_det(self, x):
        return self.inner.forward_and_log_det(x)

    def inverse_and_log_det(self, y):
        x, log_det = self.inner.inverse_and_log_det(y)
        self.record(x)
        return x, log_det


@pytest.mark.parametrize("arch", ["realnvp", "glow"])
def test_data_init_standardises_every_actnorm_on_the_first_batch(arch):
    """After `spec.data_init`, every ActNorm's output on that batch (data -> base) has
    zero mean and unit variance per channel (over batch and pixels)."""
    config, spec, flow_fn, params = _built(arch)
    assert flow_family.make_flow_model(_arch_config("nice").model, (4, 4, 1)).data_init is None
    batch, key = _image_batch(32, seed=3), jax.random.PRNGKey(4)
    params = jax.jit(spec.data_init)(params, key, batch)
    y, _ = preprocessed_input(get_preprocess("dequantize_uniform"), key, batch)

    @jax.jit
    def actnorm_outputs(params, y):
        outputs = []
        def spy(b):
            return _Spy(b, outputs.append) if isinstance(b, ActNorm) else b

        flow = jax.tree.map(spy, flow_fn(params), is_leaf=lambda b: isinstance(b, ActNorm))
        flow.inverse(y.reshape(y.shape[0], 16))
        return outputs

    outputs = actnorm_outputs(params, y)
    assert len(outputs) == len(params["actnorm"]) > 0
    for out in outputs:
        out = np.asarray(out, np.float64)
        np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
        np.testing.assert_allclose(out.var(axis=(0, 1, 2)), 1.0, rtol=1e-3)
    # Reference for the first ActNorm alone (Real NVP's only 1-channel one): the coupling
    # before it is the identity at init, so it sees the logit of the pixels.
    if arch == "realnvp":
        a = config.model.alpha
        s = a + (1 - 2 * a) * np.asarray(y, np.float64).reshape(32, 4, 4, 1)
        (first,) = [p for p in params["actnorm"].values() if p["shift"].shape == (1,)]
        mean, log_scale = actnorm_init(jnp.asarray(np.log(s) - np.log1p(-s)))
        np.testing.assert_allclose(first["shift"], mean, rtol=1e-5)
        np.testing.assert_allclose(first["log_scale"], log_scale, rtol=1e-4)


def test_bad_architecture_configs_are_named():
    with pytest.raises(ValueError, match=r"model.architecture='pixelflow'.*coupling_mlp, glow, iaf, maf, nice, realnvp"):
        build_model(apply_overrides(load_config(CONFIG), ["model.architecture=pixelflow"]), IMAGE_INFO)
    mnist = DatasetInfo(image_shape=(28, 28, 1), num_classes=10, num_examples={"train": 8})
    with pytest.raises(ValueError, match=r"num_levels=3 with architecture='glow'.*2\*\*3 = 8; the images "
                                         r"are 28x28. Lower model.num_levels so that at most 2"):
        build_model(_arch_config("glow", "model.num_levels=3"), mnist)
    with pytest.raises(ValueError, match=r"num_levels=4 with architecture='realnvp' squeezes the image 3 "
                                         r"times.*28x28"):
        build_model(_arch_config("realnvp", "model.num_levels=4"), mnist)
    with pytest.raises(ValueError, match=r"model.num_steps must be an int >= 1.*got 0"):
        build_model(_arch_config("glow", "model.num_steps=0"), IMAGE_INFO)


def test_glow_training_run_lowers_the_nll_and_data_init_runs_on_fresh_start_only(tmp_path, monkeypatch):
    """The loop calls `spec.data_init` once, on a fresh start, not on resume; the 10
    steps after the resume lower the NLL of a fixed batch of test digits."""
    from jgen.data import get_source
    from jgen.train import loop

    calls = []

    def counting_build_model(config, info):
        spec = build_model(config, info)

        def data_init(params, key, batch):
            calls.append(batch["image"].shape)
            return spec.data_init(params, key, batch)

        return spec._replace(data_init=data_init)

    monkeypatch.setattr(loop, "build_model", counting_build_model)
    overrides = ["model.architecture=glow", "model.num_levels=1", "model.num_steps=1", "model.width=4",
                 "model.num_blocks=0", "train.save_every=10", "train.log_every=10", "optim.learning_rate=0.01",
                 "sample.num=4", "num_devices=1"]
    workdir = str(tmp_path / "glow")
    config = apply_overrides(load_config(CONFIG), overrides + ["train.num_steps=10"])
    state_10 = loop.train_and_evaluate(config, workdir, progress=False)
    assert calls == [(config.train.batch_size, 8, 8, 1)]
    config = apply_overrides(load_config(CONFIG), overrides + ["train.num_steps=20"])
    state_20 = loop.train_and_evaluate(config, workdir, progress=False)  # resumes at step 10
    assert len(calls) == 1

    source = get_source("digits", "test")
    batch = {"image": np.stack([source[i]["image"] for i in range(64)]), "index": np.arange(64, dtype=np.int32)}
    spec = build_model(config, DatasetInfo(image_shape=(8, 8, 1), num_classes=None, num_examples={}))
    nll = jax.jit(lambda p, b: spec.eval_fn(p, jax.random.PRNGKey(0), b)["exact (uniform dequantization)"])
    before, after = float(np.mean(nll(state_10.params, batch))), float(np.mean(nll(state_20.params, batch)))
    # Deterministic (fixed seeds): measured 241.6 -> 234.3 nats.
    assert after < before - 3.0, (before, after)
