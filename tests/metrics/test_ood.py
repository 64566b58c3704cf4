"""OOD detection (jgen.metrics.ood): the rank-based AUROC against a brute-force pairwise
count, scipy's Mann-Whitney U and sklearn; likelihood and typicality AUROCs of an exact
Gaussian "model" against closed forms (1-D quadratures of normal / chi-square laws);
the OOD set constructors against direct constructions; and `jgen ood` end to end."""

import json
import math
import os

import jax
import numpy as np
import pytest
from scipy import integrate, stats
from sklearn.metrics import roc_auc_score

from jgen.metrics.ood import (
    auroc,
    auroc_stderr,
    bernoulli_noise,
    digits_upsampled,
    flip_vertical,
    make_ood_sets,
    per_example_nll,
    shift_images,
    typicality_scores,
    uniform_noise,
)


def brute_force_auroc(s_in, s_out):
    """O(n0 n1): the fraction of (in, out) pairs with out > in, ties counting 1/2."""
    s_in, s_out = np.asarray(s_in, float)[:, None], np.asarray(s_out, float)[None, :]
    return float(np.mean((s_out > s_in) + 0.5 * (s_out == s_in)))


@pytest.mark.parametrize("n0,n1,levels,seed", [(1, 1, 3, 0), (7, 3, 4, 1), (50, 80, 6, 2), (200, 150, 0, 3)])
def test_auroc_matches_pairwise_count_mann_whitney_and_sklearn(n0, n1, levels, seed):
    rng = np.random.default_rng(seed)
    draw = (lambda n, mu: rng.integers(0, levels, n) + mu) if levels else (lambda n, mu: rng.normal(mu, 1, n))
    s_in, s_out = draw(n0, 0), draw(n1, 1)  # integer levels make many ties
    a = auroc(s_in, s_out)
    assert a == pytest.approx(brute_force_auroc(s_in, s_out), abs=1e-12)
    u = stats.mannwhitneyu(s_out, s_in, alternative="two-sided").statistic  # U of the OOD sample
    assert a == pytest.approx(u / (n0 * n1), abs=1e-12)
    labels = np.r_[np.zeros(n0), np.ones(n1)]
    assert a == pytest.approx(roc_auc_score(labels, np.r_[s_in, s_out]), abs=1e-12)


def test_auroc_rejects_bad_input():
    with pytest.raises(ValueError, match=r"non-empty 1-D array of scores; received shape \(0,\)"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match=r"received shape \(2, 2\)"):
        auroc(np.zeros((2, 2)), [1.0])
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        auroc([0.0, np.nan], [1.0])


def test_likelihood_auroc_of_an_exact_gaussian_matches_the_closed_form():
    """Model N(0, 1), NLL(x) = x^2/2 + log(2 pi)/2; in-distribution N(0, 1), OOD N(3, 1).
    AUROC = P(|Y| > |X|) = int phi(x) [Phi(-|x| - 3) + 1 - Phi(|x| - 3)] dx."""
    rng = np.random.default_rng(0)
    n = 4000
    nll = lambda x: 0.5 * x**2 + 0.5 * math.log(2 * math.pi)
    a = auroc(nll(rng.normal(0, 1, n)), nll(rng.normal(3, 1, n)))
    exact, _ = integrate.quad(lambda x: stats.norm.pdf(x) * (stats.norm.cdf(-abs(x) - 3) + stats.norm.sf(abs(x) - 3)),
                              -np.inf, np.inf)
    se = auroc_stderr(exact, n, n)
    assert abs(a - exact) < 4 * se, (a, exact, se)
    # |x| loses the sign: below Phi(3 / sqrt 2), the AUROC of the score x itself.
    assert 0.95 < exact < stats.norm.cdf(3 / math.sqrt(2)) - 0.01


def test_hanley_mcneil_stderr_matches_the_spread_over_repeats():
    rng = np.random.default_rng(1)
    n = 100
    values = [auroc(rng.normal(0, 1, n), rng.normal(1, 1, n)) for _ in range(400)]
    exact = stats.norm.cdf(1 / math.sqrt(2))  # binormal AUROC, Phi(delta / sqrt(2))
    assert np.mean(values) == pytest.approx(exact, abs=4 * np.std(values) / math.sqrt(400))
    assert np.std(values, ddof=1) == pytest.approx(auroc_stderr(exact, n, n), rel=0.15)


