"""Classifier guidance against closed forms, and guidance scale 0 against the unguided sampler.

Ground truth: two Gaussian classes in R^2, x_0 | y=k ~ N(MU_k, SIGMA_k) with prior weights
PI. Under a VP SDE, x_t | y=k ~ N(alpha MU_k, alpha^2 SIGMA_k + sigma^2 I), so the exact
noisy classifier is logits_k = log PI_k + log N(x; alpha MU_k, alpha^2 SIGMA_k + sigma^2 I)
(computed with `GaussianMixture.log_prob`), and the reference scores are written out in
float64 numpy: s_k(x) = -C_k^{-1}(x - alpha MU_k) for class k and the
responsibility-weighted sum for the mixture. Checks:

* the guided score s + w grad log p(y|x,t) equals s_mix + w (s_y - s_mix) (so at w = 1
  exactly the class-conditional score s_y), also per-example w and in epsilon coordinates;
* the cross-entropy loss on noised data, minimised over a parametric family that contains
  the exact noisy classifier, recovers the Bayes posterior p_t(y | x_t) (SDE and DDPM times);
* a sampler run with w = 1 on the exact model hits N(MU_0, SIGMA_0) (MMD permutation test,
  fixed seeds, with the unguided sampler as negative control, plus moments);
* guidance scale 0 gives the unguided sampler: bitwise with the same key for classifier
  guidance (a Python 0 returns the score function itself), to float rounding with a traced
  0; for classifier-free guidance the guided network output at w = 0 is the conditional one
  bitwise, and a compiled sampler over it matches to float rounding (XLA fuses the extra
  `(1 + 0) c - 0 u` differently).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.families.diffusion import sample_with
from jgen.losses.classifier_guidance import (
    classifier_guided_eps,
    classifier_guided_score,
    noisy_classifier_loss,
)
from jgen.losses.diffusion import classifier_free_guidance
from jgen.metrics.mmd import mmd_permutation_test
from jgen.sde.exact import gaussian_mixture
from jgen.sde.schedules import discrete_schedule, linear_betas
from jgen.sde.sde import VPSDE

PI = np.array([0.3, 0.7])
MU = np.array([[-1.5, 0.5], [1.0, -0.5]])
SIGMA = np.array([[[0.5, 0.2], [0.2, 0.4]], [[0.8, -0.3], [-0.3, 0.6]]])
MIX = gaussian_mixture(PI, MU, SIGMA)
CLASSES = [gaussian_mixture([1.0], MU[k:k + 1], SIGMA[k:k + 1]) for k in range(2)]
SDE = VPSDE()
SCHED = discrete_schedule(linear_betas(100))
ALPHA = 0.01  # test level; fixed seeds make every outcome deterministic

mmd_test = jax.jit(mmd_permutation_test, static_argnames="num_permutations")


def score(x, t):
    """The exact unconditional score of the noised mixture."""
    return MIX.score(x, *SDE.marginal(t))


def logits(x, t):
    """The exact noisy classifier: log PI_k + log p_t(x | k)."""
    alpha, sigma = SDE.marginal(t)
    return jnp.stack([np.log(PI[k]) + CLASSES[k].log_prob(x, alpha, sigma) for k in range(2)], axis=1)


def reference_scores(x, alpha, sigma):
    """float64 numpy: per-class scores [K, B, D] and the mixture score [B, D]."""
    x, alpha, sigma = (np.asarray(v, np.float64) for v in (x, alpha, sigma))
    per_class, log_w = [], []
    for k in range(2):
        cov = alpha[:, None, None] ** 2 * SIGMA[k][None] + sigma[:, None, None] ** 2 * np.eye(2)[None]
        diff = x - alpha[:, None] * MU[k][None]
        sol = np.linalg.solve(cov, diff[..., None])[..., 0]
        per_class.append(-sol)
        log_w.append(np.log(PI[k]) - 0.5 * np.sum(diff * sol, 1) - 0.5 * np.log(np.linalg.det(cov)))
    log_w = np.stack(log_w)  # [K, B]
    resp = np.exp(log_w - log_w.max(0))
    resp /= resp.sum(0)
    per_class = np.stack(per_class)
    return per_class, np.sum(resp[..., None] * per_class, axis=0)


def test_guided_score_is_the_closed_form_class_conditional_score():
    rng = np.random.default_rng(0)
    b = 16
    x = rng.normal(size=(b, 2)).astype(np.float32) * 2
    t = rng.uniform(SDE.t_min, 1.0, size=b).astype(np.float32)
    labels = np.array([0, 1] * (b // 2), np.int32)
    per_class, mix = reference_scores(x, *SDE.marginal(jnp.asarray(t)))
    s_y = per_class[labels, np.arange(b)]
    n = rng.integers(0, 100, size=b).astype(np.int32)
    w_b = np.linspace(0.0, 3.0, b).astype(np.float32)

    def eps(x, n):
        alpha, sigma = SCHED.marginal(n)
        return -sigma[:, None] * MIX.score(x, alpha, sigma)

    def logits_n(x, n):
        alpha, sigma = SCHED.marginal(n)
        return jnp.stack([np.log(PI[k]) + CLASSES[k].log_prob(x, alpha, sigma) for k in range(2)], axis=1)

    @jax.jit
    def everything(x, t, n):
        return (score(x, t),
                classifier_guided_score(score, logits, labels)(x, t),  # w = 1
                classifier_guided_score(score, logits, labels, scale=2.5)(x, t),
                classifier_guided_score(score, logits, jnp.int32(1), scale=jnp.asarray(w_b))(x, t),
                classifier_guided_eps(eps, logits_n, labels, schedule=SCHED, scale=1.5)(x, n))

    uncond, w1, w25, w_per_example, eps_guided = (np.asarray(v) for v in everything(x, t, n))
    tol = {"rtol": 1e-4, "atol": 1e-4}
    np.testing.assert_allclose(uncond, mix, **tol)
    np.testing.assert_allclose(w1, s_y, **tol)  # w = 1: the class-conditional score itself
    np.testing.assert_allclose(w25, mix + 2.5 * (s_y - mix), **tol)
    np.testing.assert_allclose(w_per_example, mix + w_b[:, None] * (per_class[1] - mix), **tol)
    # The same guidance in DDPM epsilon coordinates: eps = -sigma_n * score.
    a_n, s_n = (np.asarray(v) for v in SCHED.marginal(jnp.asarray(n)))
    per_class, mix = reference_scores(x, a_n, s_n)
    s_y = per_class[labels, np.arange(b)]
    np.testing.assert_allclose(eps_guided, -s_n[:, None] * (mix + 1.5 * (s_y - mix)), **tol)


@pytest.mark.parametrize("time", ["sde", "ddpm"])
def test_cross_entropy_on_noised_data_recovers_the_bayes_noisy_classifier(time):
    # Equal isotropic class covariances s^2 I: the family below contains the exact posterior
    # p_t(k | x) = softmax_k(b_k - |x - alpha m_k|^2 / (2 (alpha^2 v + sigma^2))), at
    # m = MU, v = s^2, b = log PI.
    s2 = 0.25
    pi = np.array([0.4, 0.6])
    mu = np.array([[-1.0, 0.5], [1.0, -0.5]])
    marginal = SDE.marginal if time == "sde" else SCHED.marginal
    kwargs = {"sde": SDE} if time == "sde" else {"schedule": SCHED}

    def classifier(p, x, time):
        alpha, sigma = marginal(time)
        var = alpha ** 2 * jnp.exp(p["log_v"]) + sigma ** 2  # [B]
        d2 = jnp.sum((x[:, None, :] - alpha[:, None, None] * p["m"][None]) ** 2, axis=-1)  # [B, K]
        return p["b"][None] - 0.5 * d2 / var[:, None]

    def data(key, n):
        ky, kx = jax.random.split(key)
        y = jax.random.categorical(ky, jnp.log(jnp.asarray(pi, jnp.float32)), shape=(n,))
        return jnp.asarray(mu, jnp.float32)[y] + np.sqrt(s2) * jax.random.normal(kx, (n, 2)), y

    opt = optax.adam(optax.cosine_decay_schedule(0.05, 300))
    params = {"m": jnp.zeros((2, 2)), "log_v": jnp.zeros(()), "b": jnp.zeros(2)}

    def step(carry, key):
        p, state = carry
        kd, kl = jax.random.split(key)
        x0, y = data(kd, 256)
        grads = jax.grad(lambda p: jnp.mean(noisy_classifier_loss(classifier, p, kl, x0, y, **kwargs)[0]))(p)
        updates, state = opt.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.jit(lambda p, k: jax.lax.scan(step, (p, opt.init(p)), jax.random.split(k, 300)))(
        params, jax.random.PRNGKey(0))
    # Compare posteriors at fresh noised points with the exact one (from its true parameters).
    x0, _ = data(jax.random.PRNGKey(1), 400)
    if time == "sde":
        tt = jnp.linspace(SDE.t_min, 1.0, 400)
    else:
        tt = jnp.arange(400, dtype=jnp.int32) % 100
    alpha, sigma = marginal(tt)
    xt = alpha[:, None] * x0 + sigma[:, None] * jax.random.normal(jax.random.PRNGKey(2), x0.shape)
    exact = {"m": jnp.asarray(mu, jnp.float32), "log_v": jnp.log(jnp.float32(s2)),
             "b": jnp.log(jnp.asarray(pi, jnp.float32))}
    p_fit = jax.nn.softmax(classifier(params, xt, tt))[:, 0]
    p_true = jax.nn.softmax(classifier(exact, xt, tt))[:, 0]
    # Fitted on 300 x 256 draws: mean error ~0.003, max ~0.05 (at the steep boundary, small t).
    assert float(jnp.mean(jnp.abs(p_fit - p_true))) < 0.01
    assert float(jnp.max(jnp.abs(p_fit - p_true))) < 0.1
    # Negative control: ignoring the noise level (alpha = 1, sigma = 0 at every time) is off.
    p_clean = jax.nn.softmax(classifier(exact, xt, jnp.zeros_like(tt)))[:, 0]
    assert float(jnp.mean(jnp.abs(p_clean - p_true))) > 0.05
    # The exact classifier's loss is lower than a clearly wrong one's, in expectation.
    x0, y = data(jax.random.PRNGKey(3), 4000)
    loss = lambda p: float(jnp.mean(noisy_classifier_loss(classifier, p, jax.random.PRNGKey(4), x0, y, **kwargs)[0]))
    assert loss(exact) < loss({**exact, "log_v": jnp.log(jnp.float32(4.0))}) - 0.01


def test_guided_sampler_hits_the_class_conditional_distribution():
    b, label = 1000, 0
    guided = classifier_guided_score(score, logits, jnp.int32(label), scale=1.0)
    x = np.asarray(jax.jit(lambda k: sample_with("dpm_solver_pp_2m", k, guided, SDE, (b, 2), 25)[0])(
        jax.random.PRNGKey(0)))
    plain = np.asarray(MIX.sample(jax.random.PRNGKey(3), b))  # what the unguided sampler targets
    exact = np.asarray(CLASSES[label].sample(jax.random.PRNGKey(1), b))
    key = jax.random.PRNGKey(2)
    assert float(mmd_test(key, x, exact, num_permutations=200)[1]) > ALPHA
    assert float(mmd_test(key, plain, exact, num_permutations=200)[1]) <= ALPHA  # negative control
    se = np.sqrt(np.diag(SIGMA[label]) / b)
    assert np.all(np.abs(x.mean(0) - MU[label]) < 4 * se), (x.mean(0), MU[label])
    np.testing.assert_allclose(np.cov(x.T), SIGMA[label], rtol=0.15, atol=0.03)


# A cheap exact model for the scale-0 tests (fast to compile): isotropic classes
# N(MU_k, S2 I), whose noised scores and posterior are one line each.
S2 = 0.3


def iso_class_scores(x, t):
    alpha, sigma = SDE.marginal(t)
    var = (alpha ** 2 * S2 + sigma ** 2)[:, None, None]
    return -(x[:, None, :] - alpha[:, None, None] * jnp.asarray(MU, x.dtype)[None]) / var  # [B, K, D]


def iso_logits(x, t):
    alpha, sigma = SDE.marginal(t)
    var = (alpha ** 2 * S2 + sigma ** 2)[:, None]
    d2 = jnp.sum((x[:, None, :] - alpha[:, None, None] * jnp.asarray(MU, x.dtype)[None]) ** 2, axis=-1)
    return jnp.log(jnp.asarray(PI, x.dtype))[None] - 0.5 * d2 / var


def iso_score(x, t):
    r = jax.nn.softmax(iso_logits(x, t), axis=-1)
    return jnp.sum(r[..., None] * iso_class_scores(x, t), axis=1)


def test_classifier_guidance_scale_zero_is_the_unguided_sampler():
    b = 64
    labels = jnp.zeros((b,), jnp.int32)
    run = lambda s: (lambda k: sample_with("em", k, s, SDE, (b, 2), 10)[0])
    key = jax.random.PRNGKey(5)
    plain = np.asarray(jax.jit(run(iso_score))(key))
    # A Python 0 returns the score function itself: the same sampler, bit for bit, by construction.
    assert classifier_guided_score(iso_score, iso_logits, labels, scale=0.0) is iso_score
    assert classifier_guided_eps(iso_score, iso_logits, labels, schedule=SCHED, scale=0) is iso_score
    # A traced w = 0 evaluates the classifier and adds 0 x its gradient: the same samples up to
    # XLA's fusion choices (float rounding; bitwise on this CPU build).
    traced = jax.jit(lambda k, w: run(classifier_guided_score(iso_score, iso_logits, labels, scale=w))(k))
    np.testing.assert_allclose(np.asarray(traced(key, jnp.float32(0.0))), plain, rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(traced(key, jnp.float32(1.0))) - plain).max() > 0.1  # the guidance acts


def test_classifier_free_guidance_scale_zero_is_the_conditional_model():
    # An exact CFG model: labels 0/1 give the class-conditional eps, the null label 2 the
    # unconditional one. With (1 + w) eps(x, c) - w eps(x), w = 0 is plain conditional sampling.
    def model(params, x, t, labels):
        del params
        sigma = SDE.marginal(t)[1]
        per_class = iso_class_scores(x, t)
        s = jnp.where((labels == 2)[:, None], iso_score(x, t), per_class[jnp.arange(x.shape[0]), labels % 2])
        return -sigma[:, None] * s

    b = 64
    labels = jnp.arange(b, dtype=jnp.int32) % 2
    x = jax.random.normal(jax.random.PRNGKey(7), (b, 2))
    t = jnp.linspace(SDE.t_min, 1.0, b)
    guided0 = classifier_free_guidance(model, scale=0.0, null_label=2)
    # The guided network output at w = 0 is the conditional output, bit for bit (the 2B batch
    # of conditional and null rows does not change the conditional rows).
    np.testing.assert_array_equal(np.asarray(jax.jit(guided0)(None, x, t, labels)),
                                  np.asarray(jax.jit(model)(None, x, t, labels)))

    def as_score(fn):
        return lambda x, t: -fn(None, x, t, labels) / SDE.marginal(t)[1][:, None]

    run = lambda fn: jax.jit(lambda k: sample_with("em", k, as_score(fn), SDE, (b, 2), 10)[0])
    key = jax.random.PRNGKey(6)
    plain = np.asarray(run(model)(key))
    # Inside a compiled sampler the graph (1 + 0) c - 0 u differs from c's, so XLA may fuse and
    # round differently: equal to float rounding (the family does not wrap the model at w = 0).
    np.testing.assert_allclose(np.asarray(run(guided0)(key)), plain, rtol=1e-5, atol=1e-6)
    guided1 = classifier_free_guidance(model, scale=1.0, null_label=2)(None, x, t, labels)
    assert float(jnp.abs(guided1 - model(None, x, t, labels)).max()) > 0.1  # the guidance acts


def test_bad_inputs_raise_clear_errors():
    x0 = jnp.zeros((4, 2))
    clf = lambda p, x, t: jnp.zeros((x.shape[0], 2))
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="exactly one of sde= .* or schedule="):
        noisy_classifier_loss(clf, None, key, x0, jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="exactly one of sde="):
        noisy_classifier_loss(clf, None, key, x0, jnp.zeros(4, jnp.int32), sde=SDE, schedule=SCHED)
    with pytest.raises(ValueError, match="labels must be integer class indices.*float32"):
        noisy_classifier_loss(clf, None, key, x0, jnp.zeros(4), sde=SDE)
    with pytest.raises(ValueError, match=r"one per example, \[B\] = \[4\]; got shape \[3\]"):
        noisy_classifier_loss(clf, None, key, x0, jnp.zeros(3, jnp.int32), sde=SDE)
    with pytest.raises(ValueError, match=r"logits \[B, K\] = \[4, K\]; it returned shape \[4\]"):
        noisy_classifier_loss(lambda p, x, t: jnp.zeros(4), None, key, x0, jnp.zeros(4, jnp.int32), sde=SDE)
    with pytest.raises(ValueError, match="t_eps"):
        noisy_classifier_loss(clf, None, key, x0, jnp.zeros(4, jnp.int32), sde=SDE, t_eps=1.0)
    with pytest.raises(ValueError, match="scale must be finite"):
        classifier_guided_score(iso_score, iso_logits, 0, scale=float("nan"))
    with pytest.raises(ValueError, match=r"scale must be a scalar or per-example \[B\] = \[4\]"):
        classifier_guided_score(iso_score, iso_logits, 0, scale=jnp.ones(3))(x0, jnp.ones(4))
