"""Decoder likelihood heads (jgen.losses.likelihoods) against independent references.

References: scipy.stats.bernoulli / scipy.stats.norm for the Bernoulli and Gaussian
heads; for the discretized logistic mixture, a direct float64 numpy sum over mixture
components of logistic-CDF differences (scipy.special.expit) at all 256 pixel values,
with the head's own parameter transforms (tanh means, log-scales clamped at -7).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jgen.losses.likelihoods import LIKELIHOODS, get_likelihood
from jgen.models.vae import VAE, conv_vae, mlp_vae

B, H, W = 3, 2, 2
K = 3  # mixture components
GRID = np.linspace(-1.0, 1.0, 256)  # bin centres -1 + 2j/255


def _rng(seed=0):
    return np.random.default_rng(seed)


def _groups(out, p):
    """[..., C*p] -> [..., C, p]: the channel-major layout the decoder output must have."""
    return out.reshape(out.shape[:-1] + (out.shape[-1] // p, p))


# ---- log_prob vs references ------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_bernoulli_log_prob(channels):
    rng = _rng()
    x = rng.integers(0, 2, (B, H, W, channels)).astype(np.float64)
    logits = rng.normal(0, 3, x.shape)
    with jax.enable_x64(True):
        got = jax.jit(get_likelihood("bernoulli").log_prob)(jnp.asarray(x), jnp.asarray(logits))
    ref = stats.bernoulli.logpmf(x, special.expit(logits)).reshape(B, -1).sum(-1)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-10)


@pytest.mark.parametrize("std", [0.1, 0.5])
def test_gaussian_fixed_log_prob(std):
    rng = _rng(1)
    x, out = rng.random((B, H, W, 3)), rng.normal(0.5, 0.3, (B, H, W, 3))
    with jax.enable_x64(True):
        got = jax.jit(get_likelihood("gaussian_fixed", gaussian_std=std).log_prob)(jnp.asarray(x), jnp.asarray(out))
    ref = stats.norm.logpdf(x, out, std).reshape(B, -1).sum(-1)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-10)


def _learned_log_std(raw, floor=-6.0):
    return floor + np.logaddexp(0.0, raw - floor)  # floor + softplus(raw - floor)


def test_gaussian_learned_log_prob_channel_layout():
    rng = _rng(2)
    c = 3
    x = rng.random((B, H, W, c))
    out = rng.normal(0, 1, (B, H, W, 2 * c))
    p = _groups(out, 2)  # channel c's (mean, raw log-std) are outputs 2c, 2c + 1
    with jax.enable_x64(True):
        got = jax.jit(get_likelihood("gaussian_learned").log_prob)(jnp.asarray(x), jnp.asarray(out))
    ref = stats.norm.logpdf(x, p[..., 0], np.exp(_learned_log_std(p[..., 1]))).reshape(B, -1).sum(-1)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-10)


def test_gaussian_learned_log_std_floor():
    """log-std = -6 + softplus(raw + 6) >= -6: at x = mean a very negative raw log-std
    gives exactly the floor's density 6 - log(2 pi)/2 per pixel, not +inf."""
    lik = get_likelihood("gaussian_learned")
    mean = jnp.full((2, H, W, 1), 0.3)
    with jax.enable_x64(True):
        for raw, log_std in ((-1e4, -6.0), (-6.0, -6.0 + np.log(2.0)), (20.0, 20.0)):
            out = jnp.concatenate([mean, jnp.full_like(mean, raw)], -1).astype(jnp.float64)
            got = np.asarray(lik.log_prob(mean.astype(jnp.float64), out))
            np.testing.assert_allclose(got, H * W * (-log_std - 0.5 * np.log(2 * np.pi)), rtol=1e-9)
        out = jnp.concatenate([mean, jnp.full_like(mean, -1e4)], -1)
        spread = np.asarray(lik.sample(jax.random.PRNGKey(0), jnp.tile(out, (4000, 1, 1, 1))) - 0.3)
    np.testing.assert_allclose(spread.std(), np.exp(-6.0), rtol=0.05)


def _dlm_params(rng, n, c):
    """Raw decoder outputs [n, c * 3K] covering tails: big raw means (tanh saturates)
    and raw log-scales below the -7 clamp."""
    logits = rng.normal(0, 2, (n, c, K))
    means = rng.normal(0, 2, (n, c, K))
    log_scales = rng.uniform(-10, 1, (n, c, K))
    return np.concatenate([logits, means, log_scales], -1).reshape(n, c * 3 * K)


