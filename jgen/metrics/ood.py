r"""Out-of-distribution (OOD) detection with a trained likelihood model: per-example
NLL scores, the typicality test, rank-based AUROC, and the standard OOD test sets.

**Scores.** A model with per-example NLL estimates (every family whose `ModelSpec`
has NLL estimators: VAE, VQ-VAE, flows, autoregressive, diffusion) scores an input
:math:`x` by

- *likelihood*: :math:`s(x) = -\log p(x)` (higher = more OOD). Deep generative
  models famously give some OOD sets *higher* likelihood than their own test data
  (Nalisnick et al. 2019a), which shows up as an AUROC below 0.5.
- *typicality* (Nalisnick et al. 2019b): with :math:`\hat H` the mean NLL of
  held-out data from the training distribution (an estimate of the entropy), a
  batch :math:`\{x_1, \dots, x_M\}` scores

  .. math:: s(x_{1:M}) = \Big| \frac1M \sum_{m=1}^M -\log p(x_m) - \hat H \Big|,

  i.e. how far the batch is from the typical set. :math:`M = 1` scores single
  inputs; larger :math:`M` detects distributions whose per-example NLLs overlap
  the in-distribution ones but whose mean differs. An input near the mode of a
  high-dimensional model (e.g. the all-zero vector for a standard Gaussian) has
  the *highest* likelihood yet is atypical, and only the typicality test flags it.

**AUROC.** The probability that an OOD input scores higher than an in-distribution
one, ties counting one half: the Mann–Whitney statistic :math:`U / (n_0 n_1)`,
computed from mid-ranks of the pooled scores,

.. math:: \mathrm{AUROC} = \frac{R_1 - n_1 (n_1 + 1)/2}{n_0 n_1},

with :math:`R_1` the sum of the OOD scores' ranks (average ranks for ties). Its
standard error is Hanley & McNeil's (1982). Host float64 NumPy (rank sums of
1e5 scores exceed float32's exact integers).

**Data.** jgen datasets have a train and a test split and the model was fit to all
of train, so the held-out data for :math:`\hat H` are a fixed-seed part of the test
split, disjoint from the in-distribution test examples that are scored. The OOD
sets (`make_ood_sets`) are uniform noise (8-bit data) or Bernoulli noise with the
data's mean ink (binarized data), the same test digits flipped upside down or
shifted, and scikit-learn's 8x8 digits upsampled to 28x28 (for 28x28x1 models).
A class-conditional model scores :math:`-\log p(x \mid y)` with the examples' own
labels (flips and shifts keep theirs; noise gets uniform random labels).

References:
  Nalisnick, E., Matsukawa, A., Teh, Y. W., Gorur, D. & Lakshminarayanan, B. (2019a).
    Do Deep Generative Models Know What They Don't Know? ICLR.
    https://arxiv.org/abs/1810.09136
  Nalisnick, E., Matsukawa, A., Teh, Y. W. & Lakshminarayanan, B. (2019b). Detecting
    Out-of-Distribution Inputs to Deep Generative Models Using Typicality.
    https://arxiv.org/abs/1906.02994 (Section 3: the test; Algorithm 1.)
  Hanley, J. A. & McNeil, B. J. (1982). The meaning and use of the area under a
    receiver operating characteristic (ROC) curve. Radiology 143, 29-36.
  Mann, H. B. & Whitney, D. R. (1947). On a test of whether one of two random
    variables is stochastically larger than the other. Ann. Math. Stat. 18, 50-60.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

OOD_SETS = ("noise", "flip", "shift", "digits")


# ------------------------------------------------------------------------------ AUROC


def _scores(fn: str, name: str, s: Any) -> np.ndarray:
    a = np.asarray(s, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{fn}: {name} must be a non-empty 1-D array of scores; received shape {a.shape}. "
                         "Flatten per-example scores with s.reshape(-1).")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{fn}: {name} has {int(np.sum(~np.isfinite(a)))} NaN or infinite scores of {a.size}.")
    return a


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` with ties given their average rank (float64)."""
    v = np.asarray(values, np.float64)
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # For each element: (first position + last position of its value) / 2, 1-based.
    lo = np.searchsorted(sorted_v, v, side="left")
    hi = np.searchsorted(sorted_v, v, side="right")
    return (lo + hi + 1) / 2.0


