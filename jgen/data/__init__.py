"""Data for jgen: random-access sources (the embedded digits, any prepared TFDS
dataset), the local MNIST importer, pure preprocessing functions, and deterministic,
resumable, sharded batch iteration."""

from jgen.data.errors import ChecksumError, DatasetNotFoundError
from jgen.data.iterator import DataIterator, epoch_permutation, eval_batches, local_rows
from jgen.data.mnist_import import MNIST_MD5, import_mnist, load_mnist_arrays
from jgen.data.preprocess import (
    PREPROCESSORS,
    binarize_dynamic,
    binarize_static,
    check_range,
    dequantize_uniform,
    get_preprocess,
    scale,
    to_unit_interval,
)
from jgen.data.sources import (
    ArraySource,
    DatasetInfo,
    Source,
    dataset_info,
    digits_source,
    gather,
    get_source,
)
from jgen.data.tfds_sources import MNIST_IMPORT_COMMAND, default_data_dir

__all__ = [
    "ArraySource",
    "ChecksumError",
    "DataIterator",
    "DatasetInfo",
    "DatasetNotFoundError",
    "MNIST_IMPORT_COMMAND",
    "MNIST_MD5",
    "PREPROCESSORS",
    "Source",
    "binarize_dynamic",
    "binarize_static",
    "check_range",
    "dataset_info",
    "dequantize_uniform",
    "default_data_dir",
    "digits_source",
    "epoch_permutation",
    "eval_batches",
    "gather",
    "get_preprocess",
    "get_source",
    "import_mnist",
    "load_mnist_arrays",
    "local_rows",
    "scale",
    "to_unit_interval",
]
