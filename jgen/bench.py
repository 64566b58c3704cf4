"""Benchmarks: train-step throughput on the current devices.

`jgen bench train-step --config FILE --devices 1,8` runs one child process per
device count (on CPU the device count is simulated with
XLA_FLAGS=--xla_force_host_platform_device_count=N), each timing the compiled
step on a fixed batch, and reports medians over repeats and the ratio between
device counts measured in the same invocation.
"""

import json
import os
import statistics
import subprocess
import sys
import time


def train_step_throughput(config, *, steps: int = 50, repeats: int = 5, warmup: int = 3) -> dict:
    """Times `steps` compiled train steps `repeats` times on a fixed batch (this process's devices)."""
    import jax

    from jgen.data import DataIterator, get_source
    from jgen.train.loop import init_state, setup
    from jgen.train.mesh import batch_sharding
    from jgen.train.step import make_train_step

    run = setup(config)
    source = get_source(config.data.name, config.data.train_split, data_dir=config.data.get("data_dir") or None)
    batch = next(DataIterator(source, global_batch_size=config.train.batch_size, seed=config.seed,
                              sharding=batch_sharding(run.mesh)))
    step = make_train_step(run.spec.loss_fn, run.optimizer, mesh=run.mesh, post_update=run.spec.post_update,
                           ema_decay=config.train.get("ema_decay", 0.0), update=run.spec.update,
                           pre_update=run.spec.pre_update)
    state = init_state(run)
    t0 = time.perf_counter()
    for _ in range(warmup):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    compile_and_warmup = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            state, m = step(state, batch)
            if (i + 1) % 16 == 0:
                jax.block_until_ready(m)
        jax.block_until_ready(m)
        rates.append(steps * config.train.batch_size / (time.perf_counter() - t0))
    return {
        "num_devices": run.mesh.devices.size,
        "platform": jax.devices()[0].platform,
        "batch_size": config.train.batch_size,
        "steps": steps,
        "repeats": repeats,
        "examples_per_sec_median": statistics.median(rates),
        "examples_per_sec_all": rates,
        "compile_and_warmup_s": compile_and_warmup,
    }


def run_device_sweep(config_spec: str, overrides: list[str], devices: list[int], *, steps: int, repeats: int) -> dict:
    """One child process per device count; returns their results and ratios to the first."""
    results = []
    for n in devices:
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
        cmd = [sys.executable, "-m", "jgen.cli", "bench", "train-step", "--config", config_spec,
               "--devices", str(n), "--steps", str(steps), "--repeats", str(repeats), "--child",
               *[f"--config.{o}" for o in overrides], f"--config.num_devices={n}"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"benchmark child for {n} devices failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = results[0]["examples_per_sec_median"]
    for r in results:
        r["ratio_to_first"] = r["examples_per_sec_median"] / base
    return {"config": config_spec, "overrides": overrides, "results": results}
