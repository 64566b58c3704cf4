"""The compiled two-player step equals a plain Python implementation of the same
algorithm (n_critic critic updates on successive batch chunks with projection, then
one generator update against the updated critic), and runs inside make_train_step
sharded over the 8-device mesh with both optimizers' states in one TrainState."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.train import create_train_state, make_mesh, make_train_step, replicated
from jgen.train.mesh import batch_sharding
from jgen.train.two_player import make_two_player_update, paired_optimizer


def _losses():
    # A linear generator x = a z + b and a critic D(x) = w . x, WGAN-style losses.
    def fake(g, key, n):
        z = jax.random.normal(key, (n, 2))
        return z * g["a"][None] + g["b"][None]

    def d_loss(d, g, key, batch):
        real = batch["image"]
        x_fake = fake(g, key, real.shape[0])
        per = -(real @ d["w"]) + x_fake @ d["w"]
        return jnp.mean(per), {"critic_gap": -per}

    def g_loss(g, d, key, batch):
        per = -(fake(g, key, batch["image"].shape[0]) @ d["w"])
        return jnp.mean(per), {"gen": per}

    return d_loss, g_loss


def _clip(d):
    return jax.tree.map(lambda v: jnp.clip(v, -0.3, 0.3), d)


def test_matches_a_python_loop_of_the_algorithm():
    d_loss, g_loss = _losses()
    opt_g, opt_d = optax.adam(0.05), optax.sgd(0.1, momentum=0.5)
    params = {"g": {"a": jnp.ones(2), "b": jnp.zeros(2)}, "d": {"w": jnp.array([0.2, -0.1])}}
    batch = {"image": jax.random.normal(jax.random.key(0), (12, 2)) + 3.0}
    key = jax.random.key(1)
    update = jax.jit(make_two_player_update(d_loss, g_loss, opt_g, opt_d, n_critic=3, d_project=_clip))
    opt_state = paired_optimizer(opt_g, opt_d).init(params)
    new, new_state, metrics = update(params, opt_state, key, batch)

    # The same algorithm written out step by step.
    g, d = params["g"], params["d"]
    sg, sd = opt_g.init(g), opt_d.init(d)
    for i in range(3):
        chunk = {"image": batch["image"][4 * i:4 * (i + 1)]}
        (dl, _), grads = jax.value_and_grad(d_loss, has_aux=True)(d, g, jax.random.fold_in(key, i), chunk)
        upd, sd = opt_d.update(grads, sd, d)
        d = _clip(optax.apply_updates(d, upd))
    (gl, _), grads = jax.value_and_grad(g_loss, has_aux=True)(g, d, jax.random.fold_in(key, 3), batch)
    upd, sg = opt_g.update(grads, sg, g)
    g = optax.apply_updates(g, upd)
    for got, want in ((new["g"], g), (new["d"], d), (new_state["g"], sg), (new_state["d"], sd)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)
    np.testing.assert_allclose(metrics["d_loss"], dl, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], dl + gl, rtol=1e-6)
    assert float(jnp.max(jnp.abs(new["d"]["w"]))) <= np.float32(0.3)  # projected after every critic step


def test_inside_make_train_step_on_eight_devices_and_bad_n_critic():
    d_loss, g_loss = _losses()
    opt_g, opt_d = optax.adam(0.05), optax.adam(0.01)  # two time scales
    pair = paired_optimizer(opt_g, opt_d)
    params = {"g": {"a": jnp.ones(2), "b": jnp.zeros(2)}, "d": {"w": jnp.array([0.2, -0.1])}}
    mesh = make_mesh()
    state = jax.device_put(create_train_state(params, pair, jax.random.key(2)), replicated(mesh))
    step = make_train_step(None, pair, mesh=mesh, ema_decay=0.5,
                           update=make_two_player_update(d_loss, g_loss, opt_g, opt_d, n_critic=2, d_project=_clip))
    batch = jax.device_put({"image": jax.random.normal(jax.random.key(3), (16, 2)) + 3.0}, batch_sharding(mesh))
    for _ in range(5):
        state, metrics = step(state, batch)
    assert int(state.step) == 5 and set(metrics) >= {"loss", "grad_norm", "d_loss", "g_loss", "d_critic_gap"}
    # The generator's offset moves toward the real data's mean (3, 3) under the critic.
    assert float(jnp.mean(state.params["g"]["b"])) > 0.0
    np.testing.assert_array_less(jnp.abs(state.params["d"]["w"]), 0.3 + 1e-6)
    # EMA averages the parameters: it lags behind them.
    assert not np.allclose(state.ema_params["g"]["b"], state.params["g"]["b"])
    with pytest.raises(ValueError, match="n_critic must be an int >= 1"):
        make_two_player_update(d_loss, g_loss, opt_g, opt_d, n_critic=0)
    with pytest.raises(ValueError, match="divisible by n_critic"):
        make_two_player_update(d_loss, g_loss, opt_g, opt_d, n_critic=3)(
            params, pair.init(params), jax.random.key(0), {"image": jnp.ones((4, 2))})
