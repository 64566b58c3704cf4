"""The flow family's autoregressive architectures (MAF, IAF, spline MAF), class
conditioning and variational dequantization: densities integrate to 1 over their
support (quadrature), labels change them, and both dequantization bounds lie
above the exact discrete NLL computed by integrating the density over each cell."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import trapezoid

from jgen.bijectors import flow_log_prob
from jgen.config import base_config
from jgen.distributions import standard_normal_log_prob
from jgen.families.flow import build, make_flow_model, model_config

SHAPE = (1, 2, 1)  # two pixels: a density on the unit square


def _perturbed(params, key, scale):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


CASES = {
    "maf": dict(architecture="maf", num_layers=2, hidden=(8,)),
    "iaf": dict(architecture="iaf", num_layers=2, hidden=(8,)),
    "spline_maf": dict(architecture="spline_maf", num_layers=2, hidden=(8,), num_bins=4),
    "maf_conditional": dict(architecture="maf", num_layers=2, hidden=(8,), conditional=True),
    "coupling_conditional": dict(architecture="coupling_mlp", num_layers=2, hidden=(8,), conditional=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_density_integrates_to_one_on_the_unit_square(name):
    m = model_config(**CASES[name])
    num_classes = 3 if m.conditional else 0
    fm = make_flow_model(m, SHAPE, num_classes=num_classes)
    # Splines with large random parameters get narrow peaks this grid cannot resolve.
    params = _perturbed(fm.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.1 if "spline" in name else 0.3)
    # The logit trick maps the base onto (-a, 1 + a), a = alpha / (1 - 2 alpha), and can put
    # mass in thin strips at the edges; integrate in the logit coordinates w instead,
    # y = (sigmoid(w) - alpha) / (1 - 2 alpha), with the Jacobian |dy/dw| (smooth there).
    nodes = np.linspace(-14.0, 14.0, 561)
    w = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)
    sig = 1.0 / (1.0 + np.exp(-w))
    y = jnp.asarray((sig - m.alpha) / (1 - 2 * m.alpha), jnp.float32)
    log_jac = np.sum(np.log(sig * (1 - sig)) - np.log(1 - 2 * m.alpha), axis=1)
    dens = []
    for label in range(max(num_classes, 1)):
        bij = fm.flow_fn(params, jnp.full((y.shape[0],), label)) if num_classes else fm.flow_fn(params)
        logp = np.asarray(jax.jit(lambda g: flow_log_prob(bij, standard_normal_log_prob, g))(y), np.float64)
        p = np.exp(logp + log_jac).reshape(len(nodes), len(nodes))
        np.testing.assert_allclose(trapezoid(trapezoid(p, nodes, axis=1), nodes), 1.0, atol=2e-3)
        dens.append(p)
    if num_classes:
        assert np.max(np.abs(dens[0] - dens[1])) > 1e-2


def test_variational_and_uniform_bounds_lie_above_the_exact_discrete_nll():
    config = base_config(dataset="digits", model=model_config(architecture="maf", num_layers=2, hidden=(8,),
                                                               dequantization="variational", dequant_layers=2,
                                                               dequant_hidden=(8,)))
    config.data.preprocess = config.data.eval_preprocess = "dequantize_uniform"
    spec = build(config, types.SimpleNamespace(image_shape=SHAPE, num_classes=0))
    params = spec.init(jax.random.PRNGKey(0))
    params = {"flow": _perturbed(params["flow"], jax.random.PRNGKey(1), 0.3),
              "dequantizer": _perturbed(params["dequantizer"], jax.random.PRNGKey(2), 0.1)}
    images = np.array([[0, 0], [128, 37], [255, 200]], np.uint8)
    # Exact log P(x) = log of the density integrated over the cell [x/256, (x+1)/256)^2.
    bij = make_flow_model(model_config(architecture="maf", num_layers=2, hidden=(8,)), SHAPE).flow_fn(params["flow"])
    sub = (np.arange(64) + 0.5) / 64
    truth = []
    for x in images:
        pts = np.stack(np.meshgrid((x[0] + sub) / 256, (x[1] + sub) / 256, indexing="ij"), -1).reshape(-1, 2)
        logp = np.asarray(flow_log_prob(bij, standard_normal_log_prob, jnp.asarray(pts, jnp.float32)), np.float64)
        truth.append(-(np.log(np.mean(np.exp(logp))) - 2 * math.log(256)))  # midpoint rule
    reps = 2000
    batch = {"image": np.repeat(images, reps, axis=0).reshape(-1, *SHAPE)}
    out = jax.jit(spec.eval_fn)(params, jax.random.PRNGKey(3), batch)
    for name in ("exact (uniform dequantization)", "variational dequantization bound"):
        nll = np.asarray(out[name], np.float64).reshape(3, reps)
        mean, se = nll.mean(1), nll.std(1) / math.sqrt(reps)
        assert np.all(mean >= np.asarray(truth) - 4 * se - 1e-3), (name, mean, truth)


def test_conditional_needs_labels_and_bad_options_are_named():
    config = base_config(dataset="digits", model=model_config(architecture="glow", conditional=True))
    config.data.preprocess = config.data.eval_preprocess = "dequantize_uniform"
    with pytest.raises(ValueError, match="conditional=True is available for architectures"):
        build(config, types.SimpleNamespace(image_shape=(4, 4, 1), num_classes=10))
    config.model.architecture = "maf"
    with pytest.raises(ValueError, match="needs a labelled dataset"):
        build(config, types.SimpleNamespace(image_shape=(4, 4, 1), num_classes=0))
    config.model.conditional = False
    config.model.dequantization = "learned"
    with pytest.raises(ValueError, match="Unknown model.dequantization='learned'"):
        build(config, types.SimpleNamespace(image_shape=(4, 4, 1), num_classes=0))
