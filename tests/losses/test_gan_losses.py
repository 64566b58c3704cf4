"""GAN objectives (`jgen.losses.gan`) against hand-computed values, the optimal-discriminator
identities of Goodfellow et al. (2014) and Mao et al. (2017) by quadrature, and the WGAN-GP /
R1 penalties against a per-example Python loop with analytic critic gradients.

References used:
- Values: the definitions, written with math.exp / math.log (no softplus), or literal numbers.
- Goodfellow et al. (2014), Thm. 1: with D*(x) = p/(p+q), E_p[-log D*] + E_q[-log(1-D*)] =
  log 4 - 2 JS(p||q); JS by scipy.integrate.quad, the loss expectation by a product
  Gauss-Hermite rule over (x ~ p, x' ~ q) pairs.
- Mao et al. (2017), Thm. 1: with a=-1, b=1, c=0 and D* = (b p + a q)/(p + q),
  E_p[(D*-c)^2/2] + E_q[(D*-c)^2/2] = 1/2 int (p - q)^2/(p + q) (quad).
- Penalties: the critic D(x) = v . tanh(W^T x + b) + a ||x||^2 has the closed-form input gradient
  W (v * (1 - tanh^2)) + 2 a x, evaluated in numpy one example at a time.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from jgen.losses.gan import (
    GAN_LOSSES,
    clip_weights,
    get_gan_loss,
    gradient_penalty,
    hinge_d_loss,
    hinge_g_loss,
    lsgan_d_loss,
    lsgan_g_loss,
    minimax_d_loss,
    minimax_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
    per_example_input_grad,
    r1_penalty,
    random_interpolates,
    wgan_d_loss,
    wgan_g_loss,
)

REAL = [0.0, 1.0, -2.0, 3.0]
FAKE = [0.5, -1.0, 3.0, -4.0]


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------- values


def test_minimax_and_non_saturating_match_definitions():
    r, f = jnp.asarray(REAL), jnp.asarray(FAKE)
    d = jax.jit(minimax_d_loss)(r, f)
    want_d = [-math.log(_sig(a)) - math.log(1 - _sig(b)) for a, b in zip(REAL, FAKE)]
    np.testing.assert_allclose(d, want_d, rtol=1e-5)
    np.testing.assert_allclose(non_saturating_d_loss(r, f), want_d, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(minimax_g_loss)(f), [math.log(1 - _sig(b)) for b in FAKE], rtol=1e-5)
    np.testing.assert_allclose(jax.jit(non_saturating_g_loss)(f), [-math.log(_sig(b)) for b in FAKE], rtol=1e-5)
    # Stable at extreme logits: a perfect discriminator has loss ~0, a perfectly wrong one ~200.
    np.testing.assert_allclose(minimax_d_loss(jnp.array([100.0, -100.0]), jnp.array([-100.0, 100.0])),
                               [0.0, 200.0], atol=1e-6)


def test_minimax_generator_saturates_and_non_saturating_does_not():
    # d/dl log(1 - sigmoid(l)) = -sigmoid(l); d/dl -log sigmoid(l) = -sigmoid(-l)  (closed forms).
    lf = -10.0
    g_mm = jax.grad(lambda l: minimax_g_loss(l[None])[0])(lf)
    g_ns = jax.grad(lambda l: non_saturating_g_loss(l[None])[0])(lf)
    np.testing.assert_allclose(g_mm, -_sig(lf), rtol=1e-5)
    np.testing.assert_allclose(g_ns, -_sig(-lf), rtol=1e-5)
    assert abs(g_mm) < 1e-4 and abs(g_ns) > 0.99


def test_lsgan_hinge_wgan_literal_values():
    r, f = jnp.array([0.5, 2.0, -1.0]), jnp.array([-2.0, 0.3, 1.0])
    # 0.5 (r - 1)^2 + 0.5 f^2
    np.testing.assert_allclose(lsgan_d_loss(r, f), [0.125 + 2.0, 0.5 + 0.045, 2.0 + 0.5], rtol=1e-6)
    # a=-1, b=1: 0.5 (r - 1)^2 + 0.5 (f + 1)^2 ; c=0: 0.5 f^2
    np.testing.assert_allclose(lsgan_d_loss(r, f, a=-1.0, b=1.0), [0.125 + 0.5, 0.5 + 0.845, 2.0 + 2.0], rtol=1e-6)
    np.testing.assert_allclose(lsgan_g_loss(f), [4.5, 0.245, 0.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(lsgan_g_loss(f, c=0.0), [2.0, 0.045, 0.5], rtol=1e-6)
    # relu(1 - r) + relu(1 + f)
    np.testing.assert_allclose(jax.jit(hinge_d_loss)(r, f), [0.5, 1.3, 4.0], rtol=1e-6)
    np.testing.assert_allclose(hinge_g_loss(f), [2.0, -0.3, -1.0], rtol=1e-6)
    # f - r
    np.testing.assert_allclose(jax.jit(wgan_d_loss)(r, f), [-2.5, -1.7, 2.0], rtol=1e-6)
    np.testing.assert_allclose(wgan_g_loss(f), [2.0, -0.3, -1.0], rtol=1e-6)


# --------------------------------------------------------------------------- optimal discriminators

P = scipy.stats.norm(0.0, 1.0)
Q = scipy.stats.norm(1.0, 1.5)


def _gauss_hermite(dist, n=80):
    t, w = np.polynomial.hermite_e.hermegauss(n)  # weight exp(-t^2 / 2)
    return dist.mean() + dist.std() * t, w / math.sqrt(2 * math.pi)


def _quad(fn):
    return scipy.integrate.quad(fn, -40, 40, limit=400, epsabs=1e-13, epsrel=1e-12)[0]


def test_minimax_optimal_discriminator_gives_log4_minus_2js():
    with jax.enable_x64(True):
        xp, wp = _gauss_hermite(P)
        xq, wq = _gauss_hermite(Q)
        # Every (x ~ p, x' ~ q) pair as one example of the batch, weighted w_p w_q.
        xr, xf = np.repeat(xp, len(xq)), np.tile(xq, len(xp))
        w = np.repeat(wp, len(wq)) * np.tile(wq, len(wp))
        logit = lambda x: jnp.asarray(P.logpdf(x) - Q.logpdf(x))  # sigmoid(logit) = p / (p + q) = D*
        expected_loss = float(jnp.sum(jnp.asarray(w) * minimax_d_loss(logit(xr), logit(xf))))

    def m(x):
        return 0.5 * (P.pdf(x) + Q.pdf(x))

    js = 0.5 * _quad(lambda x: P.pdf(x) * math.log(P.pdf(x) / m(x)) if P.pdf(x) > 0 else 0.0) \
        + 0.5 * _quad(lambda x: Q.pdf(x) * math.log(Q.pdf(x) / m(x)) if Q.pdf(x) > 0 else 0.0)
    assert 0.05 < js < math.log(2)
    np.testing.assert_allclose(expected_loss, math.log(4) - 2 * js, rtol=1e-8)


def test_lsgan_optimal_discriminator_gives_pearson_chi2():
    a, b, c = -1.0, 1.0, 0.0
    with jax.enable_x64(True):
        xp, wp = _gauss_hermite(P)
        xq, wq = _gauss_hermite(Q)

        def d_star(x):
            p, q = P.pdf(x), Q.pdf(x)
            return jnp.asarray((b * p + a * q) / (p + q))

        # C(G) = E_p[(D* - c)^2 / 2] + E_q[(D* - c)^2 / 2]; the p-term is the generator loss form on real data.
        c_g = float(jnp.sum(wp * lsgan_g_loss(d_star(xp), c=c)) + jnp.sum(wq * lsgan_g_loss(d_star(xq), c=c)))
    chi2 = _quad(lambda x: (P.pdf(x) - Q.pdf(x)) ** 2 / (P.pdf(x) + Q.pdf(x)))  # Pearson chi2(p+q || 2q)
    np.testing.assert_allclose(2 * c_g, chi2, rtol=1e-7)


# --------------------------------------------------------------------------- weight clipping, registry, errors


def test_clip_weights_clips_float_leaves_only():
    params = {"dense": {"kernel": jnp.array([[-0.5, 0.003], [0.02, -0.01]]), "bias": jnp.array([0.2, -0.004])},
              "count": jnp.array(7, jnp.int32)}
    out = jax.jit(clip_weights, static_argnums=1)(params, 0.01)
    np.testing.assert_allclose(out["dense"]["kernel"], [[-0.01, 0.003], [0.01, -0.01]])
    np.testing.assert_allclose(out["dense"]["bias"], [0.01, -0.004])
    assert int(out["count"]) == 7
    with pytest.raises(ValueError, match="must be > 0"):
        clip_weights(params, 0.0)


def test_registry_pairs_and_unknown_name():
    assert set(GAN_LOSSES) == {"minimax", "non_saturating", "lsgan", "hinge", "wgan", "wgan_gp"}
    d_loss, g_loss = get_gan_loss("hinge")
    assert d_loss is hinge_d_loss and g_loss is hinge_g_loss
    assert get_gan_loss("wgan_gp").d_loss is wgan_d_loss
    with pytest.raises(ValueError, match="Unknown GAN loss 'vanilla'"):
        get_gan_loss("vanilla")


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"Use real_logits\[:, 0\]"):
        minimax_d_loss(jnp.zeros((4, 1)), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="same shape"):
        hinge_d_loss(jnp.zeros(4), jnp.zeros(3))
    with pytest.raises(ValueError, match="one value per example"):
        gradient_penalty(lambda x: x, jax.random.PRNGKey(0), jnp.zeros((3, 2)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="unknown method"):
        r1_penalty(lambda x: x[:, 0], jnp.zeros((3, 2)), method="loop")


# --------------------------------------------------------------------------- WGAN-GP and R1

B, EVENT = 6, (2, 3)
D_IN, H = 6, 5


def _critic_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(D_IN, H)), "b": rng.normal(size=H), "v": rng.normal(size=H), "a": 0.3}


def _critic(params):
    def critic(x):  # [B, 2, 3] -> [B]; no cross-example interaction
        h = jnp.tanh(x.reshape((x.shape[0], -1)) @ params["w"] + params["b"][None, :])
        return h @ params["v"] + params["a"] * jnp.sum(x.reshape((x.shape[0], -1)) ** 2, axis=1)
    return critic


def _critic_grad_np(params, x):
    """Closed-form grad_x D(x) of one example x [2, 3]."""
    xf = x.reshape(-1)
    h = np.tanh(xf @ params["w"] + params["b"])
    return (params["w"] @ (params["v"] * (1 - h ** 2)) + 2 * params["a"] * xf).reshape(x.shape)


def _batch(seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B,) + EVENT), rng.normal(1.0, 0.5, size=(B,) + EVENT)


@pytest.mark.parametrize("method", ["vmap", "sum"])
def test_gradient_penalty_is_per_example(method):
    with jax.enable_x64(True):
        params = _critic_params()
        real, fake = _batch()
        key = jax.random.PRNGKey(3)
        gp = jax.jit(lambda k, r, f: gradient_penalty(_critic(params), k, r, f, method=method))(key, real, fake)
        _, eps = random_interpolates(key, real, fake)
    gp, eps = np.asarray(gp), np.asarray(eps)
    assert eps.shape == (B,) and np.all((eps >= 0) & (eps <= 1)) and len(np.unique(eps)) == B  # one eps per example
    loop = []
    for i in range(B):  # each example: its own interpolation point, its own gradient norm
        x_hat = eps[i] * real[i] + (1 - eps[i]) * fake[i]
        loop.append((np.linalg.norm(_critic_grad_np(params, x_hat)) - 1.0) ** 2)
    np.testing.assert_allclose(gp, loop, rtol=1e-10)
    # The wrong version: one norm of the whole batch's gradient, shared by all examples.
    total = np.sqrt(sum(np.sum(_critic_grad_np(params, eps[i] * real[i] + (1 - eps[i]) * fake[i]) ** 2)
                        for i in range(B)))
    assert np.min(np.abs(gp - (total - 1.0) ** 2)) > 1e-2
    assert abs(float(np.mean(gp)) - (total - 1.0) ** 2) > 1e-2


def test_gradient_penalty_differentiates_in_critic_params():
    # Second-order autodiff through the input gradient (and the safe norm) matches central differences.
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v) for k, v in _critic_params().items()}
        real, fake = _batch()
        key = jax.random.PRNGKey(3)
        loss = jax.jit(lambda p: jnp.mean(gradient_penalty(_critic(p), key, real, fake)))
        g = jax.grad(loss)(params)
        h = 1e-6
        for name, idx in [("w", (2, 3)), ("b", (1,)), ("v", (4,))]:
            e = jnp.zeros_like(params[name]).at[idx].set(h)
            fd = (loss({**params, name: params[name] + e}) - loss({**params, name: params[name] - e})) / (2 * h)
            np.testing.assert_allclose(g[name][idx], fd, rtol=1e-6)
        # Zero input gradient: the penalty is (0 - 1)^2 and its parameter gradient stays finite.
        zero = lambda p: jnp.mean(gradient_penalty(lambda x: p["s"] * jnp.sum(x * 0.0, axis=(1, 2)), key, real, fake))
        np.testing.assert_allclose(zero({"s": 1.0}), 1.0)
        assert np.isfinite(jax.grad(zero)({"s": 1.0})["s"])


@pytest.mark.parametrize("method", ["vmap", "sum"])
def test_r1_penalty_is_per_example(method):
    with jax.enable_x64(True):
        params = _critic_params(seed=2)
        real, _ = _batch(seed=4)
        r1 = jax.jit(lambda x: r1_penalty(_critic(params), x, method=method))(real)
    loop = [np.sum(_critic_grad_np(params, real[i]) ** 2) for i in range(B)]
    np.testing.assert_allclose(r1, loop, rtol=1e-10)
    total_sq = sum(loop)  # the batch-total ||grad||^2, not per example
    assert np.min(np.abs(np.asarray(r1) - total_sq)) > 1e-2


@pytest.mark.parametrize("method", ["vmap", "sum"])
def test_penalties_of_a_conditional_critic_slice_labels_per_example(method):
    # D(x, y) = D0(x) + <c_y, x>: grad_x = grad D0(x) + c_y (closed form), label y_i for example i.
    with jax.enable_x64(True):
        params = _critic_params()
        c = np.random.default_rng(5).normal(size=(3,) + EVENT)
        y = np.array([0, 2, 1, 1, 0, 2])

        def critic(x, labels):
            return _critic(params)(x) + jnp.sum(jnp.asarray(c)[labels] * x, axis=(1, 2))

        real, fake = _batch()
        key = jax.random.PRNGKey(7)
        gp = gradient_penalty(critic, key, real, fake, jnp.asarray(y), method=method)
        r1 = r1_penalty(critic, real, jnp.asarray(y), method=method)
        _, eps = random_interpolates(key, real, fake)
    eps = np.asarray(eps)
    for i in range(B):
        x_hat = eps[i] * real[i] + (1 - eps[i]) * fake[i]
        np.testing.assert_allclose(gp[i], (np.linalg.norm(_critic_grad_np(params, x_hat) + c[y[i]]) - 1) ** 2,
                                   rtol=1e-10)
        np.testing.assert_allclose(r1[i], np.sum((_critic_grad_np(params, real[i]) + c[y[i]]) ** 2), rtol=1e-10)
    with pytest.raises(ValueError, match="leading axis"):
        r1_penalty(critic, real, jnp.asarray(y[:3]))


def test_sum_method_is_wrong_for_a_batch_coupled_critic():
    # D_i = h(x_i) * mean_j h(x_j): grad of the summed output mixes in dD_j/dx_i (j != i), so its row i is
    # not dD_i/dx_i (the Jacobian's diagonal block); for a per-example critic the two coincide (tests above).
    with jax.enable_x64(True):
        params = _critic_params()
        base = _critic(params)
        coupled = lambda x: base(x) * jnp.mean(base(x))
        x, _ = _batch()
        jac = jax.jacobian(coupled)(jnp.asarray(x))  # [B, B, 2, 3]
        diag = np.stack([np.asarray(jac[i, i]) for i in range(B)])
        summed = per_example_input_grad(coupled, x, method="sum")
    np.testing.assert_allclose(np.asarray(summed), np.asarray(jac).sum(axis=0), rtol=1e-10)
    assert np.max(np.abs(np.asarray(summed) - diag)) > 1e-2