def auroc(scores_in: Any, scores_out: Any) -> float:
    r"""Area under the ROC curve for telling OOD (`scores_out`) from in-distribution
    (`scores_in`) inputs, where higher scores mean "more OOD".

    :math:`P(S_\text{out} > S_\text{in}) + \tfrac12 P(S_\text{out} = S_\text{in})`,
    from the pooled mid-ranks (module docstring); O(n log n).

    Args:
      scores_in: [n0] finite scores of in-distribution inputs.
      scores_out: [n1] finite scores of OOD inputs.

    Returns:
      A float in [0, 1]: 1 = perfect detection, 0.5 = chance, below 0.5 = OOD inputs
      look *more* in-distribution than the real ones.

    Raises:
      ValueError: for empty, non-1-D or non-finite inputs.

    Example:
      >>> auroc([0.1, 0.2], [0.3, 0.15])
      0.75
    """
    s0, s1 = _scores("auroc", "scores_in", scores_in), _scores("auroc", "scores_out", scores_out)
    n0, n1 = s0.size, s1.size
    ranks = midranks(np.concatenate([s0, s1]))
    r1 = float(np.sum(ranks[n0:]))
    return (r1 - n1 * (n1 + 1) / 2.0) / (n0 * n1)


def auroc_stderr(auc: float, n_in: int, n_out: int) -> float:
    r"""Hanley & McNeil's (1982) standard error of an AUROC :math:`A` from
    :math:`n_0` negatives and :math:`n_1` positives:

    .. math::
        \mathrm{SE}^2 = \frac{A(1-A) + (n_1 - 1)(Q_1 - A^2) + (n_0 - 1)(Q_2 - A^2)}{n_0 n_1},
        \quad Q_1 = \frac{A}{2 - A}, \quad Q_2 = \frac{2A^2}{1 + A}.
    """
    a = float(auc)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n_out - 1) * (q1 - a * a) + (n_in - 1) * (q2 - a * a)) / (n_in * n_out)
    return math.sqrt(max(var, 0.0))


# ------------------------------------------------------------------------- typicality


def typicality_scores(nll: Any, reference_mean_nll: float, *, batch_size: int = 1, key: jax.Array | None = None):
    r"""Typicality scores :math:`|\frac1M \sum_m \mathrm{NLL}_m - \hat H|` of batches of `batch_size` inputs.

    Args:
      nll: [N] per-example NLLs (nats) of inputs from one distribution.
      reference_mean_nll: :math:`\hat H`, the mean NLL of held-out in-distribution data.
      batch_size: :math:`M`; the N inputs form :math:`\lfloor N / M \rfloor` batches
        (the remainder is dropped).
      key: if given, inputs are shuffled (``jax.random.permutation``) before being
        grouped; otherwise consecutive inputs form a batch.

    Returns:
      float64 [N // M] scores (higher = less typical).

    Raises:
      ValueError: for a bad batch size or fewer than M inputs.
    """
    v = _scores("typicality_scores", "nll", nll)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"typicality_scores: batch_size must be a positive int; received {batch_size!r}.")
    if v.size < batch_size:
        raise ValueError(f"typicality_scores: {v.size} inputs cannot fill one batch of {batch_size}.")
    if key is not None:
        v = v[np.asarray(jax.random.permutation(key, v.size))]
    nb = v.size // batch_size
    means = v[: nb * batch_size].reshape(nb, batch_size).mean(axis=1)
    return np.abs(means - float(reference_mean_nll))


# ------------------------------------------------------------------------ OOD sets


def uniform_noise(rng: np.random.Generator, num: int, image_shape: Sequence[int]) -> np.ndarray:
    """uint8 [num, *image_shape] with independent uniform pixel values 0..255."""
    return rng.integers(0, 256, size=(num, *image_shape), dtype=np.uint8)


