"""Sample-quality evaluation (jgen.metrics.sample_quality): streamed metrics equal one-shot
computations on the same samples (FID with numpy statistics, KID, IS with splits, PRDC),
the reference-statistics cache round-trips and refuses other extractors, and the CLI
(`jgen eval --metrics`, `jgen eval-data`) writes values that match direct computations."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.data import binarize_static, get_source, to_unit_interval
from jgen.data.digits import digits_arrays
from jgen.metrics.features import FeatureExtractor, pixel_extractor
from jgen.metrics.frechet import feature_statistics, fid_from_features, frechet_distance
from jgen.metrics.kid import kernel_inception_distance
from jgen.metrics.likelihood import dequantization_label
from jgen.metrics.precision_recall import prdc
from jgen.metrics.sample_quality import (
    compute_reference_stats,
    default_feature_spec,
    evaluate_samples,
    load_reference_stats,
    parse_metrics,
    reference_stats,
    samples_to_images,
    save_reference_stats,
)

REPO = os.path.join(os.path.dirname(__file__), "..", "..")


def digits_unit(split):
    """Digits of a split as flattened float64 x / 255, built without jgen's preprocessing."""
    images, _ = digits_arrays(split)
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


W = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (64, 16))) / 4
V = np.asarray(jax.random.normal(jax.random.PRNGKey(8), (64, 10)))


def toy_extractor(identity="toy:v1"):
    """A small fixed random network: 16 tanh features and 10-class softmax probabilities."""
    flat = lambda x: x.reshape((x.shape[0], -1))
    return FeatureExtractor(name="toy", identity=identity, features=lambda x: jnp.tanh(flat(x) @ W),
                            probs=lambda x: jax.nn.softmax(flat(x) @ V, axis=-1), image_shape=(8, 8, 1))


def toy_sampler(params, key, num, labels=None):
    """A stand-in `ModelSpec.sample`: images sigmoid(params * z) in [0, 1]."""
    return jax.nn.sigmoid(params * jax.random.normal(key, (num, 8, 8, 1)))


def numpy_inception_score(p, num_splits):
    """Salimans et al.'s IS in float64 NumPy: exp E_x KL(p(y|x) || p(y)) per split."""
    scores = []
    for part in np.split(np.asarray(p, np.float64), num_splits):
        kl = np.sum(part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True))), axis=1)
        scores.append(np.exp(kl.mean()))
    return np.mean(scores), np.std(scores)


def test_a_cache_from_another_extractor_or_split_is_refused(tmp_path):
    path = str(tmp_path / "ref.npz")
    src = get_source("digits", "test")
    save_reference_stats(path, compute_reference_stats(pixel_extractor(), src, dataset="digits", split="test",
                                                       preprocess="unit_interval", max_rows=50))
    other = FeatureExtractor(name="pixels", identity="pixels:v2", features=pixel_extractor().features)
    with pytest.raises(ValueError, match=r"identity 'pixels:v1'.*identity 'pixels:v2'.*Delete the file.*--features"):
        reference_stats(other, dataset="digits", split="test", preprocess="unit_interval", path=path, source=src,
                        max_rows=50)
    with pytest.raises(ValueError, match=r"split='test', but split='train' was asked for"):
        load_reference_stats(path, expect={"extractor_identity": "pixels:v1", "split": "train"})
    np.savez(str(tmp_path / "other.npz"), mu=np.zeros(2))
    with pytest.raises(ValueError, match="not a jgen reference-statistics file"):
        load_reference_stats(str(tmp_path / "other.npz"))


