"""The training state: one pytree holding everything a run needs to continue."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jgen.typing import Params, PRNGKey


@flax.struct.dataclass
class TrainState:
    """step, params, optimizer state, EMA params, the run's base key, and `extra`:
    non-gradient model state updated inside the step by a family's
    `post_update` hook (e.g. a VQ-VAE's EMA codebook statistics; `{}` if unused).

    The key is never split in place: the key of step `s` is
    `jax.random.fold_in(state.key, s)`, so a resumed run draws exactly the
    randomness an uninterrupted run would.
    """

    step: jax.Array
    params: Params
    opt_state: Any
    ema_params: Params
    key: PRNGKey
    extra: Any = flax.struct.field(default_factory=dict)


def create_train_state(params: Params, optimizer: optax.GradientTransformation, key: PRNGKey,
                       extra: Any = None) -> TrainState:
    """A fresh state at step 0 (EMA initialised to the parameters).

    Every leaf gets its own buffer (`extra` often starts from the parameters, e.g.
    an EMA codebook), so the state can be donated to the compiled step.
    """
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=jax.tree.map(jnp.copy, params),
        key=key,
        extra={} if extra is None else jax.tree.map(jnp.copy, extra),
    )
