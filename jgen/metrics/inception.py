r"""Inception-v3 as used by the standard Fréchet Inception Distance (FID), in Flax Linen,
with its weights read from a local ``.npz`` file: the feature extractor behind
``load_extractor("inception:PATH")``.

The network is the one in pytorch-fid (Seitzer 2020), itself a port of the TensorFlow
graph ``classify_image_graph_def.pb`` (Inception-v3, 2015-12-05) that the reference FID
code (TTUR) and the original Inception Score code read their ``pool_3`` features and
``softmax`` from. It is torchvision's ``Inception3`` (Szegedy et al. 2016) with the
FID-specific blocks that reproduce TensorFlow's pooling:

- ``Mixed_5b..5d`` (``FIDInceptionA``), ``Mixed_6b..6e`` (``FIDInceptionC``) and
  ``Mixed_7b`` (``FIDInceptionE_1``): the pool branch is a 3x3 stride-1 average pool
  with ``count_include_pad=False`` (padded positions are not counted in the mean);
- ``Mixed_7c`` (``FIDInceptionE_2``): the pool branch is a 3x3 stride-1 *max* pool;
- every convolution is bias-free and followed by BatchNorm in inference mode
  (:math:`\epsilon = 10^{-3}`) and a ReLU;
- the 2048-d features are the spatial mean of ``Mixed_7c`` (TF's ``pool_3``); the
  classifier ``fc`` has 1008 outputs (the TF graph's 1,000 ImageNet classes plus 8
  unused ones), no auxiliary head.

Input convention (pytorch-fid's ``InceptionV3(resize_input=True,
normalize_input=True)``): images ``[B, H, W, C]`` in ``[0, 1]``; grayscale (C = 1) is
repeated to 3 channels; the image is resized to 299 x 299 by bilinear interpolation
*without* antialiasing and with half-pixel centres (PyTorch's ``F.interpolate(...,
mode="bilinear", align_corners=False)``), then mapped to ``[-1, 1]`` by ``2 x - 1``.

**Class probabilities for the Inception Score** are ``softmax(pool @ fc/kernel)`` *without*
the ``fc`` bias, as in the original IS code (``improved-gan/inception_score/model.py``
multiplies ``pool_3`` by the ``softmax/logits/MatMul`` weight only) and torch-fidelity's
``logits_unbiased``. `InceptionV3` returns both logits.

**Weights file format.** A NumPy ``.npz`` (``np.savez``) of float32 arrays under flat,
``/``-separated keys following the module tree, in NHWC / Flax layouts:

- ``<layer>/conv/kernel`` ``[kh, kw, in, out]`` for every ``BasicConv2d``, e.g.
  ``Conv2d_1a_3x3/conv/kernel`` ``[3, 3, 3, 32]``,
  ``Mixed_6b/branch7x7_2/conv/kernel`` ``[1, 7, 128, 128]``;
- ``<layer>/bn/scale``, ``<layer>/bn/bias``, ``<layer>/bn/mean``, ``<layer>/bn/var``
  ``[out]`` (PyTorch's ``bn.weight``, ``bn.bias``, ``bn.running_mean``,
  ``bn.running_var``);
- ``fc/kernel`` ``[2048, K]`` and ``fc/bias`` ``[K]`` (K = 1008 for the FID weights).

94 convolutions with their batch norms, and the classifier: 472 arrays holding
23,885,392 numbers for K = 1008, of which 23,850,960 are trainable parameters
(torchvision's 27,161,264 for ``inception_v3`` minus its 3,326,696-parameter auxiliary
head, plus 8 classes) and 34,432 are BatchNorm running means and variances.
`weight_shapes` lists every key and shape.

**Where to get the weights.** Nothing here downloads. Download pytorch-fid's checkpoint
``pt_inception-2015-12-05-6726825d.pth`` yourself from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
(the TF 2015-12-05 graph's weights in PyTorch naming), then convert it on a machine
with PyTorch::

    python experiments/metrics/convert_inception_weights.py \
        pt_inception-2015-12-05-6726825d.pth ~/.cache/jgen/inception_fid.npz

and name the extractor ``"inception:/path/inception_fid.npz"`` wherever an extractor
spec is taken (`jgen.metrics.features.load_extractor`). Only these weights give FID
and IS values comparable with published numbers. torchvision's
``inception_v3_google-0cc3c7bd.pth`` converts too (its ``AuxLogits`` are dropped and K =
1000), but it is a different network (retrained weights), so its FID is not the
standard one; the extractor identity differs accordingly. (Weights taken directly
from the TF graph would first need renaming into pytorch-fid's names; pytorch-fid's
checkpoint is exactly that conversion.)

Example::

    extractor = inception_extractor("/path/inception_fid.npz")
    feats = extractor.features(images)    # [B, 2048]
    probs = extractor.probs(images)       # [B, 1008], rows sum to 1

References:
  Szegedy, C., Vanhoucke, V., Ioffe, S., Shlens, J. & Wojna, Z. (2016). Rethinking the
    Inception Architecture for Computer Vision. CVPR. https://arxiv.org/abs/1512.00567
  Heusel, M., Ramsauer, H., Unterthiner, T., Nessler, B. & Hochreiter, S. (2017).
    GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium.
    NeurIPS. https://arxiv.org/abs/1706.08500 (code: https://github.com/bioinf-jku/TTUR)
  Salimans, T. et al. (2016). Improved Techniques for Training GANs. NeurIPS.
    https://arxiv.org/abs/1606.03498 (the Inception Score).
  Seitzer, M. (2020). pytorch-fid: FID Score for PyTorch.
    https://github.com/mseitzer/pytorch-fid (``src/pytorch_fid/inception.py``).
"""

