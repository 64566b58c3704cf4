"""The feature-extractor contract: input checks, weight digests, the spec loader."""

import jax.numpy as jnp
import numpy as np
import pytest

from jgen.metrics.features import load_extractor, params_digest, pixel_extractor


def test_pixel_extractor_flattens_and_checks_inputs():
    ex = load_extractor("pixels")
    x = np.random.default_rng(0).uniform(size=(3, 4, 4, 1)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(ex.features(ex.check_images(x))), x.reshape(3, 16))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\], got shape \(4, 4, 1\)"):
        ex.check_images(x[0])
    with pytest.raises(ValueError, match="dtype uint8.*x / 255"):
        ex.check_images((x * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"got range \[-0\.9.*map \[-1, 1\] data with \(x \+ 1\) / 2"):
        ex.check_images(2 * x - 1)


def test_params_digest_sees_values_shapes_and_names():
    p = {"a": jnp.ones((2, 3)), "b": {"c": jnp.zeros((4,))}}
    d = params_digest(p)
    assert d == params_digest({"a": jnp.ones((2, 3)), "b": {"c": jnp.zeros((4,))}})
    assert d != params_digest({"a": jnp.ones((2, 3)).at[1, 2].set(1.0001), "b": {"c": jnp.zeros((4,))}})
    assert d != params_digest({"a": jnp.ones((3, 2)), "b": {"c": jnp.zeros((4,))}})
    assert d != params_digest({"x": jnp.ones((2, 3)), "b": {"c": jnp.zeros((4,))}})


def test_load_extractor_rejects_unknown_specs():
    assert pixel_extractor().identity == load_extractor("pixels").identity
    with pytest.raises(ValueError, match="unknown feature extractor 'vgg'"):
        load_extractor("vgg")
    with pytest.raises(ValueError, match="needs the weights file"):
        load_extractor("inception")
