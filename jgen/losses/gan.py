r"""GAN objectives as pure functions of discriminator / critic outputs, plus the WGAN
Lipschitz devices (weight clipping, gradient penalty) and the R1 penalty.

**API.** Every objective is a pair of functions over the discriminator's *raw* outputs
(logits for the classifier GANs, critic values for WGAN, real-valued scores for LSGAN):

- ``<name>_d_loss(real_logits [B], fake_logits [B]) -> [B]``: the discriminator's loss,
  per example: the term for real example i plus the term for fake example i (so the two
  batches must have the same size). Minimise its batch mean over the discriminator.
- ``<name>_g_loss(fake_logits [B]) -> [B]``: the generator's loss per fake example;
  minimise its batch mean over the generator.

Both are *losses to minimise*; the per-example terms are reduced in one place by the
caller (e.g. ``jnp.mean``, or `jgen.losses.elbo.masked_mean`). ``GAN_LOSSES`` maps a
config name to its ``GANLoss(d_loss, g_loss)`` pair (the registry at the config edge; see
`get_gan_loss`). With :math:`D(x) = \sigma(\ell(x))` the discriminator's probability that x
is real and :math:`\ell` its logit:

==================  ===========================================================  ==============================
name                d_loss (per real i, fake i)                                  g_loss (per fake i)
==================  ===========================================================  ==============================
``minimax``         :math:`-\log D(x) - \log(1 - D(G(z)))`                        :math:`\log(1 - D(G(z)))`
``non_saturating``  same                                                         :math:`-\log D(G(z))`
``lsgan``           :math:`\tfrac12(D(x) - b)^2 + \tfrac12(D(G(z)) - a)^2`         :math:`\tfrac12(D(G(z)) - c)^2`
``hinge``           :math:`\max(0, 1 - D(x)) + \max(0, 1 + D(G(z)))`              :math:`-D(G(z))`
``wgan``            :math:`D(G(z)) - D(x)` (+ `clip_weights` after each step)     :math:`-D(G(z))`
``wgan_gp``         :math:`D(G(z)) - D(x)` (+ lam * `gradient_penalty`)          :math:`-D(G(z))`
==================  ===========================================================  ==============================

(For LSGAN, hinge and WGAN, :math:`D` above is the raw output, no sigmoid.) The registry
holds only the pair; the regularisers are separate pure functions the training step adds:
``"wgan"`` expects ``params = clip_weights(params, c)`` (c = 0.01) after every critic update,
``"wgan_gp"`` expects ``d_loss + lam * gradient_penalty(...)`` (lam = 10) per example, and an
R1-regularised GAN (any classifier loss) ``d_loss + gamma / 2 * r1_penalty(...)``.

**Penalties and per-example gradients.** `gradient_penalty` and `r1_penalty` need
:math:`\nabla_x D(x_i)` for each example separately. Two ways are offered (``method=``):

- ``"vmap"`` (default): ``vmap(grad(lambda x_i: D(x_i[None])[0]))`` -- the critic is
  evaluated on each example *alone* (a batch of one), so the result is a per-example
  gradient by construction.
- ``"sum"``: ``grad(lambda x: D(x).sum())``. Row i of this gradient is
  :math:`\sum_j \partial D(x_j)/\partial x_i`, which equals :math:`\nabla_{x_i} D(x_i)` **only
  when** :math:`D(x_j)` does not depend on :math:`x_i` for :math:`j \ne i`, i.e. the critic has
  no cross-example interaction (MLPs, convnets, layer norm, spectral norm -- but *not* batch
  norm in training mode, minibatch discrimination or minibatch-std layers). Then both
  methods agree and cost one backward pass of the batched critic.

A conditional critic takes its labels through ``cond`` (``critic_fn(x, cond)``), which is
sliced per example alongside x; a critic that closes over a [B] label array would be fed
a batch of one example with B labels under ``"vmap"``.

With a batch-coupled critic neither is the Gulrajani et al. penalty (``"sum"`` mixes in
other examples' outputs, ``"vmap"`` changes the batch statistics to those of one example);
Gulrajani et al. (Sec. 4) accordingly drop batch norm from the critic.

References:
  Goodfellow, I. et al. (2014). Generative Adversarial Nets. NeurIPS.
    https://arxiv.org/abs/1406.2661 (Eq. 1; the non-saturating generator loss, Sec. 3.)
  Mao, X. et al. (2017). Least Squares Generative Adversarial Networks. ICCV.
    https://arxiv.org/abs/1611.04076 (Eqs. 2, 8-9: the a-b-c coding.)
  Lim, J. H. & Ye, J. C. (2017). Geometric GAN. https://arxiv.org/abs/1705.02894
  Miyato, T., Kataoka, T., Koyama, M. & Yoshida, Y. (2018). Spectral Normalization for
    Generative Adversarial Networks. ICLR. https://arxiv.org/abs/1802.05957 (Eqs. 16-17: hinge.)
  Arjovsky, M., Chintala, S. & Bottou, L. (2017). Wasserstein GAN. ICML.
    https://arxiv.org/abs/1701.07875 (Algorithm 1.)
  Gulrajani, I. et al. (2017). Improved Training of Wasserstein GANs. NeurIPS.
    https://arxiv.org/abs/1704.00028 (Algorithm 1, Eq. 3.)
  Mescheder, L., Geiger, A. & Nowozin, S. (2018). Which Training Methods for GANs do
    actually Converge? ICML. https://arxiv.org/abs/1801.04406 (Eq. 9: R1.)
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.typing import Array, Params, PRNGKey

# critic_fn(x [B, ...]) -> raw outputs [B]
CriticFn = Callable[[Array], Array]

GRAD_METHODS = ("vmap", "sum")


# --------------------------------------------------------------------------- checks


def _check_logits(v, name: str, who: str) -> Array:
    v = jnp.asarray(v)
    if v.ndim != 1:
        hint = f" Use {name}[:, 0]." if v.ndim == 2 and v.shape[1] == 1 else ""
        raise ValueError(f"{who}: {name} must be one raw output per example, shape [B]; got shape "
                         f"{list(v.shape)}.{hint}")
    if not jnp.issubdtype(v.dtype, jnp.floating):
        raise ValueError(f"{who}: {name} must be floating point; got dtype {v.dtype}.")
    return v


def _check_pair(real, fake, who: str) -> tuple[Array, Array]:
    real = _check_logits(real, "real_logits", who)
    fake = _check_logits(fake, "fake_logits", who)
    if real.shape != fake.shape:
        raise ValueError(f"{who}: real_logits and fake_logits must have the same shape [B] (the per-example term "
                         f"i pairs real example i with fake example i); got {list(real.shape)} and "
                         f"{list(fake.shape)}. Draw as many fake examples as real ones.")
    return real, fake


# --------------------------------------------------------------------------- objectives


def minimax_d_loss(real_logits: Array, fake_logits: Array) -> Array:
    r"""Discriminator loss of the original GAN (Goodfellow et al. 2014, Eq. 1), per example.

    .. math:: -\log\sigma(\ell_r) - \log(1 - \sigma(\ell_f)) = \operatorname{softplus}(-\ell_r)
        + \operatorname{softplus}(\ell_f),

    the binary cross-entropy of labelling real as 1 and fake as 0; minus the value function
    :math:`V(D, G)`. For a fixed generator with density q it is minimised in expectation by
    :math:`D^*(x) = p(x)/(p(x) + q(x))`, where :math:`\mathbb E[\text{loss}] = \log 4 - 2\,
    \mathrm{JS}(p\,\|\,q)` (Goodfellow et al., Prop. 1 and Thm. 1).

    Args:
      real_logits: discriminator logits on real data, [B].
      fake_logits: discriminator logits on generated data, [B].

    Returns:
      Per-example loss [B].
    """
    real, fake = _check_pair(real_logits, fake_logits, "minimax_d_loss")
    return jax.nn.softplus(-real) + jax.nn.softplus(fake)


def minimax_g_loss(fake_logits: Array) -> Array:
    r"""Generator loss of the minimax (saturating) GAN: :math:`\log(1 - \sigma(\ell_f)) =
    -\operatorname{softplus}(\ell_f)`, per example.

    Its gradient :math:`-\sigma(\ell_f)` vanishes when the discriminator confidently rejects
    the samples (:math:`\ell_f \to -\infty`), early in training; see `non_saturating_g_loss`.

    Args:
      fake_logits: discriminator logits on generated data, [B].

    Returns:
      Per-example loss [B] (to minimise).
    """
    fake = _check_logits(fake_logits, "fake_logits", "minimax_g_loss")
    return -jax.nn.softplus(fake)


def non_saturating_d_loss(real_logits: Array, fake_logits: Array) -> Array:
    """The non-saturating GAN's discriminator loss: identical to `minimax_d_loss`."""
    return minimax_d_loss(real_logits, fake_logits)


