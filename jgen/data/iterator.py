"""Deterministic, resumable, sharded batch iteration over a random-access source.

The order is a pure function of `(seed, epoch)`: global batch `b` of epoch `e` holds
the examples `perm[b * G:(b + 1) * G]` with
`perm = np.random.default_rng([seed, e]).permutation(N)` (the remainder of each epoch
is dropped). Every process computes the same global batch and reads only its own rows
of it; with a `NamedSharding` the rows are assembled into global `jax.Array`s. Because
the order is a function of the step, `get_state`/`set_state` (or `seek`) resume a run
on exactly the batches an uninterrupted run would have seen.

Example:
    >>> from jgen.data import get_source
    >>> it = DataIterator(get_source("digits", "train"), global_batch_size=32, seed=0)
    >>> batch = next(it)  # {"image": uint8 [32,8,8,1], "label": int32, "index": int32}
    >>> state = it.get_state()  # JSON-serialisable; it.set_state(state) resumes
"""

import functools
import math
import queue
import threading
import weakref
from typing import Any, Callable, Iterator

import jax
import numpy as np

from jgen.data.sources import Source, gather

_STATE_KEYS = ("epoch", "position", "seed", "global_batch_size", "num_examples", "shuffle")


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, num_examples: int, shuffle: bool) -> np.ndarray:
    perm = (
        np.random.default_rng([seed, epoch]).permutation(num_examples)
        if shuffle
        else np.arange(num_examples)
    )
    perm.setflags(write=False)
    return perm


def epoch_permutation(seed: int, epoch: int, num_examples: int, *, shuffle: bool = True):
    """The order of epoch `epoch`: `default_rng([seed, epoch]).permutation(N)`, or
    `arange(N)` without shuffling. Read-only int64 [N]."""
    return _permutation(int(seed), int(epoch), int(num_examples), bool(shuffle))


