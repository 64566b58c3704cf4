"""Errors raised by `jgen.data`: a dataset that is not on disk, and a source file whose
checksum does not match. Each message names what was received and how to fix it."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset (or one of its splits) is not prepared in the searched `data_dir`.

    Raised at once, without touching the network, when `download=False`. The message
    names the dataset, the split and the directory that was searched, and says how to
    get the data (the local importer for MNIST, `download=True` otherwise).
    """


class ChecksumError(ValueError):
    """A source file's md5 differs from the expected one (wrong or corrupted file)."""
