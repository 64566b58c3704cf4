"""Sampler benchmarks: wall time, compile time, memory and NFE of compiled samplers,
and the overhead of each above its physical floor (NFE x one network forward pass).

`time_compiled(fn, *args)` is the measuring core (lower -> compile timed separately,
then the median of several timed runs); `benchmark_samplers(...)` runs it over a table
of (sampler, steps) pairs for a configured diffusion model, trained (`workdir`) or
randomly initialised, sharded over the device mesh like training; `markdown_table` and
`plot_quality` write the report. `jgen bench samplers` is the CLI entry point.
"""

import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _memory_bytes(compiled) -> int | None:
    """Bytes XLA reserves for the program: arguments + outputs + temporaries (CPU and GPU)."""
    try:
        m = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):  # not every backend implements it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def time_compiled(fn: Callable, *args, repeats: int = 5, jit_kwargs: dict | None = None) -> dict:
    """Compiles `fn(*args)` once and times `repeats` runs after a warm-up.

    Returns {"compile_s", "median_s", "runs_s", "memory_bytes", "output"} where
    `memory_bytes` is XLA's static allocation for the program (arguments, outputs,
    temporaries) and `output` the last run's result.
    """
    jitted = jax.jit(fn, **(jit_kwargs or {}))
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return {"compile_s": compile_s, "median_s": statistics.median(runs), "runs_s": runs,
            "memory_bytes": _memory_bytes(compiled), "output": out}


def benchmark_samplers(sampler_fns, params, *, samplers: Sequence[str], steps: Sequence[int], num: int,
                       repeats: int = 3, seed: int = 0, mesh=None,
                       quality_fn: Callable[[np.ndarray], float] | None = None) -> list[dict]:
    """Times every (sampler, steps) pair of a diffusion model.

    Args:
      sampler_fns: `jgen.families.diffusion.SamplerFns` of the model.
      params: its parameters (EMA weights for a trained run).
      samplers: sampler names; steps: step counts (ignored by "ode_dopri5", run once).
      num: batch size (a multiple of the mesh's device count when `mesh` is given).
      repeats: timed runs per pair (the median is reported).
      seed: the sampling key's seed.
      mesh: a device `Mesh`; the batch is sharded over its "data" axis.
      quality_fn: maps samples [num, ...] on [-1, 1] to a quality figure (lower is better).

    Returns:
      One dict per pair: sampler, steps, nfe, wall_s (median), compile_s, memory_bytes,
      forward_s (one network pass on the batch), overhead = wall_s / (nfe * forward_s), quality.
    """
    from jgen.train.mesh import batch_sharding

    out_sharding = batch_sharding(mesh) if mesh is not None else None
    x = jnp.zeros((num, *sampler_fns.image_shape), jnp.float32)
    fwd = time_compiled(lambda p, x: sampler_fns.forward(p, x), params, x, repeats=max(repeats, 5),
                        jit_kwargs={"in_shardings": (None, out_sharding)} if mesh is not None else None)
    rows = []
    key = jax.random.key(seed)
    for name in samplers:
        for n in (steps if name != "ode_dopri5" else steps[:1]):
            def fn(p, k, name=name, n=n):
                return sampler_fns.run(name, p, k, num, n)

            kw = {"out_shardings": (out_sharding, None)} if mesh is not None else None
            r = time_compiled(fn, params, key, repeats=repeats, jit_kwargs=kw)
            samples, nfe = r["output"]
            nfe = int(nfe)
            rows.append({
                "sampler": name, "steps": int(n) if name != "ode_dopri5" else None, "nfe": nfe,
                "wall_s": r["median_s"], "compile_s": r["compile_s"], "memory_bytes": r["memory_bytes"],
                "forward_s": fwd["median_s"], "overhead": r["median_s"] / (nfe * fwd["median_s"]),
                "quality": float(quality_fn(np.asarray(samples))) if quality_fn else None,
                "samples_per_s": num / r["median_s"],
            })
    return rows


def markdown_table(rows: list[dict], *, quality_name: str = "quality") -> str:
    """The benchmark rows as a Markdown table."""
    head = ("| sampler | steps | NFE | wall / batch (s) | samples/s | compile (s) | memory (MiB) | "
            f"overhead vs NFE x forward | {quality_name} |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        mem = f"{r['memory_bytes'] / 2**20:.1f}" if r.get("memory_bytes") else "n/a"
        q = f"{r['quality']:.4g}" if r.get("quality") is not None else "n/a"
        steps = r["steps"] if r["steps"] is not None else "adaptive"
        lines.append(f"| {r['sampler']} | {steps} | {r['nfe']} | {r['wall_s']:.4f} | {r['samples_per_s']:.1f} | "
                     f"{r['compile_s']:.2f} | {mem} | {r['overhead']:.2f} | {q} |")
    return "\n".join(lines)


def plot_quality(rows: list[dict], path: str, *, quality_name: str = "quality", title: str = "") -> None:
    """NFE (log) against quality (log) per sampler, or against wall time when no quality."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_q = all(r.get("quality") is not None for r in rows)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in dict.fromkeys(r["sampler"] for r in rows):
        rs = sorted((r for r in rows if r["sampler"] == name), key=lambda r: r["nfe"])
        ys = [max(r["quality"], 1e-6) if use_q else r["wall_s"] for r in rs]
        ax.plot([r["nfe"] for r in rs], ys, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel(quality_name if use_q else "wall time per batch (s)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
