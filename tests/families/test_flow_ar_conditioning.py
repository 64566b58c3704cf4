"""The shared conditioning interface (`model.condition`) in the flow and autoregressive
families, checked against independent references on tiny models:

- autoregressive (Gated PixelCNN given a caption, PixelCNN and the transformer given
  an inpainting condition): p(x | c) enumerated over all binary 2x2 images sums to 1 for
  each c, differs between conditions, and the compiled sampler's draws given c pass a
  chi-square test against it (the transformer's KV-cache and recomputing samplers
  draw the same images);
- flows (coupling MLP, MAF, spline MAF): the family's exact NLL given c equals a
  brute-force change of variables (log N(f^-1(y)) + log|det jacfwd(f^-1)|); the
  density depends on c, and not at all once c is dropped (the null condition);
  samples given c follow the density (Kolmogorov-Smirnov against its numerical CDF);
- bad conditions and unsupported architectures raise errors that say what to do.
"""

import itertools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.bijectors import flow_log_prob
from jgen.conditioning import condition_of
from jgen.config import base_config
from jgen.data import get_preprocess
from jgen.distributions import standard_normal_log_prob
from jgen.families import autoregressive, flow
from jgen.losses.autoregressive import (
    bernoulli_autoregressive_log_prob,
    categorical_autoregressive_log_prob,
)
from jgen.losses.elbo import preprocessed_input
from jgen.models.autoregressive.pixelcnn import GatedPixelCNN, PixelCNN
from jgen.models.autoregressive.transformer import CausalTransformer

VOCAB = ("<pad>", "a", "b", "c")
C_TOKENS = np.array([[1, 2, 0], [3, 3, 1]], np.int32)  # two captions
C_VECTOR = np.array([[1.0, 0.0, -0.5], [-1.0, 2.0, 0.5]], np.float32)


def _info(shape, vocab=VOCAB):
    return types.SimpleNamespace(image_shape=shape, num_classes=2, vector_dim=3, vocab=vocab, max_tokens=3)


def _config(family, kind, operator="", **model):
    m = family.model_config(**model)
    m.condition.update(kind=kind, embed_dim=8, text_layers=1, text_heads=1, operator=operator)
    config = base_config(dataset="digits", model=m)
    if family is flow:
        config.data.preprocess = config.data.eval_preprocess = "dequantize_uniform"
    return config


def _random_params(spec, seed, scale):
    """Random parameters of the model's shapes, N(0, scale^2) each: any parameters
    define a valid conditional model, and numpy draws cost no XLA compilation."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(spec.init, jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0.0, scale, s.shape), s.dtype), shapes)


def _all_binary_images(shape):
    """uint8 [2^D, *shape]: image k holds the binary digits of k (raster order, most significant first)."""
    bits = np.array(list(itertools.product([0, 1], repeat=math.prod(shape))), np.uint8)
    return (bits * 255).reshape((-1, *shape))


def _inpaint_conditions():
    """Two fixed inpainting conditions of 2x2 images: (masked image, mask of observed pixels)."""
    u = np.array([[[1.0], [0.0]], [[1.0], [1.0]]], np.float32)[None]
    masks = np.array([[[[1.0], [1.0]], [[0.0], [1.0]]], [[[0.0], [1.0]], [[1.0], [0.0]]]], np.float32)
    return np.concatenate([u * masks, masks], axis=-1)


AR_CASES = {
    "gated_pixelcnn-tokens": ("gated_pixelcnn", "tokens"),
    "pixelcnn-image": ("pixelcnn", "image"),
    "transformer-image": ("transformer", "image"),
}


def _module_log_p(arch, spec, params, images):
    """log p(x | c) of every image for ONE fixed raw condition c [1, ...], straight from
    the network module (the family measures image conditions from each batch image, so
    a fixed c over all x needs the module; same parameters)."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    if arch == "transformer":
        net = CausalTransformer(vocab_size=3, max_len=5, d_model=8, num_heads=2, num_layers=1,
                                condition_spec=spec.condition)
        tokens = x.reshape(len(images), -1).astype(jnp.int32)
        inputs = jnp.concatenate([jnp.full((len(images), 1), 2, jnp.int32), tokens[:, :-1]], axis=1)  # BOS = 2

        @jax.jit
        def log_p(c):
            c = jnp.broadcast_to(c, (len(images), *c.shape[1:]))
            logits = net.apply(params, inputs, condition=c)[..., :2]
            return categorical_autoregressive_log_prob(logits, tokens)
    else:
        net = (PixelCNN if arch == "pixelcnn" else GatedPixelCNN)(
            channels=4, num_layers=1, first_kernel_size=3, condition_spec=spec.condition)

        @jax.jit
        def log_p(c):
            c = jnp.broadcast_to(c, (len(images), *c.shape[1:]))
            return bernoulli_autoregressive_log_prob(net.apply(params, x, condition=c), x)

    return log_p