def test_streamed_metrics_equal_one_shot_metrics_on_the_same_samples(tmp_path):
    """250 samples in batches of 48 (the last one partial and masked): FID, KID, IS (10
    splits) and PRDC from the stream equal the one-shot functions on all samples."""
    ext, n, bs, params = toy_extractor(), 250, 48, jnp.float32(1.5)
    ref = compute_reference_stats(ext, get_source("digits", "train"), dataset="digits", split="train",
                                  preprocess="unit_interval", max_rows=n, batch_size=512)
    out = evaluate_samples(toy_sampler, params, ext, ref, metrics="fid,kid,is,pr", num_samples=n, batch_size=bs,
                           seed=3)
    # The same samples, drawn in one place: batch i uses fold_in(PRNGKey(seed), i).
    samples = np.concatenate([np.asarray(toy_sampler(params, jax.random.fold_in(jax.random.PRNGKey(3), i), bs))
                              for i in range(-(-n // bs))])[:n].reshape(n, 64).astype(np.float64)
    feats = np.tanh(samples @ W)
    logits = samples @ V
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert out["fid"]["value"] == pytest.approx(fid_from_features(np.tanh(digits_unit("train") @ W), feats), rel=1e-4)
    kid, se = kernel_inception_distance(jax.random.PRNGKey(3), jnp.asarray(ref.features), jnp.asarray(feats, jnp.float32),
                                        num_subsets=100, subset_size=n)
    assert out["kid"]["value"] == pytest.approx(float(kid), rel=1e-4, abs=1e-7)
    assert out["kid"]["stderr"] == pytest.approx(float(se), rel=0.05)  # float32 round-off of tiny terms
    is_mean, is_std = numpy_inception_score(probs, 10)
    assert out["is"]["value"] == pytest.approx(is_mean, rel=1e-5)
    assert out["is"]["std"] == pytest.approx(is_std, rel=1e-3, abs=1e-6)
    assert out["is"]["one_split"] == pytest.approx(numpy_inception_score(probs, 1)[0], rel=1e-5)
    r = prdc(jnp.asarray(ref.features), jnp.asarray(feats, jnp.float32))
    assert [out["pr"][k] for k in ("precision", "recall", "density", "coverage")] == pytest.approx(
        [float(r.precision), float(r.recall), float(r.density), float(r.coverage)], abs=1e-6)


def test_input_checks():
    with pytest.raises(ValueError, match=r"unknown sample-quality metrics \['fd'\]"):
        parse_metrics("fid,fd")
    with pytest.raises(ValueError, match=r"shape \(8, 8, 1\); pass --features"):
        default_feature_spec((8, 8, 1), "digits")
    assert default_feature_spec((28, 28, 1)) == "mnist"
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\].*\(x \+ 1\) / 2"):
        samples_to_images(np.linspace(-1, 1, 64).reshape(1, 8, 8, 1), "symmetric")
    ref = compute_reference_stats(pixel_extractor(), get_source("digits", "test"), dataset="digits", split="test",
                                  preprocess="unit_interval", max_rows=10)
    with pytest.raises(ValueError, match="'pixels' has none"):
        evaluate_samples(toy_sampler, 1.0, pixel_extractor(), ref, metrics="is", num_samples=8)


def test_dequantization_labels():
    assert dequantization_label("exact (uniform dequantization)", "dequantize_uniform") == "uniform"
    assert dequantization_label("variational dequantization bound", "dequantize_uniform") == "variational"
    assert dequantization_label("ODE", "symmetric") == "uniform"
    assert dequantization_label("IWAE-10", "binarize_dynamic") == "none (binary data)"
    assert dequantization_label("VLB-1000", "symmetric") == "none"


# ------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def vae_workdir(tmp_path_factory):
    """A digits VAE workdir with an untrained (step-0) checkpoint (cheaper than training)."""
    from jgen.checkpoint import Checkpointer
    from jgen.config import load_config, save_config
    from jgen.train.loop import eval_params, init_state, setup

    workdir = str(tmp_path_factory.mktemp("sq_vae"))
    config = load_config(os.path.join(REPO, "experiments", "vae", "configs", "digits.py") + ":tiny")
    save_config(config, os.path.join(workdir, "config.json"))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1, keep=1, async_save=False)
    run = setup(config)
    state = init_state(run)
    ckpt.save(0, state, {}, force=True)
    ckpt.close()
    return workdir, run.spec, eval_params(state, config)


def test_jgen_eval_metrics_writes_the_json(vae_workdir, tmp_path):
    from jgen.cli import main

    vae_workdir, spec, params = vae_workdir
    out, ref = str(tmp_path / "eval.json"), str(tmp_path / "ref.npz")
    assert main(["eval", "--workdir", vae_workdir, "--num-examples", "16", "--iwae-k", "", "--metrics", "fid,kid",
                 "--num-samples", "40", "--sample-batch-size", "16", "--features", "pixels",
                 "--reference-stats", ref, "--seed", "1", "--out", out]) == 0
    with open(out) as f:
        report = json.load(f)
    for entry in report["nll"].values():  # the likelihood convention: every entry labelled
        assert entry["dequantization"] == "none (binary data)" and {"estimator", "nats", "nats_stderr",
                                                                   "bits_per_dim"} <= set(entry)
    sq = report["metrics"]["sample_quality"]
    assert sq["features"] == {"name": "pixels", "identity": "pixels:v1"} and sq["num_samples"] == 40
    assert sq["reference"]["split"] == "train" and sq["reference"]["preprocess"] == "binarize_static"
    assert not sq["reference"]["from_cache"] and sq["kid"]["stderr"] > 0
    # Independently: the model's samples (batch i from key_i = fold_in(PRNGKey(1), i)), drawn
    # as binary images with uniform(fold_in(key_i, 1)) < p, against the statically
    # binarized training digits, FID by numpy.
    sample = jax.jit(spec.sample, static_argnums=2)
    keys = [jax.random.fold_in(jax.random.PRNGKey(1), i) for i in range(3)]
    probs = [np.asarray(sample(params, k, 16)) for k in keys]
    samples = np.concatenate([(np.asarray(jax.random.uniform(jax.random.fold_in(k, 1), p.shape)) < p).astype(np.float32)
                              for k, p in zip(keys, probs, strict=True)])[:40]
    assert 0 < samples.mean() < 1 and not np.all(np.isin(np.concatenate(probs), (0.0, 1.0)))  # means were grey
    images, _ = digits_arrays("train")
    real = jax.jit(lambda x, i: binarize_static(to_unit_interval(x), i))(images, jnp.arange(len(images)))
    expect = fid_from_features(np.asarray(real).reshape(len(images), -1), samples.reshape(40, -1))
    assert sq["fid"]["value"] == pytest.approx(expect, rel=1e-3)


def test_jgen_eval_data_floor_and_the_reference_cache_round_trip(tmp_path, capsys):
    """Digits test vs train with pixel features: the FID equals numpy's on all pixels; the
    cache holds the mean/covariance of all 1,497 examples and a fixed-seed subsample of
    rows; a second run reads it back and gives the same FID."""
    from jgen.cli import main

    out, ref = str(tmp_path / "floor.json"), str(tmp_path / "ref.npz")
    args = ["eval-data", "--dataset", "digits", "--split", "test", "--reference-split", "train", "--metrics",
            "fid", "--features", "pixels", "--reference-stats", ref, "--out", out]
    assert main(args + ["--max-rows", "500"]) == 0
    with open(out) as f:
        first = json.load(f)
    real, test = digits_unit("train"), digits_unit("test")
    direct = fid_from_features(real, test)
    assert first["fid"]["value"] == pytest.approx(direct, rel=1e-4)
    assert first["num_samples"] == 300 and not first["reference"]["from_cache"]
    stats = load_reference_stats(ref, expect={"extractor_identity": "pixels:v1", "split": "train"})
    assert stats.meta["num_examples"] == 1497 and stats.meta["num_feature_rows"] == 500
    assert frechet_distance(stats.mu, stats.sigma, *feature_statistics(test)) == pytest.approx(direct, rel=1e-4)
    idx = np.sort(np.random.default_rng(0).choice(1497, 500, replace=False))
    np.testing.assert_allclose(stats.features, real[idx], atol=1e-6)  # exact pixels of the subsample
    assert main(args + ["--max-rows", "500"]) == 0
    with open(out) as f:
        second = json.load(f)
    assert second["reference"]["from_cache"] and second["fid"]["value"] == first["fid"]["value"]
    capsys.readouterr()
    assert main(args) == 2  # the default max_rows (10,000) is another setting than the cached 500
    assert "max_rows=500, but max_rows=10000 was asked for" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval-data", "--dataset", "digits", "--metrics", "fid", "--reference-stats", ref]) == 2
    assert "pass --features" in capsys.readouterr().err
