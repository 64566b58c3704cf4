"""Config loading and overrides: types, variants, and errors naming the bad key."""

import pytest

from jgen.config import ConfigError, apply_overrides, flat_keys, load_config

DIGITS = "experiments/vae/configs/digits.py"


def test_overrides_parse_to_field_types(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    c = load_config(DIGITS)
    apply_overrides(c, ["train.num_steps=7", "optim.learning_rate=3e-4", "model.encoder_hidden=(8, 8)",
                        "data.download=false", "data.name=mnist"])
    assert c.train.num_steps == 7 and isinstance(c.train.num_steps, int)
    assert c.optim.learning_rate == 3e-4
    assert tuple(c.model.encoder_hidden) == (8, 8)
    assert c.data.download is False and c.data.name == "mnist"


def test_tiny_variant(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    assert load_config(DIGITS + ":tiny").train.num_steps < load_config(DIGITS).train.num_steps
    with pytest.raises(ValueError, match="Unknown variant"):
        load_config(DIGITS + ":huge")


def test_unknown_key_names_close_matches(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    c = load_config(DIGITS)
    with pytest.raises(ConfigError) as e:
        apply_overrides(c, ["train.num_step=5"])
    msg = str(e.value)
    assert "'train.num_step'" in msg and "Did you mean: train.num_steps" in msg
    assert "train.num_steps" in flat_keys(c)


def test_bad_value_and_missing_file(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    c = load_config(DIGITS)
    with pytest.raises(ConfigError, match="Bad value for train.num_steps"):
        apply_overrides(c, ["train.num_steps=many"])
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides(c, ["train.num_steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("experiments/vae/configs/nope.py")