@pytest.mark.parametrize("case", sorted(AR_CASES))
def test_autoregressive_given_c_normalises_and_its_sampler_hits_it(case):
    arch, kind = AR_CASES[case]
    shape = (2, 2, 1)
    model = {"architecture": arch, "channels": 4, "num_layers": 1, "first_kernel_size": 3, "d_model": 8,
             "num_heads": 2}
    config = _config(autoregressive, kind, "inpaint" if kind == "image" else "", **model)
    spec = autoregressive.build(config, _info(shape))
    params = _random_params(spec, 1, 0.3)
    images = _all_binary_images(shape)
    if kind == "image":
        conds = _inpaint_conditions()
        log_p = _module_log_p(arch, spec, params, images)
    else:
        conds = {"tokens": C_TOKENS, "vector": C_VECTOR}[kind]
        eval_fn = jax.jit(spec.eval_fn)

        def log_p(c):
            batch = {"image": images, "index": np.arange(len(images), dtype=np.int32),
                     kind: np.repeat(c, len(images), axis=0)}
            return -eval_fn(params, jax.random.PRNGKey(2), batch)["exact"]

    probs = [np.exp(np.asarray(log_p(conds[i:i + 1]), np.float64)) for i in range(2)]
    for p in probs:  # exact enumeration: a distribution over the 16 images for each c
        np.testing.assert_allclose(p.sum(), 1.0, atol=1e-5)
    assert np.max(np.abs(np.log(probs[0]) - np.log(probs[1]))) > 1e-2  # the condition matters
    num = 4000
    condition = np.repeat(conds[:1], num, axis=0)
    sample = jax.jit(spec.sample, static_argnums=2)
    draws = np.asarray(sample(params, jax.random.PRNGKey(3), num, condition)).reshape(num, -1).astype(int)
    counts = np.bincount(draws @ (2 ** np.arange(4)[::-1]), minlength=16)
    _, pval = stats.chisquare(counts, num * probs[0] / probs[0].sum())
    assert pval > 1e-3, (counts, num * probs[0])
    if arch == "transformer":  # the KV-cache sampler and the recomputing one draw the same images
        config.model.kv_cache = False
        uncached = autoregressive.build(config, _info(shape))
        again = jax.jit(uncached.sample, static_argnums=2)(params, jax.random.PRNGKey(3), num, condition)
        np.testing.assert_array_equal(np.asarray(again).reshape(num, -1), draws)


FLOW_CASES = {
    "coupling_mlp-tokens": ("coupling_mlp", "tokens", ""),
    "maf-image": ("maf", "image", "superres:2"),
    "spline_maf-vector": ("spline_maf", "vector", ""),
}


def _flow_setup(arch, kind, operator, shape, scale=0.3):
    config = _config(flow, kind, operator, architecture=arch, num_layers=2, hidden=(8,), num_bins=4)
    spec = flow.build(config, _info(shape))
    flow_model = flow.make_flow_model(config.model, shape, condition=spec.condition)
    params = _random_params(spec, 1, scale)
    return config, spec, flow_model, params


