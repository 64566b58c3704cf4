"""The embedded default dataset: scikit-learn's 1,797 real 8x8 handwritten digits
(the UCI "Optical Recognition of Handwritten Digits" test set), shipped inside
scikit-learn so it needs no download. Pixels 0..16 are served as uint8 0..255 images
[8, 8, 1] via round(v * 255 / 16); a fixed-seed permutation splits them into 1,497
train and 300 test examples, the same on every machine.

References:
    Alpaydin, Kaynak (1998). Optical Recognition of Handwritten Digits. UCI Machine
    Learning Repository. https://doi.org/10.24432/C50P49
"""

import functools

import numpy as np

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
NUM_EXAMPLES = {"train": 1497, "test": 300, "all": 1797}
SPLITS = tuple(NUM_EXAMPLES)
_SPLIT_SEED = 0  # fixed: changing it changes which digits are test digits
_MAX_VALUE = 16  # load_digits pixel values lie in 0..16


@functools.cache
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    digits = load_digits()
    images = np.round(digits.images * (255 / _MAX_VALUE)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@functools.cache
def _split_indices(split: str) -> np.ndarray:
    total = NUM_EXAMPLES["all"]
    if split == "all":
        indices = np.arange(total)
    else:
        perm = np.random.default_rng(_SPLIT_SEED).permutation(total)
        num_train = NUM_EXAMPLES["train"]
        chosen = perm[:num_train] if split == "train" else perm[num_train:]
        indices = np.sort(chosen)  # keep the original order inside a split
    indices.setflags(write=False)
    return indices


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns the embedded digits of one split as arrays.

    Args:
        split: "train" (1,497 examples), "test" (300) or "all" (1,797).

    Returns:
        `(images, labels)`: read-only uint8 [N, 8, 8, 1] in 0..255 and int64 [N]
        labels 0..9, in the original scikit-learn order within the split.

    Raises:
        ValueError: `split` is not one of the splits above.
    """
    if split not in NUM_EXAMPLES:
        raise ValueError(
            f"Unknown split {split!r} for the embedded 'digits' dataset; valid splits "
            f"are {list(SPLITS)}."
        )
    images, labels = _all_digits()
    indices = _split_indices(split)
    return images[indices], labels[indices]
