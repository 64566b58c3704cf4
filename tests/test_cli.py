"""CLI errors are clear and exit with status 2; multi-host flags are validated."""

import os

import pytest

from helpers import DIGITS_TINY, REPO_ROOT
from jgen.cli import main
from jgen.config import load_config, save_config
from jgen.train.distributed import initialize


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)


def test_unknown_config_key(tmp_path, capsys):
    code = main(["train", "--config", DIGITS_TINY, "--workdir", str(tmp_path), "--config.optim.learnig_rate=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Unknown config key 'optim.learnig_rate'" in err and "Did you mean: optim.learning_rate" in err


def test_missing_dataset_says_how_to_import(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", "--config", "experiments/vae/configs/mnist.py:tiny", "--workdir", str(tmp_path / "w"),
                 f"--config.data.data_dir={empty}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "jgen data import mnist --from" in err and str(empty) in err


def test_sample_or_eval_without_a_run(tmp_path, capsys):
    assert main(["sample", "--workdir", str(tmp_path), "--num", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "No config.json in workdir" in capsys.readouterr().err
    # A config but no checkpoint: says how to train.
    save_config(load_config(DIGITS_TINY), str(tmp_path / "config.json"))
    assert main(["eval", "--workdir", str(tmp_path)]) == 2
    assert "No restorable checkpoint" in capsys.readouterr().err


def test_overrides_rejected_where_meaningless(tmp_path):
    with pytest.raises(SystemExit, match="only apply to train and bench"):
        main(["sample", "--workdir", str(tmp_path), "--out", "x.png", "--config.seed=1"])


def test_distributed_flags_are_validated():
    with pytest.raises(ValueError, match="needs num_processes and process_id"):
        initialize("127.0.0.1:1234", None, None)
    with pytest.raises(ValueError, match=r"process_id=3 must be in \[0, 2\)"):
        initialize("127.0.0.1:1234", 2, 3)
    with pytest.raises(ValueError, match="no coordinator address"):
        initialize(None, 4, 0)
    assert initialize(None, None, None) is False