def _dlm_reference_probs(out_groups):
    """P(x = GRID[j]) [..., 256] for raw parameter groups [..., 3K], in float64 numpy."""
    logits, raw_means, raw_log_scales = np.split(out_groups, 3, axis=-1)
    weights = special.softmax(logits, -1)[..., None, :]  # [..., 1, K]
    means = np.tanh(raw_means)[..., None, :]
    scales = np.exp(np.maximum(raw_log_scales, -7.0))[..., None, :]
    x = GRID[:, None]  # [256, 1]
    half = 1.0 / 255.0
    cdf_hi = np.where(x > 1 - half, 1.0, special.expit((x + half - means) / scales))
    cdf_lo = np.where(x < -1 + half, 0.0, special.expit((x - half - means) / scales))
    return np.sum(weights * (cdf_hi - cdf_lo), -1)


def test_dlogistic_mixture_enumerated_pmf():
    """Every pixel value's probability, one pixel per example: sums to 1 and matches
    the numpy mixture of logistic-CDF differences."""
    n = 6
    out = _dlm_params(_rng(3), n, 1)  # [n, 3K]
    lik = get_likelihood("dlogistic_mixture", num_mixtures=K)
    x = np.repeat(GRID[None, :], n, 0).reshape(n * 256, 1, 1, 1)
    outs = np.repeat(out, 256, 0).reshape(n * 256, 1, 1, 3 * K)
    with jax.enable_x64(True):
        log_p = np.asarray(jax.jit(lik.log_prob)(jnp.asarray(x), jnp.asarray(outs))).reshape(n, 256)
    probs = np.exp(log_p)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-9)
    ref = _dlm_reference_probs(out)
    np.testing.assert_allclose(probs, ref, rtol=1e-6, atol=1e-15)
    # Log space too, wherever the plain-CDF reference is accurate.
    ok = ref > 1e-8
    np.testing.assert_allclose(log_p[ok], np.log(ref[ok]), rtol=1e-6, atol=1e-9)


def test_dlogistic_mixture_image_sums_pixels_channel_major():
    rng = _rng(4)
    c = 3
    out = _dlm_params(rng, B * H * W, c).reshape(B, H, W, c * 3 * K)
    ref_probs = _dlm_reference_probs(_groups(out, 3 * K))  # [B, H, W, c, 256]
    # Pixel values drawn from the reference pmf, so no probability underflows in numpy.
    cdf = np.cumsum(ref_probs, -1)
    j = np.minimum((rng.random(cdf.shape[:-1] + (1,)) * cdf[..., -1:] > cdf).sum(-1), 255)
    ref = np.log(np.take_along_axis(ref_probs, j[..., None], -1)[..., 0]).reshape(B, -1).sum(-1)
    with jax.enable_x64(True):
        got = get_likelihood("dlogistic_mixture", num_mixtures=K).log_prob(jnp.asarray(GRID[j]), jnp.asarray(out))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6)


def test_unknown_likelihood():
    with pytest.raises(ValueError, match="Unknown model.likelihood='gaussian'; use one of bernoulli, "
                                         "gaussian_fixed, gaussian_learned, dlogistic_mixture"):
        get_likelihood("gaussian")


# ---- decoder outputs, means and samples ---------------------------------------------


EXPECTED_PER_CHANNEL = {"bernoulli": 1, "gaussian_fixed": 1, "gaussian_learned": 2, "dlogistic_mixture": 3 * K}


def _data(name, shape, rng):
    if name == "bernoulli":
        return rng.integers(0, 2, shape).astype(np.float32)
    if name == "dlogistic_mixture":
        return GRID[rng.integers(0, 256, shape)].astype(np.float32)
    return rng.random(shape).astype(np.float32)


