"""Two processes on 127.0.0.1 (4 CPU devices each) form one JAX cluster through
jax.distributed, train a few steps as one 8-device run (each reading only its own
half of every global batch), checkpoint together, and end with the same
parameters as one 8-device process."""

import os
import socket
import subprocess

import pytest

from helpers import DIGITS_TINY, REPO_ROOT, assert_trees_close, jgen_cmd
from jgen.config import apply_overrides, load_config
from jgen.train.loop import restore_for_inference, train_and_evaluate

pytestmark = pytest.mark.slow

OVERRIDES = ["train.num_steps=24", "train.save_every=12", "train.log_every=6", "train.eval_every=0",
             "train.batch_size=32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_eight_device_process(tmp_path):
    workdir = str(tmp_path / "cluster")
    port = _free_port()
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    procs = [
        subprocess.Popen(
            jgen_cmd("train", "--config", DIGITS_TINY, "--workdir", workdir, "--no-progress",
                     "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i), *[f"--config.{o}" for o in OVERRIDES]),
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"process failed ({p.returncode}):\n{err[-4000:]}"

    config = apply_overrides(load_config(os.path.join(REPO_ROOT, DIGITS_TINY)), list(OVERRIDES))
    reference = train_and_evaluate(config, str(tmp_path / "single"), progress=False)  # 8 devices, 1 process
    _, state, step = restore_for_inference(workdir)
    assert step == 24
    assert_trees_close(state.params, reference.params, rtol=1e-5, atol=1e-6)
