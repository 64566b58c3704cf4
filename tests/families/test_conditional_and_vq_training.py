"""Training-level checks of two latent-variable variants:

- a conditional VAE's samples respect the label, on a synthetic dataset whose
  classes are separable by construction (class k lights rows 2k and 2k+1);
- the VQ-VAE's EMA codebook update runs inside the compiled train step and the
  parameters' codebook is exactly the EMA state's codebook after every step.
"""

import os

import jax
import numpy as np
import optax

from helpers import DIGITS_TINY, REPO_ROOT
from jgen.config import apply_overrides, base_config, load_config
from jgen.data import DatasetInfo
from jgen.families import build_model
from jgen.families import vqvae
from jgen.losses import get_codebook
from jgen.train import batch_sharding, create_train_state, make_mesh, make_train_step, replicated

INFO = DatasetInfo(image_shape=(8, 8, 1), num_classes=4, num_examples={"train": 512})


def _bars(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = np.zeros((n, 8, 8, 1), np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k:2 * k + 2, :, 0] = 255
    flip = rng.random(images.shape) < 0.03
    images[flip] = 255 - images[flip]
    return {"image": images, "label": labels.astype(np.int32), "index": np.arange(n, dtype=np.int32)}


def _train(spec, steps, mesh, data, extra=None):
    opt = optax.adam(3e-3)
    params = spec.init(jax.random.PRNGKey(0))
    extra = spec.init_extra(params) if spec.init_extra else None
    state = jax.device_put(create_train_state(params, opt, jax.random.PRNGKey(1), extra), replicated(mesh))
    step = make_train_step(spec.loss_fn, opt, mesh=mesh, post_update=spec.post_update)
    for i in range(steps):
        sl = slice((i * 64) % 512, (i * 64) % 512 + 64)
        state, metrics = step(state, jax.device_put({k: v[sl] for k, v in data.items()}, batch_sharding(mesh)))
        if i % 16 == 0:
            jax.block_until_ready(metrics)
    return state, metrics


def test_conditional_vae_samples_respect_the_label():
    config = apply_overrides(load_config(os.path.join(REPO_ROOT, DIGITS_TINY)),
                             ["model.conditional=true", "model.encoder_hidden=(64,)", "model.decoder_hidden=(64,)"])
    spec = build_model(config, INFO)
    assert spec.num_classes == 4
    mesh = make_mesh(1)
    state, _ = _train(spec, 400, mesh, _bars(512, 0))
    labels = np.repeat(np.arange(4), 50)
    images = np.asarray(jax.jit(spec.sample, static_argnums=2)(state.params, jax.random.PRNGKey(5), 200, labels))
    row_pairs = images[..., 0].reshape(200, 4, 2, 8).mean(axis=(2, 3))  # brightness of each class's rows
    accuracy = np.mean(np.argmax(row_pairs, axis=1) == labels)
    assert accuracy >= 0.95, accuracy


def test_vq_ema_codebook_updates_inside_the_step():
    config = base_config(dataset="synthetic", model=vqvae.model_config(
        num_codes=8, code_dim=4, hidden_channels=8, res_channels=4, num_res_blocks=1, downsample=2, ema=True))
    spec = build_model(config, INFO)
    mesh = make_mesh(2)
    params0 = spec.init(jax.random.PRNGKey(0))
    state, metrics = _train(spec, 20, mesh, _bars(512, 1))
    codebook = np.asarray(get_codebook(state.params))
    np.testing.assert_array_equal(codebook, np.asarray(state.extra.codebook))
    assert not np.allclose(codebook, np.asarray(get_codebook(params0)))
    assert "perplexity" in metrics and float(metrics["perplexity"]) >= 1.0
