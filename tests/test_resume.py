"""Fault tolerance end to end: SIGKILL mid-run, SIGTERM (preemption), a corrupt
newest checkpoint, and a non-finite loss. In every case the final parameters
must equal those of one uninterrupted run of the same config and seed."""

import json
import os
import shutil
import signal
import subprocess
import warnings

import pytest

from helpers import (DIGITS_TINY, REPO_ROOT, assert_trees_close, checkpoint_steps, jgen_cmd,
                     wait_for_checkpoint)
from jgen.checkpoint import CheckpointCorruptWarning, Checkpointer
from jgen.config import apply_overrides, load_config
from jgen.train.loop import NonFiniteError, abstract_state, restore_for_inference, setup, train_and_evaluate

pytestmark = pytest.mark.slow

NUM_STEPS = 600
OVERRIDES = [f"train.num_steps={NUM_STEPS}", "train.save_every=20", "train.log_every=20",
             "train.eval_every=0", "train.keep_checkpoints=100", "num_devices=2"]


def _config():
    return apply_overrides(load_config(os.path.join(REPO_ROOT, DIGITS_TINY)), list(OVERRIDES))


def _cli_overrides():
    return [f"--config.{o}" for o in OVERRIDES]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: its workdir and final state."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    state = train_and_evaluate(_config(), workdir, progress=False)
    return workdir, state


def _start(workdir):
    return subprocess.Popen(
        jgen_cmd("train", "--config", DIGITS_TINY, "--workdir", workdir, "--no-progress", *_cli_overrides()),
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_sigkill_then_restart_matches_uninterrupted(reference, tmp_path, capsys):
    ref_dir, ref_state = reference
    workdir = str(tmp_path / "killed")
    proc = _start(workdir)
    wait_for_checkpoint(proc, workdir, 100)
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    steps = checkpoint_steps(workdir)
    assert steps and steps[-1] < NUM_STEPS, f"the run finished before it was killed: {steps}"

    state = train_and_evaluate(_config(), workdir, progress=False)
    out = capsys.readouterr().out
    assert "Resumed from checkpoint step" in out
    assert int(state.step) == NUM_STEPS
    assert_trees_close(state.params, ref_state.params)
    # The metrics log has each step once, as an uninterrupted run's would.
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    logged = [r["step"] for r in rows]
    assert logged == sorted(set(logged)) and logged[-1] == NUM_STEPS


def test_sigterm_saves_and_exits_cleanly(reference, tmp_path):
    _, ref_state = reference
    workdir = str(tmp_path / "preempted")
    proc = _start(workdir)
    wait_for_checkpoint(proc, workdir, 100)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert "SIGTERM: saved checkpoint at step" in stdout
    saved = int(stdout.split("SIGTERM: saved checkpoint at step ")[1].split()[0])
    assert saved in checkpoint_steps(workdir) and saved < NUM_STEPS
    state = train_and_evaluate(_config(), workdir, progress=False)
    assert_trees_close(state.params, ref_state.params)


def test_corrupt_newest_checkpoint_falls_back_with_warning(reference, tmp_path):
    ref_dir, ref_state = reference
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(ref_dir, workdir)
    newest = checkpoint_steps(workdir)[-1]
    # Overwrite every array file of the newest step with garbage.
    state_dir = os.path.join(workdir, "checkpoints", str(newest), "state")
    n = 0
    for root, _, files in os.walk(state_dir):
        for f in files:
            if f.endswith(".json") or f.startswith("_"):
                continue
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00garbage" * 7)
            n += 1
    assert n > 0
    run = setup(_config())
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=20, keep=100)
    with pytest.warns(CheckpointCorruptWarning, match=f"step {newest}"):
        step, _, data_state = ckpt.restore_latest(abstract_state(run))
    ckpt.close()
    assert step == checkpoint_steps(ref_dir)[-2]
    assert data_state["epoch"] * 0 == 0  # the iterator position came back with it
    assert os.path.isdir(os.path.join(workdir, "checkpoints_corrupt", str(newest)))
    # Training again redoes the lost steps and lands on the same parameters.
    state = train_and_evaluate(_config(), workdir, progress=False)
    assert int(state.step) == NUM_STEPS
    assert_trees_close(state.params, ref_state.params)


def test_non_finite_loss_stops_with_named_step_and_keeps_checkpoint(tmp_path):
    config = apply_overrides(load_config(os.path.join(REPO_ROOT, DIGITS_TINY)),
                             ["optim.learning_rate=1e12", "train.save_every=1", "train.eval_every=0",
                              "num_devices=1"])
    workdir = str(tmp_path / "nan")
    with pytest.raises(NonFiniteError) as e:
        train_and_evaluate(config, workdir, progress=False)
    msg = str(e.value)
    assert "Non-finite value at step 2" in msg and "loss=nan" in msg and "grad_clip_norm" in msg
    assert checkpoint_steps(workdir) == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointCorruptWarning)
        _, state, step = restore_for_inference(workdir, config)
    assert step == 1


def test_other_model_in_the_same_workdir_is_refused_not_treated_as_corrupt(reference, tmp_path, capsys):
    from jgen.cli import main

    ref_dir, _ = reference
    workdir = str(tmp_path / "other")
    shutil.copytree(ref_dir, workdir)
    before = checkpoint_steps(workdir)
    code = main(["train", "--config", os.path.join(REPO_ROOT, DIGITS_TINY), "--workdir", workdir, "--no-progress",
                 "--config.model.latent_dim=7"])
    err = capsys.readouterr().err
    assert code == 2 and "differently structured state" in err and "fresh --workdir" in err
    assert checkpoint_steps(workdir) == before
    assert not os.path.exists(os.path.join(workdir, "checkpoints_corrupt"))


def test_all_checkpoints_corrupt_refuses_to_start_over(reference, tmp_path, capsys):
    from jgen.cli import main

    ref_dir, _ = reference
    workdir = str(tmp_path / "allbad")
    shutil.copytree(ref_dir, workdir)
    for step in checkpoint_steps(workdir):
        for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step), "state")):
            for f in files:
                if not (f.endswith(".json") or f.startswith("_")):
                    with open(os.path.join(root, f), "wb") as fh:
                        fh.write(b"\x00bad")
    before = checkpoint_steps(workdir)
    with pytest.warns(CheckpointCorruptWarning):
        code = main(["train", "--config", os.path.join(REPO_ROOT, DIGITS_TINY), "--workdir", workdir,
                     "--no-progress", *_cli_overrides()])
    assert code == 2 and "refusing to start over" in capsys.readouterr().err
    assert checkpoint_steps(workdir) == before
