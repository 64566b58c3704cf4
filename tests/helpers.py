"""Shared helpers for the end-to-end tests (runs in subprocesses, param comparison)."""

import os
import subprocess
import sys
import time

import jax
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_TINY = "experiments/vae/configs/digits.py:tiny"


def jgen_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "jgen.cli", *args]


def run_jgen(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(jgen_cmd(*args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def checkpoint_steps(workdir: str) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def wait_for_checkpoint(proc, workdir: str, min_step: int, timeout: float = 240) -> int:
    """Polls until a finalised checkpoint >= min_step exists; returns its step."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        steps = [s for s in checkpoint_steps(workdir) if s >= min_step]
        if steps:
            return steps[-1]
        if proc.poll() is not None:
            raise AssertionError(f"run exited ({proc.returncode}) before step {min_step}:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint >= {min_step} within {timeout}s")


def assert_trees_close(a, b, *, rtol=1e-6, atol=1e-7):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def count_eqns(jaxpr) -> int:
    """Equations in a jaxpr, including those of nested sub-jaxprs (loop bodies, conds):
    the measure of program size used to check that samplers do not grow with step count."""
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for p in eqn.params.values():
            for sub in p if isinstance(p, (list, tuple)) else [p]:
                if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    n += count_eqns(sub.jaxpr)
                elif hasattr(sub, "eqns"):
                    n += count_eqns(sub)
    return n
