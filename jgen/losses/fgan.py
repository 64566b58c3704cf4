r"""f-GAN: variational divergence minimisation with an f-divergence (Nowozin et al. 2016).

**Convention** (Nowozin et al., Eqs. 1, 4 and 6). P is the *data* (real) distribution and Q
the *model* :math:`Q_\theta` (fake); the divergence is

.. math:: D_f(P\,\|\,Q) = \int q(x)\, f\!\Big(\frac{p(x)}{q(x)}\Big)\,dx
    = \mathbb E_Q\big[f(p/q)\big],

with f convex on :math:`u > 0` and f(1) = 0. Fenchel duality,
:math:`f(u) = \sup_t\, t u - f^*(t)`, gives the variational lower bound

.. math:: D_f(P\,\|\,Q) \;\ge\; \mathbb E_{x\sim P}[T(x)] - \mathbb E_{x\sim Q}[f^*(T(x))]

for every critic T with values in :math:`\operatorname{dom} f^*`, tight at
:math:`T^*(x) = f'(p(x)/q(x))`. The discriminator's raw output v is mapped into the domain
by the output activation, :math:`T = g_f(v)` (Nowozin et al., Table 6); the discriminator
maximises the bound, the generator minimises it.

Each ``FDivergence`` in ``FDIVERGENCES`` carries its generator f, conjugate f*, activation
:math:`g_f`, the fused and numerically stable :math:`f^*(g_f(v))`, and the optimal critic as a
function of the log density ratio :math:`\log p(x) - \log q(x)`:

- ``kl``: :math:`\int p\log(p/q)`; :math:`f = u\log u`, :math:`f^* = e^{t-1}`, :math:`g_f = v`.
- ``reverse_kl``: :math:`\int q\log(q/p)`; :math:`f = -\log u`, :math:`f^* = -1 - \log(-t)` on
  t < 0, :math:`g_f = -e^{-v}`.
- ``js``: :math:`\tfrac12\int p\log\frac{2p}{p+q} + q\log\frac{2q}{p+q}` (see below).
- ``pearson``: :math:`\int (p-q)^2/q`; :math:`f = (u-1)^2`, :math:`f^* = t^2/4 + t`, :math:`g_f = v`.
- ``neyman``: :math:`\int (p-q)^2/p`; :math:`f = (1-u)^2/u`, :math:`f^* = 2 - 2\sqrt{1-t}` on
  t < 1, :math:`g_f = 1 - e^{-v}`.
- ``hellinger`` (squared Hellinger): :math:`\int(\sqrt p - \sqrt q)^2`; :math:`f = (\sqrt u - 1)^2`,
  :math:`f^* = t/(1-t)` on t < 1, :math:`g_f = 1 - e^{-v}`.
- ``tv`` (total variation): :math:`\tfrac12\int|p-q|`; :math:`f = \tfrac12|u-1|`, :math:`f^* = t` on
  :math:`|t| \le \tfrac12`, :math:`g_f = \tfrac12\tanh v`.

**Jensen-Shannon.** Nowozin et al.'s Table 1 defines the divergence as
:math:`\mathrm{JS} = \tfrac12\mathrm{KL}(P\|M) + \tfrac12\mathrm{KL}(Q\|M)`, M = (P + Q)/2 (at most
:math:`\log 2`), but lists the generator :math:`f_0(u) = u\log u - (u+1)\log\frac{1+u}{2}`, for
which :math:`\int q f_0(p/q) = 2\,\mathrm{JS}`; its conjugate :math:`-\log(2 - e^t)` and activation
:math:`\log 2 - \log(1 + e^{-v})` (Tables 2 and 6) belong to :math:`f_0`. Here ``js`` is the
divergence itself, :math:`f = f_0/2`, hence :math:`f^*(t) = \tfrac12 f_0^*(2t) = -\tfrac12
\log(2 - e^{2t})` on :math:`t < \tfrac12\log 2` and :math:`g_f(v) = \tfrac12(\log 2 - \log(1+e^{-v}))`.
Every f-GAN quantity with ``js`` is half the paper's; the optimisation is the same.

The names follow the generators: with this convention the Pearson generator
:math:`(u-1)^2` gives :math:`\int(p-q)^2/q` and the Neyman one :math:`\int(p-q)^2/p`; when
comparing with the integrals printed in the paper's Table 1, go by the generator column
(f defines the divergence through :math:`\int q f(p/q)`). Table 2's GAN
row, :math:`f(u) = u\log u - (u+1)\log(u+1)` with f(1) = -log 4, is the minimax GAN with
:math:`T = \log\sigma(v)`; use `jgen.losses.gan.minimax_d_loss` for it.

References:
  Nowozin, S., Cseke, B. & Tomioka, R. (2016). f-GAN: Training Generative Neural Samplers
    using Variational Divergence Minimization. NeurIPS. https://arxiv.org/abs/1606.00709
    (Eqs. 4-7; Tables 1, 2 and 6.)
  Nguyen, X., Wainwright, M. J. & Jordan, M. I. (2010). Estimating divergence functionals
    and the likelihood ratio by convex risk minimization. IEEE Trans. Inf. Theory 56(11).
    https://arxiv.org/abs/0809.0853
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jgen.typing import Array

FGAN_G_MODES = ("minimax", "non_saturating")

_LOG2 = math.log(2.0)


class FDivergence(NamedTuple):
    r"""An f-divergence with everything an f-GAN needs (Nowozin et al. 2016, Tables 1, 2, 6).

    Attributes:
      name: registry name.
      f: the generator :math:`f(u)`, convex on :math:`u > 0`, f(1) = 0.
      conjugate: the Fenchel conjugate :math:`f^*(t) = \sup_{u > 0}\, u t - f(u)` on ``domain``.
      activation: the output activation :math:`g_f: \mathbb R \to \operatorname{dom} f^*`.
      conjugate_of_activation: :math:`v \mapsto f^*(g_f(v))`, the same composition written
        to stay finite where :math:`g_f(v)` rounds to the edge of the domain.
      optimal_critic: :math:`\log r \mapsto T^* = f'(r)`, with :math:`r = p(x)/q(x)` given as
        the log density ratio :math:`\log p(x) - \log q(x)`.
      domain: (low, high), the interval of :math:`\operatorname{dom} f^*` that the activation
        maps onto (open ends; ``tv``'s closed domain [-1/2, 1/2] is reached only in the limit).
    """

    name: str
    f: Callable[[Array], Array]
    conjugate: Callable[[Array], Array]
    activation: Callable[[Array], Array]
    conjugate_of_activation: Callable[[Array], Array]
    optimal_critic: Callable[[Array], Array]
    domain: tuple[float, float]


def _xlogx(u: Array) -> Array:
    return jnp.where(u > 0, u * jnp.log(jnp.where(u > 0, u, 1.0)), 0.0)


KL = FDivergence(
    name="kl",
    f=_xlogx,
    conjugate=lambda t: jnp.exp(t - 1.0),
    activation=lambda v: v,
    conjugate_of_activation=lambda v: jnp.exp(v - 1.0),
    optimal_critic=lambda log_r: 1.0 + log_r,
    domain=(-math.inf, math.inf),
)

REVERSE_KL = FDivergence(
    name="reverse_kl",
    f=lambda u: -jnp.log(u),
    conjugate=lambda t: -1.0 - jnp.log(-t),
    activation=lambda v: -jnp.exp(-v),
    conjugate_of_activation=lambda v: v - 1.0,
    optimal_critic=lambda log_r: -jnp.exp(-log_r),
    domain=(-math.inf, 0.0),
)

JS = FDivergence(
    name="js",
    f=lambda u: 0.5 * (_xlogx(u) - (u + 1.0) * jnp.log((1.0 + u) / 2.0)),
    conjugate=lambda t: -0.5 * jnp.log(2.0 - jnp.exp(2.0 * t)),
    activation=lambda v: 0.5 * (_LOG2 - jax.nn.softplus(-v)),
    # 2 - exp(2 g(v)) = 2 sigmoid(-v), so f*(g(v)) = (softplus(v) - log 2) / 2.
    conjugate_of_activation=lambda v: 0.5 * (jax.nn.softplus(v) - _LOG2),
    # f'(r) = log(2r / (1 + r)) / 2 = (log 2 - softplus(-log r)) / 2.
    optimal_critic=lambda log_r: 0.5 * (_LOG2 - jax.nn.softplus(-log_r)),
    domain=(-math.inf, 0.5 * _LOG2),
)

PEARSON = FDivergence(
    name="pearson",
    f=lambda u: (u - 1.0) ** 2,
    conjugate=lambda t: 0.25 * t ** 2 + t,
    activation=lambda v: v,
    conjugate_of_activation=lambda v: 0.25 * v ** 2 + v,
    optimal_critic=lambda log_r: 2.0 * jnp.expm1(log_r),
    domain=(-math.inf, math.inf),
)

NEYMAN = FDivergence(
    name="neyman",
    f=lambda u: (1.0 - u) ** 2 / u,
    conjugate=lambda t: 2.0 - 2.0 * jnp.sqrt(1.0 - t),
    activation=lambda v: -jnp.expm1(-v),
    conjugate_of_activation=lambda v: 2.0 - 2.0 * jnp.exp(-0.5 * v),
    optimal_critic=lambda log_r: -jnp.expm1(-2.0 * log_r),  # 1 - 1/r^2
    domain=(-math.inf, 1.0),
)

HELLINGER = FDivergence(
    name="hellinger",
    f=lambda u: (jnp.sqrt(u) - 1.0) ** 2,
    conjugate=lambda t: t / (1.0 - t),
    activation=lambda v: -jnp.expm1(-v),
    conjugate_of_activation=lambda v: jnp.expm1(v),  # (1 - e^-v) / e^-v
    optimal_critic=lambda log_r: -jnp.expm1(-0.5 * log_r),  # 1 - 1/sqrt(r)
    domain=(-math.inf, 1.0),
)

TOTAL_VARIATION = FDivergence(
    name="tv",
    f=lambda u: 0.5 * jnp.abs(u - 1.0),
    conjugate=lambda t: t,
    activation=lambda v: 0.5 * jnp.tanh(v),
    conjugate_of_activation=lambda v: 0.5 * jnp.tanh(v),
    optimal_critic=lambda log_r: 0.5 * jnp.sign(log_r),  # a subgradient of f at r
    domain=(-0.5, 0.5),
)

FDIVERGENCES: dict[str, FDivergence] = {
    d.name: d for d in (KL, REVERSE_KL, JS, PEARSON, NEYMAN, HELLINGER, TOTAL_VARIATION)
}


def get_fdivergence(name: str) -> FDivergence:
    """The ``FDivergence`` for a config name (one of ``FDIVERGENCES``)."""
    if name not in FDIVERGENCES:
        raise ValueError(f"Unknown f-divergence {name!r}; choose one of {sorted(FDIVERGENCES)}.")
    return FDIVERGENCES[name]


def _check_outputs(v, name: str, who: str) -> Array:
    v = jnp.asarray(v)
    if v.ndim != 1:
        hint = f" Use {name}[:, 0]." if v.ndim == 2 and v.shape[1] == 1 else ""
        raise ValueError(f"{who}: {name} must be one value per example, shape [B]; got shape "
                         f"{list(v.shape)}.{hint}")
    return v


def _check_fdiv(fdiv, who: str) -> FDivergence:
    if not isinstance(fdiv, FDivergence):
        raise TypeError(f"{who}: fdiv must be an FDivergence (e.g. FDIVERGENCES['kl'] or get_fdivergence('kl')); "
                         f"got {type(fdiv).__name__} {fdiv!r}.")
    return fdiv


def variational_bound(fdiv: FDivergence, t_real: Array, t_fake: Array) -> Array:
    r"""Monte-Carlo estimate of the variational lower bound (Nowozin et al. 2016, Eq. 6):

    .. math:: \frac1{B_P}\sum_i T(x_i) - \frac1{B_Q}\sum_j f^*(T(\tilde x_j)),
        \quad x_i \sim P,\ \tilde x_j \sim Q,

    which is :math:`\le D_f(P\,\|\,Q)` in expectation, with equality for :math:`T = T^*`.

    Args:
      fdiv: the f-divergence.
      t_real: critic values :math:`T = g_f(v)` on samples from P (data), [B_P].
      t_fake: critic values on samples from Q (model), [B_Q], inside ``fdiv.domain``.

    Returns:
      The scalar estimate.
    """
    who = "variational_bound"
    fdiv = _check_fdiv(fdiv, who)
    t_real = _check_outputs(t_real, "t_real", who)
    t_fake = _check_outputs(t_fake, "t_fake", who)
    return jnp.mean(t_real) - jnp.mean(fdiv.conjugate(t_fake))


def fgan_d_loss(fdiv: FDivergence, real_outputs: Array, fake_outputs: Array) -> Array:
    r"""f-GAN discriminator loss, per example: minus the bound's terms,

    .. math:: -\,g_f(v(x_i)) + f^*\big(g_f(v(\tilde x_i))\big),

    whose batch mean is ``-variational_bound(fdiv, g_f(v_real), g_f(v_fake))``; minimising it
    maximises the bound over the critic (Nowozin et al. 2016, Eq. 6 and Algorithm 1).

    Args:
      fdiv: the f-divergence.
      real_outputs: raw discriminator outputs v on data, [B].
      fake_outputs: raw discriminator outputs v on generated samples, [B].

    Returns:
      Per-example loss [B].
    """
    who = "fgan_d_loss"
    fdiv = _check_fdiv(fdiv, who)
    real = _check_outputs(real_outputs, "real_outputs", who)
    fake = _check_outputs(fake_outputs, "fake_outputs", who)
    if real.shape != fake.shape:
        raise ValueError(f"{who}: real_outputs and fake_outputs must have the same shape [B] (term i pairs real "
                         f"example i with fake example i); got {list(real.shape)} and {list(fake.shape)}.")
    return -fdiv.activation(real) + fdiv.conjugate_of_activation(fake)


def fgan_g_loss(fdiv: FDivergence, fake_outputs: Array, *, mode: str = "minimax") -> Array:
    r"""f-GAN generator loss, per fake example.

    - ``"minimax"``: the generator minimises the bound; only its second term depends on the
      generator, giving :math:`-f^*(g_f(v(\tilde x)))` (Nowozin et al. 2016, Eq. 6).
    - ``"non_saturating"``: the alternative of Nowozin et al. Sec. 3.2, maximise
      :math:`\mathbb E_Q[g_f(v(\tilde x))]`, i.e. the loss :math:`-g_f(v(\tilde x))`, which has the
      same fixed point and stronger early gradients.

    Args:
      fdiv: the f-divergence.
      fake_outputs: raw discriminator outputs v on generated samples, [B].
      mode: "minimax" or "non_saturating".

    Returns:
      Per-example loss [B].
    """
    who = "fgan_g_loss"
    fdiv = _check_fdiv(fdiv, who)
    fake = _check_outputs(fake_outputs, "fake_outputs", who)
    if mode == "minimax":
        return -fdiv.conjugate_of_activation(fake)
    if mode == "non_saturating":
        return -fdiv.activation(fake)
    raise ValueError(f"{who}: unknown mode {mode!r}; choose one of {FGAN_G_MODES}.")