def bernoulli_noise(rng: np.random.Generator, num: int, image_shape: Sequence[int], p: float) -> np.ndarray:
    """uint8 [num, *image_shape] with pixels 255 w.p. `p`, else 0 (binary noise)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"bernoulli_noise: p must be in [0, 1]; received {p}.")
    return np.where(rng.random((num, *image_shape)) < p, 255, 0).astype(np.uint8)


def flip_vertical(images: np.ndarray) -> np.ndarray:
    """Upside-down images: row i of [N, H, W, C] becomes row H - 1 - i."""
    return np.ascontiguousarray(np.asarray(images)[:, ::-1])


def shift_images(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translates [N, H, W, C] images by (dy, dx) pixels (down/right positive),
    filling the uncovered border with 0 (no wrap-around)."""
    x = np.asarray(images)
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y = slice(max(0, -dy), h - max(0, dy))
    dst_y = slice(max(0, dy), h - max(0, -dy))
    src_x = slice(max(0, -dx), w - max(0, dx))
    dst_x = slice(max(0, dx), w - max(0, -dx))
    out[:, dst_y, dst_x] = x[:, src_y, src_x]
    return out


def digits_upsampled(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (all of them), bilinearly resized to
    ``size x size`` (``jax.image.resize``), as uint8 [N, size, size, 1] and labels."""
    from jgen.data.digits import digits_arrays

    images, labels = digits_arrays("all")
    up = jax.image.resize(images.astype(np.float32), (len(images), size, size, 1), method="linear")
    return np.clip(np.round(np.asarray(up)), 0, 255).astype(np.uint8), np.asarray(labels)


def make_ood_sets(names: Sequence[str], images: np.ndarray, labels: np.ndarray, *, preprocess: str,
                  num_classes: int = 0, seed: int = 0, shift: int | None = None) -> dict:
    """The named OOD sets, each as ``(uint8 images [n, H, W, C], int labels [n])``.

    Args:
      names: from `OOD_SETS`: "noise", "flip", "shift", "digits".
      images: uint8 [n, H, W, C] in-distribution test images (flip and shift
        transform these; noise and digits take n examples).
      labels: their int labels [n] (zeros for unlabelled data).
      preprocess: the model's eval preprocessing; "noise" is Bernoulli noise with the
        images' mean ink :math:`\\bar x / 255` for ``binarize_*`` and uniform 8-bit
        noise otherwise.
      num_classes: for the random labels of noise (0: all zeros).
      seed: noise and digits subsample seed.
      shift: pixels to translate down and right (default max(1, H // 7): 4 for 28x28).

    Raises:
      ValueError: an unknown name, or "digits" for images that are not 28x28x1.
    """
    unknown = [n for n in names if n not in OOD_SETS]
    if unknown:
        raise ValueError(f"unknown OOD sets {unknown}; choose from {','.join(OOD_SETS)} (e.g. --ood noise,flip).")
    images, labels = np.asarray(images), np.asarray(labels)
    n, shape = len(images), images.shape[1:]
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        if name == "noise":
            if preprocess.startswith("binarize"):
                x = bernoulli_noise(rng, n, shape, float(images.mean()) / 255.0)
            else:
                x = uniform_noise(rng, n, shape)
            y = rng.integers(0, max(num_classes, 1), size=n)
            out[name] = (x, y)
        elif name == "flip":
            out[name] = (flip_vertical(images), labels)
        elif name == "shift":
            k = int(shift) if shift is not None else max(1, shape[0] // 7)
            out[name] = (shift_images(images, k, k), labels)
        elif name == "digits":
            if tuple(shape) != (28, 28, 1):
                raise ValueError(f"the 'digits' OOD set (scikit-learn digits upsampled to 28x28) is for 28x28x1 models; "
                                 f"this model's images are {tuple(shape)}. Drop 'digits' from --ood.")
            x, y = digits_upsampled(28)
            idx = rng.choice(len(x), size=min(n, len(x)), replace=False)
            out[name] = (x[idx], y[idx])
    return out


# -------------------------------------------------------------------- NLL of a model


def per_example_nll(spec, params, images: np.ndarray, labels: np.ndarray | None, *, mesh, batch_size: int,
                    key: jax.Array, estimator: str | None = None) -> tuple[np.ndarray, str]:
    """Per-example NLL (nats) of raw uint8 images under a family's `eval_fn`, batch
    ``i`` with ``fold_in(key, i)`` as `jgen.train.evaluate.evaluate` does.

    Args:
      spec: a `ModelSpec` with NLL estimators.
      params: its (eval) parameters.
      images: uint8 [N, H, W, C]; labels: int [N] or None.
      mesh, batch_size: as for `evaluate` (batches are padded and masked).
      key: PRNG key for stochastic estimators.
      estimator: which NLL output of `eval_fn` (default: the first NLL estimator).

    Returns:
      `(nll [N] float64, estimator name)`.

    Raises:
      ValueError: the family has no NLL estimator, or `estimator` is not one.
    """
    from jgen.data import ArraySource, eval_batches
    from jgen.train.evaluate import replicated_copy
    from jgen.train.mesh import batch_sharding, replicated

    if spec.nll_estimators == ():
        raise ValueError("this model has no likelihood (its eval reports no NLL estimator), so it cannot score "
                         "inputs for OOD detection; use a VAE, VQ-VAE, flow, autoregressive or diffusion model.")
    labels = np.zeros(len(images), np.int64) if labels is None else np.asarray(labels)
    source = ArraySource(np.asarray(images, np.uint8), labels.astype(np.int64))
    step = jax.jit(spec.eval_fn, in_shardings=(replicated(mesh), replicated(mesh), batch_sharding(mesh)),
                   out_shardings=replicated(mesh))
    chunks = []
    for i, batch in enumerate(eval_batches(source, global_batch_size=batch_size, sharding=batch_sharding(mesh))):
        out = step(params, jax.random.fold_in(key, i), batch)
        names = [k for k in out if spec.nll_estimators is None or k in spec.nll_estimators]
        if estimator is None:
            estimator = names[0]
        if estimator not in names:
            raise ValueError(f"unknown NLL estimator {estimator!r}; this model reports {names}.")
        mask = np.asarray(replicated_copy(batch["mask"], mesh)) > 0
        chunks.append(np.asarray(out[estimator].addressable_data(0), np.float64)[mask])
    return np.concatenate(chunks), estimator


def _summary(v: np.ndarray, num_dims: int) -> dict:
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return {"nats": float(v.mean()), "nats_stderr": se, "bits_per_dim": float(v.mean() / (num_dims * math.log(2))),
            "num_examples": int(v.size)}


def ood_scores_report(nll_heldout: np.ndarray, nll_in: np.ndarray, nll_ood: dict, *, num_dims: int,
                      typicality_batches: Sequence[int] = (1, 10), seed: int = 0) -> dict:
    """AUROCs of the likelihood and typicality scores for each OOD set.

    Args:
      nll_heldout: [H] NLLs of held-out in-distribution data (gives :math:`\\hat H`).
      nll_in: [N] NLLs of the in-distribution test inputs.
      nll_ood: {name: [n] NLLs of an OOD set}.
      num_dims: data dimensions (bits/dim).
      typicality_batches: batch sizes M of the typicality test.
      seed: the shuffle before grouping into batches.

    Returns:
      ``{"heldout": summary, "in_distribution": summary, "ood": {name: {"nll": summary,
      "auroc": {"likelihood": {"value", "stderr"}, "typicality": {"M=1": {...}, ...}}}}}``.
    """
    h = float(np.mean(nll_heldout))
    key = jax.random.PRNGKey(seed)
    report = {"heldout": _summary(np.asarray(nll_heldout), num_dims),
              "in_distribution": _summary(np.asarray(nll_in), num_dims), "ood": {}}
    for i, (name, v) in enumerate(nll_ood.items()):
        v = np.asarray(v)
        a = auroc(nll_in, v)
        typ = {}
        for m in typicality_batches:
            k_in, k_out = jax.random.split(jax.random.fold_in(key, 1000 * i + int(m)))
            if min(len(nll_in), len(v)) < int(m):
                continue
            t_in = typicality_scores(nll_in, h, batch_size=int(m), key=k_in)
            t_out = typicality_scores(v, h, batch_size=int(m), key=k_out)
            at = auroc(t_in, t_out)
            typ[f"M={int(m)}"] = {"value": at, "stderr": auroc_stderr(at, len(t_in), len(t_out)),
                                  "num_batches": [len(t_in), len(t_out)]}
        report["ood"][name] = {"nll": _summary(v, num_dims),
                               "auroc": {"likelihood": {"value": a, "stderr": auroc_stderr(a, len(nll_in), len(v))},
                                         "typicality": typ}}
    return report


def ood_from_workdir(workdir: str, *, ood: Sequence[str] | None = None, num_examples: int = 1000,
                     num_heldout: int = 0, split: str | None = None, estimator: str | None = None,
                     typicality_batches: Sequence[int] = (1, 10), batch_size: int = 0, seed: int = 0) -> dict:
    """`jgen ood`: likelihood and typicality AUROCs of a trained workdir.

    The test split (default the config's ``data.eval_split``) is cut by a fixed-seed
    permutation into `num_heldout` held-out examples (for :math:`\\hat H`) and
    `num_examples` in-distribution test inputs; each OOD set has `num_examples`
    inputs (the flipped and shifted sets are those same test inputs transformed).

    Args:
      workdir: a trained run.
      ood: names from `OOD_SETS` (default: all of them, "digits" only for 28x28x1 models).
      num_examples: in-distribution (and per OOD set) inputs; reduced to fit.
      num_heldout: held-out examples (0: as many as fit, at most `num_examples`).
      split: the in-distribution split.
      estimator: the NLL estimator (default the family's first; for a VAE the ELBO,
        or e.g. "IWAE-100" to add that bound).
      typicality_batches: batch sizes of the typicality test.
      batch_size: evaluation batch (0: the config's eval.batch_size).
      seed: data split, noise and PRNG seed.

    Returns:
      ``{"workdir", "step", "dataset", "split", "preprocess", "estimator", ...,
      **ood_scores_report(...)}``.
    """
    from jgen.config import load_saved_config
    from jgen.data import gather, get_source
    from jgen.train.loop import eval_params, restore_for_inference

    config = load_saved_config(workdir)
    with config.unlocked():
        config.eval.ais_steps = 0
        config.eval.iwae_k = ((int(estimator.split("-")[1]),) if estimator and estimator.startswith("IWAE-")
                              and estimator.split("-")[1].isdigit() else ())
    run, state, step = restore_for_inference(workdir, config)
    split = split or config.data.eval_split
    source = get_source(config.data.name, split, data_dir=config.data.get("data_dir") or None)
    total = len(source)
    if total < 4:
        raise ValueError(f"split {split!r} has {total} examples; OOD evaluation needs at least 4.")
    n = min(int(num_examples), total // 2) if num_examples else total // 2
    h = min(int(num_heldout) if num_heldout else n, total - n)
    perm = np.random.default_rng(seed).permutation(total)
    held, test = gather(source, np.sort(perm[:h])), gather(source, np.sort(perm[h:h + n]))
    labels_in = test.get("label", np.zeros(n, np.int64))
    if ood is None:
        ood = [k for k in OOD_SETS if k != "digits" or tuple(run.info.image_shape) == (28, 28, 1)]
    sets = make_ood_sets(list(ood), test["image"], labels_in, preprocess=config.data.eval_preprocess,
                         num_classes=run.spec.num_classes, seed=seed)
    params = eval_params(state, config)
    bs = batch_size or config.eval.batch_size
    key = jax.random.PRNGKey(seed)

    def score(i, images, labels):
        return per_example_nll(run.spec, params, images, labels, mesh=run.mesh, batch_size=bs,
                               key=jax.random.fold_in(key, i), estimator=estimator)

    nll_held, name = score(0, held["image"], held.get("label"))
    nll_in, _ = score(1, test["image"], labels_in)
    nll_ood = {k: score(2 + i, x, y)[0] for i, (k, (x, y)) in enumerate(sets.items())}
    report = {"workdir": workdir, "step": int(step), "dataset": config.data.name, "split": split,
              "preprocess": config.data.eval_preprocess, "estimator": name,
              "typicality_reference": f"mean NLL of {h} held-out {split} examples (disjoint from the {n} scored)"}
    report.update(ood_scores_report(nll_held, nll_in, nll_ood, num_dims=run.spec.num_dims,
                                    typicality_batches=typicality_batches, seed=seed))
    return report
