"""Tests for jgen.inverse.radon: the exact adjoint, analytic projections, FBP.

References: the dot-product identity and `jax.linear_transpose` of `radon` (an
independent derivation of the transpose); the analytic chord length of a disk,
2 sqrt(r^2 - s^2) (lengths in pixels, so no extra scale); column / row sums at 0 and
90 degrees; exact 90-degree rotations (`jnp.rot90`); the analytic Radon transform of an
ellipse under an arbitrary rotation; mass conservation, sum_s R f(theta, s) = sum f.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.inverse import (
    backproject,
    fbp,
    parallel_beam_angles,
    radon,
    radon_operator,
    ramp_filter,
    render_ellipses,
    shepp_logan,
)

SUBSET_OF_180 = {8: parallel_beam_angles(180)[::22][:8], 18: parallel_beam_angles(180)[::10],
                 30: parallel_beam_angles(180)[::6]}


def psnr(x, ref):
    return float(10 * jnp.log10(1.0 / jnp.mean((x - ref) ** 2)))


def smooth_disk(n, r, supersample=8):
    """Centred disk of radius r pixels; pixel values = covered area fraction."""
    u = (np.arange(n * supersample) + 0.5) / supersample - n / 2
    inside = (u[None, :] ** 2 + u[:, None] ** 2) <= r * r
    return inside.reshape(n, supersample, n, supersample).mean((1, 3))


@pytest.mark.parametrize("n", [16, 32])
@pytest.mark.parametrize("k", [8, 18, 30])
def test_backproject_is_exact_adjoint(n, k):
    angles = SUBSET_OF_180[k]
    with jax.enable_x64(True):
        rng = np.random.default_rng(n + k)
        x = jnp.asarray(rng.normal(size=(2, n, n)))
        y = jnp.asarray(rng.normal(size=(2, k, n)))
        ax, aty = radon(x, angles), backproject(y, angles, n)
        assert ax.shape == (2, k, n) and aty.shape == (2, n, n) and ax.dtype == jnp.float64
        lhs, rhs = float(jnp.sum(ax * y)), float(jnp.sum(x * aty))
        assert abs(lhs - rhs) <= 1e-11 * (1.0 + abs(lhs))


@pytest.mark.parametrize("num_detectors, ray_step", [(None, 1.0), (23, 0.6)])
def test_backproject_equals_linear_transpose(num_detectors, ray_step):
    """Random (unsorted, > pi) angles, odd detector counts, finer ray sampling."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        angles = rng.uniform(0, 2 * np.pi, size=7)
        n = 16
        x = jnp.asarray(rng.normal(size=(3, n, n)))
        fwd = lambda z: radon(z, angles, num_detectors=num_detectors, ray_step=ray_step)
        y = jnp.asarray(rng.normal(size=fwd(x).shape))
        (ref,) = jax.linear_transpose(fwd, x)(y)
        out = backproject(y, angles, n, ray_step=ray_step)
        np.testing.assert_allclose(out, ref, atol=1e-12)
        lhs, rhs = float(jnp.sum(fwd(x) * y)), float(jnp.sum(x * out))
        assert abs(lhs - rhs) <= 1e-11 * (1.0 + abs(lhs))