def test_typicality_flags_the_mode_that_likelihood_calls_most_in_distribution():
    """Model N(0, I_100). The all-zero vector is the mode (lowest NLL of all) but far from
    the typical set (||x||^2 ~ 100), so likelihood ranks it as in-distribution (AUROC 0)
    while the typicality test detects it perfectly (AUROC 1)."""
    d, rng = 100, np.random.default_rng(2)
    nll = lambda x: 0.5 * np.sum(x**2, axis=1) + 0.5 * d * math.log(2 * math.pi)
    h = float(np.mean(nll(rng.normal(size=(2000, d)))))  # held-out estimate of the entropy
    assert h == pytest.approx(0.5 * d * math.log(2 * math.pi * math.e), abs=1.0)
    nll_in, nll_zero = nll(rng.normal(size=(500, d))), nll(np.zeros((500, d)))
    assert auroc(nll_in, nll_zero) == 0.0
    assert auroc(typicality_scores(nll_in, h), typicality_scores(nll_zero, h)) == 1.0


@pytest.mark.parametrize("m", [1, 5])
def test_batch_typicality_auroc_matches_the_chi_square_closed_form(m):
    """In-distribution N(0, I_d), OOD N(0, s^2 I_d), exact entropy H = d/2 log(2 pi e).
    A batch's mean NLL minus H is Q / (2M) - d/2 with Q ~ chi2(M d) (in) or s^2 chi2(M d)
    (out), so AUROC = int f(q) P(|s^2 V / (2M) - d/2| > |q / (2M) - d/2|) dq."""
    d, s, nb = 4, 1.15, 3000
    rng = np.random.default_rng(3 + m)
    h = 0.5 * d * math.log(2 * math.pi * math.e)
    nll = lambda x: 0.5 * np.sum(x**2, axis=1) + 0.5 * d * math.log(2 * math.pi)
    t_in = typicality_scores(nll(rng.normal(size=(nb * m, d))), h, batch_size=m)
    t_out = typicality_scores(nll(s * rng.normal(size=(nb * m, d))), h, batch_size=m)
    assert t_in.shape == t_out.shape == (nb,)
    k = m * d

    def p_out_exceeds(a):  # P(|s^2 V / (2M) - d/2| > a), V ~ chi2(k)
        return stats.chi2.sf((d / 2 + a) * 2 * m / s**2, k) + stats.chi2.cdf(max(d / 2 - a, 0) * 2 * m / s**2, k)

    exact, _ = integrate.quad(lambda q: stats.chi2.pdf(q, k) * p_out_exceeds(abs(q / (2 * m) - d / 2)), 0, np.inf,
                              limit=200)
    a = auroc(t_in, t_out)
    assert abs(a - exact) < 4 * auroc_stderr(exact, nb, nb), (a, exact)


def test_typicality_batches_are_means_of_groups():
    v = np.arange(10.0)
    np.testing.assert_allclose(typicality_scores(v, 3.0, batch_size=3), np.abs([1.0, 4.0, 7.0] - np.float64(3.0)))
    perm = np.asarray(jax.random.permutation(jax.random.PRNGKey(0), 10))
    np.testing.assert_allclose(typicality_scores(v, 0.0, batch_size=5, key=jax.random.PRNGKey(0)),
                               v[perm].reshape(2, 5).mean(axis=1))
    with pytest.raises(ValueError, match="cannot fill one batch of 11"):
        typicality_scores(v, 0.0, batch_size=11)


def test_ood_set_constructors():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (5, 6, 7, 1), dtype=np.uint8)
    np.testing.assert_array_equal(flip_vertical(x), np.flip(x, axis=1))
    for dy, dx in [(2, 3), (-1, 2), (0, -4), (6, 0)]:
        expect = np.zeros_like(x)
        for i in range(6):
            for j in range(7):
                if 0 <= i - dy < 6 and 0 <= j - dx < 7:
                    expect[:, i, j] = x[:, i - dy, j - dx]
        np.testing.assert_array_equal(shift_images(x, dy, dx), expect)
    # Noise: binary with the requested ink (binomial test); 8-bit uniform (chi-square test).
    b = bernoulli_noise(rng, 100, (8, 8, 1), 0.3)
    assert set(np.unique(b)) <= {0, 255}
    assert stats.binomtest(int(np.sum(b == 255)), b.size, 0.3).pvalue > 1e-3
    u = uniform_noise(rng, 400, (8, 8, 1))
    assert stats.chisquare(np.bincount(u.ravel(), minlength=256)).pvalue > 1e-3
    sets = make_ood_sets(["noise", "flip"], x, np.arange(5), preprocess="binarize_dynamic", num_classes=10)
    assert set(np.unique(sets["noise"][0])) <= {0, 255}
    np.testing.assert_array_equal(sets["flip"][0], np.flip(x, axis=1))
    with pytest.raises(ValueError, match=r"28x28x1 models; this model's images are \(6, 7, 1\)"):
        make_ood_sets(["digits"], x, np.arange(5), preprocess="unit_interval")
    with pytest.raises(ValueError, match="unknown OOD sets"):
        make_ood_sets(["gauss"], x, np.arange(5), preprocess="unit_interval")


