"""ActNorm's data-dependent initialisation, the LU 1x1 convolution against its dense
weight, and the rational-quadratic spline's shape (monotone, continuous at knots,
identity tails, accurate inverse at knots). The generic bijector properties of all
three are in the `BIJECTORS` table of test_bijectors.py.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jgen.bijectors import ActNorm, RationalQuadraticSpline, actnorm_init, conv1x1_init
from jgen.bijectors.spline import _knots


def test_actnorm_init_standardises_the_batch_in_the_inverse_direction():
    # The test: after init, inverse(x) has per-channel mean 0 and variance 1.
    key = jax.random.PRNGKey(0)
    x = 3.0 + jnp.array([[[[0.5, 2.0, 7.0]]]]) * jax.random.normal(key, (8, 4, 4, 3))
    shift, log_scale = jax.jit(actnorm_init)(x)
    assert shift.shape == (3,) and log_scale.shape == (3,)
    z, log_det = ActNorm(shift, log_scale, event_ndims=3).inverse_and_log_det(x)
    np.testing.assert_allclose(jnp.mean(z, axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(z, axis=(0, 1, 2)), 1.0, rtol=1e-4)
    # log-det = -H W sum(log_scale) (closed form), one per example.
    np.testing.assert_allclose(log_det, np.full(8, -16.0 * np.sum(log_scale)), rtol=1e-5)
    # Vectors [B, C] too.
    v = 1.0 + 4.0 * jax.random.normal(key, (64, 5))
    zv = ActNorm(*actnorm_init(v)).inverse(v)
    np.testing.assert_allclose(jnp.var(zv, axis=0), 1.0, rtol=1e-4)


def test_conv1x1_init_is_a_rotation_and_matches_dense_convolution():
    conv = conv1x1_init(jax.random.PRNGKey(1), 4)
    w = conv.weight()
    # Reference: a rotation has W W^T = I and |det W| = 1.
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-5)
    np.testing.assert_allclose(jnp.sum(conv.log_s), 0.0, atol=1e-5)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 3, 4))
    y, log_det = conv.forward_and_log_det(x)
    # Reference: the 1x1 convolution as a dense per-pixel matrix product.
    np.testing.assert_allclose(y, jnp.einsum("ij,bhwj->bhwi", w, x), atol=1e-5)
    np.testing.assert_allclose(log_det, 9.0 * np.linalg.slogdet(np.asarray(w))[1], atol=1e-4)


def _spline(key, k=6, bound=2.0):
    ks = [jax.random.fold_in(key, i) for i in range(3)]
    return RationalQuadraticSpline(
        2.0 * jax.random.normal(ks[0], (1, k)),
        2.0 * jax.random.normal(ks[1], (1, k)),
        2.0 * jax.random.normal(ks[2], (1, k - 1)),
        bound=bound,
    )


def test_spline_monotone_continuous_and_identity_outside_the_bound():
    with jax.enable_x64(True):
        spline = _spline(jax.random.PRNGKey(3))
        x = jnp.linspace(-3.0, 3.0, 20001)[:, None]
        y, log_det = jax.jit(spline.forward_and_log_det)(x)
        assert np.all(np.diff(y[:, 0]) > 0)  # strictly increasing
        # Continuous: no jump larger than max slope * step anywhere (incl. knots, +-B).
        slope = np.exp(np.max(log_det))
        assert np.max(np.diff(y[:, 0])) <= slope * (6.0 / 20000) * (1 + 1e-6)
        outside = np.abs(x[:, 0]) > 2.0
        np.testing.assert_array_equal(y[outside], x[outside])
        np.testing.assert_array_equal(log_det[outside], 0.0)
        # Knots map to knots; at +-B the value is +-B with derivative 1 (matches tails).
        _, x_knots = _knots(spline.widths_raw, 2.0, spline.min_bin_width)
        _, y_knots = _knots(spline.heights_raw, 2.0, spline.min_bin_height)
        yk, ldk = spline.forward_and_log_det(x_knots.reshape(-1, 1))
        np.testing.assert_allclose(yk[:, 0], y_knots[0], atol=1e-12)
        np.testing.assert_allclose(ldk[jnp.array([0, -1])], 0.0, atol=1e-12)
        # Derivative continuous across an interior knot: left and right limits agree.
        eps = 1e-9
        kn = x_knots[0, 2]
        _, ld_lr = spline.forward_and_log_det(jnp.array([[kn - eps], [kn + eps]]))
        np.testing.assert_allclose(ld_lr[0], ld_lr[1], atol=1e-6)


def test_spline_inverse_accurate_near_knots_and_identity_at_zero_params():
    with jax.enable_x64(True):
        spline = _spline(jax.random.PRNGKey(4))
        _, y_knots = _knots(spline.heights_raw, 2.0, spline.min_bin_height)
        offsets = jnp.array([-1e-12, 0.0, 1e-12, 1e-7])
        y = (y_knots[0][:, None] + offsets[None]).reshape(-1, 1)
        x, inv_ld = spline.inverse_and_log_det(y)
        y_back, fwd_ld = spline.forward_and_log_det(x)
        np.testing.assert_allclose(y_back, y, atol=1e-12)
        np.testing.assert_allclose(inv_ld, -fwd_ld, atol=1e-8)
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(inv_ld))
    # All-zero raw parameters give the identity (float32, inside and outside).
    k = 5
    ident = RationalQuadraticSpline(jnp.zeros(k), jnp.zeros(k), jnp.zeros(k - 1), bound=3.0)
    x = jnp.linspace(-4.0, 4.0, 33)[:, None]
    y, log_det = ident.forward_and_log_det(x)
    np.testing.assert_allclose(y, x, atol=1e-5)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)
