"""jgen's own small MNIST classifier, used as the feature extractor for sample-quality
metrics on MNIST-like data (``load_extractor("mnist")``): FID/KID/precision-recall on its
128-d penultimate features, the Inception Score on its softmax.

Inception-v3 features are a poor fit for 28 x 28 grayscale digits (they are upsampled
to 299 x 299 RGB and judged by an ImageNet network), so MNIST papers often report a
"classifier FID" computed with a domain classifier instead, e.g. the MNIST Inception
Score and FID of Song & Ermon (2019, Section 5.1 and Appendix). The numbers are only
comparable between runs that use the *same* classifier weights, which is what the
extractor's identity (``"mnist-classifier:" + params_digest(params)``) records.

Architecture (`ConvClassifier`, any ``(H, W, C)`` via ``image_shape``): inputs in
``[0, 1]`` mapped to ``[-1, 1]``; per entry of ``channels`` a 3x3 stride-2 SAME convolution and ReLU
(28 -> 14 -> 7); flatten; dense ``features`` units + ReLU (the penultimate features);
dense ``num_classes`` logits. Trained by `train_classifier` (Adam, cosine-decayed step
size, cross-entropy, minibatches drawn on device from an explicit key); the default
checkpoint is made by ``python experiments/metrics/train_mnist_classifier.py``.

Checkpoint format: a directory holding ``config.json`` (the architecture, under
``"model"``, plus free-form ``"info"`` such as the test accuracy) and ``params.npz``
(float32 arrays under flat keys ``"Conv_0/kernel"``, ..., ``"Dense_1/bias"``).

References:
  Song, Y. & Ermon, S. (2019). Generative Modeling by Estimating Gradients of the Data
    Distribution. NeurIPS. https://arxiv.org/abs/1907.05600 (MNIST IS/FID with an
    MNIST classifier).
  LeCun, Y., Bottou, L., Bengio, Y. & Haffner, P. (1998). Gradient-based learning
    applied to document recognition. Proc. IEEE 86(11).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.metrics.features import FeatureExtractor, params_digest

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.npz"
FORMAT = "jgen-mnist-classifier-v1"
TRAIN_COMMAND = "python experiments/metrics/train_mnist_classifier.py"


class ConvClassifier(nn.Module):
    """A small CNN: ``images [B, H, W, C] in [0, 1] -> (features [B, F], logits [B, K])``.

    Attributes:
      image_shape: ``(H, W, C)`` of the inputs (``(28, 28, 1)`` for MNIST,
        ``(8, 8, 1)`` for the embedded digits).
      num_classes: K.
      channels: output channels of each stride-2 convolution.
      features: width F of the penultimate layer.
    """

    image_shape: tuple[int, int, int] = (28, 28, 1)
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64)
    features: int = 128

    @nn.compact
    def __call__(self, images):
        if tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"ConvClassifier: expected images [B, {', '.join(map(str, self.image_shape))}], "
                             f"got shape {images.shape}.")
        x = 2.0 * images.astype(jnp.float32) - 1.0
        for c in self.channels:  # strided convolutions, not max-pooling: XLA's CPU
            # gradient of max_pool (select-and-scatter) costs several times the convolutions
            x = nn.relu(nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME")(x))
        x = jnp.reshape(x, (x.shape[0], -1))
        h = nn.relu(nn.Dense(self.features)(x))
        return h, nn.Dense(self.num_classes)(h)


def model_config(model: ConvClassifier) -> dict[str, Any]:
    """The JSON-able architecture of ``model`` (inverse of `model_from_config`)."""
    return {"image_shape": list(model.image_shape), "num_classes": model.num_classes,
            "channels": list(model.channels), "features": model.features}


def model_from_config(config: dict[str, Any]) -> ConvClassifier:
    """Builds a `ConvClassifier` from `model_config` output; unknown keys are an error."""
    known = {"image_shape", "num_classes", "channels", "features"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown classifier config keys {unknown}; expected a subset of {sorted(known)}.")
    kw = dict(config)
    for k in ("image_shape", "channels"):
        if k in kw:
            kw[k] = tuple(int(v) for v in kw[k])
    return ConvClassifier(**kw)


# --------------------------------------------------------------------------- training


class TrainState(NamedTuple):
    """Classifier training state: parameters, optimiser state and the step count."""

    params: Any
    opt_state: Any
    step: jax.Array


def make_optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """Adam with a cosine-decayed step size over ``steps`` updates."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, max(int(steps), 1)))


