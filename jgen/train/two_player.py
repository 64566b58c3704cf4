r"""Two-player (GAN) training in one compiled step: two optax optimizers in one state,
``n_critic`` discriminator updates then one generator update per call.

The parameters are a dict ``{"g": generator, "d": discriminator}`` and the optimizer
state ``{"g": ..., "d": ...}``, so a GAN uses jgen's ordinary `TrainState`, checkpoints,
EMA (`train.ema_decay` averages the generator weights that sampling uses) and loop.
`paired_optimizer(opt_g, opt_d)` builds that state (two time-scale learning rates are
two optimizers); `make_two_player_update(...)` returns the family's
``update(params, opt_state, key, batch) -> (params, opt_state, metrics)``
that `jgen.train.step.make_train_step` runs in place of its single-loss update:

.. code-block:: text

    real chunks r_1..r_n  = the global batch split in n_critic equal parts
    for i in 1..n_critic:                      # lax.scan, one compiled loop
        g_D = grad_D d_loss(D, G, key_i, r_i)  # fresh fakes each time
        D   = d_opt(D, g_D);  D = d_project(D) # e.g. WGAN weight clipping
    g_G = grad_G g_loss(G, D, key_g, batch)    # the generator sees the updated critic
    G   = g_opt(G, g_G)

(Goodfellow et al. 2014, Algorithm 1, with k = n_critic; Arjovsky et al. 2017,
Algorithm 1, with clipping as `d_project`; Gulrajani et al. 2017, Algorithm 1.)
Splitting the batch gives each critic iteration its own real examples, as those
algorithms sample a new minibatch per iteration, without a larger input pipeline.

**Non-gradient discriminator state.** If `d_loss`'s aux holds ``"d_state"``, a dict of
the discriminator's non-gradient variable collections (e.g. ``{"spectral": ...}``, the
power-iteration vectors of spectral normalisation, Miyato et al. 2018), those entries
replace the same keys of the discriminator's parameters after each critic update (after
`d_project`), so the state advances once per critic step inside the compiled loop and is
checkpointed with the parameters. Keep the optimizer off those entries (their gradient
is zero; the GAN family masks them with `optax.multi_transform`).

References:
  Goodfellow, I. et al. (2014). Generative Adversarial Nets. NeurIPS. https://arxiv.org/abs/1406.2661
  Arjovsky, M., Chintala, S. & Bottou, L. (2017). Wasserstein GAN. ICML. https://arxiv.org/abs/1701.07875
  Gulrajani, I. et al. (2017). Improved Training of Wasserstein GANs. NeurIPS. https://arxiv.org/abs/1704.00028
  Heusel, M. et al. (2017). GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium. NeurIPS. https://arxiv.org/abs/1706.08500 (two learning rates.)
  Miyato, T. et al. (2018). Spectral Normalization for Generative Adversarial Networks. ICLR.
    https://arxiv.org/abs/1802.05957 (the state carried as "d_state".)
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jgen.typing import Array, Batch, Params, PRNGKey

# d_loss(d_params, g_params, key, batch) -> (scalar, aux of per-example [B'] terms)
# g_loss(g_params, d_params, key, batch) -> (scalar, aux)
PlayerLoss = Callable[[Params, Params, PRNGKey, Batch], tuple[Array, dict]]


def paired_optimizer(opt_g: optax.GradientTransformation,
                     opt_d: optax.GradientTransformation) -> optax.GradientTransformation:
    """An optax transformation whose state is ``{"g": opt_g state, "d": opt_d state}``
    for params ``{"g", "d"}``. Its `update` applies each optimizer to its own player
    (a simultaneous step); the alternating GAN step uses the two halves directly."""

    def init(params):
        return {"g": opt_g.init(params["g"]), "d": opt_d.init(params["d"])}

    def update(grads, state, params=None):
        ug, sg = opt_g.update(grads["g"], state["g"], None if params is None else params["g"])
        ud, sd = opt_d.update(grads["d"], state["d"], None if params is None else params["d"])
        return {"g": ug, "d": ud}, {"g": sg, "d": sd}

    return optax.GradientTransformation(init, update)


def _split_batch(batch: Batch, n: int) -> Batch:
    """[B, ...] leaves -> [n, B/n, ...] (scalars and the step counter are broadcast)."""
    def split(v):
        v = jnp.asarray(v)
        if v.ndim == 0:
            return jnp.broadcast_to(v, (n,))
        return v.reshape((n, v.shape[0] // n) + v.shape[1:])
    return {k: split(v) for k, v in batch.items()}


def make_two_player_update(d_loss: PlayerLoss, g_loss: PlayerLoss, opt_g: optax.GradientTransformation,
                           opt_d: optax.GradientTransformation, *, n_critic: int = 1,
                           d_project: Callable[[Params], Params] | None = None):
    """The alternating update as a family's `update` hook (see the module docstring).

    Args:
      d_loss, g_loss: the players' losses (each returns a scalar and per-example aux).
      opt_g, opt_d: their optimizers (the pair `paired_optimizer` initialises).
      n_critic: discriminator updates per generator update (static int >= 1); the
        global batch size must be divisible by it.
      d_project: applied to the discriminator after each of its updates (e.g. WGAN's
        weight clipping); None = identity.
      (d_loss's aux may hold "d_state", non-gradient collections that replace those keys
      of the discriminator after each of its updates; see the module docstring.)

    Returns:
      ``update(params, opt_state, key, batch) -> (params, opt_state, metrics)``, metrics
      scalars: "loss" (the last critic loss + the generator loss), "d_loss", "g_loss",
      "grad_norm" (the generator gradient's global norm), "d_grad_norm" (the last critic
      step's), and the batch means of both losses' per-example terms prefixed "d_" / "g_"
      (the critic's from its last iteration).
    """
    if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
        raise ValueError(f"n_critic must be an int >= 1; got {n_critic!r}.")

    def update(params, opt_state, key, batch):
        size = jnp.shape(batch["image"])[0]
        if size % n_critic:
            raise ValueError(f"The batch of {size} examples cannot be split into n_critic={n_critic} equal "
                             "critic batches; choose train.batch_size divisible by n_critic.")
        chunks = _split_batch(batch, n_critic)
        g = params["g"]

        def critic_step(carry, xs):
            d, state_d = carry
            i, chunk = xs
            (loss, aux), grads = jax.value_and_grad(d_loss, has_aux=True)(d, g, jax.random.fold_in(key, i), chunk)
            aux = dict(aux)
            d_state = aux.pop("d_state", None)  # e.g. spectral norm's u (see the module docstring)
            updates, state_d = opt_d.update(grads, state_d, d)
            d = optax.apply_updates(d, updates)
            if d_project is not None:
                d = d_project(d)
            if d_state is not None:
                d = {**d, **d_state}
            means = {k: jnp.mean(v) for k, v in aux.items() if jnp.ndim(v) == 1}
            return (d, state_d), (loss, means, optax.tree.norm(grads))

        (d, state_d), (d_losses, d_aux, d_norms) = jax.lax.scan(critic_step, (params["d"], opt_state["d"]),
                                                                (jnp.arange(n_critic), chunks))
        (gl, g_aux), grads_g = jax.value_and_grad(g_loss, has_aux=True)(g, d, jax.random.fold_in(key, n_critic),
                                                                          batch)
        updates, state_g = opt_g.update(grads_g, opt_state["g"], g)
        g = optax.apply_updates(g, updates)
        metrics = {**{f"d_{k}": v[-1] for k, v in d_aux.items()},
                   **{f"g_{k}": jnp.mean(v) for k, v in g_aux.items() if jnp.ndim(v) == 1},
                   "loss": d_losses[-1] + gl, "d_loss": d_losses[-1], "g_loss": gl,
                   "grad_norm": optax.tree.norm(grads_g), "d_grad_norm": d_norms[-1]}
        return {"g": g, "d": d}, {"g": state_g, "d": state_d}, metrics

    return update
