"""Experiment configs: loading `get_config()` files and applying command-line
overrides with clear errors.

A config file is a Python file defining `get_config(variant=None)` that returns
an `ml_collections.ConfigDict`. On the command line it is named as
`path/to/file.py` or `path/to/file.py:variant` (e.g. `:tiny` for the test
variant). Overrides are `a.b.c=value` strings; the value is parsed to the type
of the existing field, and an unknown key fails with the close matches.
"""

import ast
import difflib
import importlib.util
import json
import os

import ml_collections
from ml_collections import ConfigDict


class ConfigError(ValueError):
    """A config file or override is invalid."""


def load_config(spec: str) -> ConfigDict:
    """Loads `file.py[:variant]` and returns its locked ConfigDict."""
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(
            f"Config file {path!r} does not exist. Configs live in experiments/<family>/configs/, "
            "e.g. --config experiments/vae/configs/digits.py"
        )
    module_spec = importlib.util.spec_from_file_location(f"jgen_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"Config file {path!r} defines no get_config() function.")
    config = module.get_config(variant) if variant else module.get_config()
    if not isinstance(config, ConfigDict):
        raise ConfigError(f"get_config() in {path!r} returned {type(config).__name__}, expected a ConfigDict.")
    config.lock()
    return config


def flat_keys(config: ConfigDict, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a (nested) ConfigDict."""
    keys = []
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, ConfigDict):
            keys.extend(flat_keys(v, name + "."))
        else:
            keys.append(name)
    return keys


def _parse_value(text: str, current):
    """Parses `text` to the type of `current` (bool/int/float/str/tuple/list/None)."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("1", "true", "yes"):
            return True
        if low in ("0", "false", "no"):
            return False
        raise ConfigError(f"expected a boolean (true/false), got {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(current, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(current, tuple) and isinstance(value, (int, float)):
        return (value,)
    return value


def apply_overrides(config: ConfigDict, overrides: list[str]) -> ConfigDict:
    """Applies `a.b=value` overrides in place; unknown keys fail with close matches."""
    known = flat_keys(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"Override {item!r} must look like a.b.c=value.")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"Unknown config key {key!r}.{hint} Valid keys: {', '.join(sorted(known))}."
            )
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        try:
            value = _parse_value(text, node[leaf])
        except (ValueError, ConfigError) as e:
            raise ConfigError(f"Bad value for {key}: {e}") from None
        with node.ignore_type():
            node[leaf] = value
    return config


def save_config(config: ConfigDict, path: str) -> None:
    with open(path, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def load_saved_config(workdir: str) -> ConfigDict:
    """The config a run saved beside its checkpoints (`WORKDIR/config.json`)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ConfigError(
            f"No config.json in workdir {workdir!r}: is it the --workdir of a `jgen train` run?"
        )
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    return config


def base_config(*, dataset: str, model: ConfigDict) -> ConfigDict:
    """The sections every experiment config shares, with their defaults.

    Experiment files start from this and change what they need (the flax
    examples' `default.py` + overrides pattern):
    seed, num_devices, data.*, model (given), optim.*, train.*, eval.*, sample.*.
    """
    config = ConfigDict()
    config.seed = 0
    config.num_devices = 0  # 0 = every visible device

    config.data = ConfigDict()
    config.data.name = dataset
    config.data.train_split = "train"
    config.data.eval_split = "test"
    config.data.data_dir = ""  # TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    config.data.download = False
    config.data.preprocess = "binarize_dynamic"
    config.data.eval_preprocess = "binarize_static"
    config.data.cache = False  # decode the split into memory once

    config.model = model

    config.optim = ConfigDict()
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.optim.schedule = "constant"
    config.optim.warmup_steps = 0
    config.optim.grad_clip_norm = 0.0

    config.train = ConfigDict()
    config.train.batch_size = 128
    config.train.num_steps = 10_000
    config.train.log_every = 100
    config.train.save_every = 1000
    config.train.keep_checkpoints = 3
    config.train.ema_decay = 0.0
    config.train.steps_per_call = 1
    config.train.eval_every = 0
    config.train.eval_examples = 0

    config.eval = ConfigDict()
    config.eval.batch_size = 100
    config.eval.iwae_k = (1, 10, 100, 1000)
    config.eval.iwae_chunk = 500
    config.eval.ais_steps = 0  # > 0 adds the AIS estimator (HMC transitions) to `jgen eval`
    config.eval.ais_chains = 16

    config.sample = ConfigDict()
    config.sample.num = 64
    return config


def mnist_benchmark_training(config: ConfigDict, *, num_steps: int) -> ConfigDict:
    """The schedule the MNIST benchmark configs share: the split decoded into memory
    once (47 MB), cosine learning-rate decay, logs every 500 steps, checkpoints
    every 5000, and a quick ELBO on 2000 test images every 10,000 steps."""
    config.data.cache = True
    config.optim.schedule = "cosine"
    config.train.num_steps = num_steps
    config.train.log_every = 500
    config.train.save_every = 5000
    config.train.eval_every = 10_000
    config.train.eval_examples = 2000
    return config


def tiny_training(config: ConfigDict, *, num_steps: int = 40, save_every: int = 20) -> ConfigDict:
    """Shrinks the training/eval sections for a smoke-test `:tiny` variant."""
    config.train.batch_size = 16
    config.train.num_steps = num_steps
    config.train.log_every = 10
    config.train.save_every = save_every
    config.train.eval_every = 0
    config.eval.batch_size = 16
    config.eval.iwae_k = (1, 10)
    config.eval.iwae_chunk = 10
    config.sample.num = 16
    return config


def split_variant(variant: str | None, name: str, example: str, **axes: tuple[str, ...]) -> dict[str, str]:
    """Splits a compound config variant such as ``"vector_cpu"`` into its parts.

    Each keyword is one axis (e.g. ``kind=("tokens", "vector")``, ``size=("cpu", "tiny")``);
    a variant names at most one choice per axis, joined by "_", in any order.

    Returns:
      ``{axis: choice}``, with "" for an axis the variant does not name.

    Raises:
      ValueError: an unknown part, or two choices on one axis; the message lists the
        choices and shows `example`.
    """
    parts = [p for p in (variant or "").split("_") if p]
    chosen = {axis: [p for p in parts if p in choices] for axis, choices in axes.items()}
    known = {c for choices in axes.values() for c in choices}
    if any(p not in known for p in parts) or any(len(v) > 1 for v in chosen.values()):
        listed = ", ".join(f"one {axis} {choices}" for axis, choices in axes.items())
        raise ValueError(f"Unknown variant {variant!r} of {name}; join at most {listed} with '_' "
                         f"(e.g. {example}).")
    return {axis: v[0] if v else "" for axis, v in chosen.items()}
