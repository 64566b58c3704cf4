"""IDX parsing: round trip with encode_idx, .gz and plain files, and the errors for a
wrong magic number, a truncated header and a length that disagrees with the header."""

import gzip

import numpy as np
import pytest

from jgen.data.idx import encode_idx, parse_idx, read_idx


@pytest.mark.parametrize("shape", [(3, 28, 28), (5,), (0,)])
def test_round_trip(shape):
    array = np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape)
    out = parse_idx(encode_idx(array), ndim=len(shape), name="x")
    np.testing.assert_array_equal(out, array)
    assert out.dtype == np.uint8


def test_header_bytes_match_the_mnist_spec():
    # MNIST spec: images magic 2051 (0x00000803), labels 2049 (0x00000801).
    assert encode_idx(np.zeros((2, 28, 28), np.uint8))[:4] == (2051).to_bytes(4, "big")
    assert encode_idx(np.zeros((2,), np.uint8))[:4] == (2049).to_bytes(4, "big")


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_gz_and_plain(tmp_path, gz):
    array = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    path = tmp_path / ("a.gz" if gz else "a")
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(encode_idx(array))
    np.testing.assert_array_equal(read_idx(str(path), ndim=3), array)


def test_wrong_magic_names_file_and_both_numbers():
    labels = encode_idx(np.zeros((4,), np.uint8))
    with pytest.raises(ValueError, match=r"images\.idx: IDX magic number 2049 .*expected 2051"):
        parse_idx(labels, ndim=3, name="images.idx")


def test_gzip_bytes_under_a_plain_name_are_rejected():
    data = gzip.compress(encode_idx(np.zeros((4,), np.uint8)))
    with pytest.raises(ValueError, match="gzip-compressed under a name without `.gz`"):
        parse_idx(data, ndim=1, name="labels")


def test_truncated_file():
    data = encode_idx(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(4, 28, 28\) \(3136 values\) but the file holds 3135"):
        parse_idx(data[:-1], ndim=3, name="x")
    with pytest.raises(ValueError, match="truncated IDX header"):
        parse_idx(data[:8], ndim=3, name="x")
    with pytest.raises(ValueError, match="not an IDX file"):
        parse_idx(b"\x00", ndim=1, name="x")


def test_encode_rejects_non_uint8():
    with pytest.raises(TypeError, match="uint8"):
        encode_idx(np.zeros(3, np.int32))
