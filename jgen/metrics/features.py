"""Pluggable feature extractors for sample-quality metrics (FID, KID, IS, PR).

A feature extractor is a function from a batch of images to a batch of feature
vectors, plus (optionally) class probabilities for the Inception Score, plus an
*identity*: a string that changes whenever the network, its weights or its input
convention change. Reference statistics cached to disk store the identity and are
refused when it does not match the extractor in use, so an FID is never silently
computed against statistics from a different network.

Images enter every extractor in jgen's data convention: float arrays ``[B, H, W, C]``
with values in ``[0, 1]``. Each extractor resizes / normalises internally.

Built-in extractors (``load_extractor(spec)``):

- ``"pixels"``: flattened pixels (a transparent baseline and what the tests use).
- ``"mnist"`` or ``"mnist:PATH"``: jgen's own small MNIST classifier
  (`jgen.metrics.mnist_classifier`), trained by ``python
  experiments/metrics/train_mnist_classifier.py``; features are its penultimate layer,
  probabilities its softmax. ``PATH`` defaults to `DEFAULT_MNIST_CLASSIFIER`.
- ``"inception:PATH"``: Inception-v3 as used by the standard FID
  (`jgen.metrics.inception`), weights from a local ``.npz`` file the user supplies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_MNIST_CLASSIFIER = os.path.join(os.path.expanduser("~"), ".cache", "jgen", "mnist_classifier")


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """A named, identified map from images to features (and class probabilities).

    Attributes:
      name: short name for reports (``"pixels"``, ``"mnist-classifier"``, ``"inception-v3"``).
      identity: changes whenever the architecture, weights or input convention change
        (e.g. ``name + ":" + sha256 of the weights``); stored with cached statistics.
      features: ``images [B, H, W, C] in [0, 1] -> features [B, D]``.
      probs: ``images -> class probabilities [B, K]`` (for the Inception Score), or None.
      image_shape: the ``(H, W, C)`` the extractor accepts, or None for any shape.
    """

    name: str
    identity: str
    features: Callable[[jax.Array], jax.Array]
    probs: Callable[[jax.Array], jax.Array] | None = None
    image_shape: tuple[int, int, int] | None = None

    def check_images(self, images: Any) -> jax.Array:
        """Raises a clear error unless ``images`` is float ``[B, H, W, C]`` in [0, 1]."""
        x = jnp.asarray(images)
        if x.ndim != 4:
            raise ValueError(f"{self.name} features: expected images [B, H, W, C], got shape {x.shape}.")
        if self.image_shape is not None and tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"{self.name} features: expected images of shape [B, {', '.join(map(str, self.image_shape))}], "
                             f"got {x.shape}; this extractor was built for {self.image_shape} images.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{self.name} features: expected float images in [0, 1], got dtype {x.dtype}; "
                             "convert uint8 pixels with x / 255.")
        lo, hi = float(jnp.min(x)), float(jnp.max(x))
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{self.name} features: expected pixel values in [0, 1], got range [{lo:.3g}, {hi:.3g}]; "
                             "map [-1, 1] data with (x + 1) / 2 first.")
        return x


def params_digest(params: Any) -> str:
    """A sha256 (first 16 hex digits) over every leaf of a pytree, in tree order,
    including leaf shapes and dtypes: the weight part of an extractor identity."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        a = np.asarray(leaf)
        h.update(jax.tree_util.keystr(path).encode())
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def pixel_extractor() -> FeatureExtractor:
    """Flattened pixels as features (no class probabilities)."""
    return FeatureExtractor(name="pixels", identity="pixels:v1",
                            features=lambda x: jnp.reshape(x, (x.shape[0], -1)))


def load_extractor(spec: str) -> FeatureExtractor:
    """``"pixels"``, ``"mnist"``, ``"mnist:PATH"`` or ``"inception:PATH"`` -> extractor."""
    kind, _, path = spec.partition(":")
    if kind == "pixels" and not path:
        return pixel_extractor()
    if kind == "mnist":
        from jgen.metrics.mnist_classifier import mnist_classifier_extractor

        return mnist_classifier_extractor(path or DEFAULT_MNIST_CLASSIFIER)
    if kind == "inception":
        if not path:
            raise ValueError("feature extractor 'inception' needs the weights file: 'inception:/path/to/weights.npz' "
                             "(see jgen.metrics.inception for where to obtain and how to convert it).")
        from jgen.metrics.inception import inception_extractor

        return inception_extractor(path)
    raise ValueError(f"unknown feature extractor {spec!r}; use 'pixels', 'mnist', 'mnist:PATH' or 'inception:PATH'.")
