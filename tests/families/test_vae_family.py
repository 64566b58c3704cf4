"""The VAE family's ModelSpec: input validation and estimator wiring."""

import jax
import numpy as np
import pytest

from jgen.config import load_config
from jgen.data import dataset_info
from jgen.families import build_model
from helpers import DIGITS_TINY, REPO_ROOT
import os


@pytest.fixture(scope="module")
def spec_and_params():
    config = load_config(os.path.join(REPO_ROOT, DIGITS_TINY))
    spec = build_model(config, dataset_info("digits"))
    return spec, spec.init(jax.random.PRNGKey(0))


def _batch(images):
    n = images.shape[0]
    return {"image": images, "index": np.arange(n, dtype=np.int32), "label": np.zeros(n, np.int32)}


def test_wrong_shape_is_named(spec_and_params):
    spec, params = spec_and_params
    flat = np.zeros((4, 64), np.uint8)
    with pytest.raises(ValueError, match=r"shape \[B, 8, 8, 1\].*got uint8 \[4, 64\]"):
        spec.loss_fn(params, jax.random.PRNGKey(0), _batch(flat))
    with pytest.raises(ValueError, match=r"got uint8 \[4, 8, 8\]"):
        jax.jit(spec.eval_fn)(params, jax.random.PRNGKey(0), _batch(np.zeros((4, 8, 8), np.uint8)))


def test_float_pixels_out_of_range_are_rejected(spec_and_params):
    spec, params = spec_and_params
    with pytest.raises((TypeError, ValueError)) as e:
        spec.loss_fn(params, jax.random.PRNGKey(0), _batch(np.full((4, 8, 8, 1), 3.0, np.float32)))
    assert "float32" in str(e.value)


def test_unknown_family():
    config = load_config(os.path.join(REPO_ROOT, DIGITS_TINY))
    with config.unlocked():
        config.model.family = "vea"
    with pytest.raises(ValueError, match="Unknown model.family=.vea.; known families: autoregressive, diffusion, ebm, flow, gan, vae, vqvae"):
        build_model(config, dataset_info("digits"))


def test_eval_estimators(spec_and_params):
    spec, params = spec_and_params
    images = (np.random.default_rng(0).random((4, 8, 8, 1)) * 255).astype(np.uint8)
    out = jax.jit(spec.eval_fn)(params, jax.random.PRNGKey(0), _batch(images))
    assert set(out) == {"ELBO", "IWAE-1", "IWAE-10"} and out["ELBO"].shape == (4,)
    assert np.all(np.asarray(out["IWAE-10"]) <= np.asarray(out["ELBO"]) + 5.0)


def test_ais_estimator_agrees_with_iwae_on_the_vae():
    """AIS (HMC transitions, posterior init) and IWAE-2000 estimate the same log p(x)."""
    from jgen.config import apply_overrides

    config = apply_overrides(load_config(os.path.join(REPO_ROOT, DIGITS_TINY)),
                             ["eval.iwae_k=(2000,)", "eval.iwae_chunk=500", "eval.ais_steps=200", "eval.ais_chains=16"])
    spec = build_model(config, dataset_info("digits"))
    params = spec.init(jax.random.PRNGKey(3))
    images = (np.random.default_rng(1).random((6, 8, 8, 1)) * 255).astype(np.uint8)
    out = jax.jit(spec.eval_fn)(params, jax.random.PRNGKey(0), _batch(images))
    assert set(out) == {"ELBO", "IWAE-2000", "AIS-200"}
    ais, iwae, elbo = (np.asarray(out[k]) for k in ("AIS-200", "IWAE-2000", "ELBO"))
    # Per example within 0.3 nats (AIS with 16 chains has ~0.1 nats of noise here), on average within 0.1.
    assert np.all(np.abs(ais - iwae) < 0.3) and abs(np.mean(ais - iwae)) < 0.1, (ais, iwae)
    assert np.all(ais <= elbo + 0.1)
