"""The diffusion family's glue, checked against closed forms.

An EDM model whose raw network outputs zero has D(x, sigma) = c_skip(sigma) x =
sigma_d^2 / (sigma^2 + sigma_d^2) x, which is exactly E[x0 | x] for Gaussian data
N(0, sigma_d^2 I) (Karras et al. 2022, Table 1). So that "untrained" model IS the
Gaussian model, and every sampler the family routes to (through the SNR adapters) must
draw N(0, sigma_d^2), and its ODE likelihood must be the Gaussian log-density (the score
is linear, so Hutchinson's estimate with Rademacher probes is exact).
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from ml_collections import ConfigDict

from jgen.config import base_config
from jgen.families.diffusion import build, model_config, tiny_variant, training_defaults

SHAPE = (4, 4, 1)


def _spec(**model):
    config = base_config(dataset="digits", model=model_config(**model))
    training_defaults(config)
    tiny_variant(config)
    config.model.update(model)
    return build(config, types.SimpleNamespace(image_shape=SHAPE, num_classes=model.get("num_classes_", 0) or 10))


def _zero_output(params):
    # The MLP's last layer set to zero: the raw network output is exactly 0.
    p = jax.tree_util.tree_map(lambda v: v, params)
    p["params"]["dense_out"] = jax.tree_util.tree_map(jnp.zeros_like, p["params"]["dense_out"])
    return p


@pytest.fixture(scope="module")
def gaussian_edm():
    spec = _spec(formulation="edm", network="mlp", mlp_hidden=(8,), edm_sigma_max=20.0, ode_rtol=1e-5, ode_atol=1e-5)
    return spec, _zero_output(spec.init(jax.random.key(0)))


@pytest.mark.parametrize("sampler,steps", [("edm", 24), ("edm_stochastic", 40), ("dpm_solver_pp_2m", 24),
                                           ("ode_heun", 100), ("pc", 100), ("ddim", 50)])
def test_every_sampler_draws_the_gaussian_that_the_zero_edm_model_is(gaussian_edm, sampler, steps):
    spec, params = gaussian_edm
    fns = spec.sampler_fns
    x, nfe = jax.jit(lambda k: fns.run(sampler, params, k, 512, steps))(jax.random.key(1))
    x = np.asarray(x).reshape(-1)
    # 8192 draws of N(0, 0.5^2): the std to ~1% and a KS test against the closed form.
    assert abs(x.std() - 0.5) < 0.03, (sampler, x.std())
    assert abs(x.mean()) < 0.02
    assert scipy.stats.kstest(x[::4], "norm", args=(0, 0.5)).pvalue > 1e-3
    assert int(nfe) > 0


def test_ode_likelihood_is_the_gaussian_log_density(gaussian_edm):
    spec, params = gaussian_edm
    pixels = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, *SHAPE)), jnp.uint8)
    nll = spec.eval_fn(params, jax.random.key(2), {"image": pixels, "label": jnp.zeros((3,), jnp.int32)})["ODE"]
    # Same dequantization draw as the family: y = 2 (k + u) / 256 - 1 with u from the first split key.
    k_deq, _ = jax.random.split(jax.random.key(2))
    y = 2.0 * (np.asarray(pixels, np.float64) + np.asarray(jax.random.uniform(k_deq, pixels.shape))) / 256 - 1
    d = math.prod(SHAPE)
    var = 0.25 + 0.002 ** 2  # p at t_start: N(0, sigma_d^2 + sigma(t_start)^2), sigma(t_start) = 0.002
    expected = -scipy.stats.norm(0, math.sqrt(var)).logpdf(y).reshape(3, -1).sum(1) - d * math.log(2 / 256)
    np.testing.assert_allclose(nll, expected, rtol=2e-3)


def test_ddpm_loss_of_a_zero_network_is_the_noise_energy():
    spec = _spec(formulation="ddpm", network="mlp", mlp_hidden=(8,), num_timesteps=40)
    params = _zero_output(spec.init(jax.random.key(0)))
    batch = {"image": jnp.full((256, *SHAPE), 128, jnp.uint8), "label": jnp.zeros((256,), jnp.int32)}
    loss, _ = spec.loss_fn(params, jax.random.key(3), batch)
    # eps-prediction, zero output: the simple loss is mean(eps^2), E = 1, sd = sqrt(2 / (256 * 16)).
    assert abs(float(loss) - 1.0) < 4 * math.sqrt(2 / (256 * 16))


def test_config_errors_name_the_problem():
    config = base_config(dataset="digits", model=model_config())
    with pytest.raises(ValueError, match="preprocess='symmetric'"):
        build(config, types.SimpleNamespace(image_shape=SHAPE, num_classes=10))
    training_defaults(config)
    config.model.formulation = "ddim"
    with pytest.raises(ValueError, match="formulation='ddim'"):
        build(config, types.SimpleNamespace(image_shape=SHAPE, num_classes=10))
    config.model.formulation = "sde"
    config.model.sde = "ve"
    config.model.sampler = "ddim"
    with pytest.raises(ValueError, match="not available for formulation 'sde'"):
        build(config, types.SimpleNamespace(image_shape=SHAPE, num_classes=10))
    assert isinstance(config.model, ConfigDict)