def non_saturating_g_loss(fake_logits: Array) -> Array:
    r"""Non-saturating generator loss (Goodfellow et al. 2014, Sec. 3): :math:`-\log\sigma(\ell_f)
    = \operatorname{softplus}(-\ell_f)`, per example.

    Same fixed point as the minimax loss, but its gradient :math:`-\sigma(-\ell_f) \to -1` stays
    large when the discriminator rejects the samples.

    Args:
      fake_logits: discriminator logits on generated data, [B].

    Returns:
      Per-example loss [B].
    """
    fake = _check_logits(fake_logits, "fake_logits", "non_saturating_g_loss")
    return jax.nn.softplus(-fake)


def lsgan_d_loss(real_logits: Array, fake_logits: Array, *, a: float = 0.0, b: float = 1.0) -> Array:
    r"""Least-squares GAN discriminator loss (Mao et al. 2017, Eq. 2), per example.

    .. math:: \tfrac12 (D(x) - b)^2 + \tfrac12 (D(G(z)) - a)^2

    on the raw (no sigmoid) output D. The **a-b-c coding**: ``a`` is the target for fake data,
    ``b`` the target for real data, and ``c`` (`lsgan_g_loss`) the value the generator wants D
    to assign to fake data. The optimal discriminator is :math:`D^* = (b\,p + a\,q)/(p + q)`;
    if :math:`b - c = 1` and :math:`b - a = 2` (e.g. a = -1, b = 1, c = 0) the generator then
    minimises half the Pearson :math:`\chi^2(p + q\,\|\,2q)` (Mao et al., Thm. 1). The 0-1
    coding a = 0, b = c = 1 (the defaults) is the one used in the paper's experiments.

    Args:
      real_logits: raw discriminator outputs on real data, [B].
      fake_logits: raw discriminator outputs on generated data, [B].
      a: target for fake data.
      b: target for real data.

    Returns:
      Per-example loss [B].
    """
    real, fake = _check_pair(real_logits, fake_logits, "lsgan_d_loss")
    return 0.5 * (real - b) ** 2 + 0.5 * (fake - a) ** 2


