"""Tests for jgen.inverse.operators: adjoints, pseudo-inverses, CGLS and the errors.

Independent references: every operator is materialised as a dense matrix by applying
it to the identity basis, and compared with numpy (transpose, np.linalg.pinv,
np.linalg.lstsq, np.linalg.solve, np.linalg.norm(ord=2)); the blur is also compared
with a circular convolution computed by numpy's FFT.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.inverse import (
    blur,
    compose,
    downsampling,
    finite_differences,
    gaussian_kernel,
    least_squares,
    masking,
    measure,
    normal_op,
    operator_norm,
    rgb_to_gray,
)


def _mask(shape, seed=0):
    return np.random.default_rng(seed).random(shape) > 0.4


# Constructors are called inside `jax.enable_x64(True)`, so build them lazily.
OPERATORS = {
    "masking_2d": lambda: masking(_mask((6, 7))),
    "masking_3d": lambda: masking(_mask((4, 4, 3), 1).astype(np.float32)),
    "downsampling_2": lambda: downsampling(2, (8, 6)),
    "downsampling_4_rgb": lambda: downsampling(4, (8, 8, 3)),
    "rgb_to_gray": lambda: rgb_to_gray((5, 4)),
    "gray_weights_2ch": lambda: rgb_to_gray((3, 4, 2), weights=(1.0, -2.0)),
    "blur_gauss": lambda: blur(gaussian_kernel(3, 1.0), (8, 8)),
    "blur_even_kernel_rgb": lambda: blur(
        np.random.default_rng(2).normal(size=(2, 4)), (6, 7, 2)),
    "blur_then_downsample": lambda: compose(
        downsampling(2, (8, 8)), blur(gaussian_kernel(5, 1.5), (8, 8))),
    "finite_differences": lambda: finite_differences((5, 6)),
}
RIGHT_INVERTIBLE = ["downsampling_2", "downsampling_4_rgb", "rgb_to_gray", "gray_weights_2ch"]
WITH_PINV = ["masking_2d", "masking_3d", *RIGHT_INVERTIBLE]


def dense(fn, in_shape):
    """Materialise a batch function as a matrix [m, n] by applying it to the identity."""
    n = int(np.prod(in_shape))
    eye = jnp.asarray(np.eye(n).reshape(n, *in_shape))
    return np.asarray(fn(eye)).reshape(n, -1).T


def _normal(seed, shape):
    """float64 normal draws (numpy: no compilation per shape); call under enable_x64."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


@pytest.mark.parametrize("name", list(OPERATORS))
def test_adjoint(name):
    """<A x, y> == <x, A^T y> in float64, and A^T is the dense matrix's transpose."""
    with jax.enable_x64(True):
        A = OPERATORS[name]()
        x = _normal(0, (3, *A.in_shape))
        y = _normal(1, (3, *A.out_shape))
        ax, aty = A.forward(x), A.adjoint(y)
        assert ax.shape == y.shape and aty.shape == x.shape
        assert ax.dtype == aty.dtype == jnp.float64
        lhs, rhs = float(jnp.sum(ax * y)), float(jnp.sum(x * aty))
        assert abs(lhs - rhs) <= 1e-12 * (1.0 + abs(lhs))
        M = dense(A.forward, A.in_shape)
        np.testing.assert_allclose(dense(A.adjoint, A.out_shape), M.T, atol=1e-14)


def test_operators_under_jit_match_eager():
    A = compose(downsampling(2, (8, 8, 3)), blur(gaussian_kernel(3, 1.0), (8, 8, 3)))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    y = A.forward(x)
    np.testing.assert_allclose(jax.jit(A.forward)(x), y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(A.adjoint)(y), A.adjoint(y), rtol=1e-6, atol=1e-6)


def test_forward_references():
    with jax.enable_x64(True):
        x = np.asarray(_normal(3, (2, 8, 6, 3)))
        # Average pooling, from numpy.
        y = downsampling(2, (8, 6, 3)).forward(jnp.asarray(x))
        np.testing.assert_allclose(y, x.reshape(2, 4, 2, 3, 2, 3).mean((2, 4)), atol=1e-14)
        # BT.601 luma.
        g = rgb_to_gray((8, 6)).forward(jnp.asarray(x))
        ref = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
        np.testing.assert_allclose(g, ref[..., None], atol=1e-14)
        # Masking.
        m = _mask((8, 6, 3))
        np.testing.assert_allclose(masking(m).forward(jnp.asarray(x)), x * m[None], atol=0)


