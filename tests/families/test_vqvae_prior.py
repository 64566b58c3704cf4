"""The learned VQ-VAE prior (`jgen.families.vqvae_prior`), against independent references:

- on a 2x2 grid of K=3 codes, every prior's exact probabilities of all 3^4 = 81 code
  maps sum to 1 (enumeration), and the compiled ancestral sampler's frequencies match
  them (chi-square test, fixed seed);
- a stage-2 prior initialised from a stage-1 workdir (data_init) and trained by the
  compiled train step keeps the stage-1 VQ-VAE weights exactly, and its samples are the
  stage-1 run's own decoder applied to the codes its prior draws;
- `jgen eval`'s learned-prior bound is stage 1's reconstruction NLL plus the prior's
  NLL recomputed position by position from masked canvases (not the teacher-forced
  pass), and its uniform-prior bound is stage 1's own;
- a missing, unset or non-VQ-VAE `model.vqvae_workdir` (or one without a checkpoint,
  or trained on other data) fails with a clear error, and so does asking the VQ-VAE
  family itself for a learned prior.
"""

import itertools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO_ROOT
from scipy import stats

from jgen.checkpoint import Checkpointer
from jgen.cli import main
from jgen.config import apply_overrides, load_config, save_config
from jgen.data import dataset_info, gather, get_source
from jgen.families import build_model
from jgen.families.vqvae_prior import (
    LEARNED,
    UNIFORM,
    load_vqvae_params,
    make_code_prior,
    model_config,
)
from jgen.losses import get_codebook
from jgen.train import batch_sharding, create_train_state, make_train_step, replicated
from jgen.train.loop import eval_params, restore_for_inference, setup

STAGE1 = os.path.join(REPO_ROOT, "experiments/vae/configs/mnist_vqvae.py:tiny")
STAGE2 = os.path.join(REPO_ROOT, "experiments/vae/configs/mnist_vqvae_prior.py:tiny")
TINY = {"channels": 8, "num_layers": 1, "first_kernel_size": 3, "d_model": 16, "num_heads": 2}


def _random_params(init, seed, gain):
    """Parameters of `init`'s shapes drawn with numpy (scaled by 1/sqrt(fan-in)): any
    parameters must give a normalised prior, and this skips compiling a random init
    (XLA takes ~1 s of CPU per random initializer here)."""
    rng = np.random.default_rng(seed)

    def draw(s):
        fan_in = math.prod(s.shape[:-1]) if len(s.shape) > 1 else 100
        return jnp.asarray(rng.normal(0.0, gain / math.sqrt(fan_in), s.shape), s.dtype)

    shapes = init if not callable(init) else jax.eval_shape(init, jax.random.PRNGKey(0))
    return jax.tree.map(draw, shapes)


