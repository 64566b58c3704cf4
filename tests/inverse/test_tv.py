"""Tests for jgen.inverse.tv: the TV gradient operator, TV values, and Chambolle-Pock.

References: the exact TV of a step edge (height times edge length); the exact 1-D TV
denoising solution from its dual, a bounded least-squares problem solved by scipy;
convex optimality (no small
perturbation lowers the objective at the solution); FBP from the same views as the
classical baseline to beat.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.inverse import (
    blur,
    fbp,
    finite_differences,
    gaussian_kernel,
    make_operator,
    masking,
    parallel_beam_angles,
    radon_operator,
    shepp_logan,
    tv_norm,
    tv_reconstruct,
)


def psnr(x, ref):
    return float(10 * jnp.log10(1.0 / jnp.mean((x - ref) ** 2)))


@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3)])
def test_finite_differences_adjoint(shape):
    with jax.enable_x64(True):
        D = finite_differences(shape)
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(2, *shape)))
        g = jnp.asarray(rng.normal(size=(2, *shape, 2)))
        lhs, rhs = float(jnp.sum(D.forward(x) * g)), float(jnp.sum(x * D.adjoint(g)))
        assert abs(lhs - rhs) < 1e-12 * (1 + abs(lhs))
        # Constants have zero gradient; the last row / column differences are zero.
        np.testing.assert_allclose(D.forward(jnp.ones((1, *shape))), 0.0)
        np.testing.assert_allclose(D.forward(x)[:, -1, ..., 0], 0.0)


def test_tv_norm_of_known_images():
    step = jnp.zeros((1, 10, 12)).at[:, :, 6:].set(2.5)  # vertical edge, 10 rows
    np.testing.assert_allclose(tv_norm(step), [25.0], rtol=1e-6)
    # Isotropic: a bright pixel has TV sqrt(2) (its own gradient has both components)
    # plus 1 + 1 (its upper and left neighbours).
    dot = jnp.zeros((1, 5, 5)).at[0, 2, 2].set(1.0)
    np.testing.assert_allclose(tv_norm(dot), [np.sqrt(2) + 2.0], rtol=1e-6)
    np.testing.assert_allclose(tv_norm(jnp.ones((2, 4, 4, 3))), [0.0, 0.0])


def test_tv_beats_fbp_from_sparse_views_and_objective_decreases():
    n, k = 64, 18
    x = shepp_logan(n, supersample=4)[None]
    angles = parallel_beam_angles(k)
    A = radon_operator(n, angles)

    @jax.jit
    def run(x):
        y = A.forward(x)
        return y, fbp(y, angles, n), tv_reconstruct(A, y, lam=0.3, num_iters=200, nonneg=True)

    y, x_fbp, res = run(x)
    p_fbp, p_tv = psnr(x_fbp, x), psnr(res.x, x)
    assert p_tv > p_fbp + 5.0, (p_tv, p_fbp)  # measured ~30 dB vs ~19 dB
    assert float(res.x.min()) >= 0.0
    obj = np.asarray(res.objective[:, 0])
    start = 0.5 * float(jnp.sum(y**2))  # the objective at x0 = 0
    # Chambolle-Pock is not monotone step by step; it decreases on the whole.
    blocks = obj.reshape(-1, 20).mean(1)
    assert obj[0] < start and np.all(np.diff(blocks) < 0), blocks
    assert obj[-1] < 0.01 * start and obj[-1] <= obj.min() * 1.01


def test_tv_denoising_matches_exact_1d_solution():
    """A = identity and y constant along rows: the minimiser is constant along rows too
    and solves 1-D TV denoising, min 0.5 ||x - y||^2 + lam ||D x||_1, whose dual is the
    bounded least squares min_{|z| <= lam} ||y - D^T z||^2 with x = y - D^T z, solved
    exactly by scipy.optimize.lsq_linear (an independent reference)."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    h, w, lam = 12, 5, 0.3
    rng = np.random.default_rng(3)
    y1 = np.repeat(rng.uniform(0, 2, size=4), 3) + 0.1 * rng.normal(size=h)
    d = np.diff(np.eye(h), axis=0)  # [h - 1, h] forward differences
    z = scipy_optimize.lsq_linear(d.T, y1, bounds=(-lam, lam), tol=1e-14, method="bvls").x
    ref = y1 - d.T @ z
    with jax.enable_x64(True):
        A = masking(np.ones((h, w), bool))
        y = jnp.asarray(np.broadcast_to(y1[:, None], (h, w)))[None]
        res = jax.jit(lambda y: tv_reconstruct(A, y, lam=lam, num_iters=2000))(y)
        np.testing.assert_allclose(res.x[0], np.broadcast_to(ref[:, None], (h, w)), atol=1e-6)


def test_tv_deblurring_solution_is_optimal():
    """Convexity: no small perturbation of the minimiser lowers the objective."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        shape = (10, 10)
        A = blur(gaussian_kernel(3, 1.0), shape)
        truth = jnp.zeros((1, *shape)).at[:, 3:7, 2:8].set(1.0)
        y = A.forward(truth) + 0.05 * jnp.asarray(rng.normal(size=(1, *shape)))
        lam = 0.05
        res = jax.jit(lambda y: tv_reconstruct(A, y, lam=lam, num_iters=1000))(y)

        def objective(x):
            return 0.5 * jnp.sum((A.forward(x) - y) ** 2, axis=(1, 2)) + lam * tv_norm(x)

        f_star = float(objective(res.x)[0])
        np.testing.assert_allclose(float(res.objective[-1, 0]), f_star, rtol=1e-10)
        d = jnp.asarray(rng.normal(size=(64, *shape)))
        d = d / jnp.sqrt(jnp.sum(d**2, axis=(1, 2), keepdims=True))
        for eps in (1e-2, 1e-3):
            assert float(objective(res.x + eps * d).min()) >= f_star


def test_tv_denoising_batch_and_channels():
    """A = identity on [H, W, C]: a strong TV weight flattens noise around a constant,
    a weak one returns the data; examples are solved independently."""
    A = masking(np.ones((8, 8, 2), bool))
    rng = np.random.default_rng(2)
    y = jnp.asarray(0.5 + 0.1 * rng.normal(size=(2, 8, 8, 2)), jnp.float32)
    strong = tv_reconstruct(A, y, lam=10.0, num_iters=300).x
    weak = tv_reconstruct(A, y, lam=1e-4, num_iters=300).x
    np.testing.assert_allclose(strong, jnp.broadcast_to(y.mean(axis=(1, 2), keepdims=True), y.shape), atol=1e-3)
    np.testing.assert_allclose(weak, y, atol=1e-3)
    one = tv_reconstruct(A, y[1:], lam=10.0, num_iters=300).x
    np.testing.assert_allclose(strong[1:], one, atol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda A, y: tv_reconstruct(A, y, lam=0.0, num_iters=5), "lam"),
        (lambda A, y: tv_reconstruct(A, y, lam=1.0, num_iters=0), "num_iters"),
        (lambda A, y: tv_reconstruct(A, y[0], lam=1.0, num_iters=5), "received shape"),
        (lambda A, y: tv_reconstruct(A, y, lam=1.0, num_iters=5, step=-1.0), "step"),
        (lambda A, y: tv_reconstruct(
            make_operator(lambda x: x, lambda x: x, (6,), (6,)), jnp.ones((1, 6)),
            lam=1.0, num_iters=5), r"\(H, W\)"),
    ],
)
def test_errors(call, match):
    A = masking(np.ones((6, 6), bool))
    with pytest.raises(ValueError, match=match):
        call(A, jnp.ones((1, 6, 6)))