def init_state(key: jax.Array, model: ConvClassifier, optimizer: optax.GradientTransformation) -> TrainState:
    """Initial `TrainState` (parameters from ``key``); one compiled call, since Flax's
    eager, op-by-op initialisation costs seconds of small compilations on CPU."""

    @jax.jit
    def init(key):
        params = model.init(key, jnp.zeros((1, *model.image_shape), jnp.float32))["params"]
        return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    return init(key)


def make_train_step(model: ConvClassifier, optimizer: optax.GradientTransformation,
                    batch_size: int) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """``step(state, key, images, labels) -> (state, loss)``: one Adam update on the mean
    cross-entropy of ``batch_size`` examples drawn uniformly (with replacement) from the
    whole training set ``images [N, H, W, C]``, ``labels [N]`` with
    ``fold_in(key, state.step)``. Jitted; the data stays on device."""

    def loss_fn(params, x, y):
        _, logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(state, key, images, labels):
        idx = jax.random.randint(jax.random.fold_in(key, state.step), (batch_size,), 0, images.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(state.params, images[idx], labels[idx])
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), loss

    return step


def train_classifier(key: jax.Array, images: Any, labels: Any, *, model: ConvClassifier, steps: int,
                     batch_size: int = 128, learning_rate: float = 1e-3, log_every: int = 0,
                     log: Callable[[str], None] = print) -> Any:
    """Trains ``model`` on ``images [N, H, W, C] in [0, 1]``, integer ``labels [N]``.

    Args:
      key: PRNG key (initialisation and minibatches).
      images, labels: the training set (moved to device once).
      model: the architecture.
      steps: number of updates.
      batch_size: examples per update.
      learning_rate: Adam's initial step size (cosine-decayed to 0).
      log_every: print the running loss every this many steps (0: never).
      log: where log lines go.

    Returns:
      The trained parameters (``{"params"}`` collection contents).
    """
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.image_shape):
        raise ValueError(f"train_classifier: expected images [N, {', '.join(map(str, model.image_shape))}], "
                         f"got {images.shape}.")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"train_classifier: expected labels [{images.shape[0]}], got {labels.shape}.")
    optimizer = make_optimizer(learning_rate, steps)
    init_key, data_key = jax.random.split(key)
    state = init_state(init_key, model, optimizer)
    step = make_train_step(model, optimizer, batch_size)
    for i in range(steps):
        state, loss = step(state, data_key, images, labels)
        if log_every and (i + 1) % log_every == 0:
            log(f"step {i + 1}/{steps}  loss {float(loss):.4f}")
    return state.params