@pytest.mark.parametrize("case", sorted(FLOW_CASES))
def test_flow_nll_given_c_is_the_change_of_variables_and_depends_on_c(case):
    arch, kind, operator = FLOW_CASES[case]
    shape = (2, 2, 1)
    dim = 4
    _, spec, flow_model, params = _flow_setup(arch, kind, operator, shape)
    rng = np.random.default_rng(0)
    n = 4
    batch = {"image": rng.integers(0, 256, (n, *shape)).astype(np.uint8), "index": np.arange(n, dtype=np.int32)}
    if kind != "image":
        batch[kind] = np.repeat({"tokens": C_TOKENS, "vector": C_VECTOR}[kind], n // 2, axis=0)
    key = jax.random.PRNGKey(4)
    nll = np.asarray(jax.jit(spec.eval_fn)(params, key, batch)["exact (uniform dequantization)"], np.float64)
    # The same dequantized y the evaluator sees, and the raw condition it reads.
    y, _ = preprocessed_input(get_preprocess("dequantize_uniform"), key, batch)
    y = np.asarray(y, np.float64).reshape(n, dim)
    c = condition_of(spec.condition, batch, jax.random.PRNGKey(0))

    @jax.jit
    @jax.vmap
    def brute_log_p(ci, yi):  # log N(f_c^-1(y)) + log|det d f_c^-1 / dy|, one example and its condition
        inverse = lambda v: flow_model.flow_fn(params, ci[None]).inverse(v[None])[0]
        return standard_normal_log_prob(inverse(yi)[None])[0] + jnp.linalg.slogdet(jax.jacfwd(inverse)(yi))[1]

    brute = np.asarray(brute_log_p(c, jnp.asarray(y, jnp.float32)), np.float64)
    # float32: the spline's inverse (a quadratic root) and its autodiff Jacobian lose ~1e-4 relative.
    atol = 5e-2 if arch == "spline_maf" else 1e-3
    np.testing.assert_allclose(nll, -brute + dim * math.log(256.0), rtol=1e-4, atol=atol)

    # Changing c changes the density; dropping it (the null condition) removes c entirely.
    log_p = jax.jit(lambda cond, drop: flow_log_prob(flow_model.flow_fn(params, cond, drop), standard_normal_log_prob,
                                                      jnp.asarray(y, jnp.float32)))
    keep, dropped = jnp.zeros((n,), bool), jnp.ones((n,), bool)
    c_other = jnp.roll(c, 1, axis=0)
    assert np.max(np.abs(log_p(c, keep) - log_p(c_other, keep))) > 1e-2
    np.testing.assert_allclose(log_p(c, dropped), log_p(c_other, dropped), rtol=1e-6, atol=1e-6)
    assert np.max(np.abs(log_p(c, dropped) - log_p(c, keep))) > 1e-2


def test_flow_samples_given_c_follow_the_density():
    # A one-pixel image: the density of y in (0, 1) given c, integrated numerically,
    # is the CDF the sampler's draws must follow (Kolmogorov-Smirnov), for each c.
    shape = (1, 1, 1)
    _, spec, flow_model, params = _flow_setup("maf", "vector", "", shape)
    grid = np.linspace(1e-6, 1 - 1e-6, 20001)
    sample = jax.jit(spec.sample, static_argnums=2)
    log_p = jax.jit(lambda c: flow_log_prob(flow_model.flow_fn(params, c), standard_normal_log_prob,
                                            jnp.asarray(grid[:, None], jnp.float32)))
    cdfs = []
    for i in range(2):
        density = np.exp(np.asarray(log_p(jnp.repeat(jnp.asarray(C_VECTOR[i:i + 1]), len(grid), axis=0)), np.float64))
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
        assert abs(cdf[-1] - 1.0) < 2e-3, cdf[-1]
        cdfs.append(cdf / cdf[-1])
        draws = np.asarray(sample(params, jax.random.PRNGKey(8 + i), 3000, np.repeat(C_VECTOR[i:i + 1], 3000, 0)))
        pval = stats.kstest(draws.ravel(), lambda v, cdf=cdfs[-1]: np.interp(v, grid, cdf)).pvalue
        assert pval > 1e-3, (i, pval)
    assert np.max(np.abs(cdfs[0] - cdfs[1])) > 0.2  # the two conditions give different distributions


def test_bad_conditions_and_architectures_are_named():
    shape = (2, 2, 1)
    with pytest.raises(ValueError, match="kind='tokens' is available for architectures"):
        flow.build(_config(flow, "tokens", architecture="glow"), _info((4, 4, 1)))
    with pytest.raises(ValueError, match="kind='vector' is available for architectures"):
        autoregressive.build(_config(autoregressive, "vector", architecture="nade"), _info(shape))
    with pytest.raises(ValueError, match="kind='image' is available for architectures"):
        config = _config(autoregressive, "image", "inpaint", architecture="pixelcnn_pp")
        config.data.preprocess = config.data.eval_preprocess = "symmetric"
        autoregressive.build(config, _info(shape))
    with pytest.raises(ValueError, match="needs a captioned dataset"):
        flow.build(_config(flow, "tokens"), _info(shape, vocab=()))
    spec = flow.build(_config(flow, "tokens", architecture="coupling_mlp", num_layers=1, hidden=(4,)), _info(shape))
    params = None  # the condition is checked before the parameters are used
    with pytest.raises(ValueError, match="needs a condition of shape \\[3, 3\\]"):
        spec.sample(params, jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match="holds integer ids; received dtype float32"):
        spec.sample(params, jax.random.PRNGKey(0), 2, C_TOKENS.astype(np.float32))
    with pytest.raises(ValueError, match="must have shape \\[2, 3\\]; received int32 \\[2, 4\\]"):
        spec.sample(params, jax.random.PRNGKey(0), 2, np.zeros((2, 4), np.int32))
    with pytest.raises(ValueError, match="ids must lie in \\[0, 4\\)"):
        spec.sample(params, jax.random.PRNGKey(0), 2, C_TOKENS + 3)
    with pytest.raises(KeyError, match="needs batch\\['tokens'\\]"):
        spec.loss_fn(params, jax.random.PRNGKey(0), {"image": np.zeros((2, *shape), np.uint8)})
    ar = autoregressive.build(_config(autoregressive, "vector", architecture="gated_pixelcnn", channels=2,
                                      num_layers=1, first_kernel_size=3), _info(shape))
    with pytest.raises(ValueError, match="vector condition must have shape \\[2, 3\\]"):
        ar.sample(None, jax.random.PRNGKey(0), 2, np.zeros((2, 5), np.float32))
    net = GatedPixelCNN(channels=2, num_layers=1, first_kernel_size=3, condition_spec=ar.condition)
    with pytest.raises(ValueError, match="pass exactly one of condition="):
        net.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
