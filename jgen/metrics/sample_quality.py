r"""Sample quality of a model (or of one dataset split) against a dataset: FID, KID,
Inception Score and precision/recall, computed from features of a pluggable extractor
(`jgen.metrics.features`), streamed batch by batch, with cached reference statistics.

**Streaming.** Generated samples are drawn `batch_size` at a time and pushed through
the extractor; only the running moments (`jgen.metrics.streaming.moments_*`), the
per-split class-probability sums (`class_probs_*`) and, for KID and precision/recall,
the feature rows of the first `max_rows` samples are kept, so the pixels of all
samples never sit in memory at once. A final partial batch is padded to the full
batch (one compiled shape) and the padding is masked out.

**Reference statistics.** The features of a dataset split are summarised once and
cached in an ``.npz``: the mean and unbiased covariance of *all* examples (for FID),
a fixed-seed subsample of up to `max_rows` feature rows (for KID and
precision/recall, which need rows rather than moments) and a metadata record with
the extractor's name and identity, the dataset, split, preprocessing, number of
examples and subsample size. Loading a cache whose metadata differ from what is
asked (a different extractor identity in particular) raises an error naming both
values and how to fix it; statistics from another network are never used silently.
The default location is ``$JGEN_REFSTATS_DIR`` or ``~/.cache/jgen/refstats/``, file
``<dataset>-<split>-<preprocess>-<identity>.npz``.

**Pixel conventions.** Every extractor takes images in [0, 1]. Samples: every
family's `ModelSpec.sample` already returns [0, 1] images whatever its
preprocessing (``symmetric`` families map :math:`(x + 1)/2` and clip; 8-bit
autoregressive models divide by 255; binarized models return {0, 1} draws or, for
VAE/VQ-VAE decoders, Bernoulli means), which is also what ``jgen sample`` writes to
PNG; `samples_to_images` checks this rather than rescaling. Real images are mapped
by `reference_preprocess` into the same convention: :math:`x / 255` for
``unit_interval``, ``symmetric`` and ``dequantize_uniform`` data (dequantization
noise of at most 1/256 is left out so the reference is deterministic), and the
fixed binarisation ``binarize_static`` (Bernoulli(x / 255) with a per-example
seed) for binarized data, whose model distribution is over {0, 1} images. (A
VAE's mean images are therefore compared with binary references; draw binary
samples if that matters for your comparison.)

**Which split.** `jgen eval --metrics` compares samples with the *training* split by
default (the usual FID convention: the largest set, and what the model was fit
to). The "floor" of a metric, the value a perfect model that does not memorise
would get with the same N, is that of the test split against the training split:
`dataset_vs_reference` (``jgen eval-data``).

**Reported values.** FID is biased upwards for small N, so compare values at equal
N only. KID carries the standard error of its subset average. IS is the mean and
standard deviation over 10 contiguous splits (the reference convention), plus the
IS of all samples as one split. Precision/recall/density/coverage use equally many
real and generated rows (:math:`\min` of the two kept sets; a fixed-seed random
subset of the larger), because k-NN radii depend on the set size.

References:
  Heusel, M. et al. (2017). GANs Trained by a Two Time-Scale Update Rule Converge to
    a Local Nash Equilibrium. NeurIPS (FID). https://arxiv.org/abs/1706.08500
  Bińkowski, M. et al. (2018). Demystifying MMD GANs. ICLR (KID).
    https://arxiv.org/abs/1801.01401
  Salimans, T. et al. (2016). Improved Techniques for Training GANs. NeurIPS (IS).
    https://arxiv.org/abs/1606.03498
  Kynkäänniemi, T. et al. (2019). Improved Precision and Recall Metric for Assessing
    Generative Models. NeurIPS. https://arxiv.org/abs/1904.06991
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgen.metrics.features import FeatureExtractor, load_extractor
from jgen.metrics.frechet import frechet_distance
from jgen.metrics.kid import kernel_inception_distance
from jgen.metrics.precision_recall import prdc
from jgen.metrics.streaming import (
    class_probs_finalize,
    class_probs_init,
    class_probs_update,
    moments_finalize,
    moments_init,
    moments_update,
)

METRICS = ("fid", "kid", "is", "pr")
CACHE_FORMAT = 1
DEFAULT_MAX_ROWS = 10_000
DEFAULT_BATCH_SIZE = 500
IS_SPLITS = 10
# Metadata that must match between a cache and the request (in this order in errors).
_CHECKED_KEYS = ("extractor_identity", "dataset", "split", "preprocess", "num_examples", "max_rows", "subsample_seed")


# --------------------------------------------------------------------------- helpers


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"fid,kid"`` (or a sequence) -> ``("fid", "kid")``, validated, duplicates dropped.

    Raises:
      ValueError: for no names or a name outside `METRICS`.
    """
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"no sample-quality metrics given ({spec!r}); choose from {','.join(METRICS)}.")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown sample-quality metrics {unknown}; choose from {','.join(METRICS)} "
                         "(e.g. --metrics fid,kid).")
    return tuple(dict.fromkeys(names))


