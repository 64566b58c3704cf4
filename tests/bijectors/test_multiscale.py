"""`FactorOut` and `Flattened` (jgen.bijectors.multiscale): closed-form outputs and
log-dets, the identity multi-scale skeleton, and readable errors. Invertibility and
log-dets against a brute-force Jacobian are in the BIJECTORS table of test_bijectors.py
("factor_out_two_level", "flattened_image_flow")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.bijectors import Affine, Chain, FactorOut, Flattened, Inverse, Squeeze, Tanh


def _x(shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def test_factor_out_transforms_kept_channels_and_passes_the_rest():
    x = _x((3, 2, 2, 5))
    shift = _x((2, 2, 2), 1)
    log_scale = 0.3 * _x((2, 2, 2), 2)
    bij = FactorOut(Affine(shift, log_scale, event_ndims=3), num_kept=2)
    y, log_det = bij.forward_and_log_det(x)
    # Closed form: the first 2 channels go through the affine map, the other 3 are copied.
    np.testing.assert_allclose(y[..., :2], x[..., :2] * np.exp(log_scale)[None] + shift[None], rtol=1e-6)
    np.testing.assert_array_equal(y[..., 2:], x[..., 2:])
    np.testing.assert_allclose(log_det, np.full(3, float(jnp.sum(log_scale))), rtol=1e-5)
    x_back, inv_log_det = bij.inverse_and_log_det(y)
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    np.testing.assert_allclose(inv_log_det, -log_det, rtol=1e-6)


def test_multiscale_skeleton_with_identity_steps_is_the_identity():
    # squeeze -> factor out half (inner: squeeze, unsqueeze) -> unsqueeze: a permutation
    # and its inverse, so the identity with log-det 0 (the base's latent layout).
    inner = Chain([Squeeze(), Inverse(Squeeze())])
    flow = Chain([Squeeze(), FactorOut(inner, num_kept=2), Inverse(Squeeze())])
    x = _x((2, 8, 8, 1))
    y, log_det = flow.forward_and_log_det(x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(log_det, np.zeros(2))


def test_multiscale_doubling_the_kept_half_doubles_the_even_rows():
    # On [4, 4, 1], the squeezed channel (p * 2 + q) holds pixel (2i + p, 2j + q); keeping
    # channels 0, 1 keeps p = 0: the even rows. Doubling them gives log-det 8 log 2.
    double = Affine(0.0, float(np.log(2.0)), event_ndims=3)
    flow = Chain([Squeeze(), FactorOut(double, num_kept=2), Inverse(Squeeze())])
    x = np.asarray(_x((3, 4, 4, 1)))
    y, log_det = flow.forward_and_log_det(jnp.asarray(x))
    expected = x.copy()
    expected[:, 0::2] *= 2.0
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(log_det, np.full(3, 8 * np.log(2.0)), rtol=1e-6)


def test_flattened_is_the_image_map_on_flat_vectors():
    shift, log_scale = _x((2, 2, 3), 1), 0.5 * _x((2, 2, 3), 2)
    flat = Flattened(Affine(shift, log_scale, event_ndims=3), (2, 2, 3))
    reference = Affine(shift.reshape(-1), log_scale.reshape(-1))  # row-major flattening
    x = _x((4, 12))
    for got, want in zip(flat.forward_and_log_det(x), reference.forward_and_log_det(x)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for got, want in zip(flat.inverse_and_log_det(x), reference.inverse_and_log_det(x)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert flat.event_ndims == 1


@pytest.mark.parametrize(
    "make, shape, match",
    [
        (lambda: FactorOut(Tanh(event_ndims=3), num_kept=4), (2, 2, 2, 4),
         r"more than num_kept=4 channels; received shape \(2, 2, 2, 4\)"),
        (lambda: FactorOut(Squeeze(), num_kept=2), (2, 2, 2, 4),
         r"keep the shape of the kept channels \(2, 2, 2, 2\); it returned shape \(2, 1, 1, 8\)"),
        (lambda: FactorOut(Tanh(event_ndims=3), num_kept=2), (2, 4, 4),
         r"received shape \(2, 4, 4\)"),
        (lambda: Flattened(Tanh(event_ndims=3), (2, 2, 3)), (2, 11),
         r"\[B, 12\].*received shape \(2, 11\)"),
    ],
)
def test_multiscale_call_errors(make, shape, match):
    with pytest.raises(ValueError, match=match):
        make().forward(jnp.zeros(shape))


def test_multiscale_constructor_errors():
    with pytest.raises(ValueError, match=r"num_kept must be an int >= 1; received 0"):
        FactorOut(Tanh(event_ndims=3), num_kept=0)
    with pytest.raises(ValueError, match=r"event_ndims 3.*Tanh with event_ndims 1"):
        FactorOut(Tanh(), num_kept=1)
    with pytest.raises(TypeError, match="expected a jgen.bijectors.Bijector"):
        FactorOut(jnp.tanh, num_kept=1)
    with pytest.raises(ValueError, match=r"tuple of 3 positive ints.*received \(4, 4\)"):
        Flattened(Tanh(event_ndims=3), (4, 4))
