"""Fixtures for the data tests: small in-memory sources whose images encode their own
index, fake MNIST IDX files, and a fake MNIST prepared in TFDS's format."""

import gzip
import os

import numpy as np
import pytest

from jgen.data import ArraySource, import_mnist
from jgen.data.idx import encode_idx


def indexed_images(n: int, size: int = 4) -> np.ndarray:
    """uint8 [n, size, size, 1] images; pixel (0, 0) = i // 256, (0, 1) = i % 256, so
    each image tells which example it is."""
    images = np.zeros((n, size, size, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) // 256
    images[:, 0, 1, 0] = np.arange(n) % 256
    return images


def decode_index(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    return images[:, 0, 0, 0].astype(np.int64) * 256 + images[:, 0, 1, 0]


@pytest.fixture
def make_source():
    """Factory: an `ArraySource` of n indexed images with labels i % 10."""

    def make(n: int, size: int = 4) -> ArraySource:
        return ArraySource(indexed_images(n, size), np.arange(n) % 10)

    return make


@pytest.fixture(name="decode_index")
def decode_index_fixture():
    """The inverse of `indexed_images`: images [n, ...] -> example indices [n]."""
    return decode_index


def write_fake_mnist(folder, *, num_train=20, num_test=10, seed=0, gz=True):
    """Writes four random MNIST-format IDX files; returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, prefix, n in (("train", "train", num_train), ("test", "t10k", num_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        files = {f"{prefix}-images-idx3-ubyte": images, f"{prefix}-labels-idx1-ubyte": labels}
        for name, array in files.items():
            data = encode_idx(array)
            path = os.path.join(folder, name + (".gz" if gz else ""))
            with (gzip.open if gz else open)(path, "wb") as f:
                f.write(data)
        arrays[split] = (images[..., None], labels)
    return arrays


@pytest.fixture(name="write_fake_mnist")
def write_fake_mnist_fixture():
    """The `write_fake_mnist` function, for tests that need variants."""
    return write_fake_mnist


@pytest.fixture
def fake_mnist(tmp_path):
    """(folder with fake .gz IDX files, {split: (images [N,28,28,1], labels [N])})."""
    folder = tmp_path / "mnist_raw"
    return str(folder), write_fake_mnist(folder)


@pytest.fixture(scope="session")
def fake_mnist_prepared(tmp_path_factory):
    """(data_dir holding a fake MNIST prepared by import_mnist, its arrays)."""
    root = tmp_path_factory.mktemp("fake_mnist")
    arrays = write_fake_mnist(root / "raw", seed=1)
    data_dir = str(root / "tfds")
    import_mnist(str(root / "raw"), data_dir, verify_checksums=False)
    return data_dir, arrays


@pytest.fixture(scope="session")
def shared_mnist(request):
    """`SHARED_MNIST` from tests/conftest.py (the real MNIST files' folder); the
    conftest is found among the registered plugins rather than imported twice."""
    for plugin in request.config.pluginmanager.get_plugins():
        path = getattr(plugin, "SHARED_MNIST", None)
        if path is not None:
            return path
    pytest.fail("tests/conftest.py no longer defines SHARED_MNIST")
