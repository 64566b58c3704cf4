"""The training loop: `train_and_evaluate(config, workdir)`.

Everything a family needs is in its `ModelSpec`; this loop owns the edges:
mesh and shardings, the data iterator, Orbax checkpoints (resume from the
newest restorable step), metrics, the progress bar, preemption (SIGTERM) and
the PNGs left in the workdir. It waits for results at least every 16 steps, so
it never queues an unbounded number of steps (which can deadlock XLA's CPU
collectives on few cores).
"""

import dataclasses
import os
import signal
import threading
import time

import jax
import numpy as np
from ml_collections import ConfigDict
from tqdm.auto import tqdm

from jgen.checkpoint import Checkpointer
from jgen.config import save_config
from jgen.data import ArraySource, DataIterator, dataset_info, gather, get_source
from jgen.families import build_model
from jgen.train import artifacts
from jgen.train.evaluate import evaluate
from jgen.train.mesh import batch_sharding, check_global_batch, make_mesh, replicated
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState, create_train_state
from jgen.train.step import make_train_step, nonfinite_terms

MAX_QUEUED_STEPS = 16


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss, term or gradient."""


@dataclasses.dataclass
class Run:
    """Everything `train_and_evaluate` set up, for inference and tests."""

    config: ConfigDict
    mesh: object
    spec: object
    optimizer: object
    info: object


def setup(config: ConfigDict) -> Run:
    """Mesh, dataset info, model spec and optimizer for a config (no data read)."""
    mesh = make_mesh(config.get("num_devices", 0) or None)
    data_dir = config.data.get("data_dir") or None
    info = dataset_info(config.data.name, data_dir=data_dir)
    spec = build_model(config, info)
    optimizer = spec.optimizer if spec.optimizer is not None else make_optimizer(config.optim, config.train.num_steps)
    return Run(config=config, mesh=mesh, spec=spec, optimizer=optimizer, info=info)


def abstract_state(run: Run):
    """Shapes, dtypes and (replicated) shardings of the train state, computed without FLOPs."""
    key = jax.random.PRNGKey(run.config.seed)
    shapes = jax.eval_shape(lambda k: _init_state(run, k), key)
    sharding = replicated(run.mesh)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def _init_state(run: Run, key, batch=None) -> TrainState:
    init_key, state_key = jax.random.split(key)
    params = run.spec.init(init_key)
    if batch is not None and run.spec.data_init is not None:
        # Data-dependent init (e.g. ActNorm) before the optimizer state exists.
        params = run.spec.data_init(params, jax.random.fold_in(key, 2), batch)
    extra = run.spec.init_extra(params) if run.spec.init_extra is not None else None
    return create_train_state(params, run.optimizer, state_key, extra)


def init_state(run: Run, batch=None) -> TrainState:
    """The fresh train state; `batch` (the first training batch) feeds `spec.data_init`."""
    key = jax.random.PRNGKey(run.config.seed)
    return jax.jit(lambda k, b: _init_state(run, k, b), out_shardings=replicated(run.mesh))(key, batch)


def eval_params(state: TrainState, config: ConfigDict):
    """The parameters used for sampling and evaluation: EMA if enabled."""
    return state.ema_params if config.train.get("ema_decay", 0.0) > 0 else state.params


def host_value(x) -> np.ndarray:
    """A host copy of a replicated global array (works across processes)."""
    return np.asarray(x.addressable_data(0))


class _Preemption:
    """Records SIGTERM so the loop can checkpoint and exit cleanly."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def any_process(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([self.requested], np.int32))
        return bool(np.any(flags))


def _stack_batches(batches, sharding):
    stacked = {k: np.stack([np.asarray(b[k]) for b in batches]) for k in batches[0]}
    return {k: jax.device_put(v, sharding) for k, v in stacked.items()}


def _elbo_only(config: ConfigDict) -> ConfigDict:
    """The config with the expensive IWAE estimators dropped, for in-training eval."""
    quick = config.copy_and_resolve_references()
    with quick.unlocked():
        quick.eval.iwae_k = ()
    return quick


