"""The local MNIST importer: fake IDX files round-trip exactly through TFDS's own
reader, checksum / missing-file / format errors, re-import, and (once per session) the
real files from shared/data/mnist with their known label counts."""

import os
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jgen.data import ChecksumError, MNIST_MD5, gather, get_source, import_mnist, load_mnist_arrays


def _by_image(images, labels):
    return {img.tobytes(): int(lab) for img, lab in zip(images, labels)}


def test_fake_files_round_trip_through_tfds(fake_mnist, tmp_path):
    raw_dir, arrays = fake_mnist
    data_dir = str(tmp_path / "tfds")
    target = import_mnist(raw_dir, data_dir, verify_checksums=False)
    assert target == os.path.join(data_dir, "mnist", "3.0.1")
    for split, (images, labels) in arrays.items():
        ds = tfds.data_source("mnist", split=split, data_dir=data_dir, download=False)
        assert len(ds) == len(images)
        examples = ds.__getitems__(list(range(len(ds))))
        assert examples[0]["image"].dtype == np.uint8 and examples[0]["image"].shape == (28, 28, 1)
        # TFDS orders examples by a hash of their key, so match them by content: every
        # (image, label) pair comes back exactly once.
        expected = _by_image(images, labels)
        got = _by_image([e["image"] for e in examples], [e["label"] for e in examples])
        assert got == expected
        batch = gather(get_source("mnist", split, data_dir=data_dir), np.arange(len(images)))
        assert _by_image(batch["image"], batch["label"]) == expected


def test_checksum_error_names_file_and_both_md5s(fake_mnist, tmp_path):
    raw_dir, _ = fake_mnist
    data_dir = tmp_path / "tfds"
    with pytest.raises(ChecksumError) as err:
        import_mnist(raw_dir, str(data_dir))
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert f"expected {MNIST_MD5['train-images-idx3-ubyte']}" in message
    assert "md5 of the uncompressed file is " in message and "copy it again" in message
    assert isinstance(err.value, ValueError)
    assert not data_dir.exists()  # nothing written


def test_missing_file_names_file_and_folder(fake_mnist):
    raw_dir, _ = fake_mnist
    os.remove(os.path.join(raw_dir, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz .*not found in folder .*mnist_raw"):
        load_mnist_arrays(raw_dir, verify_checksums=False)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_mnist_arrays(os.path.join(raw_dir, "nope"))


def test_uncompressed_files_are_accepted(tmp_path, write_fake_mnist):
    arrays = write_fake_mnist(tmp_path, num_train=3, num_test=2, gz=False)
    loaded = load_mnist_arrays(str(tmp_path), verify_checksums=False)
    for split in ("train", "test"):
        np.testing.assert_array_equal(loaded[split][0], arrays[split][0])
        np.testing.assert_array_equal(loaded[split][1], arrays[split][1])


def test_swapped_files_fail_on_magic_number(fake_mnist):
    raw_dir, _ = fake_mnist
    images = os.path.join(raw_dir, "train-images-idx3-ubyte.gz")
    labels = os.path.join(raw_dir, "train-labels-idx1-ubyte.gz")
    os.replace(labels, images + ".tmp")
    os.replace(images, labels)
    os.replace(images + ".tmp", images)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: IDX magic number 2049"):
        load_mnist_arrays(raw_dir, verify_checksums=False)


def test_mismatched_counts_and_bad_labels(tmp_path, write_fake_mnist):
    write_fake_mnist(tmp_path / "a", num_train=3)
    write_fake_mnist(tmp_path / "b", num_train=4)
    os.replace(tmp_path / "b" / "train-labels-idx1-ubyte.gz", tmp_path / "a" / "train-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match="holds 3 images but train-labels-idx1-ubyte holds 4 labels"):
        load_mnist_arrays(str(tmp_path / "a"), verify_checksums=False)


def test_reimport_replaces_existing_copy(tmp_path, write_fake_mnist):
    data_dir = str(tmp_path / "tfds")
    write_fake_mnist(tmp_path / "first", num_train=4, num_test=2, seed=1)
    second = write_fake_mnist(tmp_path / "second", num_train=6, num_test=3, seed=2)
    import_mnist(str(tmp_path / "first"), data_dir, verify_checksums=False)
    import_mnist(str(tmp_path / "second"), data_dir, verify_checksums=False)
    src = get_source("mnist", "train", data_dir=data_dir)
    batch = gather(src, np.arange(len(src)))
    assert _by_image(batch["image"], batch["label"]) == _by_image(*second["train"])


# ---- the real MNIST files ----

# Label counts of the original MNIST (train, test), from the files' own statistics as
# reported with the dataset (e.g. torchvision / TFDS dataset cards).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def real_mnist(tmp_path_factory, shared_mnist):
    if not os.path.isfile(os.path.join(shared_mnist, "train-images-idx3-ubyte.gz")):
        pytest.skip(f"real MNIST files not found in {shared_mnist}")
    data_dir = str(tmp_path_factory.mktemp("real_mnist"))
    start = time.perf_counter()
    import_mnist(shared_mnist, data_dir)  # checksums verified
    elapsed = time.perf_counter() - start
    print(f"\nreal MNIST import took {elapsed:.1f} s", file=sys.stderr)
    return data_dir, elapsed


def test_real_import_counts_and_values(real_mnist, shared_mnist):
    data_dir, elapsed = real_mnist
    assert elapsed < 300  # ~8 s measured on the 2-core dev machine
    raw = load_mnist_arrays(shared_mnist)
    assert raw["train"][1][0] == 5 and raw["test"][1][0] == 7  # first labels of the files
    for split, counts, n in (("train", TRAIN_COUNTS, 60000), ("test", TEST_COUNTS, 10000)):
        src = get_source("mnist", split, data_dir=data_dir)
        assert len(src) == n
        if split == "train":
            # TFDS's key-hash order (same keys and split names as TFDS's own builder):
            # the prepared train[0] is a 4, not the file's first example (a 5).
            assert src[0]["label"] == 4
        batch = gather(src, np.arange(n))
        assert batch["image"].shape == (n, 28, 28, 1) and batch["image"].dtype == np.uint8
        assert np.bincount(batch["label"], minlength=10).tolist() == counts
        # Every prepared example is one of the file's examples, with its label.
        expected = _by_image(*raw[split])
        assert _by_image(batch["image"], batch["label"]) == expected
        # Pixel statistics of MNIST: mean intensity ~33.3 (train) / 33.8 (test) out of 255.
        assert 32 < batch["image"].mean() < 35
