"""Local MNIST importer: turns the four original IDX files into TFDS's own on-disk
format (array_record, the registered `mnist` builder, version 3.0.1), without
TensorFlow and without network access, so that

    tfds.data_source("mnist", data_dir=data_dir, download=False)

and `jgen.data.get_source("mnist", ...)` read it exactly like a copy that TFDS
downloaded and prepared itself: same features (image uint8 [28, 28, 1], label int64
0..9), same split sizes (train 60,000, test 10,000) and the same example order (TFDS
orders examples by a hash of their key, the index in the IDX file, so `train[0]` of
the prepared copy is not the first image of the IDX file).

The md5 checked is that of the *uncompressed* files: gzip headers vary between copies.
Importing over an existing copy replaces it (it takes a few seconds).

Example (from the repository root):
    >>> import_mnist("../shared/data/mnist", "/tmp/tfds")  # doctest: +SKIP
    '/tmp/tfds/mnist/3.0.1'
"""

import contextlib
import functools
import hashlib
import io
import os
import shutil
import sys
import tempfile

import numpy as np

from jgen.data import idx
from jgen.data.errors import ChecksumError
from jgen.data.tfds_sources import default_data_dir

# md5 of each uncompressed file, from the MNIST README in shared/data/mnist.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# split -> (images file, labels file)
MNIST_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGE_SIZE = 28
_NUM_CLASSES = 10


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def find_mnist_file(from_dir: str, name: str) -> str:
    """Returns the path of `name.gz` or `name` in `from_dir`.

    Raises:
        FileNotFoundError: neither exists; the message names the file and folder.
    """
    for candidate in (name + ".gz", name):
        path = os.path.join(from_dir, candidate)
        if os.path.isfile(path):
            return path
    present = sorted(os.listdir(from_dir)) if os.path.isdir(from_dir) else None
    raise FileNotFoundError(
        f"MNIST file {name}.gz (or uncompressed {name}) not found in folder "
        f"{os.path.abspath(from_dir)!r}"
        + (f" (it holds {present})" if present is not None else " (no such folder)")
        + ". Point --from at the folder with the four original MNIST IDX files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz); in this project "
        "that is ../shared/data/mnist from the repository root."
    )


def _read_checked(from_dir: str, name: str, *, ndim: int, verify: bool) -> np.ndarray:
    path = find_mnist_file(from_dir, name)
    data = idx.read_bytes(path)
    if verify:
        received = hashlib.md5(data).hexdigest()
        if received != MNIST_MD5[name]:
            raise ChecksumError(
                f"{path}: md5 of the uncompressed file is {received}, expected "
                f"{MNIST_MD5[name]} for the original {name}. The file is corrupted or "
                "is not the original MNIST file: copy it again from a trusted source. "
                "(To import other IDX files on purpose, pass verify_checksums=False, "
                "or --no-verify to `jgen data import`.)"
            )
    return idx.parse_idx(data, ndim=ndim, name=os.path.basename(path))


def load_mnist_arrays(
    from_dir: str, *, verify_checksums: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads and validates the four MNIST IDX files (`.gz` or uncompressed).

    Args:
        from_dir: folder holding the files.
        verify_checksums: check each uncompressed file's md5 against `MNIST_MD5`.

    Returns:
        split -> `(images uint8 [N, 28, 28, 1], labels uint8 [N])`, in file order.

    Raises:
        FileNotFoundError: a file is missing.
        ChecksumError: a file's md5 differs from the original's.
        ValueError: bad IDX header, wrong image size, mismatched counts, or a label
            outside 0..9.
    """
    arrays = {}
    for split, (images_name, labels_name) in MNIST_SPLIT_FILES.items():
        images = _read_checked(from_dir, images_name, ndim=3, verify=verify_checksums)
        labels = _read_checked(from_dir, labels_name, ndim=1, verify=verify_checksums)
        if images.shape[1:] != (_IMAGE_SIZE, _IMAGE_SIZE):
            raise ValueError(
                f"{images_name}: images are {images.shape[1]}x{images.shape[2]}, but "
                f"the TFDS mnist format needs {_IMAGE_SIZE}x{_IMAGE_SIZE}."
            )
        if len(images) != len(labels):
            raise ValueError(
                f"{images_name} holds {len(images)} images but {labels_name} holds "
                f"{len(labels)} labels; the two files of a split must match."
            )
        if len(labels) and labels.max() >= _NUM_CLASSES:
            raise ValueError(
                f"{labels_name}: labels must lie in 0..{_NUM_CLASSES - 1}; found "
                f"{int(labels.max())}. Check that this is an MNIST labels file."
            )
        arrays[split] = (images[..., None], labels)
        _log(f"Read {split}: {len(images)} images from {from_dir}.")
    return arrays


def _png(image: np.ndarray) -> bytes:
    """Encodes one uint8 [H, W, 1] image as PNG bytes (TFDS's Image feature needs
    TensorFlow to encode numpy arrays, but takes PNG bytes as they are)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image[:, :, 0], mode="L").save(out, format="PNG")
    return out.getvalue()


@functools.cache
def _local_mnist_builder_cls():
    """The registered TFDS `mnist` builder with its downloads replaced by the local
    arrays (set as `builder.local_arrays` before `download_and_prepare`)."""
    import tensorflow_datasets as tfds

    class LocalMnist(tfds.builder_cls("mnist"), skip_registration=True):
        name = "mnist"  # same name, version, features and keys as the TFDS builder

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download
            return {
                split: self._generate_examples(images, labels)
                for split, (images, labels) in self.local_arrays.items()
            }

        def _generate_examples(self, images, labels):
            # Keys are the IDX indices, as in TFDS's own mnist builder, so the
            # key-hash order on disk is the same as in a TFDS-prepared copy.
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": _png(image), "label": int(label)}

    return LocalMnist


def import_mnist(
    from_dir: str, data_dir: str | None = None, *, verify_checksums: bool = True
) -> str:
    """Imports the original MNIST IDX files into TFDS's on-disk format.

    Args:
        from_dir: folder with train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte,
            t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each `.gz` or not).
        data_dir: TFDS data directory to write into; defaults to `$TFDS_DATA_DIR`,
            else `~/tensorflow_datasets`.
        verify_checksums: check the md5 of each uncompressed file (`MNIST_MD5`).

    Returns:
        The prepared dataset directory, `<data_dir>/mnist/3.0.1`. An existing copy
        there is replaced.

    Raises:
        FileNotFoundError, ChecksumError, ValueError: see `load_mnist_arrays`;
            nothing is written when they are raised.
    """
    import tensorflow_datasets as tfds

    data_dir = data_dir or default_data_dir()
    arrays = load_mnist_arrays(from_dir, verify_checksums=verify_checksums)
    if verify_checksums:
        _log("md5 checksums of all four files match the originals.")
    builder = _local_mnist_builder_cls()(data_dir=data_dir, file_format="array_record")
    builder.local_arrays = arrays
    target = os.fspath(builder.data_path)
    if builder.is_prepared():
        _log(f"Replacing the existing copy at {target}.")
    config = tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS,  # overwrite
        try_download_gcs=False,
    )
    scratch = tempfile.mkdtemp(prefix="jgen_mnist_import_")
    try:
        # TFDS prints some progress to stdout; keep stdout clean for callers.
        with contextlib.redirect_stdout(sys.stderr):
            builder.download_and_prepare(download_dir=scratch, download_config=config)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _log(f"Prepared mnist at {target}.")
    return target