from __future__ import annotations

import functools
import os
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.metrics.features import FeatureExtractor, params_digest

INPUT_SIZE = 299
MIN_INPUT_SIZE = 75  # the smallest input the stride/padding schedule accepts
NUM_FEATURES = 2048
FID_NUM_CLASSES = 1008
BN_EPSILON = 1e-3
_BN_STATS = ("mean", "var")  # stored in the "batch_stats" collection, the rest in "params"


class InceptionOutputs(NamedTuple):
    """Outputs of `InceptionV3`.

    Attributes:
      pool: ``[B, 2048]`` spatial mean of ``Mixed_7c`` (TF's ``pool_3``): FID features.
      logits: ``[B, K]`` ``pool @ fc/kernel + fc/bias``.
      logits_unbiased: ``[B, K]`` ``pool @ fc/kernel``: the original Inception Score's.
    """

    pool: jax.Array
    logits: jax.Array
    logits_unbiased: jax.Array


class BasicConv2d(nn.Module):
    """Bias-free convolution, inference-mode BatchNorm (eps 1e-3), ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        (ph, pw) = self.padding
        x = nn.Conv(self.features, self.kernel_size, strides=self.strides, padding=((ph, ph), (pw, pw)),
                    use_bias=False, precision=self.precision, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x):
    """3x3, stride 1, padding 1, padded positions not counted (``count_include_pad=False``)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class FIDInceptionA(nn.Module):
    """Mixed_5b..5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool(no pad count)-1x1."""

    pool_features: int
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 convolutions; avgpool branch without pad counting."""

    channels_7x7: int
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        c7 = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (``pool="avg"``, FIDInceptionE_1) and Mixed_7c (``pool="max"``,
    FIDInceptionE_2): expanded 1x3 / 3x1 branches; 320 + 768 + 768 + 192 = 2048 outputs."""

    pool: str = "avg"
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                              conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.pool == "avg":
            pooled = _avg_pool_3x3(x)
        else:  # FIDInceptionE_2: TF's graph max-pools here (a bug kept for compatibility)
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class _Classifier(nn.Module):
    """``fc``: returns ``(x @ kernel + bias, x @ kernel)``."""

    num_classes: int
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.num_classes))
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
        unbiased = jnp.matmul(x, kernel, precision=self.precision)
        return unbiased + bias[None, :], unbiased


class InceptionV3(nn.Module):
    """The FID Inception-v3 (pytorch-fid's ``fid_inception_v3``), without input resizing.

    Attributes:
      num_classes: outputs of ``fc`` (1008 for the FID weights).
      precision: matmul/conv precision; HIGHEST keeps float32 on accelerators.

    Call with ``x [B, H, W, 3]`` already in ``[-1, 1]`` (H, W >= 75; 299 for FID);
    `fid_preprocess` makes that from ``[0, 1]`` images. Returns `InceptionOutputs`.
    """

    num_classes: int = FID_NUM_CLASSES
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x) -> InceptionOutputs:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        p = {"precision": self.precision}
        x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = FIDInceptionA(32, name="Mixed_5b", **p)(x)
        x = FIDInceptionA(64, name="Mixed_5c", **p)(x)
        x = FIDInceptionA(64, name="Mixed_5d", **p)(x)
        x = InceptionB(name="Mixed_6a", **p)(x)
        x = FIDInceptionC(128, name="Mixed_6b", **p)(x)
        x = FIDInceptionC(160, name="Mixed_6c", **p)(x)
        x = FIDInceptionC(160, name="Mixed_6d", **p)(x)
        x = FIDInceptionC(192, name="Mixed_6e", **p)(x)
        x = InceptionD(name="Mixed_7a", **p)(x)
        x = FIDInceptionE("avg", name="Mixed_7b", **p)(x)
        x = FIDInceptionE("max", name="Mixed_7c", **p)(x)
        pool = jnp.mean(x, axis=(1, 2))
        logits, unbiased = _Classifier(self.num_classes, name="fc", **p)(pool)
        return InceptionOutputs(pool, logits, unbiased)