def lsgan_g_loss(fake_logits: Array, *, c: float = 1.0) -> Array:
    r"""Least-squares GAN generator loss (Mao et al. 2017, Eq. 2): :math:`\tfrac12(D(G(z)) - c)^2`,
    per example; see `lsgan_d_loss` for the a-b-c coding.

    Args:
      fake_logits: raw discriminator outputs on generated data, [B].
      c: the value the generator wants the discriminator to output on fakes.

    Returns:
      Per-example loss [B].
    """
    fake = _check_logits(fake_logits, "fake_logits", "lsgan_g_loss")
    return 0.5 * (fake - c) ** 2


def hinge_d_loss(real_logits: Array, fake_logits: Array) -> Array:
    r"""Hinge discriminator loss (Lim & Ye 2017; Miyato et al. 2018, Eq. 16), per example:
    :math:`\max(0, 1 - D(x)) + \max(0, 1 + D(G(z)))` on the raw output D.

    Args:
      real_logits: raw discriminator outputs on real data, [B].
      fake_logits: raw discriminator outputs on generated data, [B].

    Returns:
      Per-example loss [B].
    """
    real, fake = _check_pair(real_logits, fake_logits, "hinge_d_loss")
    return jax.nn.relu(1.0 - real) + jax.nn.relu(1.0 + fake)