def default_feature_spec(image_shape: Sequence[int], dataset: str = "") -> str:
    """The default extractor spec: ``"mnist"`` for 28x28x1 images; otherwise there is
    no sensible default and a clear error asks for ``--features``."""
    if tuple(image_shape) == (28, 28, 1):
        return "mnist"
    raise ValueError(
        f"no default feature extractor for {dataset or 'this dataset'}'s images of shape {tuple(image_shape)}; "
        "pass --features: 'pixels' (flattened pixels, any shape), 'inception:/path/weights.npz' (RGB-like "
        "images), or 'mnist[:PATH]' (28x28x1 only).")


def reference_preprocess(preprocess: str) -> str:
    """How real images of data preprocessed by `preprocess` are put into [0, 1] for
    comparison with samples: ``"binarize_static"`` for binarized data, else
    ``"unit_interval"`` (see the module docstring)."""
    from jgen.data import PREPROCESSORS

    if preprocess not in PREPROCESSORS:
        raise ValueError(f"unknown preprocessing {preprocess!r}; valid names are {sorted(PREPROCESSORS)}.")
    return "binarize_static" if preprocess.startswith("binarize") else "unit_interval"


def real_images(images_uint8: Any, index: Any, preprocess: str) -> jax.Array:
    """Raw uint8 images [B, H, W, C] -> float32 [0, 1] images in the reference
    convention `preprocess` (``"unit_interval"`` or ``"binarize_static"``; `index`
    [B] are the examples' dataset indices, which fix the static binarisation)."""
    from jgen.data import binarize_static, to_unit_interval

    x = to_unit_interval(jnp.asarray(images_uint8))
    if preprocess == "unit_interval":
        return x
    if preprocess == "binarize_static":
        return binarize_static(x, jnp.asarray(index, jnp.int32))
    raise ValueError(f"reference images use 'unit_interval' or 'binarize_static'; got {preprocess!r} "
                     "(map a config's preprocessing with reference_preprocess first).")


_real_images_jit = jax.jit(real_images, static_argnums=2)


