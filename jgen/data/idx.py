"""Reader for the IDX format of the original MNIST files: a 4-byte magic number (two
zero bytes, a type code, the number of dimensions), one big-endian uint32 per
dimension, then the raw values. MNIST only uses unsigned bytes (type code 0x08), and
only that type is supported here.

References:
    LeCun, Cortes, Burges. "The MNIST database of handwritten digits", section
    "FILE FORMATS FOR THE MNIST DATABASE". http://yann.lecun.com/exdb/mnist/
"""

import gzip
import os

import numpy as np

_UBYTE = 0x08


def read_bytes(path: str) -> bytes:
    """Returns the uncompressed contents of `path` (gunzipped when it ends in `.gz`)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()


def parse_idx(data: bytes, *, ndim: int, name: str) -> np.ndarray:
    """Parses IDX bytes that hold unsigned bytes in `ndim` dimensions.

    Args:
        data: the uncompressed file contents.
        ndim: the number of dimensions expected (3 for images, 1 for labels).
        name: the file name, quoted in error messages.

    Returns:
        A read-only uint8 array of the shape stored in the header.

    Raises:
        ValueError: the magic number, type code, dimension count or length is wrong.
    """
    if len(data) < 4:
        raise ValueError(
            f"{name}: not an IDX file (only {len(data)} bytes). Check that it is "
            "one of the original MNIST files, e.g. train-images-idx3-ubyte.gz."
        )
    magic = int.from_bytes(data[:4], "big")
    expected_magic = (_UBYTE << 8) | ndim
    if magic != expected_magic:
        raise ValueError(
            f"{name}: IDX magic number {magic} (0x{magic:08x}), expected "
            f"{expected_magic} (0x{expected_magic:08x}: unsigned bytes, {ndim} "
            "dimensions). Either this is not the MNIST file it is named after (images "
            "are idx3, labels idx1), or it is gzip-compressed under a name without "
            "`.gz`: check the file."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{name}: truncated IDX header ({len(data)} bytes, need {header}); the "
            "file is incomplete, copy it again."
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(data) != header + size:
        raise ValueError(
            f"{name}: the header says shape {shape} ({size} values) but the file holds "
            f"{len(data) - header} bytes after the header; it is truncated or "
            "corrupted, copy it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: str, *, ndim: int) -> np.ndarray:
    """Reads an IDX file, `.gz` or uncompressed (see `parse_idx`)."""
    return parse_idx(read_bytes(path), ndim=ndim, name=os.path.basename(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Encodes a uint8 array as IDX bytes, the inverse of `parse_idx` (used by tests).

    Args:
        array: uint8 array of any rank.

    Returns:
        The IDX file contents (uncompressed).
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"encode_idx expects a uint8 array; got {array.dtype}.")
    header = bytes([0, 0, _UBYTE, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()