def hinge_g_loss(fake_logits: Array) -> Array:
    r"""Hinge-GAN generator loss (Miyato et al. 2018, Eq. 17): :math:`-D(G(z))`, per example.

    Args:
      fake_logits: raw discriminator outputs on generated data, [B].

    Returns:
      Per-example loss [B].
    """
    return -_check_logits(fake_logits, "fake_logits", "hinge_g_loss")


def wgan_d_loss(real_logits: Array, fake_logits: Array) -> Array:
    r"""Wasserstein critic loss (Arjovsky et al. 2017, Algorithm 1), per example:
    :math:`D(G(z)) - D(x)`.

    Minus the Kantorovich-Rubinstein dual objective: over 1-Lipschitz critics its negated
    expectation is at most :math:`W_1(p, q)`, with equality at the optimal critic. The
    Lipschitz constraint is imposed separately: `clip_weights` (WGAN) or `gradient_penalty`
    (WGAN-GP).

    Args:
      real_logits: critic outputs on real data, [B].
      fake_logits: critic outputs on generated data, [B].

    Returns:
      Per-example loss [B].
    """
    real, fake = _check_pair(real_logits, fake_logits, "wgan_d_loss")
    return fake - real


def wgan_g_loss(fake_logits: Array) -> Array:
    r"""WGAN generator loss (Arjovsky et al. 2017, Algorithm 1): :math:`-D(G(z))`, per example.

    Args:
      fake_logits: critic outputs on generated data, [B].

    Returns:
      Per-example loss [B].
    """
    return -_check_logits(fake_logits, "fake_logits", "wgan_g_loss")


# --------------------------------------------------------------------------- Lipschitz devices


def clip_weights(params: Params, c: float = 0.01) -> Params:
    """WGAN weight clipping (Arjovsky et al. 2017, Algorithm 1, line 7): every floating-point
    leaf of ``params`` clipped to [-c, c]; other leaves returned unchanged.

    A pure transform: apply it to the critic's parameters after each critic update,
    ``d_params = clip_weights(optax.apply_updates(d_params, updates), c)``.

    Args:
      params: the critic's parameter pytree.
      c: the clipping threshold, > 0 (0.01 in the paper).

    Returns:
      A pytree with the structure of ``params``.
    """
    if isinstance(c, (int, float)) and not c > 0:
        raise ValueError(f"clip_weights: the clipping threshold c must be > 0; got {c!r} (the paper uses 0.01).")

    def clip(p):
        p = jnp.asarray(p)
        return jnp.clip(p, -c, c) if jnp.issubdtype(p.dtype, jnp.floating) else p

    return jax.tree_util.tree_map(clip, params)


def _check_batch(x, name: str, who: str) -> Array:
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{who}: {name} must be a batch [B, ...] with at least one event axis; got shape "
                         f"{list(x.shape)}. Use x[:, None] for scalar data.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{who}: {name} must be floating point (the penalty differentiates in x); got dtype "
                         f"{x.dtype}.")
    return x


