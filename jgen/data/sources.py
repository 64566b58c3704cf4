"""Random-access example sources: the protocol every dataset satisfies (`len(source)`,
`source[i] -> {"image": uint8 [H, W, C], "label": int}`), an in-memory source,
`gather` to stack a batch, and `get_source` / `dataset_info` to open a dataset by
name: "digits" is embedded; "captioned_digits" (digits placed and captioned on a 24x24
canvas), "photo_patches[S]" (scikit-learn's two colour photographs cut into SxS
patches) and "phantoms[S]" (CT phantoms) are procedural; any other name is a prepared
TFDS dataset.

Example:
    >>> source = get_source("digits", "train")
    >>> batch = gather(source, np.arange(4))
    >>> batch["image"].shape, batch["label"].dtype, batch["index"].tolist()
    ((4, 8, 8, 1), dtype('int32'), [0, 1, 2, 3])
"""

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from jgen.data import digits, tfds_sources

GATHERED_KEYS = ("image", "label", "tokens", "vector")  # other features (e.g. TFDS "id") are dropped


class Source(Protocol):
    """A random-access dataset. TFDS `data_source` objects satisfy it (and add
    `__getitems__(indices) -> list of examples`, which `gather` uses when present)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


class DatasetInfo(NamedTuple):
    """What a model needs to know about a dataset before reading it.

    Attributes:
        image_shape: `(H, W, C)` of one image.
        num_classes: number of label values, or None for unlabelled datasets.
        num_examples: split name -> number of examples.
        vocab: captioned datasets: the words of the "tokens" feature (index 0 =
            padding); () otherwise.
        max_tokens: captioned datasets: length of the "tokens" feature.
        vector_dim: datasets with a "vector" feature: its size; 0 otherwise.
    """

    image_shape: tuple[int, int, int]
    num_classes: int | None
    num_examples: dict[str, int]
    vocab: tuple[str, ...] = ()
    max_tokens: int = 0
    vector_dim: int = 0


class ArraySource:
    """An in-memory source over arrays.

    Args:
        images: uint8 [N, H, W, C].
        labels: integer [N].

    Example:
        >>> src = ArraySource(np.zeros((2, 4, 4, 1), np.uint8), np.array([3, 7]))
        >>> len(src), src[1]["label"]
        (2, 7)
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, extras: Mapping[str, np.ndarray] | None = None):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                "ArraySource expects images as uint8 [N, H, W, C]; got "
                f"{images.dtype} {list(images.shape)}. Add a channel axis with "
                "images[..., None] and convert with images.astype(np.uint8) (pixels "
                "in 0..255)."
            )
        if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(
            labels.dtype, np.integer
        ):
            raise ValueError(
                f"ArraySource expects integer labels [N] with N = {len(images)} (the "
                f"number of images); got {labels.dtype} {list(labels.shape)}."
            )
        self.images, self.labels = images, labels
        self.extras = {k: np.asarray(v) for k, v in (extras or {}).items()}
        for k, v in self.extras.items():
            if len(v) != len(images):
                raise ValueError(f"ArraySource: feature {k!r} has {len(v)} rows; the images have {len(images)}.")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = {"image": self.images[index], "label": int(self.labels[index])}
        for k, v in self.extras.items():
            example[k] = v[index]
        return example

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return f"ArraySource(images={self.images.dtype} {list(self.images.shape)})"


def gather(source: Source, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Reads examples `indices` of `source` and stacks them into a batch.

    Uses `source.__getitems__` (one batched read) when the source has it.

    Args:
        source: any `Source`.
        indices: example indices, int [n] with n >= 1.

    Returns:
        `{"image": uint8 [n, H, W, C], "label": int32 [n], "index": int32 [n]}`;
        "label" is left out when the source has no labels.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) == 0:
        raise ValueError("gather needs at least one index; got an empty list.")
    as_ints = [int(i) for i in indices]
    getitems = getattr(source, "__getitems__", None)
    examples = getitems(as_ints) if getitems is not None else [source[i] for i in as_ints]
    batch = {
        key: np.stack([np.asarray(e[key]) for e in examples])
        for key in GATHERED_KEYS
        if key in examples[0]
    }
    if "image" not in batch:
        raise ValueError(
            f"gather expects examples with an 'image' key; {source!r} gives "
            f"{sorted(examples[0])}."
        )
    if batch["image"].dtype != np.uint8:
        raise ValueError(
            f"gather expects uint8 images; {source!r} gives {batch['image'].dtype}."
        )
    if "label" in batch:
        batch["label"] = batch["label"].astype(np.int32)
    batch["index"] = indices.astype(np.int32)
    return batch


