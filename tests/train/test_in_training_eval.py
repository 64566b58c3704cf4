"""In-training evaluation (train.eval_every) works for families without an ELBO:
the flow family logs its exact NLL bound, equal to a separate `jgen eval` on the
same examples."""

import json
import os

from helpers import REPO_ROOT
from jgen.cli import main


def test_flow_run_logs_its_exact_nll_during_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    workdir = str(tmp_path / "run")
    args = ["train", "--config", "experiments/flows/configs/digits_realnvp.py:tiny", "--workdir", workdir,
            "--no-progress", "--config.train.eval_every=20", "--config.train.eval_examples=64"]
    assert main(args) == 0
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    logged = [r for r in rows if "eval/exact (uniform dequantization)" in r]
    assert [r["step"] for r in logged] == [20, 40]
    capsys.readouterr()
    assert main(["eval", "--workdir", workdir, "--num-examples", "64", "--seed", "1"]) == 0  # the loop evaluates with seed + 1
    report = json.loads(capsys.readouterr().out)
    assert abs(report["nll"]["exact (uniform dequantization)"]["nats"] - logged[-1]["eval/exact (uniform dequantization)"]) < 1e-3
