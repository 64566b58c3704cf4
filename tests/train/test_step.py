"""The compiled train step: traces once, is device-count invariant, and the
scanned multi-step variant equals single steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.losses import make_elbo_loss
from jgen.distributions import bernoulli_logits_log_prob
from jgen.models.vae import VAE, mlp_vae
from jgen.train import batch_sharding, create_train_state, make_mesh, make_train_step, replicated

IMAGE = (4, 4, 1)


def _vae_setup():
    model = mlp_vae((16,), (16,), 3, IMAGE)
    traces = {"n": 0}

    def encode(p, x):
        traces["n"] += 1  # runs once per trace, never per call
        return model.apply(p, x, method=VAE.encode)

    def ll(p, x, z):
        return bernoulli_logits_log_prob(x, model.apply(p, z, method=VAE.decode))

    loss_fn = make_elbo_loss(encode, ll)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *IMAGE)))
    return loss_fn, params, traces


def _batch(seed, n=32):
    rng = np.random.default_rng(seed)
    return {"image": (rng.random((n, *IMAGE)) < 0.5).astype(np.float32)}


def _run(num_devices, num_steps=3, ema_decay=0.9):
    loss_fn, params, _ = _vae_setup()
    opt = optax.adam(1e-2)
    mesh = make_mesh(num_devices)
    step = make_train_step(loss_fn, opt, mesh=mesh, ema_decay=ema_decay)
    state = create_train_state(params, opt, jax.random.PRNGKey(1))
    for i in range(num_steps):
        state, metrics = step(state, jax.device_put(_batch(i), batch_sharding(mesh)))
    return state, metrics


def test_train_step_traces_once():
    loss_fn, params, traces = _vae_setup()
    opt = optax.adam(1e-3)
    mesh = make_mesh(8)
    step = make_train_step(loss_fn, opt, mesh=mesh)
    state = jax.device_put(create_train_state(params, opt, jax.random.PRNGKey(1)), replicated(mesh))
    for i in range(5):
        state, m = step(state, jax.device_put(_batch(i), batch_sharding(mesh)))
    jax.block_until_ready(m)
    assert traces["n"] == 1, f"the step was traced {traces['n']} times"
    assert step._cache_size() == 1
    assert int(state.step) == 5
    assert set(m) == {"loss", "grad_norm", "nelbo", "nll_recon", "kl"}


def test_eight_devices_match_one_device():
    s1, m1 = _run(1)
    s8, m8 = _run(8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), s1.params, s8.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), s1.ema_params, s8.ema_params)
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
    assert len(s8.params["params"]["encoder"]["mlp"]["dense_0"]["kernel"].sharding.device_set) == 8


def test_ema_tracks_params():
    state, _ = _run(1, num_steps=1, ema_decay=0.9)
    loss_fn, params0, _ = _vae_setup()
    # After one step: ema = 0.9 * params0 + 0.1 * params1.
    jax.tree.map(
        lambda e, p0, p1: np.testing.assert_allclose(e, 0.9 * p0 + 0.1 * p1, rtol=1e-5, atol=1e-7),
        state.ema_params, params0, state.params,
    )


def test_scanned_steps_equal_single_steps():
    loss_fn, params, _ = _vae_setup()
    opt = optax.adam(1e-2)
    mesh = make_mesh(2)
    single = make_train_step(loss_fn, opt, mesh=mesh, donate=False)
    multi = make_train_step(loss_fn, opt, mesh=mesh, steps_per_call=3, donate=False)
    batches = [_batch(i) for i in range(3)]
    s = create_train_state(params, opt, jax.random.PRNGKey(1))
    for b in batches:
        s, _ = single(s, b)
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    t, metrics = multi(create_train_state(params, opt, jax.random.PRNGKey(1)), stacked)
    assert metrics["loss"].shape == (3,)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s.params, t.params)


def test_batch_not_divisible_by_devices_is_rejected():
    from jgen.train.mesh import check_global_batch

    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        check_global_batch(12, make_mesh(8))
    with pytest.raises(ValueError, match="only 8 are visible"):
        make_mesh(16)
