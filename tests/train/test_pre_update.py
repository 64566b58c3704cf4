"""The train step's `pre_update` hook: it runs before the gradient step with the step's key
folded with 1, the loss sees the batch entries it adds, `post_update` receives its
`extra`, and its metrics join the step's -- checked against a hand-written step, on a
2-device mesh with the batch sharded."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.train import batch_sharding, create_train_state, make_mesh, make_train_step


def _loss_fn(params, key, batch):  # reads the pre-step's "shift"
    del key
    per = jnp.square(batch["x"] @ params["w"] - batch["y"] - batch["shift"])
    return jnp.mean(per), {"sq": per}


def _pre_update(params, extra, key, batch):
    shift = jax.random.normal(key, batch["y"].shape) + jnp.sum(params["w"])
    return {**batch, "shift": shift}, {"count": extra["count"] + 1, "last": jnp.mean(shift)}, {"mean_shift": jnp.mean(shift)}


def _post_update(params, extra, key, batch):
    del key, batch
    return params, {**extra, "count": 10 * extra["count"]}, {}


def test_pre_update_feeds_the_loss_and_post_update():
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(8, 3)).astype(np.float32), "y": rng.normal(size=(8,)).astype(np.float32)}
    params = {"w": jnp.asarray([0.1, -0.2, 0.3])}
    opt = optax.sgd(0.1)
    extra = {"count": jnp.asarray(1), "last": jnp.asarray(0.0)}
    state = create_train_state(params, opt, jax.random.PRNGKey(7), extra)
    mesh = make_mesh(2)
    step = make_train_step(_loss_fn, opt, mesh=mesh, pre_update=_pre_update, post_update=_post_update, donate=False)
    new, metrics = step(state, jax.device_put(batch, batch_sharding(mesh)))

    # By hand: the step key, the pre-step's key and batch, a plain SGD step on them.
    key = jax.random.fold_in(jax.random.PRNGKey(7), 0)
    shift = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (8,))) + float(jnp.sum(params["w"]))
    w = np.asarray(params["w"])
    resid = batch["x"] @ w - batch["y"] - shift
    grad = 2.0 * batch["x"].T @ resid / 8
    np.testing.assert_allclose(np.asarray(new.params["w"]), w - 0.1 * grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["loss"]), np.mean(resid**2), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["mean_shift"]), shift.mean(), rtol=1e-5, atol=1e-6)
    assert int(new.extra["count"]) == 20  # (1 + 1) by the pre-step, then * 10 by post_update
    np.testing.assert_allclose(float(new.extra["last"]), shift.mean(), rtol=1e-5, atol=1e-6)
    assert set(metrics) == {"loss", "grad_norm", "sq", "mean_shift"}
