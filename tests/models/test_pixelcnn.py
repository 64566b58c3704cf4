"""PixelCNN, Gated PixelCNN and the PixelCNN++-style model, checked independently of
their masks: the autoregressive property (and the Gated PixelCNN's missing blind spot)
by the Jacobian of the whole network, exact normalisation by enumerating every image,
class conditioning, clear errors, and ancestral samples against the enumerated
distribution (chi-square)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.losses.autoregressive import (
    bernoulli_autoregressive_log_prob,
    categorical_autoregressive_log_prob,
)
from jgen.losses.likelihoods import dlogistic_mixture
from jgen.models.autoregressive.pixelcnn import (
    GatedPixelCNN,
    MaskedConv2D,
    PixelCNN,
    flat_logits_fn,
    pixelcnn_mask,
)
from jgen.models.autoregressive.pixelcnn_pp import (
    PixelCNNPlusPlus,
    channel_coupled_mixture_params,
    num_raw_outputs,
    pixelcnn_pp_log_prob,
)
from jgen.samplers.ancestral import ancestral_sample


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """XLA's CPU optimisation passes cost more than these tiny programs take to run
    (the file's CPU time drops by a third without them); restored afterwards."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def _init(model, x, labels=None, seed=0, noise=0.3):
    """Random parameters: kernels ~ N(0, 1/fan_in), every other leaf (biases, label
    embeddings) ~ N(0, noise^2), so nothing is 0. Drawn with numpy from the shapes of
    `jax.eval_shape(model.init, ...)`: compiling the initialisers costs seconds on CPU."""
    args = (x,) if labels is None else (x, labels)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        std = noise
        if getattr(path[-1], "key", None) == "kernel":
            std = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
        return jnp.asarray(std * rng.standard_normal(leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _apply(model, params):
    """The jitted `x [, labels] -> model.apply(params, x [, labels])`."""
    return jax.jit(lambda *args: model.apply(params, *args))


def _jacobian(model, xs, out_fn=None, seeds=(0, 1, 2)):
    """|d out[0] / d x[0]| summed over the inputs xs [N, H, W, C] and over random
    parameters from each seed: shape out.shape[1:] + x.shape[1:]. Summing over inputs
    and weights shows the structural dependence (a dead ReLU at one input or one draw
    of weights does not hide a connection); a masked connection is 0 for all of them."""
    out_fn = out_fn or (lambda out, x: out)
    single = lambda p, v: out_fn(model.apply(p, v[None]), v[None])[0]
    jac_fn = jax.jit(jax.vmap(jax.jacfwd(single, argnums=1), in_axes=(None, 0)))  # compiled once
    return sum(np.abs(np.asarray(jac_fn(_init(model, xs[:1], seed=s), xs))).sum(axis=0) for s in seeds)


def _before(h, w, c):
    """before[p, q] = subpixel q strictly precedes subpixel p in raster order (row, col, channel)."""
    idx = np.arange(h * w * c)
    return idx[None, :] < idx[:, None]


# ---------------------------------------------------------------- MaskedConv2D


@pytest.mark.parametrize("mask_type, f_in", [("A", 3), ("B", 6)])
def test_masked_conv_connectivity_matches_the_paper_rule(mask_type, f_in):
    """One layer's Jacobian (it is linear, so J is the masked kernel) vs Sec. 3.4 stated directly."""
    h = w = 4
    layer = MaskedConv2D(6, 3, mask_type, data_channels=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, h, w, f_in))
    jac = _jacobian(layer, x, seeds=(0,)) != 0  # [h, w, 6, h, w, f_in]
    want = np.zeros_like(jac)
    for i, j, f, i2, j2, f2 in itertools.product(range(h), range(w), range(6), range(h), range(w), range(f_in)):
        if abs(i2 - i) > 1 or abs(j2 - j) > 1:
            continue  # outside the 3x3 window
        g_out, g_in = f // 2, f2 * 3 // f_in  # colour groups R, G, B
        centre = g_in < g_out if mask_type == "A" else g_in <= g_out
        want[i, j, f, i2, j2, f2] = i2 < i or (i2 == i and j2 < j) or (i2 == i and j2 == j and centre)
    np.testing.assert_array_equal(jac, want)


# ------------------------------------------------- autoregressive property by the Jacobian

AR_MODELS = {
    "pixelcnn_rgb": (lambda: PixelCNN(6, 2, 3, 2, first_kernel_size=5), 3),
    "gated_rgb": (lambda: GatedPixelCNN(6, 1, 3, 2, first_kernel_size=3), 3),
}  # grayscale models: test_gated_pixelcnn_has_no_blind_spot_but_pixelcnn_does


@pytest.mark.parametrize("name", sorted(AR_MODELS))
def test_autoregressive_property_by_jacobian(name):
    build, c = AR_MODELS[name]
    model, h, w = build(), 4, 4
    xs = jax.random.normal(jax.random.PRNGKey(1), (4, h, w, c))
    jac = _jacobian(model, xs)
    d = h * w * c
    jac = jac.reshape(d, -1, d)  # [output subpixel, output parameter, input subpixel]
    before = _before(h, w, c)
    # Output (i, j, c) must not depend on (i, j, c) itself or anything after it ...
    assert np.all(jac[~np.broadcast_to(before[:, None, :], jac.shape)] == 0.0)
    # ... and does depend on its pixel's earlier channels, its left and upper neighbours.
    dep = jac.sum(axis=1) > 0
    for i, j, ch in itertools.product(range(h), range(w), range(c)):
        p = (i * w + j) * c + ch
        needed = [(i * w + j) * c + e for e in range(ch)]
        needed += [(i * w + j - 1) * c + e for e in range(c)] if j > 0 else []
        needed += [((i - 1) * w + j) * c + e for e in range(c)] if i > 0 else []
        assert dep[p, needed].all(), (i, j, ch)


def test_gated_pixelcnn_has_no_blind_spot_but_pixelcnn_does():
    """Same depth (a 3x3 first layer + 3 layers), 4x4 grayscale images."""
    h = w = 4
    xs = jax.random.normal(jax.random.PRNGKey(2), (4, h, w, 1))
    before = _before(h, w, 1)
    deps = {}
    for name, model in [("gated", GatedPixelCNN(4, 3, 3, first_kernel_size=3)),
                        ("plain", PixelCNN(4, 3, 3, first_kernel_size=3))]:
        deps[name] = _jacobian(model, xs).reshape(h * w, h * w) > 0
        assert not np.any(deps[name] & ~before)  # both are autoregressive
    # Gated: every output, the last pixel's included, sees every earlier pixel.
    assert deps["gated"][h * w - 1, : h * w - 1].all()
    np.testing.assert_array_equal(deps["gated"], before)
    # Plain masked convolutions: output (3, 1) sees (0, 3), three rows up and two to the
    # right, but not (2, 3), one row up and two to the right: a blind spot inside the
    # receptive field (right of the diagonal j' - j = i - i').
    assert deps["plain"][3 * w + 1, 0 * w + 3]
    assert not deps["plain"][3 * w + 1, 2 * w + 3]
    # (At the last pixel the plain PixelCNN has no blind spot: nothing lies to its right.)
    assert deps["plain"][h * w - 1, : h * w - 1].all()


def test_pixelcnn_pp_network_never_sees_the_current_pixel():
    h, w, c, k = 3, 4, 3, 2
    model = PixelCNNPlusPlus(num_mixtures=k, channels=4, num_blocks=1)
    xs = jax.random.uniform(jax.random.PRNGKey(3), (3, h, w, c), minval=-1.0, maxval=1.0)
    both = _jacobian(  # one compile for the raw output and the coupled parameters
        model, xs, lambda out, v: jnp.concatenate([out, channel_coupled_mixture_params(out, v, k)], -1)
    )
    raw_jac, jac = both[:, :, : num_raw_outputs(c, k)], both[:, :, num_raw_outputs(c, k):]
    # The raw network output at pixel p depends only on pixels strictly before p (any channel).
    raw_jac = raw_jac.reshape(h * w, -1, h * w, c).sum(axis=(1, 3))
    before_pixel = _before(h, w, 1)
    np.testing.assert_array_equal(raw_jac > 0, before_pixel)  # and sees every one of them
    # The coupled parameters of channel ch depend on the current pixel's channels < ch,
    # and only through the means (the channel-coefficient path).
    jac = jac.reshape(h * w, c, 3, k, h * w, c)  # [pixel, channel, (logit|mean|scale), K, pixel', channel']
    same = jac[np.arange(h * w), :, :, :, np.arange(h * w), :]  # [pixel, channel, 3, K, channel']
    later = ~before_pixel & ~np.eye(h * w, dtype=bool)
    assert np.all(jac.transpose(0, 4, 1, 2, 3, 5)[later] == 0.0)
    assert np.all(same[:, :, 0] == 0.0) and np.all(same[:, :, 2] == 0.0)  # logits, log-scales
    for ch in range(c):
        assert np.all(same[:, ch, 1, :, ch:] == 0.0)  # not on itself or later channels
        assert np.all(same[:, ch, 1, :, :ch] > 0.0)  # but on every earlier channel


# ---------------------------------------------------------------- exact normalisation


def _grid(values, n):
    return np.array(list(itertools.product(values, repeat=n)), np.float32)


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_binary_likelihood_sums_to_one_over_all_3x3_images(cls):
    model = cls(4, 1, 3, first_kernel_size=3, num_classes=2)
    xs = _grid([0.0, 1.0], 9).reshape(-1, 3, 3, 1)  # all 512 images
    params = _init(model, xs[:1], jnp.zeros((1,), jnp.int32), noise=0.5)
    totals = []
    for label in (0, 1):
        logits = _apply(model, params)(xs, jnp.full((len(xs),), label))
        logp = np.asarray(bernoulli_autoregressive_log_prob(logits, xs), np.float64)
        np.testing.assert_allclose(np.exp(logp).sum(), 1.0, atol=1e-5)
        totals.append(logp)
    assert np.max(np.abs(totals[0] - totals[1])) > 1e-2  # the label changes the distribution


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_rgb_categorical_likelihood_sums_to_one_over_all_images(cls):
    """A 1x2 RGB image with 3 values per subpixel: all 3^6 = 729 images."""
    model = cls(6, 1, 3, num_outputs_per_subpixel=3, first_kernel_size=3)
    xs = _grid([0, 1, 2], 6).astype(np.int32).reshape(-1, 1, 2, 3)
    params = _init(model, xs[:1].astype(np.float32), noise=0.5)
    logp = categorical_autoregressive_log_prob(_apply(model, params)(xs.astype(np.float32)), xs)
    np.testing.assert_allclose(np.exp(np.asarray(logp, np.float64)).sum(), 1.0, atol=1e-5)


@pytest.mark.parametrize("shape, num_bins", [((1, 2, 1), 256), ((1, 2, 3), 4)])
def test_pixelcnn_pp_likelihood_sums_to_one_over_all_images(shape, num_bins):
    """Every image, for each of two class labels: 256^2 grayscale 1x2 images, or 4^6
    RGB 1x2 images with 4 levels."""
    k = 3
    model = PixelCNNPlusPlus(num_mixtures=k, channels=4, num_blocks=1, num_classes=2)
    levels = np.linspace(-1.0, 1.0, num_bins, dtype=np.float32)
    xs = _grid(levels, int(np.prod(shape))).reshape((-1,) + shape)
    params = _init(model, xs[:1], jnp.zeros((1,), jnp.int32))
    log_prob = jax.jit(lambda v, y: pixelcnn_pp_log_prob(model.apply(params, v, y), v, k, num_bins=num_bins))
    logps = [np.asarray(log_prob(xs, jnp.full((len(xs),), y)), np.float64) for y in (0, 1)]
    for logp in logps:
        np.testing.assert_allclose(np.exp(logp).sum(), 1.0, atol=1e-4)
    assert np.max(np.abs(logps[0] - logps[1])) > 1e-2  # the label changes the distribution


def test_pixelcnn_pp_last_subpixel_normalises_given_the_rest():
    """2x2 RGB, 8-bit: vary the last subpixel over its 256 values, the rest fixed."""
    k, levels = 2, np.linspace(-1.0, 1.0, 256, dtype=np.float32)
    model = PixelCNNPlusPlus(num_mixtures=k, channels=4, num_blocks=1)
    rest = np.random.default_rng(0).choice(levels, size=(2, 2, 3))
    xs = np.repeat(rest[None], 256, axis=0)
    xs[:, 1, 1, 2] = levels
    params = _init(model, xs[:1])
    lik = dlogistic_mixture(k)

    @jax.jit
    def log_probs(v):  # (log p(last subpixel | the rest), log p(image))
        out = channel_coupled_mixture_params(model.apply(params, v), v, k)
        return lik.log_prob(v[:, 1:, 1:, 2:], out[:, 1:, 1:, -3 * k:]), lik.log_prob(v, out)

    last, full = (np.asarray(a, np.float64) for a in log_probs(xs))
    np.testing.assert_allclose(np.exp(last).sum(), 1.0, atol=1e-5)
    # The other subpixels' terms do not move with the last one.
    others = full - last
    np.testing.assert_allclose(others, others[0], atol=1e-3)


# ---------------------------------------------------------------- conditioning and errors


@pytest.mark.parametrize("build", [
    lambda: PixelCNN(4, 1, 3, first_kernel_size=3, num_classes=3),
    lambda: GatedPixelCNN(4, 1, 3, first_kernel_size=3, num_classes=3),
    lambda: PixelCNNPlusPlus(num_mixtures=2, channels=4, num_blocks=1, num_classes=3),
], ids=["pixelcnn", "gated", "pixelcnn_pp"])
def test_bad_labels_are_refused(build):
    """(That the label changes the distribution: the enumeration tests above.)"""
    model = build()
    x = jnp.zeros((2, 3, 3, 1))
    params = _init(model, x, jnp.array([0, 1]))
    with pytest.raises(ValueError, match="pass labels"):
        model.apply(params, x)
    with pytest.raises(ValueError, match=r"shape \[B\] = \[2\]"):
        model.apply(params, x, jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \[B\] = \[2\]"):
        model.apply(params, x, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.apply(params, x, jnp.array([0, 3]))


def test_clear_errors():
    def init(model, *args):  # traces only: the checks run at trace time
        return jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)

    x = jnp.zeros((1, 3, 3, 1))
    with pytest.raises(ValueError, match="without num_classes"):
        init(PixelCNN(4, 1), x, jnp.array([0]))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        init(PixelCNN(4, 1), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="multiple of 2C = 6"):
        init(PixelCNN(4, 1), jnp.zeros((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="multiple of the number of data channels"):
        init(GatedPixelCNN(4, 1), jnp.zeros((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="odd"):
        init(PixelCNN(4, 1, kernel_size=4), x)
    with pytest.raises(ValueError, match="'A'"):
        pixelcnn_mask((3, 3), 1, 4, "C")
    raw = jnp.zeros((1, 3, 3, num_raw_outputs(3, 2)))
    with pytest.raises(ValueError, match="num_mixtures=3"):
        channel_coupled_mixture_params(raw, jnp.zeros((1, 3, 3, 3)), 3)
    # The raw output (with its channel coefficients) is not the likelihood's layout,
    # and the likelihood's own channel check says so.
    with pytest.raises(ValueError, match="6 per data channel"):
        dlogistic_mixture(2).log_prob(jnp.zeros((1, 3, 3, 3)), raw)


# ---------------------------------------------------------------- ancestral sampling


def test_ancestral_samples_match_the_enumerated_distribution():
    model = PixelCNN(4, 1, 3, first_kernel_size=3)
    xs = _grid([0.0, 1.0], 4)  # flat canvases of a 2x2 binary image, raster order
    params = _init(model, xs[:1].reshape(1, 2, 2, 1), seed=5, noise=1.0)
    fn = flat_logits_fn(model, params, (2, 2, 1))
    probs = np.exp(np.asarray(bernoulli_autoregressive_log_prob(jax.jit(fn)(xs), xs), np.float64))
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
    assert probs.max() > 2.0 / 16  # not near uniform, so the test has power
    num = 4000
    samples = jax.jit(lambda key: ancestral_sample(key, fn, jnp.zeros((num, 4))))(jax.random.PRNGKey(6))
    codes = np.asarray(samples, np.int64) @ (2 ** np.arange(3, -1, -1))  # row index into xs
    counts = np.bincount(codes, minlength=16)
    assert stats.chisquare(counts, num * probs / probs.sum()).pvalue > 1e-3