@pytest.mark.parametrize("prior", ["gated_pixelcnn", "pixelcnn", "transformer"])
def test_prior_normalises_and_sampler_matches_enumeration(prior):
    code_prior = make_code_prior(model_config(prior=prior, **TINY), (2, 2), 3)
    params = _random_params(code_prior.init, 0, gain=2.0)
    maps = jnp.asarray(list(itertools.product(range(3), repeat=4)), jnp.int32).reshape(81, 2, 2)
    probs = np.exp(np.asarray(jax.jit(code_prior.log_prob)(params, maps), np.float64))
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)

    n = 20_000
    draws = jax.jit(code_prior.sample, static_argnums=2)(params, jax.random.PRNGKey(1), n)
    index = np.asarray(draws).reshape(n, 4) @ np.array([27, 9, 3, 1])  # the row of `maps`
    counts = np.bincount(index, minlength=81)
    expected = probs / probs.sum() * n
    small = expected < 5  # pool rare maps into one bin (chi-square needs expected counts >= 5)
    obs, exp = counts[~small], expected[~small]
    if small.any():
        obs, exp = np.append(obs, counts[small].sum()), np.append(exp, expected[small].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    assert stats.chisquare(obs, np.full(obs.size, n / obs.size)).pvalue < 1e-12  # far from uniform: power


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A stage-1 VQ-VAE workdir on digits (random weights, saved as `jgen train` saves
    them), stage 1 restored, and a stage-2 prior: init -> data_init -> 5 compiled train steps."""
    stage1 = str(tmp_path_factory.mktemp("vqvae_prior") / "vqvae")
    config1 = apply_overrides(load_config(STAGE1), ["data.name=digits"])
    run1 = setup(config1)
    params = _random_params(run1.spec.init, 1, gain=1.0)
    state = create_train_state(params, run1.optimizer, jax.random.PRNGKey(0), run1.spec.init_extra(params))
    ckpt = Checkpointer(os.path.join(stage1, "checkpoints"), save_every=1, async_save=False)
    ckpt.save(1, state, {}, force=True)
    ckpt.close()
    save_config(config1, os.path.join(stage1, "config.json"))
    run1, state, _ = restore_for_inference(stage1)  # what the tests compare against

    run2 = setup(apply_overrides(load_config(STAGE2), [f"model.vqvae_workdir={stage1}"]))
    source = get_source("digits", "train")
    batches = [jax.device_put(gather(source, np.arange(16 * i, 16 * i + 16)), batch_sharding(run2.mesh))
               for i in range(5)]
    # The loop's fresh-run init (jgen.train.loop._init_state): init (numpy-drawn prior,
    # placeholder VQ-VAE), then data_init, which loads stage 1 into params["vqvae"].
    shapes = jax.eval_shape(run2.spec.init, jax.random.PRNGKey(0))
    params2 = {"prior": _random_params(shapes["prior"], 2, gain=1.0),
               "vqvae": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["vqvae"])}
    params2 = run2.spec.data_init(params2, jax.random.PRNGKey(1), batches[0])
    state2 = jax.device_put(create_train_state(params2, run2.optimizer, jax.random.PRNGKey(2)), replicated(run2.mesh))
    step = make_train_step(run2.spec.loss_fn, run2.optimizer, mesh=run2.mesh)
    for batch in batches:
        state2, metrics = step(state2, batch)
    assert np.isfinite(float(metrics["loss"]))
    return stage1, run1, eval_params(state, run1.config), run2, state2.params


def test_stage2_keeps_the_vqvae_and_decodes_its_prior_samples(runs):
    _, run1, params1, run2, params2 = runs
    # After 5 train steps, the prior's copy of the VQ-VAE is still stage 1's, bit for bit.
    for a, b in zip(jax.tree.leaves(params2["vqvae"]), jax.tree.leaves(params1), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    key, num = jax.random.PRNGKey(3), 12
    images = jax.jit(run2.spec.sample, static_argnums=2)(params2, key, num)
    m = model_config()
    m.update(run2.config.model)
    codes = make_code_prior(m, (2, 2), run1.config.model.num_codes).sample(params2["prior"], key, num)
    assert len({tuple(c) for c in np.asarray(codes).reshape(num, -1)}) > 1
    z = get_codebook(params1)[codes].reshape((num, -1))  # the stage-1 family's own decoder
    np.testing.assert_allclose(np.asarray(images), np.asarray(run1.spec.decode(params1, z)), atol=1e-6)


def test_eval_bound_is_reconstruction_plus_prior_nll(runs):
    _, run1, params1, run2, params2 = runs
    batch = gather(get_source("digits", "test"), np.arange(8))
    batch = {"image": batch["image"], "index": batch["index"]}
    key = jax.random.PRNGKey(0)
    got = jax.jit(run2.spec.eval_fn)(params2, key, batch)
    ref = jax.jit(run1.spec.eval_fn)(params1, key, batch)  # stage 1's recon NLL, codes, uniform bound

    codes = jnp.asarray(ref["codes"], jnp.int32)  # [B, 4]
    m = model_config()
    m.update(run2.config.model)
    prior = make_code_prior(m, (2, 2), run1.config.model.num_codes)
    prior_nll = np.zeros(8)
    for i in range(4):  # p(k_i | k_<i) from a canvas that holds only k_<i
        canvas = jnp.where(jnp.arange(4)[None, :] < i, codes, 0).reshape((8, 2, 2))
        logp = jax.nn.log_softmax(prior.logits(params2["prior"], canvas)[:, i], axis=-1)
        prior_nll -= np.asarray(jnp.take_along_axis(logp, codes[:, i:i + 1], axis=1)[:, 0])
    np.testing.assert_allclose(np.asarray(got[LEARNED]), np.asarray(ref["reconstruction_nll"]) + prior_nll,
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got[UNIFORM]), np.asarray(ref["ELBO (uniform code prior)"]), rtol=1e-6)


def test_bad_vqvae_workdir_errors(tmp_path, capsys, runs):
    info = dataset_info("digits")

    def build(workdir, *more):
        return build_model(apply_overrides(load_config(STAGE2), [f"model.vqvae_workdir={workdir}", *more]), info)

    with pytest.raises(ValueError, match="model.vqvae_workdir is required"):
        build("")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build(str(tmp_path))
    not_vq = tmp_path / "vae_run"
    not_vq.mkdir()
    (not_vq / "config.json").write_text(json.dumps({"model": {"family": "vae"}, "data": {}}))
    with pytest.raises(ValueError, match="family='vae', not a VQ-VAE"):
        build(str(not_vq))
    with pytest.raises(ValueError, match="data.preprocess=.* was trained with data.preprocess='binarize_dynamic'"):
        build(runs[0], "data.preprocess=binarize_static")
    no_ckpt = tmp_path / "untrained"
    no_ckpt.mkdir()
    with open(os.path.join(runs[0], "config.json")) as f:
        (no_ckpt / "config.json").write_text(f.read())
    with pytest.raises(FileNotFoundError, match="model.vqvae_workdir=.*No restorable checkpoint"):
        load_vqvae_params(str(no_ckpt))
    # The VQ-VAE family's own model.prior points to this second stage.
    with pytest.raises(ValueError, match="family 'vqvae_prior'"):
        build_model(apply_overrides(load_config(STAGE1), ["data.name=digits", "model.prior=learned"]), info)
    # Through the CLI: exit status 2 and the message, before anything is trained.
    capsys.readouterr()
    assert main(["train", "--config", STAGE2, "--workdir", str(tmp_path / "w"), "--no-progress"]) == 2
    assert "model.vqvae_workdir is required" in capsys.readouterr().err
