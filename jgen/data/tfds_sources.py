"""TensorFlow Datasets at the edge: where prepared datasets live, reading one as a
random-access source, and failing at once (no network, no retries) with instructions
when a dataset is not prepared. TFDS is imported lazily so `import jgen.data` stays
cheap.
"""

import contextlib
import os
from typing import Any

from jgen.data.errors import DatasetNotFoundError

# Run from the repository root; the shared MNIST copy is ../shared/data/mnist there.
MNIST_IMPORT_COMMAND = "jgen data import mnist --from ../shared/data/mnist --data-dir {data_dir}"
_FILE_FORMAT = "array_record"  # TFDS's random-access format


def default_data_dir() -> str:
    """The directory TFDS uses when none is given: `$TFDS_DATA_DIR`, else
    `~/tensorflow_datasets` (read at call time, unlike `tfds`'s import-time default)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), "tensorflow_datasets"
    )


@contextlib.contextmanager
def _no_gcs():
    """Keeps TFDS from looking up metadata on its public GCS bucket.

    TFDS 4.9.10 already disables these lookups by default (`_is_gcs_disabled = True`);
    older releases did not, and without internet each lookup retries for minutes.
    The flag is restored afterwards.
    """
    from tensorflow_datasets.core.utils import gcs_utils

    previous = getattr(gcs_utils, "_is_gcs_disabled", None)
    gcs_utils._is_gcs_disabled = True
    try:
        yield
    finally:
        if previous is not None:
            gcs_utils._is_gcs_disabled = previous


def how_to_get(name: str, data_dir: str) -> str:
    """The instructions a not-found error gives for dataset `name`."""
    if name.split("/")[0].split(":")[0] == "mnist":
        return (
            "To create it from the local MNIST files, run from the repository root:\n"
            f"    {MNIST_IMPORT_COMMAND.format(data_dir=data_dir)}\n"
            "(in Python: jgen.data.import_mnist('../shared/data/mnist', "
            f"{data_dir!r})). On a machine with internet access you can instead pass "
            "download=True (--config.data.download=True)."
        )
    return (
        "To download and prepare it, pass download=True (--config.data.download=True) "
        "on a machine with internet access, or point data_dir (--config.data.data_dir "
        "or $TFDS_DATA_DIR) at a directory holding a prepared copy."
    )


def load_builder(name: str, data_dir: str) -> Any:
    """Returns `tfds.builder(name)` for `data_dir`, without network access.

    Raises:
        DatasetNotFoundError: `name` is neither a registered TFDS dataset nor found
            under `data_dir`.
    """
    import tensorflow_datasets as tfds

    try:
        with _no_gcs():
            return tfds.builder(name, data_dir=data_dir, file_format=_FILE_FORMAT)
    except tfds.core.DatasetNotFoundError as e:
        raise DatasetNotFoundError(
            f"Unknown dataset {name!r}: it is neither the embedded 'digits' dataset nor "
            f"a TFDS dataset (registered, or prepared under data_dir {data_dir!r}). "
            "Check the spelling; `tfds.list_builders()` lists the registered names."
        ) from e


def _not_prepared(builder: Any, name: str, split: str | None, data_dir: str):
    what = f"Dataset {name!r}" + (f" (split {split!r})" if split is not None else "")
    return DatasetNotFoundError(
        f"{what} is not prepared in data_dir {data_dir!r} (looked for "
        f"{os.path.join(os.fspath(builder.data_path), 'dataset_info.json')}). "
        + how_to_get(name, data_dir)
    )


def tfds_source(name: str, split: str, *, data_dir: str, download: bool) -> Any:
    """Opens a TFDS dataset split as a random-access source (`tfds.data_source`).

    Args:
        name: TFDS name, e.g. "mnist" or "cifar10" ("name/config:version" works).
        split: e.g. "train", "test", "train[:90%]".
        data_dir: directory holding prepared datasets.
        download: prepare the dataset (network) when it is missing.

    Returns:
        The TFDS data source: `len`, `source[i]`, `source.__getitems__(indices)`.

    Raises:
        DatasetNotFoundError: not prepared and `download=False` (raised before any
            network access), or an unknown name.
        ValueError: unknown split, or a copy prepared in a format without random
            access (e.g. tfrecord).
    """
    import tensorflow_datasets as tfds

    builder = load_builder(name, data_dir)
    if not download and not builder.is_prepared():
        raise _not_prepared(builder, name, split, data_dir)
    try:
        with contextlib.nullcontext() if download else _no_gcs():
            return tfds.data_source(
                name,
                split=split,
                data_dir=data_dir,
                download=download,
                builder_kwargs={"file_format": _FILE_FORMAT},
            )
    except NotImplementedError as e:  # prepared as tfrecord: no random access
        raise ValueError(
            f"Dataset {name!r} in {data_dir!r} was prepared in a format without random "
            f"access ({e}). Prepare it with file_format='array_record' (for mnist: "
            f"{MNIST_IMPORT_COMMAND.format(data_dir=data_dir)}), or use another "
            "data_dir."
        ) from e
    except ValueError as e:  # e.g. "Unknown split 'validation'. Should be one of ..."
        raise ValueError(f"Dataset {name!r} in {data_dir!r}: {e}") from e


def tfds_info(
    name: str, *, data_dir: str
) -> tuple[tuple[int, ...], int | None, dict[str, int]]:
    """Reads a prepared dataset's image shape, number of classes and split sizes.

    Returns:
        `(image_shape, num_classes, num_examples)`; `num_classes` is None when the
        dataset has no "label" feature.

    Raises:
        DatasetNotFoundError: the dataset is not prepared under `data_dir`.
        ValueError: the dataset has no "image" feature.
    """
    builder = load_builder(name, data_dir)
    if not builder.is_prepared():
        raise _not_prepared(builder, name, None, data_dir)
    features = builder.info.features
    if "image" not in features:
        raise ValueError(
            f"Dataset {name!r} has no 'image' feature (it has {sorted(features)}); "
            "jgen.data serves image datasets only."
        )
    label = features["label"] if "label" in features else None
    num_classes = getattr(label, "num_classes", None)
    num_examples = {k: int(v.num_examples) for k, v in builder.info.splits.items()}
    return tuple(features["image"].shape), num_classes, num_examples
