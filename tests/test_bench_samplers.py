"""The sampler benchmark's bookkeeping, on a fake model whose cost and NFE are known."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO_ROOT

from jgen.bench_samplers import (
    benchmark_samplers,
    markdown_table,
    plot_quality,
    time_compiled,
)
from jgen.cli import main
from jgen.families.diffusion import SamplerFns


def _fake_fns():
    def forward(params, x, labels=None):
        return jnp.tanh(x @ params)

    def run(name, params, key, num, steps, labels=None):
        x = jax.random.normal(key, (num, 4))
        x = jax.lax.fori_loop(0, steps, lambda i, x: forward(params, x), x)
        return x, steps * (2 if name == "double" else 1)

    return SamplerFns(("single", "double"), run, forward, (4,))


def test_time_compiled_returns_the_output_and_positive_times():
    r = time_compiled(lambda x: x * 2, jnp.arange(3.0), repeats=3)
    np.testing.assert_array_equal(r["output"], [0.0, 2.0, 4.0])
    assert len(r["runs_s"]) == 3 and r["median_s"] > 0 and r["compile_s"] > 0


def test_rows_carry_nfe_overhead_and_quality(tmp_path):
    rows = benchmark_samplers(_fake_fns(), jnp.eye(4), samplers=["single", "double"], steps=[2, 5], num=8,
                              repeats=2, quality_fn=lambda s: float(np.abs(s).mean()))
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows] == [
        ("single", 2, 2), ("single", 5, 5), ("double", 2, 4), ("double", 5, 10)]
    for r in rows:
        np.testing.assert_allclose(r["overhead"], r["wall_s"] / (r["nfe"] * r["forward_s"]))
        np.testing.assert_allclose(r["samples_per_s"], 8 / r["wall_s"])
        assert 0 < r["quality"] < 1  # |tanh| < 1
    table = markdown_table(rows, quality_name="q")
    assert table.count("\n") == 1 + len(rows) and "| double | 5 | 10 |" in table
    plot_quality(rows, str(tmp_path / "p.png"), quality_name="q")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_cli_refuses_non_diffusion_models_and_bad_arguments(capsys):
    with pytest.raises(SystemExit, match="exactly one of --config"):
        main(["bench", "samplers"])
    with pytest.raises(SystemExit, match="needs a diffusion model"):
        main(["bench", "samplers", "--config", os.path.join(REPO_ROOT, "experiments/vae/configs/digits.py") + ":tiny"])
