"""jgen's classifier feature extractor (jgen.metrics.mnist_classifier), on the embedded
8x8 digits: it learns (held-out accuracy well above chance, counted here from its
softmax), its probabilities are the softmax of the last layer applied to its features
(recomputed in NumPy from the saved weights), and its checkpoint round-trips and fails
loudly when damaged."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.data.digits import digits_arrays
from jgen.metrics import mnist_classifier as mc
from jgen.metrics.features import load_extractor, params_digest

MODEL = mc.ConvClassifier(image_shape=(8, 8, 1), num_classes=10, channels=(16, 32), features=32)


def _digits(split):
    x, y = digits_arrays(split)
    return x.astype(np.float32) / 255.0, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x, y = _digits("train")
    params = mc.train_classifier(jax.random.key(0), x, y, model=MODEL, steps=300, batch_size=64,
                                 learning_rate=2e-3)
    path = str(tmp_path_factory.mktemp("clf") / "digits_classifier")
    mc.save_classifier(path, params, MODEL, info={"note": "test"})
    return params, path


def test_learns_digits_and_probs_are_softmax_of_last_layer(trained):
    _, path = trained
    ex = load_extractor("mnist:" + path)
    x_test, y_test = _digits("test")  # 300 held-out digits
    x = jnp.asarray(x_test)
    feats, probs = np.asarray(ex.features(x), np.float64), np.asarray(ex.probs(x), np.float64)
    assert feats.shape == (300, 32) and probs.shape == (300, 10)
    assert np.mean(np.argmax(probs, axis=1) == y_test) > 0.9  # chance is 0.1
    with np.load(os.path.join(path, "params.npz")) as w:
        logits = feats @ w["Dense_1/kernel"].astype(np.float64) + w["Dense_1/bias"]
    ref = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, ref / ref.sum(axis=1, keepdims=True), atol=1e-5)
    assert ex.image_shape == (8, 8, 1) and ex.name == "mnist-classifier"
    with pytest.raises(ValueError, match=r"\[B, 8, 8, 1\]"):
        ex.features(jnp.zeros((2, 28, 28, 1)))
    with pytest.raises(ValueError, match="uint8"):
        ex.features(np.zeros((2, 8, 8, 1), np.uint8))


def test_save_load_round_trip(trained):
    params, path = trained
    loaded, model, info = mc.load_classifier(path)
    assert model == MODEL and info == {"note": "test"}
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, jax.tree_util.tree_map(np.asarray, params))
    ex = mc.mnist_classifier_extractor(path)
    assert ex.identity == "mnist-classifier:" + params_digest(params)
    x = _digits("test")[0][:50]
    feats, _ = mc.predict(params, MODEL, x)  # in-memory parameters, never saved
    np.testing.assert_array_equal(np.asarray(ex.features(x)), feats)


def _copy(src, dst, edit=None):
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    with np.load(os.path.join(src, "params.npz")) as data:
        flat = {k: data[k] for k in data.files}
    if edit:
        edit(config, flat)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(dst, "params.npz"), "wb") as f:
        np.savez(f, **flat)
    return dst


def test_damaged_checkpoints_give_clear_errors(trained, tmp_path):
    _, path = trained
    with pytest.raises(FileNotFoundError, match="train_mnist_classifier.py"):
        mc.load_classifier(str(tmp_path / "nowhere"))
    bad = _copy(path, str(tmp_path / "bad_npz"))
    with open(os.path.join(bad, "params.npz"), "wb") as f:
        f.write(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="params.npz.*corrupt"):
        mc.load_classifier(bad)
    bad = _copy(path, str(tmp_path / "bad_json"))
    with open(os.path.join(bad, "config.json"), "w") as f:
        f.write('{"format": "jgen-mnist-cl')
    with pytest.raises(ValueError, match="config.json.*corrupt"):
        mc.load_classifier(bad)
    os.remove(os.path.join(bad, "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        mc.load_classifier(bad)
    bad = _copy(path, str(tmp_path / "bad_shape"), lambda c, f: f.update({"Dense_0/bias": np.zeros(31, np.float32)}))
    with pytest.raises(ValueError, match=r"'Dense_0/bias' has shape \(31,\), expected \(32,\)"):
        mc.load_classifier(bad)
    bad = _copy(path, str(tmp_path / "bad_key"), lambda c, f: c["model"].update({"dropout": 0.1}))
    with pytest.raises(ValueError, match="unknown classifier config keys.*dropout"):
        mc.load_classifier(bad)


def test_identity_changes_when_one_weight_changes(trained, tmp_path):
    _, path = trained

    def bump(config, flat):
        flat["Conv_1/kernel"][0, 0, 0, 0] += 1e-4

    changed = _copy(path, str(tmp_path / "changed"), bump)
    assert mc.mnist_classifier_extractor(changed).identity != mc.mnist_classifier_extractor(path).identity


def test_feature_scale_gives_unit_mean_square_per_dimension(trained, tmp_path):
    params, path = trained
    x_train = _digits("train")[0]
    s = mc.feature_scale(params, MODEL, x_train)
    scaled = _copy(path, str(tmp_path / "scaled"), edit=lambda c, _: c["info"].update(feature_scale=s))
    ex, raw = mc.mnist_classifier_extractor(scaled), mc.mnist_classifier_extractor(path)
    f = np.asarray(ex.features(jnp.asarray(x_train)), np.float64)
    np.testing.assert_allclose(np.mean(np.sum(f**2, axis=1)), f.shape[1], rtol=1e-5)  # mean ||f||^2 = F
    np.testing.assert_allclose(f, s * np.asarray(raw.features(jnp.asarray(x_train)), np.float64), rtol=1e-6)
    assert ex.identity == raw.identity + f":s{s:.6g}"
