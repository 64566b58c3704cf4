"""Orbax checkpointing with resume-from-newest-restorable.

`Checkpointer` wraps `orbax.checkpoint.CheckpointManager`: it saves the train
state (`StandardSave`) together with a small JSON item (the data iterator's
position and a fingerprint of the parameters) every N steps and at the end,
keeps the last K, and saves asynchronously. Orbax does not fall back from a
corrupt newest checkpoint by itself, so `restore_latest` walks the steps from
newest to oldest, skipping (with a warning naming the step and the reason) any
that fails to restore or whose restored parameters do not match the stored
fingerprint.
"""

import logging
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jgen.typing import Params

log = logging.getLogger(__name__)


class CheckpointCorruptWarning(UserWarning):
    """A checkpoint step could not be restored and was skipped."""


class StructureMismatchError(ValueError):
    """A checkpoint holds a differently structured state (another model or config)."""


@jax.jit
def _fingerprint(params: Params) -> jax.Array:
    leaves = jax.tree.leaves(params)
    return jnp.stack([jnp.sum(jnp.abs(x.astype(jnp.float32))) for x in leaves]
                     + [jnp.sum(x.astype(jnp.float32)) for x in leaves])


def fingerprint(params: Params) -> list[float]:
    """Per-leaf sums (abs and signed) of the parameters, as floats read on this host."""
    fp = _fingerprint(params)
    return [float(v) for v in np.asarray(fp.addressable_data(0))]


class Checkpointer:
    """Save every `save_every` steps, keep `keep`, resume from the newest good step.

    Args:
      directory: where the step folders go (created if needed).
      save_every: save interval in steps (`save(..., force=True)` always saves).
      keep: how many recent checkpoints to keep.
      async_save: save in a background thread (call `wait()` before exiting).
    """

    def __init__(self, directory: str, *, save_every: int, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(save_every), 1),
            max_to_keep=max(int(keep), 1),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, data_state: dict, *, force: bool = False) -> bool:
        """Saves if `step` is due (or `force`); returns whether a save started."""
        meta = {"data": data_state, "fingerprint": fingerprint(state.params), "step": int(step)}
        return self._manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def _restore_items(self, step: int, target):
        out = self._manager.restore(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
        )
        return out["state"], out["meta"]

    def restore(self, step: int, abstract_state):
        """Restores one step; raises if it is unreadable or fails its fingerprint.

        Raises:
          StructureMismatchError: the step holds a differently shaped state (another
            model or config), which is not corruption.
        """
        try:
            state, meta = self._restore_items(step, abstract_state)
        except ValueError as e:
            if "is not compatible with the stored shape" in str(e):
                raise StructureMismatchError(self._mismatch_message(step, e)) from None
            if "tree structures do not match" not in str(e):
                raise
            state, meta = self._restore_legacy(step, abstract_state, e)
        meta = dict(meta)
        got = fingerprint(state.params)
        want = meta["fingerprint"]
        if len(got) != len(want) or not np.allclose(got, want, rtol=1e-5, atol=1e-6):
            raise ValueError("restored parameters do not match the fingerprint saved with them")
        return state, meta["data"]

    def _restore_legacy(self, step, abstract_state, error):
        """Checkpoints written before TrainState had its `extra` field (empty then)."""
        fields = ("step", "params", "opt_state", "ema_params", "key")
        if not all(hasattr(abstract_state, f) for f in fields) or jax.tree.leaves(abstract_state.extra):
            raise StructureMismatchError(self._mismatch_message(step, error)) from None
        try:
            saved, meta = self._restore_items(step, {f: getattr(abstract_state, f) for f in fields})
        except ValueError:
            raise StructureMismatchError(self._mismatch_message(step, error)) from None
        return abstract_state.__class__(**saved, extra={}), meta

    def _mismatch_message(self, step, error) -> str:
        first = str(error).splitlines()[0][:200]
        return (
            f"Checkpoint step {step} in {self.directory} holds a differently structured state ({first}): "
            "it was written by another model or config. Use the config it was trained with "
            "(WORKDIR/config.json) or a fresh --workdir."
        )

    def restore_latest(self, abstract_state, *, set_aside: bool = True):
        """The newest restorable checkpoint as (step, state, data_state), or None.

        With `set_aside=False` (read-only use such as sampling), corrupt steps are
        skipped but left where they are.

        Corrupt or unreadable steps are skipped with a `CheckpointCorruptWarning`
        naming the step and the reason; they are left on disk for inspection.
        """
        skipped = []
        for step in reversed(self.all_steps()):
            try:
                state, data_state = self.restore(step, abstract_state)
            except StructureMismatchError:
                raise  # not corruption: every step of this run would mismatch the same way
            except Exception as e:  # noqa: BLE001 -- any other failure means "not restorable"
                reason = str(e).splitlines()[0][:300] if str(e) else ""
                msg = (
                    f"Checkpoint step {step} in {self.directory} could not be restored "
                    f"({type(e).__name__}: {reason}); skipping it and trying the previous one. "
                    f"If an older step restores, this one is moved to {self.directory}_corrupt/ "
                    "for inspection."
                )
                warnings.warn(msg, CheckpointCorruptWarning, stacklevel=2)
                log.warning(msg)
                skipped.append(step)
                continue
            if set_aside:
                self._set_aside(skipped)
            return step, state, data_state
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Moves unrestorable step folders out of the way, so the resumed run can
        save those steps again (process 0 renames; every process reloads)."""
        if not steps:
            return
        if jax.process_index() == 0:
            aside = self.directory + "_corrupt"
            os.makedirs(aside, exist_ok=True)
            for step in steps:
                src = os.path.join(self.directory, str(step))
                if os.path.exists(src):
                    dst = os.path.join(aside, str(step))
                    n = 0
                    while os.path.exists(dst):
                        n += 1
                        dst = os.path.join(aside, f"{step}.{n}")
                    os.rename(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jgen_checkpoint_set_aside")
        self._manager.reload()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
