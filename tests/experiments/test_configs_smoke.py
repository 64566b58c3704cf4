"""Every experiment config's tiny variant trains, samples and evaluates through
the CLI entry point (`jgen.cli.main`). Smoke tests: they check that each stage
produced what it should (finite metrics, a falling loss, files of the right
shape), not that the model is good."""

import glob
import json
import os

import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image

from jgen.cli import main
from jgen.data import import_mnist

ALL_CONFIGS = sorted(os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "experiments/*/configs/*.py")))
# Conditional configs of the VAE, GAN, flow and autoregressive families: their families' conditioning
# tests train the same code paths (tests/families/test_{vae_gan,flow_ar}_conditioning.py), so here
# they are built and traced for every variant (test_conditional_variants_build) but not trained,
# which keeps the suite inside CI's budget. The diffusion ones are trained end to end below.
BUILT_ONLY = tuple(f"experiments/conditional/configs/captioned_digits_{n}.py" for n in ("vae", "gan", "flow", "pixelcnn"))
# MNIST configs whose code paths other tests already train end to end (their family's tests, and
# another config of the same family here): built and traced at the tiny and full sizes on the
# digits (test_family_configs_build), not trained, for the same budget.
FAMILY_BUILT_ONLY = {
    "experiments/vae/configs/mnist_conv.py": "vae/mnist_dlm.py trains the conv VAE",
    "experiments/vae/configs/mnist_iwae.py": "tests/losses/test_elbo_iwae.py, tests/families/test_vae_family.py",
    "experiments/vae/configs/mnist_cvae.py": "tests/families/test_conditional_and_vq_training.py",
    "experiments/vae/configs/mnist_vqvae.py": "mnist_vqvae_prior.py trains its tiny stage 1",
    "experiments/flows/configs/mnist_glow.py": "tests/families/test_flow_family.py (glow training)",
    "experiments/autoregressive/configs/mnist_pixelcnn_pp.py": "tests/families/test_autoregressive_family.py",
    "experiments/autoregressive/configs/mnist_transformer.py": "tests/experiments/test_sequence_experiments.py",
    "experiments/diffusion/configs/mnist_edm.py": "tests/families/test_diffusion_family.py (EDM)",
    "experiments/ebm/configs/mnist_ebm.py": "tests/families/test_ebm_family.py",
}
CONFIGS = [c for c in ALL_CONFIGS if c not in BUILT_ONLY and c not in FAMILY_BUILT_ONLY]
SHARED_MNIST = os.path.join(REPO_ROOT, "..", "shared", "data", "mnist")
# Tiny variants that still run on the imported 28x28 MNIST (binarized, 8-bit conv, 8-bit flow);
# the other MNIST configs' tiny variants run on the digits to keep the suite inside CI's budget.
ON_MNIST = ("experiments/vae/configs/mnist.py", "experiments/vae/configs/mnist_dlm.py",
            "experiments/flows/configs/mnist_realnvp.py")


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    if not os.path.isdir(SHARED_MNIST):
        pytest.skip("real MNIST not available at ../shared/data/mnist")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    import_mnist(SHARED_MNIST, data_dir)
    return data_dir


def test_every_family_config_is_covered():
    assert "experiments/vae/configs/digits.py" in CONFIGS and "experiments/vae/configs/mnist.py" in CONFIGS
    assert all(c in ALL_CONFIGS for c in (*BUILT_ONLY, *FAMILY_BUILT_ONLY))


VARIANTS = {  # the conditional configs' variants: each condition kind, tiny and CPU sizes
    "captioned_digits_diffusion": ("tiny", "vector_tiny", "label_tiny", "cpu"),
    "photo_diffusion": ("tiny", "colorize_tiny", "inpaint_tiny", "superres_cpu"),
    "captioned_digits_vae": ("tiny", "vector_tiny", "label_tiny", "cpu"),
    "captioned_digits_gan": ("tiny", "vector_tiny", "label_tiny", "cpu"),
    "captioned_digits_flow": ("tiny", "vector_tiny", "superres_tiny", "maf_tiny"),
    "captioned_digits_pixelcnn": ("tiny", "vector_tiny", "inpaint_tiny", "cpu"),
}


@pytest.mark.parametrize("config", sorted(FAMILY_BUILT_ONLY))
def test_family_configs_build(config, monkeypatch):
    """The MNIST configs that are not trained here build their model, and their parameter
    shapes trace, at the tiny and the full size (on the digits: no data files needed)."""
    import jax

    from jgen.config import apply_overrides, load_config
    from jgen.train.loop import abstract_state, setup

    monkeypatch.chdir(REPO_ROOT)
    for variant in (":tiny", ""):
        run = setup(apply_overrides(load_config(config + variant), ["data.name=digits"]))
        assert jax.tree.leaves(abstract_state(run).params)


