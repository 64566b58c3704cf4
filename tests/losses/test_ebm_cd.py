"""Contrastive divergence for deep EBMs: Langevin negatives on a quadratic energy are ULA on
a Gaussian, whose stationary variance is known in closed form; the CD loss's parameter
gradient equals a hand-computed one on a linear energy (negatives carry no gradient, even
when they are computed from the parameters); the energy nets give one energy per example,
each depending on its own input only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.losses.ebm_cd import ebm_cd_loss, langevin_negatives
from jgen.models.ebm.energy_nets import ConvEnergy, MLPEnergy


def _quadratic_energy(s):
    def energy_fn(params, x):  # E(x) = ||x - mu||^2 / (2 s^2), i.e. p = N(mu, s^2 I)
        return jnp.sum(jnp.square(x - params["mu"][None]), axis=1) / (2.0 * s**2)

    return energy_fn


def test_langevin_negatives_on_a_quadratic_energy_have_the_ula_stationary_variance():
    with jax.enable_x64(True):
        s, h = 0.8, 0.4
        mu = jnp.array([1.0, -2.0])
        energy_fn = _quadratic_energy(s)
        x0 = jnp.zeros((20_000, 2)) + mu[None]
        x = langevin_negatives(jax.random.PRNGKey(0), energy_fn, {"mu": mu}, x0, num_steps=150, step_size=h,
                               noise_scale=1.0, clip=None)
        x = np.asarray(x)
    # ULA on N(mu, s^2) is x' = mu + (1 - h / 2s^2)(x - mu) + sqrt(h) z, an AR(1) process
    # with stationary variance s^2 / (1 - h / 4s^2) (not s^2: ULA is biased); after 150
    # steps the start is forgotten ((1 - h / 2s^2)^150 ~ 1e-33).
    var_ula = s**2 / (1.0 - h / (4.0 * s**2))
    n = x.shape[0]
    se_var = var_ula * np.sqrt(2.0 / (n - 1))  # sd of a Gaussian sample variance
    var_hat = x.var(axis=0, ddof=1)
    np.testing.assert_array_less(np.abs(var_hat - var_ula), 4 * se_var)
    assert np.all(np.abs(var_hat - s**2) > 4 * se_var)  # the test tells ULA's bias apart
    np.testing.assert_array_less(np.abs(x.mean(axis=0) - np.asarray(mu)), 4 * np.sqrt(var_ula / n))


def test_langevin_negatives_are_clamped_constants():
    energy_fn = _quadratic_energy(1.0)
    x0 = jax.random.uniform(jax.random.PRNGKey(0), (64, 3), minval=-1, maxval=1)

    def total(mu):
        x = langevin_negatives(jax.random.PRNGKey(1), energy_fn, {"mu": mu}, x0, num_steps=10, step_size=0.5,
                               noise_scale=1.0)
        return jnp.sum(x), x

    (_, x), g = jax.value_and_grad(total, has_aux=True)(jnp.array([3.0, 0.0, -3.0]))
    np.testing.assert_array_equal(np.asarray(g), 0.0)  # stop_gradient: no path to the parameters
    assert np.abs(np.asarray(x)).max() <= 1.0  # clip=(-1, 1) by default
    assert np.asarray(x)[:, 0].mean() > 0.5 and np.asarray(x)[:, 2].mean() < -0.5  # pulled toward mu
    np.testing.assert_array_equal(
        np.asarray(langevin_negatives(jax.random.PRNGKey(1), energy_fn, {"mu": jnp.zeros(3)}, x0, num_steps=0,
                                      step_size=0.5, noise_scale=1.0)), np.asarray(x0))


@pytest.mark.parametrize("alpha,gamma", [(0.0, 0.0), (1.0, 0.0), (0.5, 0.3)])
def test_cd_loss_gradient_equals_the_hand_computed_one_on_a_linear_energy(alpha, gamma):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        xd, x0 = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
        params = {"w": jnp.asarray(rng.normal(size=3)), "b": jnp.asarray(0.3)}

        def energy_fn(p, x):  # E(x) = w . x + b
            return x @ p["w"] + p["b"]

        def loss(p):  # the negatives depend on the parameters; the loss must ignore that
            x_neg = jnp.asarray(x0) - 2.0 * p["w"][None] + p["b"]
            return ebm_cd_loss(energy_fn, p, jnp.asarray(xd), x_neg, alpha=alpha, grad_weight=gamma)

        (value, aux), g = jax.value_and_grad(loss, has_aux=True)(params)
        # Hand computation: with e = w.x + b and grad_x E = w for every example,
        #   L = mean(e_d) - mean(e_n) + alpha mean(e_d^2 + e_n^2) + gamma * 2 ||w||^2,
        #   dL/dw = mean(x_d) - mean(x_n) + 2 alpha mean(e_d x_d + e_n x_n) + 4 gamma w,
        #   dL/db = 2 alpha mean(e_d + e_n)      (the CD term's b cancels).
        w, b = np.asarray(params["w"]), 0.3
        xn = x0 - 2.0 * w[None] + b
        ed, en = xd @ w + b, xn @ w + b
        gw = xd.mean(0) - xn.mean(0) + 2 * alpha * (ed[:, None] * xd + en[:, None] * xn).mean(0) + 4 * gamma * w
        gb = 2 * alpha * (ed + en).mean()
        np.testing.assert_allclose(np.asarray(g["w"]), gw, rtol=1e-12)
        np.testing.assert_allclose(float(g["b"]), gb, rtol=1e-12, atol=1e-14)
        expected = ed.mean() - en.mean() + alpha * (ed**2 + en**2).mean() + gamma * 2 * np.sum(w**2)
        np.testing.assert_allclose(float(value), expected, rtol=1e-12)
        # The per-example terms reduce to the loss.
        np.testing.assert_allclose(np.asarray(aux["cd"]), ed - en, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(aux["energy_reg"]), ed**2 + en**2, rtol=1e-12)
        if gamma:
            np.testing.assert_allclose(np.asarray(aux["grad_penalty"]), np.full(6, 2 * np.sum(w**2)), rtol=1e-12)
        else:
            assert "grad_penalty" not in aux


def test_energy_nets_give_one_energy_per_independent_example():
    for module, shape in ((ConvEnergy(features=4, num_stages=1), (3, 8, 8, 1)),
                          (ConvEnergy(features=4, num_stages=2, activation="leaky_relu"), (3, 28, 28, 1)),
                          (MLPEnergy(hidden=(8,)), (3, 2))):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.uniform(-1, 1, size=shape), jnp.float32)
        # Random weights of the right shapes (numpy: flax's init is slow to compile on CPU).
        shapes = jax.eval_shape(module.init, jax.random.PRNGKey(1), x[:1])
        params = jax.tree.map(lambda a, r=rng: jnp.asarray(0.3 * r.normal(size=a.shape), jnp.float32), shapes)
        apply = jax.jit(module.apply)
        e = apply(params, x)
        assert e.shape == (3,)
        # Example b's energy depends on x[b] only: its input gradient vanishes elsewhere
        # (no batch statistics), and it equals the energy of x[b] alone.
        g = jax.jit(jax.grad(lambda p, y, m=module: m.apply(p, y)[0], argnums=1))(params, x)
        assert np.abs(np.asarray(g[0])).sum() > 0 and np.all(np.asarray(g[1:]) == 0)
        np.testing.assert_allclose(np.asarray(e[1]), np.asarray(apply(params, x[1:2])[0]), rtol=1e-5)
    with pytest.raises(ValueError, match="ConvEnergy: x must be images \\[B, H, W, C\\]; got shape \\[3, 8, 8\\]"):
        ConvEnergy().init(jax.random.PRNGKey(0), jnp.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        MLPEnergy(activation="relu6").init(jax.random.PRNGKey(0), jnp.zeros((3, 2)))


def test_bad_inputs_are_named():
    energy_fn = _quadratic_energy(1.0)
    p = {"mu": jnp.zeros(2)}
    with pytest.raises(ValueError, match="same shape \\[B, ...\\].*\\(4, 2\\) and \\(3, 2\\)"):
        ebm_cd_loss(energy_fn, p, jnp.zeros((4, 2)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="must return one energy per example, shape \\(4,\\)"):
        ebm_cd_loss(lambda p, x: x, p, jnp.zeros((4, 2)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="num_steps must be a Python int >= 0; received 2.5"):
        langevin_negatives(jax.random.PRNGKey(0), energy_fn, p, jnp.zeros((4, 2)), num_steps=2.5, step_size=0.1,
                           noise_scale=1.0)
    with pytest.raises(ValueError, match="one energy per chain, shape \\(4,\\); it returned shape \\(4, 2\\)"):
        langevin_negatives(jax.random.PRNGKey(0), lambda p, x: x, p, jnp.zeros((4, 2)), num_steps=2, step_size=0.1,
                           noise_scale=1.0)