def materialize(source, chunk: int = 4096) -> ArraySource:
    """Decodes a whole split into memory once (`data.cache=True`).

    For datasets that fit in host memory (MNIST: 47 MB) this removes the
    per-step decode cost; every host then holds the whole split, so leave it
    off for datasets that do not fit.
    """
    if isinstance(source, ArraySource):
        return source
    images, labels, extras = [], [], {}
    for start in range(0, len(source), chunk):
        b = gather(source, np.arange(start, min(start + chunk, len(source))))
        images.append(b["image"])
        labels.append(b["label"])
        for k in ("tokens", "vector"):
            if k in b:
                extras.setdefault(k, []).append(b[k])
    return ArraySource(np.concatenate(images), np.concatenate(labels),
                       {k: np.concatenate(v) for k, v in extras.items()})


def train_and_evaluate(config: ConfigDict, workdir: str, *, progress: bool = True) -> TrainState:
    """Trains `config` in `workdir`, resuming from its checkpoints if any.

    Leaves in the workdir: config.json, checkpoints/, metrics.jsonl,
    loss_curve.png and samples.png. Returns the final state. A fresh run
    (no checkpoint) applies the spec's `data_init`, if any, to the first batch.

    Raises:
      NonFiniteError: a loss term or gradient became NaN/inf (the message names
        the step and the terms; checkpoints saved before it are intact).
    """
    os.makedirs(workdir, exist_ok=True)
    is_chief = jax.process_index() == 0
    run = setup(config)
    tc = config.train
    check_global_batch(tc.batch_size, run.mesh)
    steps_per_call = int(tc.get("steps_per_call", 1))
    if tc.num_steps % steps_per_call:
        raise ValueError(
            f"train.num_steps={tc.num_steps} must be a multiple of train.steps_per_call={steps_per_call}."
        )
    data_dir = config.data.get("data_dir") or None
    source = get_source(config.data.name, config.data.train_split, data_dir=data_dir,
                        download=config.data.get("download", False))
    if config.data.get("cache", False):
        source = materialize(source)
    iterator = DataIterator(source, global_batch_size=tc.batch_size, seed=config.seed,
                            sharding=batch_sharding(run.mesh))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=tc.save_every,
                        keep=tc.get("keep_checkpoints", 3))
    logger = _Logger(run, workdir, progress=progress)
    try:
        state, step = _restore_or_init(run, ckpt, iterator, logger)
        if is_chief:
            save_config(config, os.path.join(workdir, "config.json"))
        state, finished = _loop(run, state, step, iterator, ckpt, logger)
    finally:
        iterator.close()
        ckpt.close()
        logger.close()
    if finished:
        if is_chief:
            artifacts.plot_loss_curve(logger.path, os.path.join(workdir, "loss_curve.png"))
        images = generate(run, state, config.sample.get("num", 64), seed=config.seed)
        if is_chief:
            artifacts.save_image_grid(images, os.path.join(workdir, "samples.png"))
    return state


def _restore_or_init(run: Run, ckpt: Checkpointer, iterator, logger) -> tuple[TrainState, int]:
    restored = ckpt.restore_latest(abstract_state(run))
    if restored is None and ckpt.all_steps():
        raise FileNotFoundError(
            f"None of the checkpoints {ckpt.all_steps()} in {ckpt.directory} restores (see the warnings "
            "above); refusing to start over on top of them. Move them away or use a fresh --workdir."
        )
    if restored is None:
        logger.start(0)
        first_batch = None
        if run.spec.data_init is not None:
            # A fresh run with a data-dependent init peeks at the first training batch
            # (then rewinds, so training still starts with it). Resumed runs skip this.
            first_batch = next(iterator)
            iterator.seek(0)
        return init_state(run, first_batch), 0
    step, state, data_state = restored
    iterator.set_state(data_state)
    logger.start(step)
    if jax.process_index() == 0:
        print(f"Resumed from checkpoint step {step} in {ckpt.directory}", flush=True)
    return state, step


