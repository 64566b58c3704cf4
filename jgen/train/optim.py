"""Optimizers from config: optax chains with a learning-rate schedule and
optional gradient clipping (registry at the config edge only)."""

import optax
from ml_collections import ConfigDict


def make_schedule(config: ConfigDict, num_steps: int) -> optax.Schedule:
    """`config.schedule` is one of "constant", "cosine", "warmup_cosine"."""
    lr = config.learning_rate
    warmup = int(config.get("warmup_steps", 0))
    name = config.get("schedule", "constant")
    if name == "constant":
        if warmup:
            return optax.join_schedules(
                [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
            )
        return optax.constant_schedule(lr)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, max(num_steps, 1))
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(num_steps, warmup + 1))
    raise ValueError(
        f"Unknown optim.schedule={name!r}; use one of 'constant', 'cosine', 'warmup_cosine'."
    )


def make_optimizer(config: ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """Builds `clip_by_global_norm (optional) -> adam/adamw/sgd` from `config.optim`.

    Keys: name, learning_rate, schedule, warmup_steps, grad_clip_norm (0 = off),
    weight_decay (adamw), b1, b2.
    """
    schedule = make_schedule(config, num_steps)
    name = config.get("name", "adam")
    if name == "adam":
        opt = optax.adam(schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999))
    elif name == "adamw":
        opt = optax.adamw(
            schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999),
            weight_decay=config.get("weight_decay", 1e-4),
        )
    elif name == "sgd":
        opt = optax.sgd(schedule, momentum=config.get("momentum", 0.9))
    else:
        raise ValueError(f"Unknown optim.name={name!r}; use one of 'adam', 'adamw', 'sgd'.")
    clip = float(config.get("grad_clip_norm", 0.0))
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt
