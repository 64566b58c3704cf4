"""The coupling-flow family: its NLL is the exact flow density (checked against a
brute-force Jacobian, independent of the bijectors' own log-dets) plus the
dequantization term D log 256; bad preprocessing is refused."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from helpers import REPO_ROOT
from jgen.config import apply_overrides, load_config
from jgen.data import DatasetInfo
from jgen.families import build_model
from jgen.families import flow as flow_family

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
        inverse = lambda v: flow_fn.inverse(v[None])[0]  # noqa: E731
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