def digits_source(split: str) -> ArraySource:
    """The embedded digits dataset (see `jgen.data.digits`) as a source.

    Args:
        split: "train" (1,497 examples), "test" (300) or "all" (1,797).

    Returns:
        An `ArraySource` of uint8 [8, 8, 1] images and labels 0..9.
    """
    return ArraySource(*digits.digits_arrays(split))


def get_source(
    name: str, split: str, *, data_dir: str | None = None, download: bool = False
) -> Source:
    """Opens split `split` of dataset `name` as a random-access source.

    Args:
        name: "digits" (embedded, no files needed) or a TFDS name such as "mnist".
        split: e.g. "train" or "test"; TFDS slicing like "train[:90%]" works too.
        data_dir: where prepared TFDS datasets live; defaults to `$TFDS_DATA_DIR`,
            else `~/tensorflow_datasets`. Ignored for "digits".
        download: let TFDS download and prepare a missing dataset (needs internet).

    Returns:
        A `Source`.

    Raises:
        DatasetNotFoundError: the dataset is not prepared and `download=False`;
            raised at once, and the message says how to get the data.
        ValueError: unknown split.
    """
    if name == "digits":
        return digits_source(split)
    if name == "captioned_digits":
        from jgen.data.captioned_digits import captioned_arrays

        a = captioned_arrays(split)
        return ArraySource(a["image"], a["label"], {"tokens": a["tokens"], "vector": a["vector"]})
    if name.startswith("photo_patches"):
        from jgen.data.photo_patches import patch_size, photo_patch_arrays

        size = patch_size(name)
        if size is not None:
            return ArraySource(*photo_patch_arrays(split, size))
    if name.startswith("phantoms"):  # procedural CT phantoms (jgen.inverse.phantom_dataset)
        from jgen.inverse.phantom_dataset import phantom_arrays, phantom_size

        size = phantom_size(name)
        if size is not None:
            return ArraySource(*phantom_arrays(split, size))
    data_dir = data_dir or tfds_sources.default_data_dir()
    return tfds_sources.tfds_source(name, split, data_dir=data_dir, download=download)


def dataset_info(name: str, *, data_dir: str | None = None) -> DatasetInfo:
    """Image shape, number of classes and split sizes of dataset `name`.

    Args:
        name: "digits" or a prepared TFDS dataset.
        data_dir: as in `get_source`.

    Returns:
        A `DatasetInfo`; for "digits" it also lists the "all" split.

    Raises:
        DatasetNotFoundError: a TFDS dataset that is not prepared under `data_dir`.
    """
    if name == "digits":
        return DatasetInfo(digits.IMAGE_SHAPE, digits.NUM_CLASSES, dict(digits.NUM_EXAMPLES))
    if name == "captioned_digits":
        from jgen.data import captioned_digits as cd

        return DatasetInfo(cd.IMAGE_SHAPE, digits.NUM_CLASSES, dict(cd.NUM_EXAMPLES), cd.VOCAB, cd.MAX_TOKENS,
                           cd.VECTOR_DIM)
    if name.startswith("photo_patches"):
        from jgen.data.photo_patches import num_examples, patch_size

        size = patch_size(name)
        if size is not None:
            return DatasetInfo((size, size, 3), 2, num_examples(size))
    if name.startswith("phantoms"):
        from jgen.inverse.phantom_dataset import NUM_EXAMPLES, phantom_size

        size = phantom_size(name)
        if size is not None:
            return DatasetInfo((size, size, 1), None, dict(NUM_EXAMPLES))
    data_dir = data_dir or tfds_sources.default_data_dir()
    shape, num_classes, num_examples = tfds_sources.tfds_info(name, data_dir=data_dir)
    return DatasetInfo(shape, num_classes, num_examples)