def per_example_input_grad(critic_fn: CriticFn, x: Array, cond=None, *, method: str = "vmap") -> Array:
    r"""Per-example input gradients :math:`\nabla_{x_i} D(x_i)`, stacked [B, ...].

    Args:
      critic_fn: ``critic_fn(x [B, ...]) -> [B]``, or ``critic_fn(x, cond) -> [B]`` when
        ``cond`` is given.
      x: inputs [B, ...].
      cond: optional per-example conditioning (e.g. class labels [B], or a pytree of arrays
        with leading axis B) passed as the critic's second argument. Pass labels here rather
        than closing over them: with ``method="vmap"`` the critic sees one example at a time,
        and ``cond`` is sliced with it.
      method: "vmap" (evaluate the critic on each example alone) or "sum" (gradient of the
        summed output; per-example only for critics without cross-example interaction --
        see the module notes).

    Returns:
      Gradients [B, ...], shaped like x.
    """
    who = "per_example_input_grad"
    x = _check_batch(x, "x", who)
    if method not in GRAD_METHODS:
        raise ValueError(f"{who}: unknown method {method!r}; choose one of {GRAD_METHODS}.")
    for leaf in jax.tree_util.tree_leaves(cond):
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != x.shape[0]:
            raise ValueError(f"{who}: every array in cond must have the batch size {x.shape[0]} as its leading "
                             f"axis; got shape {list(jnp.shape(leaf))}.")

    def summed(xs, c):
        out = critic_fn(xs) if cond is None else critic_fn(xs, c)
        if out.shape != xs.shape[:1]:
            raise ValueError(f"{who}: critic_fn must return one value per example, shape {list(xs.shape[:1])}; "
                             f"got {list(out.shape)}. Squeeze a trailing unit axis: lambda x: D(x)[:, 0].")
        return jnp.sum(out)

    if method == "sum":
        return jax.grad(summed)(x, cond)
    add_batch = lambda c: jax.tree_util.tree_map(lambda a: a[None], c)
    return jax.vmap(jax.grad(lambda xi, ci: summed(xi[None], add_batch(ci))))(x, cond)