def fid_preprocess(images: jax.Array) -> jax.Array:
    """``[B, H, W, 1 or 3]`` in ``[0, 1]`` -> ``[B, 299, 299, 3]`` in ``[-1, 1]``.

    Grayscale is repeated to 3 channels; the resize is bilinear with half-pixel centres
    and no antialiasing, i.e. PyTorch's ``F.interpolate(x, (299, 299), mode="bilinear",
    align_corners=False)`` as in pytorch-fid; then ``2 x - 1``.
    """
    x = jnp.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"inception features: expected images [B, H, W, 1 or 3] in [0, 1], got shape {x.shape}.")
    if x.shape[-1] == 1:
        x = jnp.tile(x, (1, 1, 1, 3))
    x = x.astype(jnp.float32)
    if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
        x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), method="bilinear", antialias=False)
    return 2.0 * x - 1.0


# --------------------------------------------------------------------------- weights


def _is_stat(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in _BN_STATS and key.split("/")[-2] == "bn"


@functools.cache
def weight_shapes(num_classes: int = FID_NUM_CLASSES) -> dict[str, tuple[int, ...]]:
    """Every key of the weights file and its shape, derived from `InceptionV3` itself
    (by ``jax.eval_shape``: no computation), in module order."""
    model = InceptionV3(num_classes=num_classes)
    x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    return {k: tuple(v.shape) for k, v in flatten_variables(abstract).items()}


def flatten_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """``{"params": tree, "batch_stats": tree}`` -> ``{"a/b/conv/kernel": array, ...}``."""
    flat = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(dict(variables.get(collection, {})))[0]:
            flat["/".join(str(p.key) for p in path)] = leaf
    return flat


def unflatten_weights(flat: Mapping[str, Any]) -> dict[str, dict]:
    """Inverse of `flatten_variables`: BN ``mean``/``var`` go to ``"batch_stats"``."""
    variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for key, value in flat.items():
        node = variables["batch_stats" if _is_stat(key) else "params"]
        *parents, leaf = key.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return variables


def check_weights(flat: Mapping[str, Any], *, source: str = "weights") -> int:
    """Checks a flat weights dict against `weight_shapes`; returns the number of classes.

    Raises:
      KeyError: ``fc/kernel`` or another key is missing (named), or unexpected keys.
      ValueError: a key has the wrong shape (named, with expected and received shapes)
        or a non-floating dtype.
    """
    if "fc/kernel" not in flat:
        raise KeyError(f"{source}: missing key 'fc/kernel' (the [2048, K] classifier weight); "
                       "is this an Inception weights file written by convert_inception_weights.py?")
    fc = np.shape(flat["fc/kernel"])
    if len(fc) != 2 or fc[0] != NUM_FEATURES:
        raise ValueError(f"{source}: key 'fc/kernel' has shape {fc}; expected [{NUM_FEATURES}, K].")
    expected = weight_shapes(int(fc[1]))
    missing = [k for k in expected if k not in flat]
    if missing:
        raise KeyError(f"{source}: missing key {missing[0]!r} (shape {expected[missing[0]]})"
                       + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                       + "; convert the weights with experiments/metrics/convert_inception_weights.py.")
    extra = sorted(k for k in flat if k not in expected)
    if extra:
        raise KeyError(f"{source}: unexpected key {extra[0]!r}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
                       + "; this is not a jgen FID Inception-v3 weights file.")
    for key, shape in expected.items():
        value = flat[key]
        if tuple(np.shape(value)) != shape:
            raise ValueError(f"{source}: key {key!r} has shape {tuple(np.shape(value))}, expected {shape}.")
        if not np.issubdtype(np.asarray(value).dtype, np.floating):
            raise ValueError(f"{source}: key {key!r} has dtype {np.asarray(value).dtype}, expected floating point.")
    return int(fc[1])


def save_weights(path: str, weights: Mapping[str, Any]) -> None:
    """Writes flat weights (or a ``{"params", "batch_stats"}`` dict) as float32 ``.npz``
    after checking every key and shape."""
    flat = flatten_variables(weights) if "params" in weights else dict(weights)
    check_weights(flat, source=f"save_weights({path!r})")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})


