"""The GAN family's `model.spectral_norm` option (SN-GAN, Miyato et al. 2018): inside the
compiled two-player step each critic update advances the power-iteration vectors u by
exactly one iteration (checked against numpy), the discriminator divides its kernels by
the resulting sigma (checked with a numpy forward pass), the normalised kernels' top
singular value goes to 1 (numpy SVD, with a fresh-u control that stays above 1), and u is
checkpointed and restored with the parameters."""

import types

import jax
import numpy as np

from jgen.config import load_config
from jgen.data import get_source
from jgen.families.gan import build
from jgen.train import create_train_state, make_mesh, make_train_step, replicated
from jgen.train.loop import restore_for_inference, train_and_evaluate

INFO = types.SimpleNamespace(image_shape=(8, 8, 1), num_classes=10)
LAYERS = ("dense_0", "dense_1", "dense_2")


def _config(**model):
    config = load_config("experiments/gan/configs/mnist_dcgan.py:tiny")  # 8x8 digits, MLP players
    config.model.spectral_norm = True
    config.model.objective = "hinge"
    config.model.d_hidden = (32, 32)
    for k, v in model.items():
        config.model[k] = v
    return config


def _unit(x):
    return x / np.linalg.norm(x)


def _power_iteration(w, u):
    """One step of Miyato et al.'s Algorithm 1 for x @ W with u in the output space."""
    return _unit(w.T @ _unit(w @ u))


def _numpy_layers(d):
    """[(W [d_in, d_out], b, u)] of the discriminator's parameters, float64."""
    d = jax.device_get(d)
    return [(np.asarray(d["params"][n]["kernel"], np.float64), np.asarray(d["params"][n]["bias"], np.float64),
             np.asarray(d["spectral"][n]["u"], np.float64)) for n in LAYERS]


def _model_sigma(w, u):
    """The model's divisor: sigma = ||W u'|| after one power iteration from the stored u
    (update_stats=False runs n_iter = 1 iterations without storing them)."""
    return np.linalg.norm(w @ _power_iteration(w, u))


def _top_singular_of_normalised(d):
    return [np.linalg.svd(w / _model_sigma(w, u), compute_uv=False)[0] for w, _, u in _numpy_layers(d)]


def test_spectral_norm_advances_u_in_the_compiled_step_and_normalises_the_critic():
    config = _config(n_critic=1)
    spec = build(config, INFO)
    params = jax.jit(spec.init)(jax.random.PRNGKey(0))
    assert set(params["d"]) == {"params", "spectral"}
    mesh = make_mesh(1)
    state = jax.device_put(create_train_state(params, spec.optimizer, jax.random.PRNGKey(1)), replicated(mesh))
    step = make_train_step(spec.loss_fn, spec.optimizer, mesh=mesh, update=spec.update, donate=False)
    images = get_source("digits", "train").images
    rng = np.random.default_rng(0)
    batches = [{"image": images[rng.integers(0, len(images), 16)], "label": np.zeros(16, np.int32)}
               for _ in range(40)]

    before = _numpy_layers(state.params["d"])
    state, _ = step(state, batches[0])
    after = _numpy_layers(state.params["d"])
    for (w0, _, u0), (w1, _, u1), name in zip(before, after, LAYERS):
        # One critic update = one power iteration on the pre-update kernel (n_critic = 1;
        # the generator's step and the optimizer leave u alone).
        np.testing.assert_allclose(u1, _power_iteration(w0, u0), atol=2e-5, err_msg=name)
        assert not np.allclose(w1, w0), name  # the weights did move
    sigma = float(jax.device_get(state.params["d"]["spectral"]["dense_0"]["sigma"]))
    np.testing.assert_allclose(sigma, np.linalg.norm(before[0][0] @ after[0][2]), rtol=1e-5)

    for batch in batches[1:]:
        state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    d = state.params["d"]
    # The discriminator divides each kernel by that sigma: a numpy forward pass agrees.
    x = batches[0]["image"].reshape(16, -1).astype(np.float64) / 127.5 - 1.0
    h = x
    for i, (w, b, u) in enumerate(_numpy_layers(d)):
        h = h @ (w / _model_sigma(w, u)) + b
        if i < len(LAYERS) - 1:
            h = np.where(h > 0, h, 0.2 * h)
    out = jax.jit(spec.eval_fn)(state.params, jax.random.PRNGKey(2), batches[0])["critic_real"]
    np.testing.assert_allclose(np.asarray(out), h[:, 0], rtol=1e-4, atol=1e-5)
    # After 40 compiled steps the carried u has converged: W / sigma has top singular value 1.
    np.testing.assert_allclose(_top_singular_of_normalised(d), 1.0, atol=2e-3)
    # Control: the same kernels with the freshly initialised u (no state carried over)
    # are under-normalised, top singular value well above 1.
    fresh = {"params": d["params"], "spectral": params["d"]["spectral"]}
    assert max(_top_singular_of_normalised(fresh)) > 1.1


def test_spectral_state_is_checkpointed_and_restored(tmp_path):
    config = _config()  # the tiny variant: n_critic = 2, 20 steps, a checkpoint every 10
    workdir = str(tmp_path / "sngan")
    final = train_and_evaluate(config, workdir, progress=False)
    run, restored, step = restore_for_inference(workdir)
    assert step == 20
    for name in LAYERS:
        for leaf in ("u", "sigma"):
            np.testing.assert_array_equal(jax.device_get(restored.params["d"]["spectral"][name][leaf]),
                                          jax.device_get(final.params["d"]["spectral"][name][leaf]))
    init_key, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # as the loop's init
    initial = jax.jit(run.spec.init)(init_key)["d"]
    assert not np.allclose(jax.device_get(restored.params["d"]["spectral"]["dense_0"]["u"]),
                           jax.device_get(initial["spectral"]["dense_0"]["u"]))
    # 40 power iterations (20 steps x 2 critic updates) carried through the checkpoint;
    # with the initial u the restored kernels would be under-normalised.
    d = restored.params["d"]
    np.testing.assert_allclose(_top_singular_of_normalised(d), 1.0, atol=2e-3)
    assert max(_top_singular_of_normalised({"params": d["params"], "spectral": initial["spectral"]})) > 1.1