def _safe_norm(g: Array) -> Array:
    """Euclidean norm over every axis but the first, [B]; exact, with a finite (zero)
    gradient at g = 0 (the penalty is differentiated again w.r.t. the critic parameters)."""
    sq = jnp.sum(jnp.reshape(g, (g.shape[0], -1)) ** 2, axis=1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def random_interpolates(key: PRNGKey, real: Array, fake: Array) -> tuple[Array, Array]:
    r"""Random points on the segments between paired real and fake examples
    (Gulrajani et al. 2017, Algorithm 1, lines 4-6):
    :math:`\hat x_i = \epsilon_i x_i + (1 - \epsilon_i)\tilde x_i`, one
    :math:`\epsilon_i \sim U[0, 1]` per example.

    Args:
      key: PRNG key; ``eps = jax.random.uniform(key, (B,), real.dtype)``.
      real: real examples [B, ...].
      fake: generated examples [B, ...] (the same shape).

    Returns:
      ``(x_hat [B, ...], eps [B])``.
    """
    who = "random_interpolates"
    real = _check_batch(real, "real", who)
    fake = _check_batch(fake, "fake", who)
    if real.shape != fake.shape:
        raise ValueError(f"{who}: real and fake must have the same shape [B, ...]; got {list(real.shape)} and "
                         f"{list(fake.shape)}.")
    eps = jax.random.uniform(key, real.shape[:1], real.dtype)
    e = jnp.reshape(eps, real.shape[:1] + (1,) * (real.ndim - 1))
    return e * real + (1.0 - e) * fake, eps


def gradient_penalty(
    critic_fn: CriticFn,
    key: PRNGKey,
    real: Array,
    fake: Array,
    cond=None,
    *,
    target: float = 1.0,
    method: str = "vmap",
) -> Array:
    r"""WGAN-GP gradient penalty (Gulrajani et al. 2017, Algorithm 1, line 7), per example.

    .. math:: \mathrm{GP}_i = \big(\|\nabla_{\hat x} D(\hat x_i)\|_2 - 1\big)^2,\qquad
        \hat x_i = \epsilon_i x_i + (1 - \epsilon_i)\tilde x_i,\ \epsilon_i \sim U[0, 1],

    with its own interpolation point and its own gradient norm for every example (not the norm
    of the whole batch's gradient). The WGAN-GP critic loss is
    ``wgan_d_loss(D(real), D(fake)) + lam * gradient_penalty(...)`` with lam = 10. Pass
    ``critic_fn`` as a closure over the critic's parameters so the penalty is differentiated
    with respect to them (second-order autodiff through the input gradient).

    Args:
      critic_fn: ``critic_fn(x [B, ...]) -> [B]``.
      key: PRNG key for the interpolation weights (`random_interpolates`).
      real: real examples [B, ...].
      fake: generated examples [B, ...].
      cond: optional per-example conditioning for a conditional critic ``critic_fn(x, cond)``
        (e.g. the labels shared by real example i and fake example i); see
        `per_example_input_grad`.
      target: the gradient norm aimed at (1 in the paper).
      method: how to take per-example gradients, "vmap" or "sum" (module notes).

    Returns:
      The per-example penalty [B].
    """
    x_hat, _ = random_interpolates(key, real, fake)
    g = per_example_input_grad(critic_fn, x_hat, cond, method=method)
    return (_safe_norm(g) - target) ** 2


def r1_penalty(disc_fn: CriticFn, real: Array, cond=None, *, method: str = "vmap") -> Array:
    r"""R1 gradient penalty on real data (Mescheder et al. 2018, Eq. 9), per example:
    :math:`\|\nabla_x D(x_i)\|_2^2` with D the discriminator's logit.

    The regularised discriminator loss is ``d_loss + gamma / 2 * r1_penalty(D, real)``.

    Args:
      disc_fn: ``disc_fn(x [B, ...]) -> logits [B]`` (a closure over the parameters).
      real: real examples [B, ...].
      cond: optional per-example conditioning (labels) for ``disc_fn(x, cond)``.
      method: how to take per-example gradients, "vmap" or "sum" (module notes).

    Returns:
      The per-example squared gradient norm [B].
    """
    g = per_example_input_grad(disc_fn, _check_batch(real, "real", "r1_penalty"), cond, method=method)
    return jnp.sum(jnp.reshape(g, (g.shape[0], -1)) ** 2, axis=1)


# --------------------------------------------------------------------------- registry (config edge)


class GANLoss(NamedTuple):
    """A GAN objective: ``d_loss(real_logits, fake_logits) -> [B]``, ``g_loss(fake_logits) -> [B]``."""

    d_loss: Callable[[Array, Array], Array]
    g_loss: Callable[[Array], Array]


GAN_LOSSES: dict[str, GANLoss] = {
    "minimax": GANLoss(minimax_d_loss, minimax_g_loss),
    "non_saturating": GANLoss(non_saturating_d_loss, non_saturating_g_loss),
    "lsgan": GANLoss(lsgan_d_loss, lsgan_g_loss),
    "hinge": GANLoss(hinge_d_loss, hinge_g_loss),
    "wgan": GANLoss(wgan_d_loss, wgan_g_loss),  # + clip_weights after each critic step
    "wgan_gp": GANLoss(wgan_d_loss, wgan_g_loss),  # + lam * gradient_penalty in the critic loss
}


def get_gan_loss(name: str) -> GANLoss:
    """The ``GANLoss`` pair for a config name (one of ``GAN_LOSSES``)."""
    if name not in GAN_LOSSES:
        raise ValueError(f"Unknown GAN loss {name!r}; choose one of {sorted(GAN_LOSSES)}.")
    return GAN_LOSSES[name]