def test_channel_axis_and_grad_match_adjoint():
    """[B, N, N, 1] in, [B, K, D, 1] out; autodiff of the data misfit uses the adjoint."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        angles = parallel_beam_angles(6)
        x = jnp.asarray(rng.normal(size=(2, 12, 12, 1)))
        y = jnp.asarray(rng.normal(size=(2, 6, 12, 1)))
        s = radon(x, angles)
        assert s.shape == (2, 6, 12, 1)
        np.testing.assert_allclose(s[..., 0], radon(x[..., 0], angles), atol=0)
        g = jax.grad(lambda z: 0.5 * jnp.sum((radon(z, angles) - y) ** 2))(x)
        np.testing.assert_allclose(g, backproject(radon(x, angles) - y, angles, 12), atol=1e-12)


def test_axis_aligned_projections_are_column_and_row_sums():
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(2).uniform(size=(2, 16, 16)))
        s = radon(x, np.array([0.0, np.pi / 2]))
        np.testing.assert_allclose(s[:, 0], x.sum(1), atol=1e-12)  # theta = 0: columns
        np.testing.assert_allclose(s[:, 1], x.sum(2)[:, ::-1], atol=1e-12)  # rows, s upwards


def test_disk_projection_is_chord_length():
    """R(disk)(theta, s) = 2 sqrt(r^2 - s^2) at every angle, up to discretisation."""
    n, r = 64, 20.0
    x = jnp.asarray(smooth_disk(n, r), jnp.float32)[None]
    angles = np.array([0.0, 0.37, 1.0, np.pi / 4, 2.2, 3.0])
    sino = np.asarray(jax.jit(lambda z: radon(z, angles))(x))[0]
    s = np.arange(n) - (n - 1) / 2
    chord = 2 * np.sqrt(np.maximum(r * r - s**2, 0.0))
    err = np.abs(sino - chord[None])
    interior = np.abs(s) < r - 2
    assert err[:, interior].max() < 0.25  # vs chords up to 40 pixels
    assert err.max() < 1.5  # the rim, where the chord's slope is infinite
    assert err.mean() < 0.1
    # Rotation invariance of a centred disk.
    assert np.abs(sino - sino[:1])[:, interior].max() < 0.3


def test_rotated_image_gives_shifted_angle_projections():
    """Exact for 90-degree rotations (pixel grid to pixel grid); for an arbitrary
    rotation alpha of an analytic ellipse, R(rot_alpha f)(theta) = R f(theta - alpha)."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 16, 16)))
        angles = np.array([0.1, 0.8, 2.0, 3.0])
        rot = jnp.rot90(x, k=1, axes=(1, 2))  # counter-clockwise
        np.testing.assert_allclose(radon(rot, angles), radon(x, angles - np.pi / 2), atol=1e-11)
        np.testing.assert_allclose(radon(x[:, ::-1, ::-1], angles),
                                   radon(x, angles)[..., ::-1], atol=1e-11)

    n, alpha = 64, 0.5
    ell = np.array([[1.0, 0.6, 0.3, 0.2, -0.1, 0.3]])  # (rho, a, b, x0, y0, phi) on [-1, 1]^2
    c, s_ = np.cos(alpha), np.sin(alpha)
    ell_rot = ell.copy()
    ell_rot[0, 3:5] = [c * ell[0, 3] - s_ * ell[0, 4], s_ * ell[0, 3] + c * ell[0, 4]]
    ell_rot[0, 5] += alpha
    f = render_ellipses(jnp.asarray(ell, jnp.float32), n, supersample=4)[None]
    g = render_ellipses(jnp.asarray(ell_rot, jnp.float32), n, supersample=4)[None]
    angles = np.array([0.2, 1.1, 2.5])
    pg, pf = radon(g, angles), radon(f, angles - alpha)
    assert float(jnp.max(jnp.abs(pg - pf))) < 0.05 * float(jnp.max(pf))


def test_mass_is_conserved_at_every_angle():
    """sum_d R x(theta, d) == sum x (unit detector and ray spacing). Bilinear weights
    on a rotated grid are a partition of unity only on average, so the identity holds
    to discretisation error: ~0.4% for the sharp-edged phantom, less for smooth ones."""
    angles = np.random.default_rng(4).uniform(0, np.pi, size=30)
    x = shepp_logan(64)[None]
    np.testing.assert_allclose(radon(x, angles).sum(-1)[0], jnp.full((30,), x.sum()), rtol=5e-3)
    x = jnp.asarray(smooth_disk(64, 25.0), jnp.float32)[None]
    np.testing.assert_allclose(radon(x, angles).sum(-1)[0], jnp.full((30,), x.sum()), rtol=1e-3)


