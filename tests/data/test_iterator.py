"""DataIterator and eval_batches: the order as a function of (seed, epoch), each
example once per epoch, exact resume from get_state/set_state/seek (with and without
prefetch), 8-device sharded global arrays equal to the unsharded batch, simulated
2-process reads, and masked padded evaluation batches."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jgen.data import DataIterator, digits_source, epoch_permutation, eval_batches, local_rows


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]))


@pytest.fixture(scope="module")
def mesh8():
    return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def test_epoch_permutation_reference():
    # Reference: the documented formula.
    np.testing.assert_array_equal(epoch_permutation(3, 2, 50), np.random.default_rng([3, 2]).permutation(50))
    np.testing.assert_array_equal(epoch_permutation(3, 2, 50, shuffle=False), np.arange(50))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_order_is_the_documented_function_of_seed_and_epoch(make_source, decode_index, prefetch):
    n, g = 103, 10
    it = DataIterator(make_source(n), global_batch_size=g, seed=7, prefetch=prefetch)
    assert it.steps_per_epoch == 10  # the remainder (3 examples) is dropped
    for epoch in range(3):
        perm = np.random.default_rng([7, epoch]).permutation(n)
        seen = []
        for b in range(10):
            batch = next(it)
            np.testing.assert_array_equal(batch["index"], perm[b * g : (b + 1) * g])
            np.testing.assert_array_equal(decode_index(batch["image"]), batch["index"])
            np.testing.assert_array_equal(batch["label"], batch["index"] % 10)
            seen.extend(batch["index"].tolist())
        assert len(seen) == len(set(seen)) == 100  # each example at most once, 100 of 103
    it.close()


def test_every_example_once_per_epoch_and_epochs_differ(make_source):
    it = DataIterator(make_source(60), global_batch_size=12, seed=0, prefetch=0)
    epoch0 = np.concatenate([b["index"] for b in _take(it, 5)])
    epoch1 = np.concatenate([b["index"] for b in _take(it, 5)])
    assert sorted(epoch0.tolist()) == sorted(epoch1.tolist()) == list(range(60))
    assert not np.array_equal(epoch0, epoch1)


def test_same_seed_same_batches_other_seed_other_batches(make_source):
    src = make_source(40)
    a = _take(DataIterator(src, global_batch_size=8, seed=1, prefetch=0), 6)
    b = _take(DataIterator(src, global_batch_size=8, seed=1, prefetch=2), 6)
    c = _take(DataIterator(src, global_batch_size=8, seed=2, prefetch=0), 6)
    _assert_batches_equal(a, b)
    assert not np.array_equal(a[0]["index"], c[0]["index"])


def test_no_shuffle_is_source_order(make_source):
    it = DataIterator(make_source(20), global_batch_size=5, seed=0, shuffle=False, prefetch=0)
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in _take(it, 4)]), np.arange(20))


@pytest.mark.parametrize("prefetch", [0, 2])
@pytest.mark.parametrize("stop_after", [3, 7, 12])  # inside epoch 0, at its end, in epoch 1
def test_resume_gives_the_uninterrupted_batches(make_source, prefetch, stop_after):
    src = make_source(70)
    reference = _take(DataIterator(src, global_batch_size=10, seed=5, prefetch=0), stop_after + 9)

    first = DataIterator(src, global_batch_size=10, seed=5, prefetch=prefetch)
    _take(first, stop_after)
    state = json.loads(json.dumps(first.get_state()))  # survives a JSON checkpoint
    first.close()
    assert state == {
        "epoch": stop_after // 7,
        "position": stop_after % 7,
        "seed": 5,
        "global_batch_size": 10,
        "num_examples": 70,
        "shuffle": True,
    }
    resumed = DataIterator(src, global_batch_size=10, seed=5, prefetch=prefetch)
    _take(resumed, 2)  # state is overwritten, whatever was read before
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 9), reference[stop_after:])
    resumed.close()

    sought = DataIterator(src, global_batch_size=10, seed=5, prefetch=prefetch)
    sought.seek(stop_after)
    assert sought.step == stop_after and sought.get_state() == state
    _assert_batches_equal(_take(sought, 9), reference[stop_after:])
    sought.close()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"seed": 6}, "seed=6 but this iterator has seed=5"),
        ({"global_batch_size": 5}, "global_batch_size=5 but this iterator has global_batch_size=10"),
        ({"num_examples": 71}, "num_examples=71 but this iterator has num_examples=70"),
        ({"position": 7}, r"position=7 in \[0, 7\)"),
    ],
)
def test_set_state_rejects_other_runs(make_source, change, match):
    it = DataIterator(make_source(70), global_batch_size=10, seed=5, prefetch=0)
    state = {**it.get_state(), **change}
    with pytest.raises(ValueError, match=match):
        it.set_state(state)


def test_set_state_missing_keys(make_source):
    it = DataIterator(make_source(70), global_batch_size=10, seed=5, prefetch=0)
    with pytest.raises(ValueError, match=r"lacks \['position'\]"):
        it.set_state({"epoch": 0, "seed": 5, "global_batch_size": 10, "num_examples": 70})


@pytest.mark.parametrize("g", [0, 11])
def test_batch_size_must_fit(make_source, g):
    with pytest.raises(ValueError, match=rf"global_batch_size must lie in \[1, 10\] .*got {g}"):
        DataIterator(make_source(10), global_batch_size=g, seed=0)


def test_prefetch_reraises_source_errors(make_source):
    class Broken:
        def __len__(self):
            return 10

        def __getitem__(self, i):
            raise OSError(f"disk error at {i}")

    it = DataIterator(Broken(), global_batch_size=2, seed=0, prefetch=2)
    with pytest.raises(OSError, match="disk error"):
        next(it)
    assert it.step == 0


# ---- sharding and processes ----


@pytest.mark.parametrize("prefetch", [0, 2])
def test_sharded_global_array_equals_unsharded_batch(make_source, mesh8, prefetch):
    sharding = NamedSharding(mesh8, P("data"))
    src = make_source(100)
    plain = _take(DataIterator(src, global_batch_size=16, seed=3, prefetch=0), 3)
    sharded = _take(DataIterator(src, global_batch_size=16, seed=3, sharding=sharding, prefetch=prefetch), 3)
    for p, s in zip(plain, sharded):
        assert set(s) == {"image", "label", "index"}
        for key in p:
            assert isinstance(s[key], jax.Array) and s[key].sharding == sharding
            assert s[key].shape == p[key].shape and s[key].dtype == p[key].dtype
            np.testing.assert_array_equal(np.asarray(s[key]), p[key])
        # Each device holds its 2 consecutive rows.
        shard_rows = sorted((sh.index[0].start, sh.data.shape[0]) for sh in s["index"].addressable_shards)
        assert shard_rows == [(2 * d, 2) for d in range(8)]


def test_two_processes_read_disjoint_halves(make_source):
    src = make_source(64)
    whole = _take(DataIterator(src, global_batch_size=16, seed=9, process_index=0, process_count=1), 5)
    halves = [
        _take(DataIterator(src, global_batch_size=16, seed=9, process_index=p, process_count=2), 5)
        for p in range(2)
    ]
    for step in range(5):
        a, b = halves[0][step], halves[1][step]
        assert len(a["index"]) == len(b["index"]) == 8
        assert not set(a["index"].tolist()) & set(b["index"].tolist())
        for key in whole[step]:
            np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), whole[step][key])


def test_local_rows():
    assert local_rows(12, process_index=2, process_count=3) == slice(8, 12)
    with pytest.raises(ValueError, match="global_batch_size=10 must be divisible by the number of processes"):
        local_rows(10, process_index=0, process_count=3)
    with pytest.raises(ValueError, match=r"process_index must lie in \[0, 2\)"):
        local_rows(10, process_index=2, process_count=2)
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    # Replicated over "model": every device of this single process -> all rows.
    assert local_rows(8, sharding=NamedSharding(mesh, P("data"))) == slice(0, 8)
    assert local_rows(8, sharding=NamedSharding(mesh, P(("data", "model")))) == slice(0, 8)
    with pytest.raises(ValueError, match="global_batch_size=6 must be divisible by the 4 shards"):
        local_rows(6, sharding=NamedSharding(mesh, P("data")))
    with pytest.raises(ValueError, match="may only shard the leading"):
        local_rows(8, sharding=NamedSharding(mesh, P("data", "model")))
    with pytest.raises(ValueError, match="either a sharding or process_index"):
        local_rows(8, sharding=NamedSharding(mesh, P("data")), process_index=0)


# ---- evaluation ----


def _check_eval(batches, n, g, decode_index):
    assert len(batches) == -(-n // g)
    real = []
    for batch in batches:
        assert set(batch) == {"image", "label", "index", "mask"}
        assert batch["mask"].dtype == np.float32 and batch["image"].shape[0] == g
        mask = np.asarray(batch["mask"])
        index = np.asarray(batch["index"])
        np.testing.assert_array_equal(decode_index(np.asarray(batch["image"])), index)
        real.extend(index[mask == 1].tolist())
        assert set(np.unique(mask)) <= {0.0, 1.0}
    assert real == list(range(n))  # every example once, in order


def test_eval_batches_cover_every_example_once(make_source, decode_index):
    batches = list(eval_batches(make_source(23), global_batch_size=8))
    _check_eval(batches, 23, 8, decode_index)
    np.testing.assert_array_equal(batches[-1]["mask"], [1] * 7 + [0])
    assert batches[-1]["index"][-1] == 22  # padding repeats the last real example
    # The exact mean of a per-example quantity from masked sums.
    total = sum(float((b["label"] * b["mask"]).sum()) for b in batches)
    assert total / sum(float(b["mask"].sum()) for b in batches) == np.mean(np.arange(23) % 10)


def test_eval_batches_exact_multiple_and_larger_batch(make_source, decode_index):
    _check_eval(list(eval_batches(make_source(16), global_batch_size=8)), 16, 8, decode_index)
    _check_eval(list(eval_batches(make_source(5), global_batch_size=8)), 5, 8, decode_index)


def test_eval_batches_sharded_and_two_processes(make_source, mesh8, decode_index):
    sharding = NamedSharding(mesh8, P("data"))
    src = make_source(37)
    plain = list(eval_batches(src, global_batch_size=16))
    sharded = list(eval_batches(src, global_batch_size=16, sharding=sharding))
    _check_eval(sharded, 37, 16, decode_index)
    _assert_batches_equal(plain, sharded)
    assert sharded[0]["mask"].sharding == sharding
    halves = [list(eval_batches(src, global_batch_size=16, process_index=p, process_count=2)) for p in range(2)]
    for whole, a, b in zip(plain, *halves):
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), whole[key])


def test_digits_end_to_end(mesh8):
    sharding = NamedSharding(mesh8, P("data"))
    it = DataIterator(digits_source("train"), global_batch_size=64, seed=0, sharding=sharding)
    assert it.steps_per_epoch == 1497 // 64
    batch = next(it)
    assert batch["image"].shape == (64, 8, 8, 1) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
    it.close()
