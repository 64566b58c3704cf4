"""`jgen solve` end to end, and the pieces it adds to `jgen.inverse`.

* The CLI on a tiny diffusion workdir (digits, a few training steps): the replacement
  solver reproduces the observed pixels bit for bit, the printed PSNRs are those of the
  written arrays (recomputed in numpy), the PNG grid has one row per image and one column
  per panel, and bad requests exit with status 2 and say what to do.
* `load_prior` rebuilds the family's score exactly: the Euler-Maruyama sampler run on it
  equals the family's own "em" sampler, same key.
* `projection_sample` (replacement for a general A through its pseudo-inverse) with the
  exact score of a Gaussian prior and 2x2 average pooling: samples satisfy A x = y and
  their null-space part matches the closed-form Gaussian posterior (MMD permutation test
  with a negative control, moments within the method's measured bias).
* The CT consistency step's normalised FBP: the largest eigenvalue of B A, computed from
  dense matrices in numpy, is 1 (so lambda <= 1 never overshoots).
* The phantoms dataset: shapes, determinism, held-out test split.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image

from jgen.cli import main
from jgen.data import dataset_info, gather, get_source
from jgen.inverse.operators import downsampling
from jgen.inverse.posterior import gaussian_posterior
from jgen.inverse.projection import projection_sample
from jgen.inverse.solve import ct_operator, fbp_inverse, load_prior
from jgen.metrics.mmd import mmd_permutation_test
from jgen.sde.exact import gaussian_mixture
from jgen.sde.sde import VPSDE

TINY = "experiments/diffusion/configs/mnist_sde.py:tiny"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A diffusion model (score SDE, MLP) trained for 10 steps on 8x8 digits, and 4 test digits."""
    root = tmp_path_factory.mktemp("solve")
    run = str(root / "run")
    os.chdir(REPO_ROOT)
    assert main(["train", "--config", TINY, "--workdir", run, "--no-progress", "--config.train.num_steps=10",
                 "--config.train.save_every=10"]) == 0
    images = gather(get_source("digits", "test"), np.arange(4))["image"]
    np.savez(root / "digits.npz", images=images)
    return run, str(root / "digits.npz"), images


def test_cli_inpainting_keeps_observed_pixels_and_reports_its_metrics(workdir, tmp_path, capsys):
    run, inputs, images = workdir
    capsys.readouterr()
    out = str(tmp_path / "inpaint.png")
    assert main(["solve", "--workdir", run, "--task", "inpaint", "--input", inputs, "--out", out,
                 "--mask-box", "2,1,6,5", "--steps", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["nfe"] == 4 + 4 + 1 and report["columns"] == ["measurement", "pinv", "reconstruction",
                                                                "ground truth"]
    d = np.load(str(tmp_path / "inpaint.npz"))
    truth = images.astype(np.float32) / 255.0
    mask = d["mask"].astype(bool)
    assert mask.sum() == 64 - 16 and not mask[2:6, 1:5].any()
    x = d["reconstruction"]
    np.testing.assert_array_equal(x[:, mask], truth[:, mask])  # observed pixels, bit for bit
    assert np.abs(x[:, ~mask] - truth[:, ~mask]).max() > 0  # the hidden box was filled in, not copied
    np.testing.assert_array_equal(d["ground_truth"], truth)
    # The printed metrics are those of the written arrays (PSNR recomputed in numpy).
    for name, arr in (("reconstruction", x), ("baseline:pinv", d["baseline_pinv"])):
        mse = np.mean((np.clip(arr, 0, 1) - truth) ** 2, axis=(1, 2, 3))
        np.testing.assert_allclose(report["metrics"][name]["psnr"], np.mean(10 * np.log10(1 / mse)), rtol=1e-5)
    # The pseudo-inverse baseline is the measurement: zeros in the box.
    np.testing.assert_array_equal(d["baseline_pinv"], truth * mask)
    # The grid: 4 rows of 4 panels of 8x8 (1-pixel borders), upscaled 8x for viewing.
    assert Image.open(out).size == ((4 * 9 + 1) * 8, (4 * 9 + 1) * 8)


def test_cli_errors_say_what_to_do(workdir, tmp_path, capsys):
    run, inputs, _ = workdir
    out = str(tmp_path / "x.png")
    cases = [(["--task", "colorize"], "needs an RGB model"),
             (["--task", "superres", "--solver", "repaint"], "repaint only inpaints"),
             (["--task", "inpaint", "--mask-box", "2,2,9,9"], "BOTTOM <= 8")]
    for args, message in cases:
        base = ["solve", "--workdir", run, "--input", inputs, "--out", out]
        assert main(base + args) == 2, args
        assert message in capsys.readouterr().err, args
    # Checked before the model is loaded:
    assert main(["solve", "--workdir", run, "--task", "ct", "--input", inputs, "--out", "x.jpg"]) == 2
    assert "--out must end in .png or .npz" in capsys.readouterr().err
    assert main(["solve", "--workdir", run, "--task", "ct", "--input", str(tmp_path / "no.npz"), "--out", out]) == 2
    assert "--input" in (err := capsys.readouterr().err) and "does not exist" in err


def test_load_prior_is_the_family_score(workdir):
    from jgen.families.diffusion import sample_with
    from jgen.train.loop import eval_params, restore_for_inference

    run_dir = workdir[0]
    prior = load_prior(run_dir)
    run, state, _ = restore_for_inference(run_dir)
    key, shape = jax.random.PRNGKey(3), (4, *prior.image_shape)
    params = jax.device_put(eval_params(state, run.config), jax.devices()[0])
    family = jax.jit(lambda p, k: run.spec.sampler_fns.run("em", p, k, 4, 3)[0])(params, key)
    ours = jax.jit(lambda p, k: sample_with("em", k, prior.score_of(p), prior.sde, shape, 3)[0])(prior.params, key)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(family), rtol=1e-6, atol=1e-6)


# -- projection_sample against the Gaussian posterior -----------------------------------------

MU = np.array([0.5, -0.3, 0.2, 1.0], np.float32)
_L = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [-0.5, 0.3, 0.7, 0], [0.4, -0.4, 0.3, 0.6]], np.float32)
SIGMA = _L @ _L.T
PRIOR = gaussian_mixture([1.0], MU[None], SIGMA[None])
mmd_test = jax.jit(mmd_permutation_test, static_argnames="num_permutations")