def test_fbp_quality_improves_with_views():
    """Shepp-Logan at 64 x 64: PSNR (dB, range 1) rises with the number of views,
    8 < 18 < 30 < 180 (measured ~13, 19, 23, 25 dB with the ram-lak filter)."""
    n = 64
    x = shepp_logan(n, supersample=4)[None]
    scores = {"ram-lak": [], "shepp-logan": []}
    for k in (8, 18, 30, 180):
        angles = parallel_beam_angles(k)
        recs = jax.jit(lambda x, a=angles: [fbp(radon(x, a), a, n, filter=f) for f in scores])(x)
        for rec, s in zip(recs, scores.values()):
            s.append(psnr(rec, x))
    for s in scores.values():
        assert s[-1] > 22.0, scores
        assert all(a < b for a, b in itertools.pairwise(s)), scores


def test_fbp_scaling_reconstructs_a_disk():
    """The pi / (2K) weight and the ramp's DC term: a unit disk comes back at 1."""
    n, r = 48, 15.0
    x = jnp.asarray(smooth_disk(n, r), jnp.float32)[None, ..., None]
    angles = parallel_beam_angles(90)
    rec = fbp(radon(x, angles), angles, n)
    assert rec.shape == (1, n, n, 1)
    u = np.arange(n) - (n - 1) / 2
    rad = np.sqrt(u[None, :] ** 2 + u[:, None] ** 2)
    inside = np.asarray(rec[0, ..., 0])[rad < r - 3]
    outside = np.asarray(rec[0, ..., 0])[(rad > r + 3) & (rad < n / 2 - 2)]
    assert abs(inside.mean() - 1.0) < 0.02 and inside.std() < 0.05
    assert abs(outside.mean()) < 0.02


def test_ramp_filter_response():
    ramp = np.asarray(ramp_filter(40))  # padded to 128
    freq = np.fft.fftfreq(ramp.size)
    assert ramp.size == 128 and abs(ramp[0]) < 1e-2  # DC ~ 0 (exactly 0 is the ideal ramp)
    mid = (np.abs(freq) > 0.05) & (np.abs(freq) < 0.45)
    np.testing.assert_allclose(ramp[mid], 2 * np.abs(freq[mid]), atol=0.01)
    sl = np.asarray(ramp_filter(40, filter="shepp-logan"))
    assert np.all(sl <= ramp + 1e-7) and sl[64] < ramp[64]


def test_radon_operator():
    angles = parallel_beam_angles(10)
    A = radon_operator(16, angles, num_detectors=20)
    assert A.in_shape == (16, 16) and A.out_shape == (10, 20) and A.pinv is None
    x = shepp_logan(16)[None]
    np.testing.assert_allclose(A.forward(x), radon(x, angles, num_detectors=20), atol=0)
    y = A.forward(x)
    np.testing.assert_allclose(A.adjoint(y), backproject(y, angles, 16), atol=0)
    with pytest.raises(ValueError, match=r"radon\.forward expects a batch .* received shape \(16, 16\)"):
        A.forward(x[0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: radon(jnp.ones((1, 16, 12)), parallel_beam_angles(4)), "square"),
        (lambda: radon(jnp.ones((1, 16, 16, 3)), parallel_beam_angles(4)), "single-channel"),
        (lambda: radon(jnp.ones((16, 16)), parallel_beam_angles(4)), r"received shape \(16, 16\)"),
        (lambda: radon(jnp.ones((1, 8, 8)), np.ones((2, 3))), "1-D"),
        (lambda: radon(jnp.ones((1, 8, 8)), np.array([])), "non-empty"),
        (lambda: radon(jnp.ones((1, 8, 8)), np.array([0.0, np.nan])), "finite"),
        (lambda: radon(jnp.ones((1, 8, 8)), [0.0], num_detectors=0), "num_detectors"),
        (lambda: radon(jnp.ones((1, 8, 8)), [0.0], ray_step=2.0), "ray_step"),
        (lambda: backproject(jnp.ones((1, 5, 8)), parallel_beam_angles(4), 8), "K = len"),
        (lambda: backproject(jnp.ones((1, 4, 8)), parallel_beam_angles(4), 1), "image_size"),
        (lambda: fbp(jnp.ones((1, 4, 8)), parallel_beam_angles(4), 8, filter="hann"), "filter"),
        (lambda: radon_operator(8.0, parallel_beam_angles(4)), "image_size"),
        (lambda: parallel_beam_angles(0), "positive int"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
