r"""The GAN family: a generator and a discriminator (MLP or DCGAN) trained in one
compiled two-player step with any objective of `jgen.losses.gan` or `jgen.losses.fgan`.

`config.model.objective` is one of "minimax", "non_saturating", "lsgan", "hinge",
"wgan" (weight clipping at `clip`), "wgan_gp" (gradient penalty `gp_weight`,
Gulrajani et al. 2017) or "f:<divergence>" for an f-GAN (Nowozin et al. 2016) with a
divergence of `jgen.losses.fgan.FDIVERGENCES` (e.g. "f:js", "f:kl"). `n_critic`
discriminator updates run per generator update inside the compiled step
(`jgen.train.two_player`), with two optimizers: the generator's from `config.optim`
and the discriminator's at `d_learning_rate` (two time-scale update rule; 0 = the
same rate). `r1_weight` adds the R1 penalty (Mescheder et al. 2018);
`train.ema_decay` averages the generator's weights, which sampling uses.
`model.conditional=True` (or `model.condition.kind="label"`) feeds labels to both
players (label concatenation for the MLPs, a projection discriminator for DCGAN; `jgen
sample --label k`). `model.condition.kind` = "vector", "tokens" (captions) or "image"
(superres / colorize / inpaint measurements; `jgen.conditioning`) gives each player its
own `jgen.conditioning.ConditionEncoder` (the ``"condition"`` subtree of
``params["g"]`` and of ``params["d"]``, each trained by its own player's loss): the
generator concatenates the embedding to z (and the image map to its input / feature
maps), the discriminator is a projection discriminator on the embedding (Miyato &
Koyama 2018) with the image map concatenated to its input. A real image and its fake
share the real image's condition. The GAN trains without condition dropout
(`model.condition.p_uncond` is ignored: no guidance is defined for a GAN);
`sample(params, key, num, condition)` draws G(z, c), z ~ N(0, I).

`model.spectral_norm=True` spectrally normalises every discriminator layer (SN-GAN,
Miyato et al. 2018: `SpectralDense` / `SpectralConv` of `jgen.models.gan.spectral_norm`,
kernel W used as :math:`W/\sigma(W)` with :math:`\sigma` from power iteration). The
discriminator's parameters are then the Flax variables ``{"params", "spectral"}``; the
persistent power-iteration vectors u (and the last sigma) live in ``"spectral"``. Each
critic update runs one power iteration on the real batch's forward pass
(``update_stats=True``) and hands the new u back as ``"d_state"`` to
`jgen.train.two_player`, which stores it in the parameters after the optimizer step; the
fake batch, the penalties, the generator's step and evaluation read the stored u
(``update_stats=False``, the same normalised weights). The optimizer never touches u
(`params_only_optimizer`: `optax.multi_transform` routes ``"spectral"`` to
`optax.set_to_zero`), and u is checkpointed with the parameters.

A GAN has no likelihood: `jgen eval` reports the discriminator's mean output on real
test images and on as many fresh samples (`critic_real`, `critic_fake`), a diagnostic;
sample quality metrics (FID, KID, precision/recall) are the metrics issue's.

`make_gan_players(...)` is the data-agnostic core (also used on 2-D toy data by
`experiments/gan/toy2d.py`).

References:
  Goodfellow, I. et al. (2014). Generative Adversarial Nets. https://arxiv.org/abs/1406.2661
  Radford, A., Metz, L. & Chintala, S. (2016). DCGAN. https://arxiv.org/abs/1511.06434
  Nowozin, S., Cseke, B. & Tomioka, R. (2016). f-GAN. https://arxiv.org/abs/1606.00709
  Miyato, T. & Koyama, M. (2018). cGANs with Projection Discriminator. ICLR.
    https://arxiv.org/abs/1802.05637
  Miyato, T., Kataoka, T., Koyama, M. & Yoshida, Y. (2018). Spectral Normalization for
    Generative Adversarial Networks. ICLR. https://arxiv.org/abs/1802.05957
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from jgen.conditioning.spec import (
    check_condition,
    condition_config,
    condition_of,
    default_condition,
    resolve,
)
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses.fgan import FDIVERGENCES, fgan_d_loss, fgan_g_loss, get_fdivergence
from jgen.losses.gan import (
    GAN_LOSSES,
    clip_weights,
    get_gan_loss,
    gradient_penalty,
    r1_penalty,
)
from jgen.models.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
)
from jgen.models.gan.spectral_norm import SPECTRAL
from jgen.train.optim import make_optimizer
from jgen.train.two_player import make_two_player_update, paired_optimizer

ARCHITECTURES = ("mlp", "dcgan")


def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the GAN family, with its default."""
    c = ConfigDict()
    c.family = "gan"
    c.architecture = "dcgan"  # "mlp" | "dcgan"
    c.objective = "non_saturating"  # see the module docstring
    c.latent_dim = 64
    c.g_hidden = (256, 256)  # mlp
    c.d_hidden = (256, 256)  # mlp
    c.features = 64  # dcgan
    c.n_critic = 1
    c.clip = 0.01  # wgan
    c.gp_weight = 10.0  # wgan_gp
    c.r1_weight = 0.0  # R1 penalty gamma (0 = off); the critic loss adds gamma / 2 * ||grad D(real)||^2
    c.d_learning_rate = 0.0  # 0 = optim.learning_rate
    c.conditional = False  # class labels (the older spelling of condition.kind="label")
    c.condition = condition_config()  # any condition kind (see jgen.conditioning.spec); p_uncond unused
    c.spectral_norm = False  # SN-GAN: every discriminator layer spectrally normalised
    for k, v in overrides.items():
        c[k] = v
    return c


