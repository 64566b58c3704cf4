"""The compiled training step.

`make_train_step(loss_fn, optimizer, mesh=...)` returns one jitted function
`step(state, batch) -> (state, metrics)` with the batch sharded along the mesh's
`data` axis, the state replicated and donated. Metrics are scalars: the loss,
the global gradient norm, and the batch mean of every named per-example term
the loss returns in its aux dict. The host checks them for non-finite values.
"""

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from jgen.losses.elbo import masked_mean
from jgen.train.mesh import batch_sharding, replicated
from jgen.train.state import TrainState
from jgen.typing import LossFn


def _single_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, ema_decay: float, post_update,
                 update=None, pre_update=None):
    def step(state: TrainState, batch):
        key = jax.random.fold_in(state.key, state.step)
        batch = {**batch, "step": state.step}  # for schedules inside losses (e.g. KL annealing)
        extra, pre_metrics = state.extra, {}
        if pre_update is not None:  # e.g. an EBM's Langevin negatives from its replay buffer
            batch, extra, pre_metrics = pre_update(state.params, extra, jax.random.fold_in(key, 1), batch)
        if update is not None:  # a family's own update (e.g. the two-player GAN step)
            params, opt_state, metrics = update(state.params, state.opt_state, key, batch)
        else:
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, key, batch)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
            metrics.update({name: masked_mean(v, batch.get("mask")) for name, v in aux.items() if v.ndim == 1})
        post_metrics = {}
        if post_update is not None:
            params, extra, post_metrics = post_update(params, extra, key, batch)
        if ema_decay > 0:
            ema = optax.incremental_update(params, state.ema_params, 1.0 - ema_decay)
        else:
            ema = params
        metrics.update(pre_metrics)
        metrics.update(post_metrics)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
                                  extra=extra)
        return new_state, metrics

    return step


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    mesh: Mesh,
    ema_decay: float = 0.0,
    steps_per_call: int = 1,
    donate: bool = True,
    post_update=None,
    update=None,
    pre_update=None,
):
    """Compiles `step(state, batch) -> (state, metrics)` once over `mesh`.

    Args:
      loss_fn: `loss_fn(params, key, batch) -> (loss, aux)`, aux a dict of
        per-example [B] terms.
      optimizer: an optax transformation (clipping and schedules included).
      mesh: the device mesh; the batch is sharded along `data`.
      ema_decay: EMA of parameters, ema <- decay * ema + (1 - decay) * params;
        0 disables it (ema_params then track params).
      steps_per_call: if > 1 the call takes a stack of batches [S, B, ...] and
        runs S steps in a `lax.scan`; metrics then have a leading [S] axis.
      donate: donate the input state's buffers.
      post_update: optional `post_update(params, extra, key, batch) -> (params,
        extra, metrics)` run after the optimizer update with the step's key, for
        non-gradient state (e.g. EMA codebook updates); its scalar metrics join
        the step's.
      update: optional `update(params, opt_state, key, batch) -> (params, opt_state,
        metrics)` that replaces the single-loss gradient step (e.g.
        `jgen.train.two_player.make_two_player_update`, n_critic discriminator
        updates then one generator update); `loss_fn` and `optimizer.update` are then
        unused. metrics must hold scalars, "loss" and "grad_norm" among them.
      pre_update: optional `pre_update(params, extra, key, batch) -> (batch, extra,
        metrics)` run first, before the gradient step, with the step's key folded
        with 1: it may add inputs to the batch that the loss reads and update the
        non-gradient state (e.g. an energy-based model draws Langevin negatives
        from the replay buffer in `extra`, puts them in the batch, and writes the
        chains' end points back to the buffer); `post_update` then receives its
        `extra`. Its scalar metrics join the step's.

    Returns:
      The jitted step function. Place the state with
      `jax.device_put(state, replicated(mesh))` first (the loop's init does), or
      the first call traces once more for the uncommitted input.
    """
    step = _single_step(loss_fn, optimizer, ema_decay, post_update, update, pre_update)
    if steps_per_call > 1:
        single = step

        def step(state, batches):
            return jax.lax.scan(single, state, batches)

    return jax.jit(
        step,
        in_shardings=(replicated(mesh), batch_sharding(mesh, leading_axes=int(steps_per_call > 1))),
        out_shardings=(replicated(mesh), replicated(mesh)),
        donate_argnums=(0,) if donate else (),
    )


def nonfinite_terms(metrics: dict) -> list[str]:
    """Names of host-side (numpy) metric values that are NaN or infinite."""
    return [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