def test_upsampled_digits_keep_their_ink_and_corners():
    from jgen.data.digits import digits_arrays

    up, labels = digits_upsampled(28)
    orig, orig_labels = digits_arrays("all")
    assert up.shape == (1797, 28, 28, 1) and up.dtype == np.uint8
    np.testing.assert_array_equal(labels, orig_labels)
    # Linear interpolation keeps the mean intensity (up to edge effects and rounding)...
    np.testing.assert_allclose(up.mean(axis=(1, 2, 3)), orig.mean(axis=(1, 2, 3)), atol=6.0)
    # ... and the corner pixel (its sample point lies outside the first input pixel's centre).
    assert np.max(np.abs(up[:, 0, 0].astype(int) - orig[:, 0, 0].astype(int))) <= 1


# ----------------------------------------------------------------- a real (tiny) model


@pytest.fixture(scope="module")
def vae_workdir(tmp_path_factory):
    """A digits VAE workdir with an untrained (step-0) checkpoint: cheaper than training,
    and every check below is about the plumbing from NLLs to AUROCs."""
    from jgen.checkpoint import Checkpointer
    from jgen.config import load_config, save_config
    from jgen.train.loop import init_state, setup

    workdir = str(tmp_path_factory.mktemp("ood_vae"))
    config = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "vae", "configs",
                                      "digits.py") + ":tiny")
    save_config(config, os.path.join(workdir, "config.json"))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1, keep=1, async_save=False)
    ckpt.save(0, init_state(setup(config)), {}, force=True)
    ckpt.close()
    return workdir


def test_jgen_ood_cli_matches_a_direct_computation(vae_workdir, tmp_path):
    from jgen.cli import main
    from jgen.data import gather, get_source
    from jgen.train.evaluate import evaluate
    from jgen.train.loop import eval_params, restore_for_inference

    out = str(tmp_path / "ood.json")
    assert main(["ood", "--workdir", vae_workdir, "--ood", "noise,flip", "--num-examples", "48", "--num-heldout", "32",
                 "--batch-size", "16", "--typicality-batch", "1,8", "--out", out]) == 0
    with open(out) as f:
        report = json.load(f)
    assert report["estimator"] == "ELBO" and set(report["ood"]) == {"noise", "flip"}

    # Recompute: the same held-out / test examples, the flipped test digits built with
    # np.flip, NLLs with the same keys, AUROCs with sklearn.
    run, state, _ = restore_for_inference(vae_workdir)
    params, key = eval_params(state, run.config), jax.random.PRNGKey(0)
    source = get_source("digits", "test")
    perm = np.random.default_rng(0).permutation(len(source))
    held, test = gather(source, np.sort(perm[:32])), gather(source, np.sort(perm[32:80]))

    def nll(i, images, labels):
        return per_example_nll(run.spec, params, images, labels, mesh=run.mesh, batch_size=16,
                               key=jax.random.fold_in(key, i))[0]

    h, nll_in = nll(0, held["image"], held["label"]), nll(1, test["image"], test["label"])
    nll_flip = nll(3, np.flip(test["image"], axis=1), test["label"])
    assert report["heldout"]["nats"] == pytest.approx(np.mean(h), rel=1e-6)
    labels = np.r_[np.zeros(48), np.ones(48)]
    flip = report["ood"]["flip"]["auroc"]
    assert flip["likelihood"]["value"] == pytest.approx(roc_auc_score(labels, np.r_[nll_in, nll_flip]), abs=1e-9)
    typ = np.abs(np.r_[nll_in, nll_flip] - np.mean(h))
    assert flip["typicality"]["M=1"]["value"] == pytest.approx(roc_auc_score(labels, typ), abs=1e-9)
    assert flip["typicality"]["M=8"]["num_batches"] == [6, 6]

    # per_example_nll runs the family's eval_fn exactly as `jgen eval` does: same mean ELBO.
    res = evaluate(run.spec, params, source, mesh=run.mesh, batch_size=16, key=key, num_examples=40)
    first = gather(source, np.arange(40))
    first = per_example_nll(run.spec, params, first["image"], first["label"], mesh=run.mesh, batch_size=16,
                            key=key)[0]
    assert res["ELBO"]["nats"] == pytest.approx(np.mean(first), rel=1e-6)
