"""Sources: ArraySource, gather (batched reads, dtypes, the index key), the embedded
digits (values checked against scikit-learn's raw 0..16 data) and get_source /
dataset_info for "digits"."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from jgen.data import ArraySource, DatasetInfo, dataset_info, digits_source, gather, get_source


def test_array_source_items(make_source):
    src = make_source(5)
    assert len(src) == 5
    ex = src[3]
    assert set(ex) == {"image", "label"}
    assert ex["image"].dtype == np.uint8 and ex["image"].shape == (4, 4, 1)
    assert ex["label"] == 3 and isinstance(ex["label"], int)


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((2, 4, 4, 1), np.float32), np.zeros(2, int), r"uint8 \[N, H, W, C\]; got float32 \[2, 4, 4, 1\]"),
        (np.zeros((2, 4, 4), np.uint8), np.zeros(2, int), r"got uint8 \[2, 4, 4\]\. Add a channel axis"),
        (np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3, int), r"N = 2 .*got int64 \[3\]"),
        (np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, float), r"integer labels .*got float64 \[2\]"),
    ],
)
def test_array_source_rejects_bad_arrays(images, labels, match):
    with pytest.raises(ValueError, match=match):
        ArraySource(images, labels)


def test_gather_stacks_and_adds_index(make_source, decode_index):
    src = make_source(50)
    indices = np.array([7, 3, 49, 3])
    batch = gather(src, indices)
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (4, 4, 4, 1)
    assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
    np.testing.assert_array_equal(decode_index(batch["image"]), indices)
    np.testing.assert_array_equal(batch["label"], indices % 10)
    np.testing.assert_array_equal(batch["index"], indices)


class _Spy:
    """A source without `__getitems__` that records how it was read."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.calls.append(("one", i))
        return self.inner[i]


class _BatchedSpy(_Spy):
    def __getitems__(self, ids):
        self.calls.append(("many", list(ids)))
        return [self.inner[i] for i in ids]


@pytest.mark.parametrize("batched", [True, False])
def test_gather_uses_getitems_when_present(make_source, batched):
    spy = (_BatchedSpy if batched else _Spy)(make_source(10))
    batch = gather(spy, [4, 1])
    np.testing.assert_array_equal(batch["index"], [4, 1])
    assert spy.calls == ([("many", [4, 1])] if batched else [("one", 4), ("one", 1)])


def test_gather_without_labels_and_extra_keys():
    class Unlabelled:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"image": np.full((2, 2, 1), i, np.uint8), "id": b"x"}

    batch = gather(Unlabelled(), [2, 0])
    assert set(batch) == {"image", "index"}  # "id" is not gathered, no "label"


def test_gather_errors(make_source):
    with pytest.raises(ValueError, match="at least one index"):
        gather(make_source(3), [])

    class FloatImages:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": np.zeros((2, 2, 1), np.float32), "label": 0}

    with pytest.raises(ValueError, match="uint8 images; .* gives float32"):
        gather(FloatImages(), [0])


# ---- embedded digits ----


def test_digits_splits_sizes_and_types():
    sizes = {split: len(digits_source(split)) for split in ("train", "test", "all")}
    assert sizes == {"train": 1497, "test": 300, "all": 1797}
    batch = gather(digits_source("train"), np.arange(len(digits_source("train"))))
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (1497, 8, 8, 1)
    assert set(np.unique(batch["label"])) == set(range(10))


def test_digits_values_match_sklearn():
    # Reference: scikit-learn's raw digits in 0..16, scaled by round(v * 255 / 16).
    raw = load_digits()
    everything = gather(digits_source("all"), np.arange(1797))
    expected = np.round(raw.images * 255 / 16).astype(np.uint8)[..., None]
    np.testing.assert_array_equal(everything["image"], expected)
    np.testing.assert_array_equal(everything["label"], raw.target)
    assert everything["image"].max() == 255 and everything["image"].min() == 0


def test_digits_train_test_partition_all():
    all_images = gather(digits_source("all"), np.arange(1797))["image"].reshape(1797, -1)
    train = gather(digits_source("train"), np.arange(1497))["image"].reshape(1497, -1)
    test = gather(digits_source("test"), np.arange(300))["image"].reshape(300, -1)
    # The split is perm[:1497] / perm[1497:] of default_rng(0).permutation(1797),
    # each kept in the original order.
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(train, all_images[np.sort(perm[:1497])])
    np.testing.assert_array_equal(test, all_images[np.sort(perm[1497:])])


def test_digits_unknown_split_lists_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown split 'validation' .*\['train', 'test', 'all'\]"):
        digits_source("validation")
    with pytest.raises(ValueError, match="Unknown split"):
        get_source("digits", "valid")


def test_get_source_digits_and_info():
    src = get_source("digits", "test")
    a, b = gather(src, np.arange(300)), gather(digits_source("test"), np.arange(300))
    np.testing.assert_array_equal(a["image"], b["image"])
    info = dataset_info("digits")
    assert info == DatasetInfo((8, 8, 1), 10, {"train": 1497, "test": 300, "all": 1797})