def test_projection_sample_with_pooling_hits_the_gaussian_posterior():
    sde, b = VPSDE(), 1000
    A = downsampling(2, (2, 2))  # y = the mean of the 4 pixels; A^+ spreads it back
    y = np.array([[0.8]], np.float32)

    def score(x, t):  # the exact score of the noised prior N(a MU, a^2 SIGMA + s^2 I); t is shared
        a, s = sde.marginal(t[:1])
        prec = jnp.linalg.inv(a[0] ** 2 * SIGMA + s[0] ** 2 * jnp.eye(4))
        return (-(x.reshape(-1, 4) - a[0] * MU[None]) @ prec).reshape(x.shape)

    run = jax.jit(lambda k: projection_sample(k, score, A, y, (b, 2, 2), sde=sde, num_steps=100, corrector_steps=2))
    x, info = run(jax.random.PRNGKey(0))
    assert info.nfe == 100 * 3 + 1
    x = np.asarray(x).reshape(b, 4)
    np.testing.assert_allclose(x.mean(1), 0.8, atol=1e-5)  # A x = y for every sample
    # The posterior given the mean, in an orthonormal basis of A's null space.
    m, c = (np.asarray(v, np.float64) for v in gaussian_posterior(MU, SIGMA, np.full((1, 4), 0.25, np.float32),
                                                                  y[0], 0.0))
    null = np.linalg.svd(np.full((1, 4), 0.25))[2][1:]  # [3, 4]
    h, mean, cov = x @ null.T, null @ m, null @ c @ null.T
    exact = np.random.default_rng(1).multivariate_normal(mean, cov, size=b).astype(np.float32)
    key = jax.random.PRNGKey(2)
    assert float(mmd_test(key, h, exact, num_permutations=200)[1]) > 0.01
    prior = np.asarray(PRIOR.sample(jax.random.PRNGKey(3), b)) @ null.T  # negative control: ignores y
    assert float(mmd_test(key, prior, exact, num_permutations=200)[1]) <= 0.01
    # Replacement conditions on noised copies of y, so it is biased: measured with 2000 samples,
    # |mean error| <= 0.09 posterior sds (0.07 with 6 corrector steps), variances within 3%.
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(h.mean(0) - mean) < 0.2 * sd), ((h.mean(0) - mean) / sd)
    np.testing.assert_allclose(np.cov(h.T), cov, rtol=0.2, atol=0.05)


def test_ct_consistency_step_is_normalised():
    from jgen.inverse.radon import fbp

    n, views = 12, 4
    A, angles = ct_operator(n, views)
    B = fbp_inverse(A, angles, n)
    eye = jnp.eye(n * n).reshape(n * n, n, n, 1)  # the pixel basis, as a batch
    ba = np.asarray(B(A.forward(eye))).reshape(n * n, -1).T  # B A as a dense [N^2, N^2]
    raw = np.asarray(fbp(A.forward(eye), angles, n)).reshape(n * n, -1).T  # FBP A, unnormalised
    np.testing.assert_allclose(raw, raw.T, atol=1e-4 * np.abs(raw).max())  # symmetric (PSD): eigh applies
    top = np.linalg.eigvalsh(0.5 * (ba + ba.T)).max()
    assert 0.95 < top <= 1.0, top
    assert np.linalg.eigvalsh(0.5 * (raw + raw.T)).max() > 2  # FBP alone would overshoot with 4 views


def test_phantoms_dataset():
    info = dataset_info("phantoms16")
    assert info.image_shape == (16, 16, 1) and info.num_classes is None
    assert dataset_info("phantoms").image_shape == (64, 64, 1)
    test = get_source("phantoms16", "test")
    first = gather(test, np.arange(8))["image"]
    assert first.dtype == np.uint8 and first.shape == (8, 16, 16, 1) and first.max() > 100
    np.testing.assert_array_equal(gather(get_source("phantoms16", "test"), np.arange(8))["image"], first)
    train = gather(get_source("phantoms16", "train"), np.arange(200))["image"].reshape(200, -1)
    assert not np.any(np.all(train[:, None] == first.reshape(8, -1)[None], axis=-1))  # held out
    with pytest.raises(ValueError, match="Unknown split 'val' of the phantoms dataset"):
        get_source("phantoms16", "val")
