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


@pytest.fixture(scope="module")
def cvae_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("cvae"))
    os.chdir(REPO_ROOT)
    assert main(["train", "--config", DIGITS_TINY, "--workdir", workdir, "--no-progress",
                 "--config.model.conditional=true", "--config.train.num_steps=20"]) == 0
    return workdir


def test_class_conditional_sampling_and_latent_commands(cvae_workdir, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    out = str(tmp_path / "three.npz")
    assert main(["sample", "--workdir", cvae_workdir, "--num", "6", "--out", out, "--label", "3"]) == 0
    assert np.load(out)["samples"].shape == (6, 8, 8, 1)
    assert main(["sample", "--workdir", cvae_workdir, "--num", "6", "--out", out, "--label", "12"]) == 2
    assert "out of range: the model has 10 classes" in capsys.readouterr().err
    for what in ("reconstruct", "interpolate", "traverse", "classes"):
        png = str(tmp_path / f"{what}.png")
        assert main(["latent", what, "--workdir", cvae_workdir, "--out", png, "--num", "3"]) == 0, what
        assert Image.open(png).size[0] > 8


def test_label_on_an_unconditional_model_is_refused(tmp_path, capsys):
    workdir = str(tmp_path / "vae")
    assert main(["train", "--config", DIGITS_TINY, "--workdir", workdir, "--no-progress",
                 "--config.train.num_steps=20"]) == 0
    capsys.readouterr()
    assert main(["sample", "--workdir", workdir, "--num", "2", "--out", str(tmp_path / "x.png"), "--label", "1"]) == 2
    assert "needs a class-conditional model" in capsys.readouterr().err