def _batch_shards(sharding: jax.sharding.NamedSharding) -> int:
    axes = sharding.spec[0] if len(sharding.spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(sharding.mesh.shape[a] for a in axes)


def local_rows(
    global_batch_size: int,
    *,
    sharding: jax.sharding.NamedSharding | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> slice:
    """The rows of a global batch that this process reads.

    With `sharding`: the union of this process's device slices of the batch axis,
    from `sharding.addressable_devices_indices_map((G,))`. Without: the
    `process_index`-th of `process_count` equal contiguous blocks (defaults:
    `jax.process_index()`, `jax.process_count()`).

    Raises:
        ValueError: G does not split evenly, the sharding shards more than the batch
            axis, both a sharding and process_index/process_count were given, or this
            process's rows are not contiguous.
    """
    g = global_batch_size
    if sharding is None:
        count = jax.process_count() if process_count is None else process_count
        index = jax.process_index() if process_index is None else process_index
        if not 0 <= index < count:
            raise ValueError(f"process_index must lie in [0, {count}); got {index}.")
        if g % count:
            raise ValueError(
                f"global_batch_size={g} must be divisible by the number of processes "
                f"({count}); choose a multiple of {count}."
            )
        return slice(index * (g // count), (index + 1) * (g // count))

    if not isinstance(sharding, jax.sharding.NamedSharding):
        raise TypeError(
            "sharding must be a jax.sharding.NamedSharding over the batch axis, e.g. "
            f"NamedSharding(mesh, P('data')); got {type(sharding).__name__}."
        )
    if process_index is not None or process_count is not None:
        raise ValueError(
            "Pass either a sharding or process_index/process_count, not both: with a "
            "sharding the rows of each process come from its addressable devices."
        )
    if any(axis is not None for axis in tuple(sharding.spec)[1:]):
        raise ValueError(
            "The batch sharding may only shard the leading (batch) axis, e.g. "
            f"NamedSharding(mesh, P('data')); got spec {sharding.spec}."
        )
    shards = _batch_shards(sharding)
    if g % shards:
        raise ValueError(
            f"global_batch_size={g} must be divisible by the {shards} shards of the "
            f"batch axis in {sharding}; choose a multiple of {shards}."
        )
    device_slices = sharding.addressable_devices_indices_map((g,)).values()
    spans = sorted({index[0].indices(g)[:2] for index in device_slices})
    start, stop = spans[0][0], spans[0][1]
    for lo, hi in spans[1:]:
        if lo > stop:
            raise ValueError(
                f"This process's rows of the global batch are not contiguous ({spans}) "
                f"under {sharding}; order the mesh so each process's devices hold "
                "consecutive batch shards (e.g. build it with jax.make_mesh)."
            )
        stop = max(stop, hi)
    return slice(start, stop)


def _finish(batch: dict[str, np.ndarray], sharding, global_batch_size: int) -> dict[str, Any]:
    """Local numpy rows -> global `jax.Array`s under `sharding` (numpy if None)."""
    if sharding is None:
        return batch
    return {
        key: jax.make_array_from_process_local_data(
            sharding, value, (global_batch_size,) + value.shape[1:]
        )
        for key, value in batch.items()
    }


class _Prefetcher:
    """Produces `produce(step)` for step = start, start + 1, ... in a daemon thread,
    at most `depth` ahead; batches come back strictly in step order.

    The thread holds `produce` (a bound method) only weakly, so an iterator that is
    dropped without `close()` is still garbage-collected and its thread then ends.
    """

    def __init__(self, produce: Callable[[int], Any], start: int, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(weakref.WeakMethod(produce), start), daemon=True
        )
        self._thread.start()

    def _run(self, produce_ref, step):
        while not self._stop.is_set():
            produce = produce_ref()
            if produce is None:
                return
            try:
                item = (step, produce(step), None)
            except Exception as e:  # handed to the consumer, raised there
                item = (step, None, e)
            del produce
            while not self._stop.is_set() and produce_ref() is not None:
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    pass
            if item[2] is not None:
                return
            step += 1

    def get(self, step: int):
        got, batch, error = self._queue.get()
        if error is not None:
            raise error
        assert got == step, (got, step)
        return batch

    def close(self):
        self._stop.set()
        self._thread.join()


class DataIterator:
    """Infinite, deterministic, resumable iterator of training batches.

    Args:
        source: a random-access `Source` with N examples.
        global_batch_size: G, the batch size summed over all processes; G <= N.
        seed: fixes the order of every epoch.
        shuffle: shuffle each epoch (otherwise examples come in source order).
        sharding: a `NamedSharding` over the batch axis (e.g. `P('data')`); batches
            are then global `jax.Array`s with this sharding. Without it, batches are
            this process's numpy rows.
        process_index, process_count: which rows this process reads when there is no
            sharding (defaults: `jax.process_index()`, `jax.process_count()`).
        prefetch: batches read ahead in a background thread (0: none). Order and
            state are the same either way.

    Each batch is `{"image": uint8 [G, H, W, C], "label": int32 [G], "index": int32
    [G]}` ("index": positions in `source`; "label" only when the source has labels);
    without a sharding the leading axis is this process's rows, G / process_count.
    """

    def __init__(
        self,
        source: Source,
        *,
        global_batch_size: int,
        seed: int,
        shuffle: bool = True,
        sharding: jax.sharding.NamedSharding | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        prefetch: int = 2,
    ):
        n = len(source)
        if not 1 <= global_batch_size <= n:
            raise ValueError(
                f"global_batch_size must lie in [1, {n}] (the dataset has {n} examples "
                f"and each epoch drops its remainder); got {global_batch_size}."
            )
        self._source = source
        self._num_examples = n
        self._batch_size = int(global_batch_size)
        self._seed = int(seed)
        self._shuffle = bool(shuffle)
        self._sharding = sharding
        self._rows = local_rows(
            global_batch_size,
            sharding=sharding,
            process_index=process_index,
            process_count=process_count,
        )
        self._prefetch = int(prefetch)
        self._prefetcher: _Prefetcher | None = None
        self._step = 0  # global steps consumed

    @property
    def steps_per_epoch(self) -> int:
        """N // G: full global batches per epoch."""
        return self._num_examples // self._batch_size

    @property
    def step(self) -> int:
        """Number of global batches returned so far (or set by `seek`/`set_state`)."""
        return self._step

    def global_indices(self, step: int) -> np.ndarray:
        """Example indices of global batch `step` (counting from epoch 0), int64 [G]."""
        epoch, position = divmod(step, self.steps_per_epoch)
        perm = epoch_permutation(self._seed, epoch, self._num_examples, shuffle=self._shuffle)
        return perm[position * self._batch_size : (position + 1) * self._batch_size]

    def _host_batch(self, step: int) -> dict[str, np.ndarray]:
        return gather(self._source, self.global_indices(step)[self._rows])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._prefetch > 0:
            if self._prefetcher is None:
                self._prefetcher = _Prefetcher(self._host_batch, self._step, self._prefetch)
            try:
                batch = self._prefetcher.get(self._step)
            except Exception:
                self.close()
                raise
        else:
            batch = self._host_batch(self._step)
        self._step += 1
        return _finish(batch, self._sharding, self._batch_size)

    def close(self) -> None:
        """Stops the prefetch thread, if any (iteration can go on afterwards)."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def seek(self, step: int) -> None:
        """Positions the iterator so the next batch is global batch `step` (e.g. the
        step restored from a checkpoint)."""
        if step < 0:
            raise ValueError(f"seek needs a step >= 0; got {step}.")
        self.close()
        self._step = int(step)

    def get_state(self) -> dict[str, int | bool]:
        """The position and identity of this iterator, JSON-serialisable.

        Returns:
            `{"epoch", "position" (batches consumed in the epoch), "seed",
            "global_batch_size", "num_examples", "shuffle"}`.
        """
        epoch, position = divmod(self._step, self.steps_per_epoch)
        return {
            "epoch": epoch,
            "position": position,
            "seed": self._seed,
            "global_batch_size": self._batch_size,
            "num_examples": self._num_examples,
            "shuffle": self._shuffle,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resumes from `get_state()` of an iterator over the same data and settings.

        Raises:
            ValueError: a key is missing, or seed / batch size / dataset size /
                shuffle differ from this iterator's (the batches would differ).
        """
        missing = [k for k in _STATE_KEYS if k not in state and k != "shuffle"]
        if missing:
            raise ValueError(
                f"Iterator state lacks {missing}; expected the dict from "
                f"DataIterator.get_state() with keys {list(_STATE_KEYS)}, got "
                f"{sorted(state)}."
            )
        mine = self.get_state()
        for key in ("seed", "global_batch_size", "num_examples", "shuffle"):
            if key in state and state[key] != mine[key]:
                raise ValueError(
                    f"Cannot resume: the saved iterator state has {key}={state[key]!r} "
                    f"but this iterator has {key}={mine[key]!r}. Build the iterator "
                    "with the same seed, global batch size, dataset and shuffle as the "
                    "run that saved the state (or start a fresh run)."
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.steps_per_epoch:
            raise ValueError(
                f"Invalid iterator state: epoch={epoch} must be >= 0 and "
                f"position={position} in [0, {self.steps_per_epoch})."
            )
        self.seek(epoch * self.steps_per_epoch + position)


def eval_batches(
    source: Source,
    *,
    global_batch_size: int,
    sharding: jax.sharding.NamedSharding | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, Any]]:
    """One pass over every example of `source`, in order, for evaluation.

    The last batch is padded to the full size G: padding rows repeat the last real
    example and have `mask == 0`, so `sum(loss * mask) / sum(mask)` is the exact mean.

    Args:
        source: a random-access `Source` with N examples.
        global_batch_size: G (any G >= 1; ceil(N / G) batches).
        sharding, process_index, process_count: as in `DataIterator`.

    Yields:
        `{"image", "label", "index", "mask": float32 [G]}` as in `DataIterator`.
    """
    n, g = len(source), global_batch_size
    if g < 1:
        raise ValueError(f"global_batch_size must be >= 1; got {g}.")
    rows = local_rows(
        g, sharding=sharding, process_index=process_index, process_count=process_count
    )
    for start in range(0, n, g):
        real = np.arange(start, min(start + g, n))
        padded = np.concatenate([real, np.full(g - len(real), real[-1])])
        mask = (np.arange(g) < len(real)).astype(np.float32)
        batch = gather(source, padded[rows])
        batch["mask"] = mask[rows]
        yield _finish(batch, sharding, g)
