"""TFDS at the edge: a dataset that is not prepared fails at once (timed) with a
message naming the dataset, split and data_dir and saying how to get it; unknown names
and splits; $TFDS_DATA_DIR; and reading a prepared copy through get_source."""

import os
import time

import numpy as np
import pytest

from jgen.data import DatasetNotFoundError, dataset_info, default_data_dir, gather, get_source


def test_missing_mnist_fails_at_once_with_import_command(tmp_path):
    data_dir = str(tmp_path / "empty")
    os.makedirs(data_dir)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as err:
        get_source("mnist", "train", data_dir=data_dir)
    elapsed = time.perf_counter() - start
    # Measured on the dev machine: ~0.2 s (TFDS 4.9.10 raises NotImplementedError about
    # tfrecord instead; with download=True it would retry unreachable hosts ~200 s).
    assert elapsed < 10, f"took {elapsed:.1f} s"
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "'mnist'" in message and "'train'" in message and repr(data_dir) in message
    assert f"jgen data import mnist --from ../shared/data/mnist --data-dir {data_dir}" in message
    assert os.listdir(data_dir) == []  # nothing was written


def test_missing_other_dataset_says_download(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"'cifar10' \(split 'test'\).*download=True"):
        get_source("cifar10", "test", data_dir=str(tmp_path))


def test_dataset_info_of_missing_dataset(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="jgen data import mnist"):
        dataset_info("mnist", data_dir=str(tmp_path))


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"Unknown dataset 'no_such_dataset'.*tfds.list_builders"):
        get_source("no_such_dataset", "train", data_dir=str(tmp_path))


def test_default_data_dir_honours_tfds_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert default_data_dir() == str(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=f"--data-dir {tmp_path}"):
        get_source("mnist", "test")
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert default_data_dir() == os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def test_gcs_flag_is_left_as_found(tmp_path):
    from tensorflow_datasets.core.utils import gcs_utils

    before = gcs_utils._is_gcs_disabled
    with pytest.raises(DatasetNotFoundError):
        get_source("mnist", "train", data_dir=str(tmp_path))
    assert gcs_utils._is_gcs_disabled == before


def test_prepared_copy_reads_through_get_source(fake_mnist_prepared):
    data_dir, arrays = fake_mnist_prepared
    src = get_source("mnist", "test", data_dir=data_dir)
    assert len(src) == 10
    batch = gather(src, np.arange(10))
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (10, 28, 28, 1)
    assert batch["label"].dtype == np.int32
    # TFDS slicing syntax passes through.
    assert len(get_source("mnist", "train[:5]", data_dir=data_dir)) == 5
    info = dataset_info("mnist", data_dir=data_dir)
    assert info.image_shape == (28, 28, 1) and info.num_classes == 10
    assert info.num_examples == {"train": 20, "test": 10}


def test_unknown_split_of_prepared_copy(fake_mnist_prepared):
    data_dir, _ = fake_mnist_prepared
    with pytest.raises(ValueError, match=r"Dataset 'mnist' .*Unknown split 'validation'.*\['train', 'test'\]"):
        get_source("mnist", "validation", data_dir=data_dir)
