"""SSIM and PSNR against independent references.

* SSIM: a direct float64 numpy/SciPy implementation of Wang et al. (2004) in the form
  scikit-image uses (``scipy.ndimage.gaussian_filter`` with reflected borders, sigma 1.5,
  truncate 3.5, then the border of width r cropped before the mean), and against
  ``skimage.metrics.structural_similarity`` itself when scikit-image is installed; the
  closed form for constant images, (2ab + C1) / (a^2 + b^2 + C1); SSIM(x, x) = 1 and symmetry.
* PSNR: the closed form 20 log10(L / c) for a constant offset c.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jgen.inverse.quality import gaussian_window, psnr, ssim, ssim_sigma_for


def reference_ssim(x, y, data_range=1.0, sigma=1.5):
    """Wang et al. SSIM of one [H, W, C] pair in float64 (per channel, then averaged)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    r = int(3.5 * sigma + 0.5)
    vals = []
    for c in range(x.shape[-1]):
        a, b = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        f = lambda v: ndimage.gaussian_filter(v, sigma, mode="reflect", truncate=3.5)
        ma, mb = f(a), f(b)
        va, vb, cab = f(a * a) - ma ** 2, f(b * b) - mb ** 2, f(a * b) - ma * mb
        s = (2 * ma * mb + c1) * (2 * cab + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
        vals.append(s[r:-r, r:-r].mean())
    return float(np.mean(vals))


def pairs(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=shape)
    # Structured distortions: noise, a blur and a contrast change (not just i.i.d. noise).
    y = np.clip(x + 0.1 * rng.normal(size=shape), 0, 1)
    z = ndimage.uniform_filter(x, size=(1, 3, 3, 1)[:len(shape)])
    return x.astype(np.float32), np.stack([y, z, 0.5 * x + 0.2]).astype(np.float32)


@pytest.mark.parametrize("shape", [(2, 24, 20, 1), (2, 16, 16, 3), (1, 13, 17)])
def test_ssim_matches_the_scipy_reference(shape):
    x, others = pairs(shape, 0)
    fn = jax.jit(ssim)
    for y in others:
        got = np.asarray(fn(x, y))
        xs, ys = (x, y) if len(shape) == 4 else (x[..., None], y[..., None])
        want = [reference_ssim(xs[i], ys[i]) for i in range(shape[0])]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(fn(y, x)), got, rtol=1e-6, atol=1e-6)  # symmetric
    np.testing.assert_allclose(np.asarray(fn(x, x)), 1.0, atol=1e-6)


def test_ssim_matches_scikit_image_if_installed():
    metrics = pytest.importorskip("skimage.metrics")
    x, others = pairs((1, 32, 32, 3), 1)
    for y in others:
        want = metrics.structural_similarity(x[0], y[0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False, channel_axis=-1)
        np.testing.assert_allclose(float(ssim(x, y)[0]), want, rtol=1e-5, atol=1e-5)


def test_ssim_closed_forms_and_small_windows():
    # Constant images a, b: zero variances, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.3, 0.7, 0.01 ** 2
    x, y = jnp.full((1, 12, 12), a), jnp.full((1, 12, 12), b)
    np.testing.assert_allclose(float(ssim(x, y)[0]), (2 * a * b + c1) / (a * a + b * b + c1), rtol=1e-6)
    # data_range scales C1, C2 with the data: SSIM is invariant to rescaling both.
    x, others = pairs((1, 16, 16, 1), 2)
    np.testing.assert_allclose(float(ssim(255 * x, 255 * others[0], data_range=255.0)[0]),
                               float(ssim(x, others[0])[0]), rtol=1e-5)
    # The window is SciPy's: radius int(3.5 sigma + 0.5), normalised.
    w = gaussian_window(1.5)
    assert w.shape == (11,) and np.isclose(w.sum(), 1.0) and np.isclose(w[5] / w[6], np.exp(0.5 / 1.5 ** 2))
    # 8x8 digits need a smaller window; sigma 0.75 has radius 3 and still matches the reference.
    assert ssim_sigma_for(8, 8) == 0.75 and ssim_sigma_for(64, 64) == 1.5
    x, others = pairs((1, 8, 8, 1), 3)
    np.testing.assert_allclose(float(ssim(x, others[0], sigma=0.75)[0]), reference_ssim(x[0], others[0][0],
                                                                                         sigma=0.75), rtol=1e-5)


def test_psnr_closed_form():
    x = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    offsets = np.array([0.1, 0.01, 0.5], np.float32)
    y = x + offsets[:, None, None, None]
    np.testing.assert_allclose(np.asarray(jax.jit(psnr)(x, y)), 20 * np.log10(1.0 / offsets), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(psnr(255 * x, 255 * y, data_range=255.0)),
                               20 * np.log10(1.0 / offsets), rtol=1e-4)
    assert np.isinf(float(psnr(x, x)[0]))


def test_bad_inputs_raise_clear_errors():
    x = jnp.zeros((2, 16, 16, 1))
    with pytest.raises(ValueError, match=r"same shape.*\(2, 16, 16, 1\) and \(2, 16, 16\)"):
        ssim(x, x[..., 0])
    with pytest.raises(ValueError, match=r"\[B, H, W\].*x\[None\]"):
        ssim(x[0, ..., 0], x[0, ..., 0])
    with pytest.raises(ValueError, match=r"11x11 window .* does not fit in images of 8x8.*0\.75"):
        ssim(jnp.zeros((1, 8, 8)), jnp.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="data_range must be a positive number"):
        ssim(x, x, data_range=0.0)
    with pytest.raises(ValueError, match="sigma must be a positive"):
        ssim(x, x, sigma=-1.0)
    with pytest.raises(ValueError, match="psnr: expects two batches of the same shape"):
        psnr(x, x[:1])