@pytest.mark.parametrize("kshape", [(3, 3), (2, 4), (5, 1)])
def test_blur_is_circular_convolution(kshape):
    """Reference: circular convolution by numpy's FFT with the kernel centred at k // 2."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        k = rng.normal(size=kshape)
        x = rng.normal(size=(2, 9, 8))
        kpad = np.zeros((9, 8))
        kpad[: kshape[0], : kshape[1]] = k
        kpad = np.roll(kpad, (-(kshape[0] // 2), -(kshape[1] // 2)), axis=(0, 1))
        ref = np.real(np.fft.ifft2(np.fft.fft2(x) * np.fft.fft2(kpad)[None]))
        out = blur(k, (9, 8)).forward(jnp.asarray(x))
        np.testing.assert_allclose(out, ref, atol=1e-12)


def test_gaussian_kernel():
    k = np.asarray(gaussian_kernel(5, 1.2))
    assert k.shape == (5, 5) and k.dtype == np.float32
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    # Ratio of the centre to an edge-adjacent value: exp(1 / (2 sigma^2)).
    np.testing.assert_allclose(k[2, 2] / k[2, 3], np.exp(1 / (2 * 1.2**2)), rtol=1e-5)


@pytest.mark.parametrize("name", WITH_PINV)
def test_pinv_is_moore_penrose(name):
    """pinv equals np.linalg.pinv of the dense matrix, so pinv(A x) is least-norm;
    A(pinv(y)) == y on the range of A, and for every y where A is onto."""
    with jax.enable_x64(True):
        A = OPERATORS[name]()
        M = dense(A.forward, A.in_shape)
        np.testing.assert_allclose(dense(A.pinv, A.out_shape), np.linalg.pinv(M), atol=1e-12)
        x = _normal(4, (2, *A.in_shape))
        y = A.forward(x)
        xp = A.pinv(y)
        np.testing.assert_allclose(A.forward(xp), y, atol=1e-12)
        # Least norm: x - pinv(Ax) lies in null(A), orthogonal to pinv(Ax).
        np.testing.assert_allclose(A.forward(x - xp), 0.0, atol=1e-12)
        assert abs(float(jnp.sum((x - xp) * xp))) < 1e-10
        if name in RIGHT_INVERTIBLE:
            y = _normal(5, (3, *A.out_shape))
            np.testing.assert_allclose(A.forward(A.pinv(y)), y, atol=1e-12)


def test_least_squares_recovers_blurred_image():
    """A well-conditioned blur (DFT magnitude >= 0.2) and a tiny Tikhonov weight."""
    with jax.enable_x64(True):
        k = np.array([[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]])
        A = blur(k, (16, 16))
        x = _normal(6, (2, 16, 16))
        y = A.forward(x)
        xh = jax.jit(lambda y: least_squares(A, y, num_iters=60, lam=1e-10))(y)
        np.testing.assert_allclose(xh, x, atol=1e-7)


@pytest.mark.parametrize("case", ["singular_blur", "downsampling", "masking_inconsistent",
                                  "blur_then_downsample"])
def test_least_squares_matches_numpy_lstsq(case):
    """CG from zero converges to the minimum-norm least-squares solution (np.linalg.lstsq)."""
    with jax.enable_x64(True):
        A = {
            # The 2x2 box kernel's DFT vanishes at the Nyquist frequency: singular.
            "singular_blur": lambda: blur(np.full((2, 2), 0.25), (6, 6)),
            "downsampling": lambda: downsampling(2, (6, 6)),
            "masking_inconsistent": lambda: masking(_mask((6, 6))),
            "blur_then_downsample": OPERATORS["blur_then_downsample"],
        }[case]()
        M = dense(A.forward, A.in_shape)
        y = _normal(7, (2, *A.out_shape))  # generally not in the range
        ref = np.stack([np.linalg.lstsq(M, np.asarray(yi).ravel(), rcond=None)[0] for yi in y])
        xh = least_squares(A, y, num_iters=M.shape[1])
        np.testing.assert_allclose(np.asarray(xh).reshape(2, -1), ref, atol=1e-8)


def test_least_squares_tikhonov_matches_normal_equations():
    with jax.enable_x64(True):
        A = OPERATORS["blur_then_downsample"]()
        M = dense(A.forward, A.in_shape)
        lam = 0.05
        y = _normal(8, (3, *A.out_shape))
        ref = np.linalg.solve(M.T @ M + lam * np.eye(M.shape[1]), M.T @ np.asarray(y).reshape(3, -1).T).T
        xh = jax.jit(lambda y: least_squares(A, y, num_iters=64, lam=lam))(y)
        np.testing.assert_allclose(np.asarray(xh).reshape(3, -1), ref, atol=1e-10)
        # Batched solve equals per-example solves.
        one = least_squares(A, y[1:2], num_iters=64, lam=lam)
        np.testing.assert_allclose(xh[1:2], one, atol=1e-12)


def test_least_squares_stops_cleanly_when_converged():
    """Zero residual from the start: no division by zero, x stays put."""
    A = masking(_mask((4, 4)))
    x0 = jnp.ones((1, 4, 4))
    xh = least_squares(A, A.forward(x0), num_iters=5, x0=x0)
    assert bool(jnp.all(jnp.isfinite(xh)))
    np.testing.assert_allclose(xh, x0)


def test_normal_op_and_operator_norm():
    with jax.enable_x64(True):
        A = OPERATORS["blur_then_downsample"]()
        M = dense(A.forward, A.in_shape)
        np.testing.assert_allclose(dense(normal_op(A), A.in_shape), M.T @ M, atol=1e-13)
        est = float(operator_norm(A, num_iters=200, dtype=jnp.float64))
        np.testing.assert_allclose(est, np.linalg.norm(M, 2), rtol=1e-6)
    # float32 default, a key changes only the start.
    est32 = operator_norm(downsampling(2, (8, 8)), key=jax.random.key(3))
    np.testing.assert_allclose(float(est32), 0.5, rtol=1e-5)  # ||A||^2 = 1 / f^2


def test_measure_noise():
    A = downsampling(2, (32, 32))
    x = jnp.ones((4, 32, 32))
    y1 = measure(A, x, key=jax.random.key(0), noise_std=0.1)
    y2 = measure(A, x, key=jax.random.key(0), noise_std=0.1)
    np.testing.assert_array_equal(y1, y2)
    resid = np.asarray(y1 - A.forward(x))
    assert abs(resid.std() - 0.1) < 0.01 and abs(resid.mean()) < 0.01
    np.testing.assert_array_equal(measure(A, x, key=jax.random.key(1), noise_std=0.0), A.forward(x))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: masking(np.full((4, 4), 0.5)), "binary"),
        (lambda: masking(3.0), "non-empty array"),
        (lambda: downsampling(3, (8, 8)), "must divide"),
        (lambda: downsampling(0, (8, 8)), "positive int"),
        (lambda: downsampling(2, (8,)), r"\(H, W\)"),
        (lambda: rgb_to_gray((8, 8, 4)), "4 channels but 3 weights"),
        (lambda: rgb_to_gray((8, 8), weights=(0.0, 0.0, 0.0)), "not all zero"),
        (lambda: blur(np.ones(3), (8, 8)), "2-D array"),
        (lambda: blur(np.ones((9, 3)), (8, 8)), "larger than the image"),
        (lambda: blur(np.full((3, 3), np.nan), (8, 8)), "finite"),
        (lambda: blur(np.zeros((3, 3)), (8, 8)), "not all zero"),
        (lambda: gaussian_kernel(4, 1.0), "odd positive"),
        (lambda: gaussian_kernel(5, 0.0), "sigma"),
        (lambda: compose(downsampling(2, (8, 8)), downsampling(2, (8, 8))), "compose"),
    ],
)
def test_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_shape_errors_name_what_was_received():
    A = downsampling(2, (8, 8))
    with pytest.raises(ValueError, match=r"received shape \(8, 8\)\. Add a leading batch"):
        A.forward(jnp.ones((8, 8)))
    with pytest.raises(ValueError, match=r"downsampling\.adjoint.*received shape \(1, 8, 8\)"):
        A.adjoint(jnp.ones((1, 8, 8)))
    with pytest.raises(ValueError, match="least_squares: y"):
        least_squares(A, jnp.ones((1, 8, 8)), num_iters=3)
    with pytest.raises(ValueError, match="lam"):
        least_squares(A, jnp.ones((1, 4, 4)), num_iters=3, lam=-1.0)
    with pytest.raises(ValueError, match="num_iters"):
        least_squares(A, jnp.ones((1, 4, 4)), num_iters=2.5)