@pytest.mark.parametrize("config", [c for c in ALL_CONFIGS if "/conditional/" in c])
def test_conditional_variants_build(config, monkeypatch):
    """Every documented variant of a conditional config builds its model and its parameter
    shapes trace (no compilation), with a condition of the kind the variant names."""
    import jax

    from jgen.config import load_config
    from jgen.train.loop import abstract_state, setup

    monkeypatch.chdir(REPO_ROOT)
    for variant in VARIANTS[os.path.basename(config)[:-3]]:
        run = setup(load_config(f"{config}:{variant}"))
        cond = run.spec.condition
        kind = next((k for k in ("vector", "label") if k in variant.split("_")), None)
        if kind:
            assert cond is not None and cond.kind == kind, (variant, cond)
        elif any(k in variant for k in ("superres", "colorize", "inpaint")):
            assert cond.kind == "image" and cond.operator.split(":")[0] in variant
        elif "photo" in config:
            assert cond.kind == "image" and cond.operator == "superres:2"
        else:
            assert cond is not None and cond.kind == "tokens", variant
        shapes = abstract_state(run)
        assert jax.tree.leaves(shapes.params)


@pytest.mark.parametrize("config", CONFIGS)
def test_tiny_variant_trains_samples_and_evaluates(config, tmp_path, monkeypatch, capsys, request):
    monkeypatch.chdir(REPO_ROOT)
    workdir = str(tmp_path / "run")
    extra = []
    if config.endswith("vqvae_prior.py"):  # stage 2 of the VQ-VAE recipe: first a tiny stage-1 VQ-VAE on digits
        stage1 = str(tmp_path / "vqvae")
        assert main(["train", "--config", "experiments/vae/configs/mnist_vqvae.py:tiny", "--workdir", stage1,
                     "--no-progress", "--config.data.name=digits", "--config.sample.num=1"]) == 0
        extra.append(f"--config.model.vqvae_workdir={stage1}")
    elif config in ON_MNIST:  # the real 28x28 MNIST pipeline, once per data convention
        extra.append(f"--config.data.data_dir={request.getfixturevalue('mnist_dir')}")
    elif "mnist" in os.path.basename(config):  # the config's own tiny model, on the embedded 8x8 digits (cheaper)
        extra.append("--config.data.name=digits")
    assert main(["train", "--config", f"{config}:tiny", "--workdir", workdir, "--no-progress", *extra]) == 0
    for name in ("config.json", "metrics.jsonl", "loss_curve.png", "samples.png"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert all(np.isfinite(r["loss"]) for r in rows)
    with open(os.path.join(workdir, "config.json")) as f:
        family = json.load(f)["model"]["family"]
    if family != "gan":  # a two-player game's summed losses need not fall
        assert rows[-1]["loss"] < rows[0]["loss"]
    capsys.readouterr()

    out_npz = str(tmp_path / "s.npz")
    assert main(["sample", "--workdir", workdir, "--num", "5", "--out", out_npz]) == 0
    samples = np.load(out_npz)["samples"]
    assert samples.shape[0] == 5 and samples.min() >= 0 and samples.max() <= 1
    if config.endswith("captioned_digits_diffusion.py"):  # a caption on the command line, guidance overridden
        from jgen.data.captioned_digits import tokenize

        caption = "a big 7 in the top left|the digit two , small , center"
        assert main(["sample", "--workdir", workdir, "--num", "3", "--out", out_npz, "--condition",
                     f"text={caption}", "--guidance-scale", "0"]) == 0
        saved = np.load(out_npz)
        np.testing.assert_array_equal(saved["condition"], tokenize(caption.split("|"))[[0, 1, 0]])
        assert saved["samples"].shape == (3, 24, 24, 1)
        assert main(["sample", "--workdir", workdir, "--num", "2", "--out", out_npz, "--condition", "label=3"]) == 2
        assert "text=CAPTION" in capsys.readouterr().err
    if config.endswith("vae/configs/digits.py"):  # the PNG path once (each call compiles the sampler again)
        out_png = str(tmp_path / "s.png")
        assert main(["sample", "--workdir", workdir, "--num", "4", "--out", out_png]) == 0
        assert Image.open(out_png).size[0] > samples.shape[2]
    capsys.readouterr()

    assert main(["eval", "--workdir", workdir, "--num-examples", "32"]) == 0
    report = json.loads(capsys.readouterr().out)
    nll = report["nll"]
    if family in ("gan", "ebm"):  # no likelihood: the critic's or energy's diagnostics instead
        assert not nll and report["metrics"]["num_examples"] == 32
        names = ("critic_real", "critic_fake") if family == "gan" else ("energy_real", "energy_fake")
        assert all(np.isfinite(report["metrics"][k]) for k in names)
        return
    assert nll, "every family with a likelihood reports at least one NLL estimate"
    for name, r in nll.items():
        assert r["estimator"] == name and r["num_examples"] == 32 and np.isfinite(r["nats"]) and r["nats"] > 0
        np.testing.assert_allclose(r["bits_per_dim"], r["nats"] / (np.prod(samples.shape[1:]) * np.log(2)))
    # Every IWAE-k bound is tighter than the ELBO (to the Monte Carlo error).
    for name, r in nll.items():
        if name.startswith("IWAE-") and name != "IWAE-1":
            assert r["nats"] <= nll["ELBO"]["nats"] + 3 * nll["ELBO"]["nats_stderr"]
    if report["metrics"]:  # e.g. the VQ-VAE's codebook statistics
        assert report["metrics"]["num_examples"] == 32