def _loop(run: Run, state: TrainState, step: int, iterator, ckpt: Checkpointer, logger) -> tuple[TrainState, bool]:
    """Runs steps until train.num_steps; returns (state, finished) (False on SIGTERM)."""
    tc = run.config.train
    steps_per_call = int(tc.get("steps_per_call", 1))
    train_step = make_train_step(run.spec.loss_fn, run.optimizer, mesh=run.mesh,
                                 ema_decay=tc.get("ema_decay", 0.0), steps_per_call=steps_per_call,
                                 post_update=run.spec.post_update, update=run.spec.update,
                                 pre_update=run.spec.pre_update)
    stacked_sharding = batch_sharding(run.mesh, leading_axes=1)
    sync_every = max(steps_per_call, (MAX_QUEUED_STEPS // steps_per_call) * steps_per_call)
    pending = []  # (first step number, device metrics) not yet checked on the host
    with _Preemption() as preemption:
        while step < tc.num_steps:
            if steps_per_call > 1:
                batch = _stack_batches([next(iterator) for _ in range(steps_per_call)], stacked_sharding)
            else:
                batch = next(iterator)
            state, metrics = train_step(state, batch)
            pending.append((step + 1, metrics))
            step += steps_per_call
            save_due = step % tc.save_every == 0 or step == tc.num_steps
            log_due = step % logger.every == 0 or step == tc.num_steps
            if not (step % sync_every == 0 or save_due or log_due):
                continue
            # Sync point: wait for the queued steps and check them before anything is saved.
            for first, m in pending:
                logger.add(_checked_rows(first, m, steps_per_call, ckpt))
            pending.clear()
            if log_due:
                logger.log(step, state)
            if save_due:
                ckpt.save(step, state, iterator.get_state(), force=step == tc.num_steps)
            if preemption.any_process():
                if step not in ckpt.all_steps():
                    ckpt.save(step, state, iterator.get_state(), force=True)
                ckpt.wait()
                if jax.process_index() == 0:
                    print(f"SIGTERM: saved checkpoint at step {step} in {ckpt.directory}; exiting.", flush=True)
                return state, False
    return state, True


def _checked_rows(first: int, metrics, steps_per_call: int, ckpt: Checkpointer) -> list[dict]:
    """Host copies of one call's metrics (one row per step), refusing non-finite values."""
    host = {k: host_value(v) for k, v in metrics.items()}
    rows = [host] if steps_per_call == 1 else [{k: v[i] for k, v in host.items()} for i in range(steps_per_call)]
    for i, row in enumerate(rows):
        bad = nonfinite_terms(row)
        if bad:
            ckpt.wait()
            good = ckpt.all_steps()
            raise NonFiniteError(
                f"Non-finite value at step {first + i}: "
                + ", ".join(f"{k}={float(row[k])}" for k in bad)
                + f". Stopped; the last good checkpoint ({good[-1] if good else 'none'}) in "
                f"{ckpt.directory} is intact. Try a lower --config.optim.learning_rate or "
                "gradient clipping (--config.optim.grad_clip_norm=1.0)."
            )
    return rows


class _Logger:
    """Averages step metrics between log points; writes metrics.jsonl, the progress
    bar and (every train.eval_every steps) a quick evaluation: the ELBO alone for
    latent-variable models, the family's first NLL estimate otherwise."""

    def __init__(self, run: Run, workdir: str, *, progress: bool):
        self.run = run
        self.every = max(int(run.config.train.log_every), 1)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.is_chief = jax.process_index() == 0
        self._rows: list[dict] = []
        self._eval = None
        self._bar = tqdm(total=run.config.train.num_steps, desc="train", dynamic_ncols=True,
                         disable=not progress or not self.is_chief)

    def start(self, step: int) -> None:
        """Positions the bar; drops log rows after `step` (a resumed run logs them again)."""
        self._bar.update(step)
        if self.is_chief:
            if step == 0 and os.path.exists(self.path):
                os.remove(self.path)
            elif step:
                artifacts.truncate_metrics(self.path, step)
        self._t0, self._steps = time.perf_counter(), 0

    def add(self, rows: list[dict]) -> None:
        self._rows.extend(rows)
        self._steps += len(rows)
        self._bar.update(len(rows))

    def log(self, step: int, state: TrainState) -> None:
        config, elapsed = self.run.config, time.perf_counter() - self._t0
        row = {k: float(np.mean([r[k] for r in self._rows])) for k in self._rows[0]}
        row.update(step=step, steps_per_sec=self._steps / elapsed,
                   examples_per_sec=self._steps * config.train.batch_size / elapsed)
        eval_every = int(config.train.get("eval_every", 0))
        if eval_every and (step % eval_every == 0 or step == config.train.num_steps):
            name, nats = self._evaluate(state)
            row[f"eval/{name}"] = nats
        if self.is_chief:
            artifacts.append_metrics(self.path, row)
        self._bar.set_postfix(loss=f"{row['loss']:.3f}", steps_per_s=f"{row['steps_per_sec']:.1f}")
        self._rows, self._t0, self._steps = [], time.perf_counter(), 0

    def _evaluate(self, state: TrainState) -> tuple[str, float]:
        config = self.run.config
        if self._eval is None:
            source = get_source(config.data.name, config.data.eval_split, data_dir=config.data.get("data_dir") or None)
            self._eval = (build_model(_elbo_only(config), self.run.info), source)
        spec, source = self._eval
        res = evaluate(spec, eval_params(state, config), source, mesh=self.run.mesh,
                       batch_size=config.eval.batch_size, key=jax.random.PRNGKey(config.seed + 1),
                       num_examples=config.train.get("eval_examples", 0))
        # The ELBO for latent-variable models; otherwise the family's first NLL estimate
        # (e.g. "exact" for autoregressive models and flows).
        name = "ELBO" if "ELBO" in res else next(k for k, v in res.items() if isinstance(v, dict) and "nats" in v)
        return name, res[name]["nats"]

    def close(self) -> None:
        self._bar.close()


def data_conditions(run: Run, num: int, *, split: str | None = None, seed: int = 0) -> np.ndarray | None:
    """Raw conditions of the first `num` examples of a split (default: the config's
    eval split), for preview grids and sample-quality metrics of a conditional model
    whose condition is not a class label (captions, vectors, measured images; image
    conditions draw any random holes from `seed`). None for unconditional models.
    Fewer examples than `num` are cycled."""
    from jgen.conditioning import condition_of

    cond = getattr(run.spec, "condition", None)
    if cond is None:
        return None
    config = run.config
    source = get_source(config.data.name, split or config.data.eval_split,
                        data_dir=config.data.get("data_dir") or None)
    idx = np.arange(int(num)) % len(source)
    batch = gather(source, idx)
    return np.asarray(condition_of(cond, batch, jax.random.PRNGKey(seed)))


def generate(run: Run, state: TrainState, num: int, *, seed: int = 0, label: int | None = None,
             condition=None) -> np.ndarray:
    """`num` samples [num, H, W, C] in [0, 1] from the state's eval parameters, as numpy.

    `label` asks a class-conditional model for that class only (default: the
    classes in turn). `condition` is a raw condition [num, ...] for any conditional
    model (see `jgen.conditioning`); by default a conditional model whose condition is
    not a label gets the conditions of the eval split's first `num` examples.
    """
    from jgen.conditioning import check_condition

    spec_cond = getattr(run.spec, "condition", None)
    labels = None
    if label is not None:
        if not run.spec.num_classes:
            raise ValueError(
                f"--label {label} needs a class-conditional model; this one is not (set "
                "model.conditional=true or model.condition.kind='label' when training)."
            )
        if not 0 <= label < run.spec.num_classes:
            raise ValueError(f"--label {label} is out of range: the model has {run.spec.num_classes} classes.")
        labels = np.full((int(num),), label, np.int32)
    elif condition is not None:
        labels = np.asarray(check_condition(spec_cond, condition, int(num), who="generate"))
    elif spec_cond is not None and spec_cond.kind != "label":
        labels = data_conditions(run, int(num), seed=seed)
    sample = jax.jit(run.spec.sample, static_argnums=2, out_shardings=replicated(run.mesh))
    out = sample(eval_params(state, run.config), jax.random.PRNGKey(seed + 2), int(num), labels)
    return host_value(out)


def restore_for_inference(workdir: str, config: ConfigDict | None = None):
    """(run, state, step) for the newest restorable checkpoint of a workdir."""
    from jgen.config import load_saved_config

    config = config or load_saved_config(workdir)
    run = setup(config)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1, keep=10**6, async_save=False)
    restored = ckpt.restore_latest(abstract_state(run), set_aside=False)
    ckpt.close()
    if restored is None:
        raise FileNotFoundError(
            f"No restorable checkpoint in {os.path.join(workdir, 'checkpoints')}; train first with "
            f"`jgen train --config ... --workdir {workdir}`."
        )
    step, state, _ = restored
    return run, state, step