def predict(params: Any, model: ConvClassifier, images: Any, *, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(features [N, F], logits [N, K])`` as NumPy, in batches of ``batch_size``."""
    apply = jax.jit(model.apply)
    images = np.asarray(images, np.float32)
    outs = [apply({"params": params}, jnp.asarray(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return np.concatenate([np.asarray(o[0]) for o in outs]), np.concatenate([np.asarray(o[1]) for o in outs])


def feature_scale(params: Any, model: ConvClassifier, images: Any, *, batch_size: int = 1000) -> float:
    r"""The constant :math:`s = \sqrt{F / \overline{\|f(x)\|^2}}` that gives the features
    mean squared norm F (their dimension) over ``images`` (the training set).

    KID's kernel :math:`k(x, y) = (x^\top y / F + 1)^3` assumes :math:`x^\top y / F` is of
    order 1, as it is for Inception pool features. Raw ReLU features of this classifier
    have norms near 40 in 128 dimensions, which makes the kernel values ~10^3 and KID's
    subset estimates too noisy to read; the extractor multiplies by ``s`` (stored in the
    checkpoint's ``info["feature_scale"]`` and part of its identity). FID scales by
    ``s^2`` and precision/recall are unchanged.
    """
    features, _ = predict(params, model, images, batch_size=batch_size)
    mean_sq = float(np.mean(np.sum(np.square(features.astype(np.float64)), axis=1)))
    if not mean_sq > 0:
        raise ValueError("feature_scale: every feature vector is zero on these images; is the classifier trained?")
    return float(np.sqrt(features.shape[1] / mean_sq))


def accuracy(params: Any, model: ConvClassifier, images: Any, labels: Any, *, batch_size: int = 1000) -> float:
    """Fraction of ``images`` whose arg-max logit equals ``labels``."""
    _, logits = predict(params, model, images, batch_size=batch_size)
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


# --------------------------------------------------------------------------- files


def _flatten(tree: Any) -> dict[str, Any]:
    """``{"Conv_0": {"kernel": a}}`` -> ``{"Conv_0/kernel": a}``."""
    return {"/".join(str(p.key) for p in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def save_classifier(path: str, params: Any, model: ConvClassifier, *, info: dict[str, Any] | None = None) -> None:
    """Writes ``path/config.json`` and ``path/params.npz`` (creating ``path``).

    Args:
      path: directory.
      params: trained parameters (as returned by `train_classifier`).
      model: the architecture they belong to.
      info: JSON-able extras stored under ``"info"`` (test accuracy, steps, seed, ...).
    """
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, PARAMS_FILE), "wb") as f:
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in _flatten(params).items()})
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump({"format": FORMAT, "model": model_config(model), "info": info or {}}, f, indent=2)


def load_classifier(path: str) -> tuple[Any, ConvClassifier, dict[str, Any]]:
    """Reads a directory written by `save_classifier`.

    Returns:
      ``(params, model, info)``.

    Raises:
      FileNotFoundError: the directory or one of its two files is missing (the message
        gives the training command).
      ValueError: a file is corrupt, the config is not this format, or the parameters
        do not match the architecture (the first wrong key is named).
    """
    path = os.path.expanduser(path)
    config_path, params_path = os.path.join(path, CONFIG_FILE), os.path.join(path, PARAMS_FILE)
    for p in (config_path, params_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"MNIST classifier checkpoint incomplete: {p!r} does not exist. Train one with "
                                    f"`{TRAIN_COMMAND} --out {path}`.")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"could not parse {config_path!r} ({type(e).__name__}: {e}); the checkpoint is corrupt, "
                         f"retrain with `{TRAIN_COMMAND} --out {path}`.") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT or "model" not in config:
        raise ValueError(f"{config_path!r} is not a {FORMAT} config (format {config.get('format') if isinstance(config, dict) else None!r}); "
                         f"retrain with `{TRAIN_COMMAND} --out {path}`.")
    model = model_from_config(config["model"])
    try:
        with np.load(params_path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"could not read {params_path!r} as a .npz file ({type(e).__name__}: {e}); the checkpoint "
                         f"is corrupt, retrain with `{TRAIN_COMMAND} --out {path}`.") from e
    abstract = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *model.image_shape), jnp.float32))
    expected = {k: v.shape for k, v in _flatten(abstract["params"]).items()}
    for key, shape in expected.items():
        if key not in flat:
            raise ValueError(f"{params_path!r}: missing key {key!r} (shape {shape}) for the architecture in {config_path!r}.")
        if flat[key].shape != shape:
            raise ValueError(f"{params_path!r}: key {key!r} has shape {flat[key].shape}, expected {shape}.")
    extra = sorted(set(flat) - set(expected))
    if extra:
        raise ValueError(f"{params_path!r}: unexpected key {extra[0]!r} for the architecture in {config_path!r}.")
    params: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = params
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = np.asarray(value, np.float32)
    return params, model, dict(config.get("info", {}))


def mnist_classifier_extractor(path: str) -> FeatureExtractor:
    """The classifier saved at ``path`` as a `FeatureExtractor`.

    ``features``: the ``[B, 128]`` penultimate activations; ``probs``: the softmax
    ``[B, 10]``; ``image_shape``: the trained shape (``(28, 28, 1)`` for MNIST);
    identity ``"mnist-classifier:" + params_digest(params)`` (plus ``":s<scale>"`` when the
    checkpoint stores a `feature_scale`, which multiplies the features). ``features(x)`` followed
    by ``probs(x)`` on the same ``jax.Array`` runs the network once.

    Args:
      path: a directory written by `save_classifier` (by default the training script's
        output, `jgen.metrics.features.DEFAULT_MNIST_CLASSIFIER`).
    """
    params, model, info = load_classifier(path)
    params = jax.device_put(params)
    scale = float(info.get("feature_scale", 1.0))
    if not scale > 0:
        raise ValueError(f"classifier at {path}: info.feature_scale must be positive, got {scale!r}; "
                         f"retrain with `{TRAIN_COMMAND}`.")
    network = jax.jit(model.apply)
    last: list = [None, None]  # (input, outputs) of the last concrete call

    def _run(images):
        if isinstance(images, jax.core.Tracer):  # inside the caller's jit: no host checks
            return network({"params": params}, images)
        if images is last[0]:
            return last[1]
        outputs = network({"params": params}, extractor.check_images(images))
        if isinstance(images, jax.Array):  # immutable, so safe to recognise by identity
            last[:] = [images, outputs]
        return outputs

    def features(images):
        return _run(images)[0] * scale

    def probs(images):
        return jax.nn.softmax(_run(images)[1], axis=-1)

    extractor = FeatureExtractor(name="mnist-classifier", identity="mnist-classifier:" + params_digest(params) + (f":s{scale:.6g}" if scale != 1.0 else ""),
                                 features=features, probs=probs, image_shape=tuple(model.image_shape))
    return extractor
