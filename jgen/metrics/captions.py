"""Caption consistency of images generated for captioned digits: does the image show
the digit, at the position and size, that its caption names?

Three independent checks per image (none uses the generative model):

- digit: the canvas region the caption names is cut out, averaged down to 8x8 and read
  by an RBF support-vector classifier (gamma 0.001, C 10) fitted on the same crops of the captioned
  digits' training split (real handwriting; the test split's handwriting is unseen;
  98% accurate on the test split's crops).
- position: the ink's centre of mass is nearest to the named position's centre.
- size: the ink's bounding box (pixels above `ink`) is at least 12 pixels on a side
  for "large" and less for "small" (the two sizes are 8 and 16 pixels).

`caption_scores` returns the fraction of images passing each check and all three.
On the dataset's own test images the scores are the ceiling (`jgen.data.captioned_digits`
test split: see `experiments/conditional/text_cfg_sweep.py`).
"""

from __future__ import annotations

import functools

import numpy as np

from jgen.data import captioned_digits as cd


@functools.cache
def digit_reader():
    """An RBF-SVM digit classifier on 8x8 crops in 0..16 (fixed, deterministic)."""
    from sklearn.svm import SVC

    a = cd.captioned_arrays("train")
    crops = np.stack([cd.crop(img, int(p), int(z)) for img, p, z in zip(a["image"], a["position"], a["size"])])
    x = crops.reshape(len(crops), -1) * (16 / 255)
    return SVC(gamma=0.001, C=10.0).fit(x, a["label"])


def _ink_stats(images: np.ndarray, ink: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(images)
    img = images.reshape(n, cd.CANVAS, cd.CANVAS)
    w = np.clip(img, 0, None)
    rows, cols = np.arange(cd.CANVAS)[None, :, None], np.arange(cd.CANVAS)[None, None, :]
    mass = np.maximum(w.sum(axis=(1, 2)), 1e-8)
    cy, cx = (w * rows).sum(axis=(1, 2)) / mass, (w * cols).sum(axis=(1, 2)) / mass
    on = img > ink
    any_r, any_c = on.any(axis=2), on.any(axis=1)
    height = np.where(any_r.any(1), cd.CANVAS - np.argmax(any_r[:, ::-1], 1) - np.argmax(any_r, 1), 0)
    width = np.where(any_c.any(1), cd.CANVAS - np.argmax(any_c[:, ::-1], 1) - np.argmax(any_c, 1), 0)
    return np.stack([cy, cx], 1), np.maximum(height, width), mass


def caption_scores(images, digit, position, size, *, ink: float = 0.3) -> dict[str, float]:
    """Fractions of images consistent with their captions.

    Args:
      images: [N, 24, 24] or [N, 24, 24, 1] in [0, 1].
      digit, position, size: int [N] caption attributes (ids into
        `captioned_digits.POSITIONS` and `SIZES`).
      ink: the pixel level above which a pixel counts as ink (bounding box).

    Returns:
      ``{"digit", "position", "size", "all"}`` accuracies in [0, 1], and "n".
    """
    images = np.asarray(images, np.float64)
    n = len(images)
    if images.shape not in ((n, cd.CANVAS, cd.CANVAS), (n, cd.CANVAS, cd.CANVAS, 1)):
        raise ValueError(f"caption_scores expects images [N, {cd.CANVAS}, {cd.CANVAS}(, 1)]; received {images.shape}.")
    if images.min() < -1e-6 or images.max() > 1 + 1e-6:
        raise ValueError(f"caption_scores expects pixels in [0, 1]; received {images.min():.3g}..{images.max():.3g}.")
    digit, position, size = (np.asarray(a).reshape(n) for a in (digit, position, size))
    crops = np.stack([cd.crop(images[i] * 255, int(position[i]), int(size[i])) for i in range(n)])
    pred = digit_reader().predict(crops.reshape(n, -1) * (16 / 255))
    centres, side, _ = _ink_stats(images, ink)
    targets = np.array([cd._CENTRES[p] for p in cd.POSITIONS], np.float64)
    nearest = np.argmin(((centres[:, None] - targets[None]) ** 2).sum(-1), axis=1)
    big = side >= 12
    ok_d, ok_p, ok_s = pred == digit, nearest == position, big == (size == 1)
    return {"digit": float(ok_d.mean()), "position": float(ok_p.mean()), "size": float(ok_s.mean()),
            "all": float((ok_d & ok_p & ok_s).mean()), "n": int(n)}