@pytest.mark.parametrize("name", LIKELIHOODS)
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_params_per_channel_is_what_the_decoder_outputs(name, arch):
    """A VAE built with out_channels=params_per_channel decodes to [B, H, W, C * P],
    which log_prob, mean and sample accept."""
    lik = get_likelihood(name, num_mixtures=K)
    assert lik.name == name and lik.params_per_channel == EXPECTED_PER_CHANNEL[name]
    shape = (8, 8, 2)
    model = (mlp_vae((8,), (8,), 2, shape, lik.params_per_channel) if arch == "mlp"
             else conv_vae((2, 2), 2, shape, lik.params_per_channel, hidden=8))
    x = jnp.asarray(_data(name, (B,) + shape, _rng(5)))

    def run(key):  # shapes only: traced with eval_shape, nothing is computed
        params = model.init(key, x)
        out = model.apply(params, jnp.zeros((B, 2)), method=VAE.decode)
        return out, lik.log_prob(x, out), lik.mean(out), lik.sample(key, out)

    out, log_prob, mean, sample = jax.eval_shape(run, jax.random.PRNGKey(0))
    assert out.shape == (B,) + shape[:2] + (shape[2] * lik.params_per_channel,)
    assert log_prob.shape == (B,)
    assert mean.shape == sample.shape == (B,) + shape


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_mean_and_samples_are_images_in_unit_interval(name):
    lik = get_likelihood(name, num_mixtures=K)
    out = jnp.asarray(_rng(6).normal(0, 5, (64, H, W, 2 * lik.params_per_channel)), jnp.float32)
    mean = np.asarray(jax.jit(lik.mean)(out))
    sample = np.asarray(jax.jit(lik.sample)(jax.random.PRNGKey(0), out))
    assert mean.shape == sample.shape == (64, H, W, 2)
    assert mean.min() >= 0.0 and mean.max() <= 1.0
    assert sample.min() >= 0.0 and sample.max() <= 1.0
    if name == "bernoulli":
        assert set(np.unique(sample)) <= {0.0, 1.0}
    if name == "dlogistic_mixture":  # on the grid j / 255
        np.testing.assert_allclose(sample * 255, np.round(sample * 255), atol=1e-4)


def test_dlogistic_mixture_mean_and_sample_distribution():
    """The mean is (sum_k pi_k tanh(mu_k) + 1) / 2; samples of one pixel follow the
    enumerated pmf (20,000 draws, 16 coarse bins: tolerance ~6 binomial std)."""
    lik = get_likelihood("dlogistic_mixture", num_mixtures=K)
    raw = np.array([[0.5, -1.0, 1.0, -1.5, 0.2, 0.9, -2.5, -3.0, -2.0]])  # logits, means, log-scales
    out = jnp.asarray(raw.reshape(1, 1, 1, 3 * K), jnp.float32)
    weights = special.softmax(raw[0, :K])
    np.testing.assert_allclose(float(lik.mean(out)[0, 0, 0, 0]), (weights @ np.tanh(raw[0, K:2 * K]) + 1) / 2,
                               rtol=1e-5)
    n = 20_000
    sample = np.asarray(lik.sample(jax.random.PRNGKey(0), jnp.tile(out, (n, 1, 1, 1)))).reshape(-1)
    j = np.round(sample * 255).astype(int)
    empirical = np.bincount(j // 16, minlength=16) / n
    expected = _dlm_reference_probs(raw[0]).reshape(16, 16).sum(-1)
    np.testing.assert_allclose(empirical, expected, atol=6 * np.sqrt(0.25 / n))


def test_decoder_output_channels_are_checked():
    import jax.numpy as jnp
    import pytest as _pytest

    from jgen.losses.likelihoods import get_likelihood

    x = jnp.zeros((2, 4, 4, 1))
    for name, p in (("bernoulli", 1), ("gaussian_fixed", 1), ("gaussian_learned", 2)):
        with _pytest.raises(ValueError, match=rf"out_channels={p}"):
            get_likelihood(name).log_prob(x, jnp.zeros((2, 4, 4, 3)))
    with _pytest.raises(ValueError, match="out_channels=6"):
        get_likelihood("dlogistic_mixture", num_mixtures=2).log_prob(x, jnp.zeros((2, 4, 4, 3)))


def test_dlogistic_mixture_value_log_probs_normalise_and_match_the_likelihood():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jgen.losses.likelihoods import (
        dlogistic_mixture,
        dlogistic_mixture_value_log_probs,
    )

    out = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 2 * 15))
    table = dlogistic_mixture_value_log_probs(out, 5)
    assert table.shape == (2, 3, 3, 2, 256)
    np.testing.assert_allclose(np.exp(np.asarray(table, np.float64)).sum(-1), 1.0, atol=1e-5)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 3, 3, 2)))
    picked = jnp.take_along_axis(table, x[..., None], -1)[..., 0].reshape(2, -1).sum(1)
    np.testing.assert_allclose(picked, dlogistic_mixture(5).log_prob(x / 127.5 - 1.0, out), rtol=1e-5)