def samples_to_images(samples: Any, preprocess: str = "") -> np.ndarray:
    """Model samples -> float32 [B, H, W, C] images in [0, 1] (clipping round-off).

    `ModelSpec.sample` returns [0, 1] images for every preprocessing, so nothing is
    rescaled; values clearly outside [0, 1] mean a family broke that contract and are
    refused rather than guessed at.

    Raises:
      ValueError: for a non-4-D array or values outside [-1e-3, 1 + 1e-3].
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"samples must be images [B, H, W, C]; got shape {x.shape}.")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"samples must be [0, 1] images (the ModelSpec.sample contract, for preprocessing "
            f"{preprocess or 'any'!r}); got values in [{lo:.3g}, {hi:.3g}]. A family that returns "
            "[-1, 1] data must map it with (x + 1) / 2 inside its sample function.")
    return np.clip(x, 0.0, 1.0)


def default_reference_path(dataset: str, split: str, preprocess: str, identity: str, *,
                           cache_dir: str | None = None) -> str:
    """``<cache_dir>/<dataset>-<split>-<preprocess>-<identity>.npz`` with unsafe
    characters replaced; `cache_dir` defaults to ``$JGEN_REFSTATS_DIR`` or
    ``~/.cache/jgen/refstats``."""
    cache_dir = cache_dir or os.environ.get("JGEN_REFSTATS_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "jgen", "refstats")
    name = "-".join(re.sub(r"[^A-Za-z0-9._]+", "_", s) for s in (dataset, split, preprocess, identity))
    return os.path.join(cache_dir, name + ".npz")


# ------------------------------------------------------------------- feature streams


class FeatureSummary(NamedTuple):
    """What a stream of images leaves behind.

    Attributes:
      count: number of images seen.
      mu, sigma: float64 mean [D] and unbiased covariance [D, D] of all features
        (None when moments were not requested).
      rows: float32 [K, D] kept feature rows, in stream order (empty if none kept).
      is_splits: [S] Inception Score of each contiguous split (None without probs).
      is_all: Inception Score of all images as one split (None without probs).
    """

    count: int
    mu: np.ndarray | None
    sigma: np.ndarray | None
    rows: np.ndarray
    is_splits: np.ndarray | None
    is_all: float | None


@jax.jit
def _moments_step(state, feats, mask):
    return moments_update(state, feats.astype(state.m2.dtype), mask=mask)


@jax.jit
def _probs_step(states, probs, masks):
    """Updates S per-split class-probability states (stacked) with split masks [S, B]."""
    probs = probs.astype(states.sum_p.dtype)
    return jax.vmap(lambda st, m: class_probs_update(st, probs, mask=m))(states, masks)


@jax.jit
def _finalize(m_state, p_state):
    """Mean, covariance, per-split IS and all-samples IS (None for absent states)."""
    mu = sigma = is_splits = is_all = None
    if m_state is not None:
        mu, sigma = moments_finalize(m_state)
    if p_state is not None:
        is_splits = jax.vmap(class_probs_finalize)(p_state)
        is_all = class_probs_finalize(jax.tree.map(lambda a: jnp.sum(a, axis=0), p_state))
    return mu, sigma, is_splits, is_all


def _zeros_like_state(make):
    """An initial state built on the host (no per-op device compiles)."""
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(make))


def _host_images(extractor: FeatureExtractor, images) -> np.ndarray:
    """Host float32 images, checked in NumPy; anything off is handed to the extractor's
    own `check_images`, which raises its message (shape, dtype or range)."""
    x = np.asarray(images)
    shape_ok = x.ndim == 4 and (extractor.image_shape is None or tuple(x.shape[1:]) == tuple(extractor.image_shape))
    if not (shape_ok and np.issubdtype(x.dtype, np.floating)) or x.min() < -1e-3 or x.max() > 1 + 1e-3:
        extractor.check_images(x)
    return x.astype(np.float32, copy=False)


def stream_features(
    extractor: FeatureExtractor,
    batches: Iterable[jax.Array | np.ndarray],
    *,
    total: int,
    moments: bool = True,
    probs: bool = False,
    keep: np.ndarray | int = 0,
    num_splits: int = IS_SPLITS,
) -> FeatureSummary:
    """Pushes batches of [0, 1] images through `extractor`, keeping only summaries.

    Batches arrive in order, all of the same size except possibly the last (which
    is padded to the first batch's size and masked, so the extractor compiles once).

    Args:
      extractor: the `FeatureExtractor`.
      batches: iterable of float images [B, H, W, C] in [0, 1]; `total` rows in all.
      total: the number of images the stream will yield (fixes the IS splits).
      moments: accumulate the mean and covariance (FID).
      probs: accumulate per-split class probabilities (IS); needs `extractor.probs`.
      keep: which rows to keep: an int k (the first k rows) or sorted global indices.
      num_splits: IS splits (contiguous, of sizes differing by at most one).

    Returns:
      A `FeatureSummary`.

    Raises:
      ValueError: for IS with an extractor without class probabilities, or a stream
        whose length is not `total`.
    """
    if probs and extractor.probs is None:
        raise ValueError(f"the Inception Score needs class probabilities, and feature extractor "
                         f"{extractor.name!r} has none; use --features mnist or inception:PATH, or drop 'is'.")
    keep_idx = np.arange(min(int(keep), total)) if np.ndim(keep) == 0 else np.asarray(keep, np.int64)
    num_splits = max(1, min(num_splits, total))
    features_fn = jax.jit(extractor.features)
    probs_fn = jax.jit(extractor.probs) if probs else None
    m_state = p_state = None
    rows: list[np.ndarray] = []
    seen, width = 0, None
    for images in batches:
        x = _host_images(extractor, images)
        n = x.shape[0]
        width = n if width is None else width
        if n > width:
            raise ValueError(f"stream_features: batch of {n} rows after batches of {width}; only the last may be smaller.")
        if n < width:  # pad the last batch (one compiled shape) and mask the padding
            x = np.concatenate([x, np.zeros((width - n, *x.shape[1:]), x.dtype)], axis=0)
        mask = np.arange(width) < n
        gidx = seen + np.arange(n)
        if moments or len(keep_idx):
            f = features_fn(x)
            if moments:
                if m_state is None:
                    m_state = _zeros_like_state(lambda d=f.shape[1]: moments_init(d))
                m_state = _moments_step(m_state, f, mask)
            sel = np.searchsorted(gidx, keep_idx[(keep_idx >= seen) & (keep_idx < seen + n)])
            if len(sel):
                rows.append(np.asarray(f)[sel].astype(np.float32))
        if probs:
            p = probs_fn(x)
            if p_state is None:
                p_state = _zeros_like_state(
                    lambda k=p.shape[1]: jax.vmap(lambda _: class_probs_init(k))(jnp.arange(num_splits)))
            split = np.concatenate([(gidx * num_splits) // total, np.full(width - n, -1)])
            p_state = _probs_step(p_state, p, split[None, :] == np.arange(num_splits)[:, None])
        seen += n
    if seen != total:
        raise ValueError(f"stream_features: the stream yielded {seen} images, but total={total} was announced.")
    if moments and seen < 2:
        raise ValueError(f"stream_features: the covariance needs at least 2 images; the stream had {seen}.")
    mu, sigma, is_splits, is_all = jax.tree.map(lambda a: np.asarray(a, np.float64), _finalize(m_state, p_state))
    is_all = None if is_all is None else float(is_all)
    dim = None if m_state is None else m_state.shift.shape[0]
    out_rows = np.concatenate(rows) if rows else np.zeros((0, dim or 0), np.float32)
    return FeatureSummary(seen, mu, sigma, out_rows, is_splits, is_all)


def dataset_batches(source, preprocess: str, *, batch_size: int, num_examples: int = 0) -> Iterator[jax.Array]:
    """Yields [0, 1] images of the first `num_examples` (0: all) examples of `source`,
    in order, `batch_size` at a time, in the reference convention `preprocess`."""
    from jgen.data import gather

    n = len(source) if not num_examples else min(int(num_examples), len(source))
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        padded = np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])])  # one compiled shape
        b = gather(source, padded)
        yield np.asarray(_real_images_jit(b["image"], b["index"], preprocess))[: len(idx)]


def sample_batches(sample_fn: Callable, params, num: int, *, batch_size: int, seed: int = 0,
                   num_classes: int = 0, label: int | None = None, preprocess: str = "",
                   conditions: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yields `num` samples of `sample_fn(params, key, n, labels)` (a `ModelSpec.sample`)
    as [0, 1] images, `batch_size` at a time (batch i uses ``fold_in(PRNGKey(seed), i)``;
    the last batch is drawn full-size and truncated, so the sampler compiles once).

    A class-conditional model gets labels cycling through its classes over the whole
    stream (balanced classes), or `label` for every sample. Other conditional models
    get `conditions` (raw conditions [M, ...], e.g. the test split's captions), cycled
    over the stream.

    For models of binarized data (`preprocess` ``binarize_*``) the samples are binary
    draws: pixel p becomes 1 where ``uniform(fold_in(batch_key, 1)) < p``. A model's
    distribution over binary images is what the binarized reference holds, while
    families like the VAE return Bernoulli *means* from `ModelSpec.sample` (the usual
    picture); scoring grey means against binary images would measure the picture
    convention, not the model. Samples that are already binary (autoregressive
    models) pass through unchanged.
    """
    sample = jax.jit(sample_fn, static_argnums=2)
    base = jax.random.PRNGKey(seed)
    for i, start in enumerate(range(0, num, batch_size)):
        labels = None
        if label is not None:
            labels = np.full((batch_size,), int(label), np.int32)
        elif conditions is not None:
            labels = np.asarray(conditions)[(start + np.arange(batch_size)) % len(conditions)]
        elif num_classes:
            labels = ((start + np.arange(batch_size)) % num_classes).astype(np.int32)
        key = jax.random.fold_in(base, i)
        out = sample(params, key, batch_size, labels)
        out = np.asarray(out if out.is_fully_addressable else out.addressable_data(0))  # multi-host: replicated
        images = samples_to_images(out, preprocess)
        if preprocess.startswith("binarize"):
            u = np.asarray(jax.random.uniform(jax.random.fold_in(key, 1), images.shape))
            images = (u < images).astype(np.float32)
        yield images[: min(batch_size, num - start)]


# -------------------------------------------------------------- reference statistics


class ReferenceStats(NamedTuple):
    """Cached statistics of a dataset split's features.

    Attributes:
      mu: float64 [D] mean of all examples' features.
      sigma: float64 [D, D] their unbiased covariance.
      features: float32 [K, D] the features of a fixed-seed subsample of K examples
        (in dataset order), for KID and precision/recall.
      meta: dict with format, extractor_name, extractor_identity, dataset, split,
        preprocess, num_examples (examples summarised), max_rows, subsample_seed,
        num_feature_rows.
    """

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    meta: dict


def subsample_indices(num_examples: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted indices of a fixed-seed subsample of min(max_rows, N) of N examples."""
    if max_rows >= num_examples:
        return np.arange(num_examples)
    return np.sort(np.random.default_rng(seed).choice(num_examples, max_rows, replace=False))


def compute_reference_stats(extractor: FeatureExtractor, source, *, dataset: str, split: str, preprocess: str,
                            num_examples: int = 0, max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0,
                            batch_size: int = DEFAULT_BATCH_SIZE) -> ReferenceStats:
    """Streams a split (its first `num_examples`; 0 = all) through the extractor.

    Args:
      extractor: the `FeatureExtractor`.
      source: the split's random-access source (``jgen.data.get_source``).
      dataset, split: names recorded in the metadata.
      preprocess: reference convention, ``"unit_interval"`` or ``"binarize_static"``.
      num_examples: 0 for the whole split.
      max_rows: size of the kept feature subsample.
      seed: the subsample's seed.
      batch_size: images per extractor call.

    Returns:
      A `ReferenceStats`.
    """
    n = len(source) if not num_examples else min(int(num_examples), len(source))
    keep = subsample_indices(n, int(max_rows), int(seed))
    s = stream_features(extractor, dataset_batches(source, preprocess, batch_size=batch_size, num_examples=n),
                        total=n, keep=keep)
    meta = {"format": CACHE_FORMAT, "extractor_name": extractor.name, "extractor_identity": extractor.identity,
            "dataset": dataset, "split": split, "preprocess": preprocess, "num_examples": int(n),
            "max_rows": int(max_rows), "subsample_seed": int(seed), "num_feature_rows": len(s.rows)}
    return ReferenceStats(s.mu, s.sigma, s.rows, meta)


def save_reference_stats(path: str, stats: ReferenceStats) -> str:
    """Writes `stats` to `path` (.npz; atomically: a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, mu=stats.mu, sigma=stats.sigma, features=stats.features, meta=np.array(json.dumps(stats.meta)))
    os.replace(tmp, path)
    return path


def load_reference_stats(path: str, *, expect: dict | None = None) -> ReferenceStats:
    """Reads reference statistics, refusing them when their metadata differ from `expect`.

    Args:
      path: an .npz written by `save_reference_stats`.
      expect: metadata the statistics must have (any of extractor_identity, dataset,
        split, preprocess, num_examples, max_rows, subsample_seed); None: no check.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a file that is not a jgen reference-statistics file, or whose
        metadata differ from `expect`; the message names both values and the fix.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no reference statistics at {path}.")
    with np.load(path, allow_pickle=False) as f:
        if not {"mu", "sigma", "features", "meta"} <= set(f.files):
            raise ValueError(f"{path} is not a jgen reference-statistics file (it holds {sorted(f.files)}); "
                             "delete it or pass another --reference-stats.")
        stats = ReferenceStats(f["mu"], f["sigma"], f["features"], json.loads(str(f["meta"])))
    for key in _CHECKED_KEYS:
        if expect is None or key not in expect or stats.meta.get(key) == expect[key]:
            continue
        if key == "extractor_identity":
            raise ValueError(
                f"reference statistics {path} were computed with feature extractor "
                f"{stats.meta.get('extractor_name')!r} of identity {stats.meta.get(key)!r}, but the extractor in "
                f"use has identity {expect[key]!r}. Delete the file to recompute them with this extractor, or pass "
                f"the matching --features (or another --reference-stats file).")
        raise ValueError(
            f"reference statistics {path} have {key}={stats.meta.get(key)!r}, but {key}={expect[key]!r} was asked "
            "for. Delete the file to recompute them, or pass a --reference-stats path of its own for this setting.")
    return stats


def reference_stats(extractor: FeatureExtractor, *, dataset: str, split: str, preprocess: str,
                    path: str | None = None, source=None, data_dir: str | None = None, num_examples: int = 0,
                    max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                    write: bool = True) -> tuple[ReferenceStats, str, bool]:
    """The cached reference statistics for (extractor, dataset, split, preprocess),
    computed and saved on first use.

    Args:
      extractor, dataset, split, preprocess, num_examples, max_rows, seed,
        batch_size: as in `compute_reference_stats`.
      path: the cache file (default `default_reference_path(...)`).
      source: the split's source (default ``get_source(dataset, split, data_dir=...)``).
      data_dir: TFDS data_dir.
      write: save freshly computed statistics (False on non-chief processes).

    Returns:
      `(stats, path, from_cache)`.

    Raises:
      ValueError: a cache whose identity or setting differs (see
        `load_reference_stats`).
    """
    path = path or default_reference_path(dataset, split, preprocess, extractor.identity)
    expect = {"extractor_identity": extractor.identity, "dataset": dataset, "split": split,
              "preprocess": preprocess, "max_rows": int(max_rows), "subsample_seed": int(seed)}
    if source is None:
        from jgen.data import get_source

        source = get_source(dataset, split, data_dir=data_dir)
    expect["num_examples"] = len(source) if not num_examples else min(int(num_examples), len(source))
    if os.path.exists(path):
        return load_reference_stats(path, expect=expect), path, True
    stats = compute_reference_stats(extractor, source, dataset=dataset, split=split, preprocess=preprocess,
                                    num_examples=num_examples, max_rows=max_rows, seed=seed, batch_size=batch_size)
    if write:
        save_reference_stats(path, stats)
    return stats, path, False


# ---------------------------------------------------------------------------- metrics


_kid = jax.jit(kernel_inception_distance, static_argnames=("num_subsets", "subset_size"))
_prdc = jax.jit(prdc, static_argnames=("k", "block_size"))


def compare(generated: FeatureSummary, reference: ReferenceStats, metrics: Sequence[str], *, seed: int = 0,
            kid_subsets: int = 100, kid_subset_size: int = 1000, pr_k: int = 3) -> dict:
    """The requested metrics of a generated `FeatureSummary` against reference statistics.

    Returns:
      ``{"fid": {"value"}, "kid": {"value", "stderr", "num_subsets", "subset_size"},
      "is": {"value", "std", "num_splits", "one_split"}, "pr": {"precision", "recall",
      "density", "coverage", "k", "num_rows"}}`` for the metrics asked for.
    """
    out: dict[str, Any] = {}
    metrics = parse_metrics(metrics)
    if "fid" in metrics:
        out["fid"] = {"value": frechet_distance(reference.mu, reference.sigma, generated.mu, generated.sigma)}
    real, fake = np.asarray(reference.features), np.asarray(generated.rows)
    if "kid" in metrics:
        size = min(int(kid_subset_size), len(real), len(fake))
        kid, se = _kid(jax.random.PRNGKey(seed), real, fake, num_subsets=int(kid_subsets), subset_size=size)
        out["kid"] = {"value": float(kid), "stderr": float(se), "num_subsets": int(kid_subsets), "subset_size": size}
    if "is" in metrics:
        s = generated.is_splits
        out["is"] = {"value": float(np.mean(s)), "std": float(np.std(s)), "num_splits": len(s),
                     "one_split": generated.is_all}
    if "pr" in metrics:
        n = min(len(real), len(fake))
        r = _prdc(_random_rows(real, n, seed), _random_rows(fake, n, seed + 1), k=int(pr_k))
        out["pr"] = {"precision": float(r.precision), "recall": float(r.recall), "density": float(r.density),
                     "coverage": float(r.coverage), "k": int(pr_k), "num_rows": int(n)}
    return out


def _random_rows(rows: jax.Array, n: int, seed: int) -> jax.Array:
    """`n` of the rows, a fixed-seed random subset when there are more (kept rows may
    be in dataset order, which need not be random)."""
    if len(rows) <= n:
        return rows
    return rows[np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))]


def _report(extractor, reference, path, from_cache, n, metrics, values) -> dict:
    ref = {k: reference.meta[k] for k in ("dataset", "split", "preprocess", "num_examples", "num_feature_rows")}
    return {"features": {"name": extractor.name, "identity": extractor.identity}, "num_samples": int(n),
            "metrics": list(metrics), "reference": {**ref, "path": path, "from_cache": from_cache}, **values}


def evaluate_samples(sample_fn: Callable, params, extractor: FeatureExtractor, reference: ReferenceStats, *,
                     metrics: Sequence[str], num_samples: int, batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
                     num_classes: int = 0, label: int | None = None, preprocess: str = "",
                     max_rows: int = DEFAULT_MAX_ROWS, conditions: np.ndarray | None = None) -> dict:
    """Sample-quality metrics of `num_samples` draws of a `ModelSpec.sample` function.

    Samples are streamed (`sample_batches` -> `stream_features`); only the first
    `max_rows` samples' feature rows are kept (for KID and PR).

    Returns:
      `compare(...)`'s dict.
    """
    metrics = parse_metrics(metrics)
    if num_samples < 2:
        raise ValueError(f"--num-samples must be at least 2 (FID needs a covariance); got {num_samples}.")
    need_rows = bool({"kid", "pr"} & set(metrics))
    batches = sample_batches(sample_fn, params, num_samples, batch_size=min(batch_size, num_samples), seed=seed,
                             num_classes=num_classes, label=label, preprocess=preprocess, conditions=conditions)
    gen = stream_features(extractor, batches, total=num_samples, moments="fid" in metrics, probs="is" in metrics,
                          keep=max_rows if need_rows else 0)
    return compare(gen, reference, metrics, seed=seed)


def run_sample_quality(run, state, *, metrics: Sequence[str], num_samples: int, features: str | None = None,
                       reference_split: str | None = None, reference_path: str | None = None,
                       batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, label: int | None = None,
                       max_rows: int = DEFAULT_MAX_ROWS, extractor: FeatureExtractor | None = None) -> dict:
    """`jgen eval --metrics`: sample quality of a restored run (`jgen.train.loop`).

    Args:
      run, state: from `jgen.train.loop.restore_for_inference`.
      metrics: names from `METRICS`.
      num_samples: N samples drawn (FID depends on N: compare at equal N).
      features: extractor spec (`load_extractor`); default `default_feature_spec`.
      reference_split: default the config's ``data.train_split``.
      reference_path: the cache file (default `default_reference_path`).
      batch_size: samples per sampler / extractor call.
      seed: sampling seed (also the KID subsets').
      label: sample one class of a class-conditional model.
      max_rows: feature rows kept for KID/PR, on both sides.
      extractor: an extractor object instead of `features` (tests, custom networks).

    Returns:
      ``{"features", "num_samples", "metrics", "reference", <metric>: ...}``.
    """
    from jgen.train.loop import eval_params

    metrics = parse_metrics(metrics)
    config = run.config
    dataset = config.data.name
    if extractor is None:
        extractor = load_extractor(features or default_feature_spec(run.info.image_shape, dataset))
    split = reference_split or config.data.train_split
    preprocess = reference_preprocess(config.data.eval_preprocess)
    reference, path, cached = reference_stats(
        extractor, dataset=dataset, split=split, preprocess=preprocess, path=reference_path,
        data_dir=config.data.get("data_dir") or None, max_rows=max_rows, batch_size=batch_size,
        write=jax.process_index() == 0)
    conditions = None
    cond = getattr(run.spec, "condition", None)
    if cond is not None and cond.kind != "label":  # captions, vectors, measurements: the eval split's, in turn
        from jgen.train.loop import data_conditions

        n_eval = int(run.info.num_examples.get(config.data.eval_split, num_samples) or num_samples)
        conditions = data_conditions(run, min(num_samples, n_eval), seed=seed)
    values = evaluate_samples(run.spec.sample, eval_params(state, config), extractor, reference, metrics=metrics,
                              num_samples=num_samples, batch_size=batch_size, seed=seed,
                              num_classes=run.spec.num_classes, label=label,
                              preprocess=config.data.eval_preprocess, max_rows=max_rows, conditions=conditions)
    return _report(extractor, reference, path, cached, num_samples, metrics, values)


def dataset_vs_reference(dataset: str, split: str, reference_split: str, *, metrics: Sequence[str],
                         features: str | FeatureExtractor, preprocess: str = "unit_interval",
                         num_examples: int = 0, reference_path: str | None = None, data_dir: str | None = None,
                         batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0,
                         max_rows: int = DEFAULT_MAX_ROWS) -> dict:
    """The metrics of a dataset split against another (the "floor" of a metric:
    e.g. MNIST test vs train), computed exactly as for model samples, with the
    examples of `split` in place of samples.

    Args:
      dataset: e.g. "mnist" or "digits".
      split: the split treated as samples (its first `num_examples`; 0 = all).
      reference_split: the reference split (cached as in `reference_stats`).
      metrics: names from `METRICS`.
      features: an extractor spec or `FeatureExtractor`.
      preprocess: a data preprocessing name (mapped by `reference_preprocess`) or
        a reference convention; both splits use it.
      reference_path, data_dir, batch_size, seed, max_rows: as in `run_sample_quality`.

    Returns:
      The same dict as `run_sample_quality` (``num_samples`` = examples of `split`).

    Example:
      >>> dataset_vs_reference("mnist", "test", "train", metrics="fid,kid", features="mnist")
    """
    from jgen.data import get_source

    metrics = parse_metrics(metrics)
    extractor = load_extractor(features) if isinstance(features, str) else features
    preprocess = reference_preprocess(preprocess)
    reference, path, cached = reference_stats(
        extractor, dataset=dataset, split=reference_split, preprocess=preprocess, path=reference_path,
        data_dir=data_dir, max_rows=max_rows, batch_size=batch_size, seed=seed)
    source = get_source(dataset, split, data_dir=data_dir)
    n = len(source) if not num_examples else min(int(num_examples), len(source))
    if n < 2:
        raise ValueError(f"split {split!r} of {dataset!r} has {n} examples; at least 2 are needed.")
    need_rows = bool({"kid", "pr"} & set(metrics))
    s = stream_features(extractor, dataset_batches(source, preprocess, batch_size=batch_size, num_examples=n),
                        total=n, moments="fid" in metrics, probs="is" in metrics,
                        keep=subsample_indices(n, max_rows, seed + 1) if need_rows else 0)
    values = compare(s, reference, metrics, seed=seed)
    report = _report(extractor, reference, path, cached, n, metrics, values)
    report["samples"] = {"dataset": dataset, "split": split, "preprocess": preprocess}
    return report
