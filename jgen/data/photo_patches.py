"""Real colour photographs cut into patches (`data.name = "photo_patches"` for 16x16,
`"photo_patches32"` for 32x32): the two JPEG photographs scikit-learn ships
(`sklearn.datasets.load_sample_images`: a Chinese temple and a flower, 427x640 RGB),
so colour models (colorization, colour super-resolution) need no download.

The split is by region, so no test pixel is seen in training: patches of the left 512
columns of each photo are "train" (stride S/2, overlapping), patches of the right 128
columns are "test" (stride S, disjoint). The label is the photo (0 = china, 1 = flower).

Only textured patches are kept: the mean absolute difference between neighbouring
pixels (rows plus columns, pixels in [0, 1]) is at least `MIN_TEXTURE` = 0.02. The two
photos are mostly sky and defocused background, where bicubic 2x upsampling already
reaches ~51 dB (the median over all test patches) and every method looks perfect; the
kept patches (3,223 train, 127 test at 16x16) are where reconstructions differ.
"""

from __future__ import annotations

import functools

import numpy as np

_TRAIN_COLS = 512
MIN_TEXTURE = 0.02


def patch_size(name: str) -> int | None:
    """16 for "photo_patches", 32 for "photo_patches32", None for other names."""
    if name == "photo_patches":
        return 16
    if name.startswith("photo_patches") and name[len("photo_patches"):].isdigit():
        return int(name[len("photo_patches"):])
    return None


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images  # ships with scikit-learn

    return tuple(np.asarray(img, np.uint8) for img in load_sample_images().images)


def _cut(img: np.ndarray, size: int, stride: int) -> np.ndarray:
    h, w, _ = img.shape
    rows = range(0, h - size + 1, stride)
    cols = range(0, w - size + 1, stride)
    return np.stack([img[r:r + size, c:c + size] for r in rows for c in cols])


@functools.cache
def photo_patch_arrays(split: str, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, S, S, 3] patches, int64 [N] photo ids) of one split."""
    if split not in ("train", "test"):
        raise ValueError(f"Unknown split {split!r} for 'photo_patches'; valid splits are ['train', 'test'].")
    if size < 4 or size > 128:
        raise ValueError(f"photo_patches: patch size must lie in 4..128; received {size}.")
    patches, labels = [], []
    for i, photo in enumerate(_photos()):
        part = photo[:, :_TRAIN_COLS] if split == "train" else photo[:, _TRAIN_COLS:]
        p = _cut(part, size, max(1, size // 2) if split == "train" else size)
        patches.append(p)
        labels.append(np.full(len(p), i, np.int64))
    images, labels = np.concatenate(patches), np.concatenate(labels)
    keep = texture(images) >= MIN_TEXTURE
    images, labels = np.ascontiguousarray(images[keep]), labels[keep]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def texture(images: np.ndarray) -> np.ndarray:
    """Mean absolute neighbour difference (rows + columns) of uint8 images [N, H, W, C], in [0, 1] units."""
    x = np.asarray(images, np.float32) / 255.0
    return np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3)) + np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))


def num_examples(size: int) -> dict[str, int]:
    return {split: len(photo_patch_arrays(split, size)[0]) for split in ("train", "test")}
