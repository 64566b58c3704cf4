"""The EBM family: trained briefly through its own pieces (replay-buffer pre-step, CD loss,
compiled train step) on a 2-D mixture of four Gaussians, its Langevin samples from noise
match the data (MMD against exact samples, mode balance against a chi-square test, the
distance to the nearest mode against the Rayleigh median), and bad configs are named."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from jgen.config import base_config
from jgen.families.ebm import build, model_config, training_defaults
from jgen.metrics.mmd import mmd2_unbiased
from jgen.sde.exact import gaussian_mixture
from jgen.train import create_train_state, make_mesh, make_train_step, replicated

MEANS = np.array([[0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [-0.5, -0.5]])
STD = 0.1
INFO = types.SimpleNamespace(image_shape=(1, 2, 1), num_classes=0)  # a 2-D point as a 1x2 "image"


def _to_pixels(x):
    """Points in [-1, 1]^2 as 8-bit 1x2x1 images (data.preprocess='symmetric' maps them back)."""
    return np.clip(np.round((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(np.uint8).reshape(-1, 1, 2, 1)


def _config(**model):
    config = base_config(dataset="toy2d", model=model_config(**model))
    training_defaults(config)
    config.train.batch_size = 128
    return config


def test_ebm_trained_on_a_2d_mixture_samples_it():
    gmm = gaussian_mixture(jnp.ones(4) / 4, jnp.asarray(MEANS), std=STD)
    # Unit Langevin noise (noise_scale 1): the chains target p_theta itself, so CD
    # approximates maximum likelihood and the samples should match the data's law.
    config = _config(architecture="mlp", hidden=(64, 64), alpha=0.01, buffer_size=1024, reinit_prob=0.05,
                     sgld_steps=20, sgld_step_size=0.003, sgld_noise_scale=1.0, sample_steps=100)
    spec = build(config, INFO)
    opt = optax.adam(1e-2, b1=0.0)
    params = spec.init(jax.random.PRNGKey(0))
    mesh = make_mesh(1)
    state = jax.device_put(create_train_state(params, opt, jax.random.PRNGKey(1), spec.init_extra(params)),
                           replicated(mesh))  # placed, so the step compiles once
    step = make_train_step(spec.loss_fn, opt, mesh=mesh, pre_update=spec.pre_update, steps_per_call=50)
    data = _to_pixels(gmm.sample(jax.random.PRNGKey(2), 100 * 128)).reshape(2, 50, 128, 1, 2, 1)
    for chunk in data:  # 100 steps
        state, metrics = step(state, {"image": chunk})
    assert int(state.extra.num_updates) == 100
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))

    n = 1024
    ref = np.asarray(gmm.sample(jax.random.PRNGKey(3), n))  # exact samples
    noise = np.asarray(jax.random.uniform(jax.random.PRNGKey(4), (n, 2), minval=-1, maxval=1))
    x = np.asarray(jax.jit(spec.sample, static_argnums=2)(state.params, jax.random.PRNGKey(5), n))
    x = x.reshape(n, 2) * 2.0 - 1.0  # sample() returns [0, 1] pixels
    # 1. MMD^2 to exact samples (bandwidth ~ the mode spacing): the untrained starting
    #    point, uniform noise, is ~0.1; the samples must be an order of magnitude closer.
    mmd_noise, mmd_model = (float(mmd2_unbiased(a, ref, bandwidth=0.2)) for a in (noise, x))
    assert mmd_model < 0.1 * mmd_noise, (mmd_model, mmd_noise)
    # 2. Every mode equally often: quadrant counts vs multinomial(n, 1/4) (chi-square).
    quadrant = (x[:, 0] > 0) * 2 + (x[:, 1] > 0)
    assert stats.chisquare(np.bincount(quadrant, minlength=4)).pvalue > 0.01
    # 3. Spread: the distance to the nearest mode is Rayleigh(STD) for exact samples, with
    #    median STD * sqrt(2 ln 2) = 0.118 (a collapse onto the modes would give ~0).
    d = np.min(np.linalg.norm(x[:, None] - MEANS[None], axis=-1), axis=1)
    assert abs(np.median(d) - STD * np.sqrt(2 * np.log(2))) < 0.03, np.median(d)
    # 4. The family's eval diagnostics: samples' energies close to the data's, far below noise's.
    eval_fn = jax.jit(spec.eval_fn)
    out = eval_fn(state.params, jax.random.PRNGKey(6), {"image": _to_pixels(ref[:256])})
    e_real, e_fake = float(out["energy_real"].mean()), float(out["energy_fake"].mean())
    e_noise = float(eval_fn(state.params, jax.random.PRNGKey(6), {"image": _to_pixels(noise[:256])})
                    ["energy_real"].mean())
    assert abs(e_fake - e_real) < 0.2 * (e_noise - e_real), (e_real, e_fake, e_noise)
    assert spec.summarize(out)["num_examples"] == 256


def test_bad_configs_are_named():
    config = base_config(dataset="toy2d", model=model_config(architecture="mlp"))
    with pytest.raises(ValueError, match="data.preprocess='symmetric'"):
        build(config, INFO)
    config = _config(architecture="resnet")
    with pytest.raises(ValueError, match="Unknown model.architecture='resnet' for the EBM family"):
        build(config, INFO)
    config = _config(architecture="mlp", buffer_size=64)
    with pytest.raises(ValueError, match="model.buffer_size=64 must be at least train.batch_size=128"):
        build(config, INFO)
    config = _config(architecture="mlp")
    config.train.eval_every = 100
    with pytest.raises(ValueError, match="train.eval_every=100: the EBM family has no likelihood"):
        build(config, INFO)
    spec = build(_config(architecture="mlp", hidden=(4,)), INFO)
    params = spec.init(jax.random.PRNGKey(0))
    with pytest.raises(KeyError, match="needs batch\\['negatives'\\]"):
        spec.loss_fn(params, jax.random.PRNGKey(0), {"image": np.zeros((2, 1, 2, 1), np.uint8)})