def _objective(name: str):
    """(d_loss(real_out, fake_out) -> [B], g_loss(fake_out) -> [B]) for a config name."""
    if name.startswith("f:"):
        fdiv = get_fdivergence(name[2:])
        return (lambda r, f: fgan_d_loss(fdiv, r, f)), (lambda f: fgan_g_loss(fdiv, f, mode="non_saturating"))
    if name not in GAN_LOSSES:
        raise ValueError(f"Unknown model.objective={name!r}; use one of {sorted(GAN_LOSSES)} or "
                         f"'f:<divergence>' with a divergence in {sorted(FDIVERGENCES)}.")
    pair = get_gan_loss(name)
    return pair.d_loss, pair.g_loss


def make_gan_players(g_apply: Callable, d_apply: Callable, *, objective: str, latent_dim: int,
                     to_data: Callable = lambda batch: batch["image"], labels_of: Callable = lambda batch: None,
                     gp_weight: float = 10.0, r1_weight: float = 0.0, clip: float = 0.01,
                     d_apply_train: Callable | None = None):
    """The two players' losses for `jgen.train.two_player.make_two_player_update`.

    Args:
      g_apply: ``g_apply(g_params, z [B, latent_dim], labels) -> samples``.
      d_apply: ``d_apply(d_params, x, labels) -> [B]`` raw discriminator outputs.
      objective: a GAN objective name or "f:<divergence>".
      latent_dim: the generator's input size; z ~ N(0, I).
      to_data: batch -> real data (e.g. pixels on [-1, 1]).
      labels_of: batch -> labels [B] (None for unconditional players).
      gp_weight: WGAN-GP's lambda (objective "wgan_gp").
      r1_weight: the R1 penalty's gamma (0 = off).
      clip: WGAN's clipping constant (objective "wgan").
      d_apply_train: for a discriminator with non-gradient state (spectral norm's u):
        ``d_apply_train(d_params, x, labels) -> ([B] outputs, d_state)``, the forward
        pass that advances the state; d_loss runs it on the real batch and returns
        d_state in its aux under "d_state" (which `jgen.train.two_player` stores).
        `d_apply` must give the same outputs without advancing it. None: no state.

    Returns:
      (d_loss, g_loss, d_project): ``d_loss(d, g, key, batch)`` and ``g_loss(g, d, key,
      batch)`` return (mean, per-example aux); d_project is the clipping (or None).
    """
    d_obj, g_obj = _objective(objective)

    def d_loss(d, g, key, batch):
        real, labels = to_data(batch), labels_of(batch)
        k_z, k_gp = jax.random.split(key)
        fake = jax.lax.stop_gradient(g_apply(g, jax.random.normal(k_z, (real.shape[0], latent_dim)), labels))
        d_state = None
        if d_apply_train is None:
            real_out = d_apply(d, real, labels)
        else:  # one power iteration per critic update (Miyato et al., Algorithm 1)
            real_out, d_state = d_apply_train(d, real, labels)
        per = d_obj(real_out, d_apply(d, fake, labels))
        aux = {"objective": per}
        critic = lambda x, y=None: d_apply(d, x, y)
        if objective == "wgan_gp":
            gp = gradient_penalty(critic, k_gp, real, fake, labels)
            aux["gradient_penalty"] = gp
            per = per + gp_weight * gp
        if r1_weight:
            r1 = r1_penalty(critic, real, labels)
            aux["r1"] = r1
            per = per + 0.5 * r1_weight * r1
        if d_state is not None:
            aux["d_state"] = d_state
        return jnp.mean(per), aux

    def g_loss(g, d, key, batch):
        labels = labels_of(batch)
        n = jnp.shape(to_data(batch))[0]
        per = g_obj(d_apply(d, g_apply(g, jax.random.normal(key, (n, latent_dim)), labels), labels))
        return jnp.mean(per), {"objective": per}

    d_project = (lambda d: clip_weights(d, clip)) if objective == "wgan" else None
    return d_loss, g_loss, d_project