def load_weights(path: str) -> dict[str, dict]:
    """Reads and checks an Inception weights ``.npz``.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` float32 trees for ``InceptionV3.apply``.

    Raises:
      FileNotFoundError: no file at ``path`` (the message says where to get one).
      ValueError: the file is not a readable ``.npz``, or a key has the wrong shape/dtype.
      KeyError: a key is missing or unexpected (named).
    """
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Inception weights not found at {path!r}. Download pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth and convert it with "
            "`python experiments/metrics/convert_inception_weights.py IN.pth OUT.npz` "
            "(see jgen.metrics.inception).")
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"could not read Inception weights {path!r} as a .npz file ({type(e).__name__}: {e}); "
                         "the file is corrupt or not in jgen's format — re-run the converter.") from e
    check_weights(flat, source=path)
    return unflatten_weights({k: np.asarray(v, np.float32) for k, v in flat.items()})


def random_weights(seed: int = 0, num_classes: int = FID_NUM_CLASSES) -> dict[str, np.ndarray]:
    """Randomly initialised flat weights in the file format (for tests and smoke runs).

    Kernels are He-normal (std ``sqrt(2 / fan_in)``), BN scales in [0.5, 1.5], biases and
    running means N(0, 0.1²), running variances in [0.5, 1.5], so activations stay O(1)
    through the 94 layers and every array is distinct from its default.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for key, shape in weight_shapes(num_classes).items():
        leaf = key.rsplit("/", 1)[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        elif leaf in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:  # bias, mean
            value = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        flat[key] = value
    return flat


def write_random_weights(path: str, seed: int = 0, num_classes: int = FID_NUM_CLASSES) -> None:
    """`random_weights` saved to ``path`` in the ``.npz`` format."""
    save_weights(path, random_weights(seed, num_classes))


# --------------------------------------------------------------------------- extractor


def inception_extractor(path: str) -> FeatureExtractor:
    """The FID Inception-v3 with weights from ``path`` as a `FeatureExtractor`.

    ``features``: ``[B, H, W, 1 or 3]`` in ``[0, 1]`` -> ``pool_3`` ``[B, 2048]``;
    ``probs``: ``softmax(pool @ fc/kernel)`` ``[B, K]`` (no bias, as the original IS).
    Any image size is accepted (resized to 299 x 299). The network is compiled once
    per batch size; call with batches of a fixed size (tens of images). ``features(x)``
    followed by ``probs(x)`` on the same ``jax.Array`` runs the network once.
    The identity is ``"inception-v3-fid:" + params_digest(variables)``.

    Args:
      path: weights ``.npz`` (see the module docstring for where to get and how to
        convert them).
    """
    variables = load_weights(path)
    model = InceptionV3(num_classes=variables["params"]["fc"]["kernel"].shape[1])
    variables = jax.device_put(variables)

    # Two compiled pieces, so the network is compiled once per batch size whatever the
    # input size or channel count (only the cheap resize is recompiled).
    preprocess = jax.jit(fid_preprocess)
    network = jax.jit(model.apply)

    def forward(variables, x):
        return network(variables, preprocess(x))

    last: list = [None, None]  # (input, outputs) of the last concrete call

    def _run(images):
        if isinstance(images, jax.core.Tracer):  # inside the caller's jit: no host checks
            return forward(variables, images)
        if images is last[0]:  # features(x) then probs(x): one forward pass
            return last[1]
        outputs = forward(variables, extractor.check_images(images))
        if isinstance(images, jax.Array):  # immutable, so safe to recognise by identity
            last[:] = [images, outputs]
        return outputs

    def features(images):
        return _run(images).pool

    def probs(images):
        return jax.nn.softmax(_run(images).logits_unbiased, axis=-1)

    extractor = FeatureExtractor(name="inception-v3", identity="inception-v3-fid:" + params_digest(variables),
                                 features=features, probs=probs, image_shape=None)
    return extractor