def _collection_labels(variables: dict) -> dict:
    """"params" for every leaf of the "params" collection, "state" for the others (spectral)."""
    return {name: jax.tree.map(lambda _, n=name: "params" if n == "params" else "state", tree)
            for name, tree in variables.items()}


def params_only_optimizer(opt: optax.GradientTransformation) -> optax.GradientTransformation:
    """`opt` applied to the ``"params"`` collection of a Flax variables dict, zero updates for
    every other collection (e.g. spectral normalisation's ``"spectral"`` u and sigma, which the
    critic step sets; `optax.multi_transform` with `optax.set_to_zero`)."""
    return optax.multi_transform({"params": opt, "state": optax.set_to_zero()}, _collection_labels)


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)
    if m.architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown model.architecture={m.architecture!r} for the GAN family; use one of "
                         f"{ARCHITECTURES}.")
    _objective(m.objective)  # validates the name early
    for key in ("preprocess", "eval_preprocess"):
        if config.data[key] != "symmetric":
            raise ValueError(f"The GAN family generates pixels on [-1, 1] (tanh): set data.{key}='symmetric' "
                             f"(got {config.data[key]!r}).")
    image_shape = tuple(info.image_shape)
    cond = resolve(config, info)
    labelled = cond is not None and cond.kind == "label"  # the label path (one-hot / embed table), unchanged
    embedded = cond if cond is not None and not labelled else None  # each player's own ConditionEncoder
    num_classes = cond.num_classes if labelled else 0
    latent = int(m.latent_dim)
    sn = bool(m.spectral_norm)
    if m.architecture == "mlp":
        gen = MLPGenerator(hidden=tuple(m.g_hidden), data_shape=image_shape, num_classes=num_classes,
                           condition=embedded)
        disc = MLPDiscriminator(hidden=tuple(m.d_hidden), num_classes=num_classes, spectral_norm=sn,
                                condition=embedded)
    else:
        gen = DCGANGenerator(image_shape=image_shape, features=int(m.features), num_classes=num_classes,
                             condition=embedded)
        disc = DCGANDiscriminator(image_shape=image_shape, features=int(m.features), num_classes=num_classes,
                                  spectral_norm=sn, condition=embedded)
    stats_kw = {"update_stats": False} if sn else {}  # read the stored u, store nothing

    def g_apply(g, z, labels):
        return gen.apply(g, z, labels)

    def d_apply(d, x, labels):
        out = disc.apply(d, x, labels, **stats_kw)
        return out.reshape((x.shape[0],))

    def d_apply_train(d, x, labels):  # spectral norm: advance u by one power iteration
        out, updates = disc.apply(d, x, labels, update_stats=True, mutable=[SPECTRAL])
        return out.reshape((x.shape[0],)), {SPECTRAL: updates[SPECTRAL]}

    def to_data(batch):
        check_image_batch(batch, image_shape, who="The GAN step")
        return jnp.asarray(batch["image"], jnp.float32) / 127.5 - 1.0  # data.preprocess="symmetric"

    def labels_of(batch):  # the raw condition of a batch, shared by its real and fake examples
        if cond is None:
            return None
        # Image conditions with random holes (inpaint) draw them per training step.
        return condition_of(cond, batch, jax.random.fold_in(jax.random.PRNGKey(0), batch.get("step", 0)))

    d_loss, g_loss, d_project = make_gan_players(
        g_apply, d_apply, objective=m.objective, latent_dim=latent, to_data=to_data, labels_of=labels_of,
        gp_weight=float(m.gp_weight), r1_weight=float(m.r1_weight), clip=float(m.clip),
        d_apply_train=d_apply_train if sn else None)
    opt_g = make_optimizer(config.optim, config.train.num_steps)
    d_optim = config.optim.copy_and_resolve_references()
    if float(m.d_learning_rate):
        with d_optim.unlocked():
            d_optim.learning_rate = float(m.d_learning_rate)
    opt_d = make_optimizer(d_optim, config.train.num_steps)
    if sn:  # the optimizer updates the weights only; u is set by the critic step
        opt_d = params_only_optimizer(opt_d)
    update = make_two_player_update(d_loss, g_loss, opt_g, opt_d, n_critic=int(m.n_critic), d_project=d_project)

    def init(key):
        kg, kd = jax.random.split(key)
        labels = None if cond is None else jnp.zeros((1, *cond.shape), cond.dtype)
        return {"g": gen.init(kg, jnp.zeros((1, latent)), labels),
                "d": disc.init(kd, jnp.zeros((1, *image_shape)), labels, **stats_kw)}

    def loss_fn(params, key, batch):  # the generator's loss (for in-training evaluation)
        return g_loss(params["g"], params["d"], key, batch)

    def sample(params, key, num, condition=None):
        if condition is None:
            condition = default_condition(cond, num)  # labels cycle through the classes
        condition = check_condition(cond, condition, num, who="The GAN sampler")
        x = g_apply(params["g"], jax.random.normal(key, (num, latent)), condition)
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

    def eval_fn(params, key, batch):
        real, labels = to_data(batch), labels_of(batch)
        fake = g_apply(params["g"], jax.random.normal(key, (real.shape[0], latent)), labels)
        return {"critic_real": d_apply(params["d"], real, labels), "critic_fake": d_apply(params["d"], fake, labels)}

    def summarize(values):
        return {k: float(jnp.mean(v)) for k, v in values.items()} | {"num_examples": len(values["critic_real"])}

    return ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=math.prod(image_shape),
                     nll_estimators=(), summarize=summarize, num_classes=num_classes,
                     optimizer=paired_optimizer(opt_g, opt_d), update=update, condition=cond)


def training_defaults(config: ConfigDict) -> ConfigDict:
    """DCGAN's optimiser (Adam 2e-4, b1 = 0.5), [-1, 1] pixels, a generator EMA."""
    config.data.preprocess = config.data.eval_preprocess = "symmetric"
    config.optim.learning_rate = 2e-4
    config.optim.b1 = 0.5
    config.train.ema_decay = 0.999
    config.eval.iwae_k = ()
    return config


__all__ = ["ARCHITECTURES", "build", "make_gan_players", "model_config", "params_only_optimizer", "training_defaults"]
