"""The GAN family: a GAN on a 2-D ring of Gaussians covers every mode (a fixed-seed
statistical check with a mode-collapsed control), and bad configs are named."""

import os
import sys
import types

import jax
import numpy as np
import pytest
from helpers import REPO_ROOT

from jgen.config import base_config
from jgen.families.gan import build, make_gan_players, model_config, training_defaults

sys.path.insert(0, os.path.join(REPO_ROOT, "experiments", "gan"))
from toy2d import mode_coverage, train_gan_2d


def test_non_saturating_gan_covers_every_mode_of_a_ring():
    sample, gmm, _ = train_gan_2d("non_saturating", jax.random.key(0), steps=1000, std=0.1, hidden=(64, 64))
    x = np.asarray(sample(jax.random.key(1), 2000))
    cov = mode_coverage(x, gmm, std=0.1, min_hits=50)
    # Exact sampling puts 250 of 2000 draws on each mode (binomial sd ~15): >= 50 hits
    # on every one of the 8 modes rules out the dropped modes of a collapsed generator.
    assert cov["modes_covered"] == 8, cov
    assert cov["high_quality_fraction"] > 0.5, cov
    # The control: exact samples from half of the modes fail the same check.
    half = np.asarray(gmm.sample(jax.random.key(2), 4000))
    angle = np.arctan2(half[:, 1], half[:, 0])
    collapsed = half[(angle > -0.3) & (angle < np.pi - 0.3)][:2000]
    assert mode_coverage(collapsed, gmm, std=0.1, min_hits=50)["modes_covered"] <= 5


def test_objectives_and_configs_are_checked():
    with pytest.raises(ValueError, match="f-divergence 'chi'"):
        make_gan_players(None, None, objective="f:chi", latent_dim=2)
    with pytest.raises(ValueError, match="Unknown model.objective='wgangp'"):
        make_gan_players(None, None, objective="wgangp", latent_dim=2)
    _, _, project = make_gan_players(None, None, objective="wgan", latent_dim=2, clip=0.05)
    clipped = project({"w": np.array([-1.0, 0.01, 1.0])})
    np.testing.assert_allclose(clipped["w"], [-0.05, 0.01, 0.05])
    info = types.SimpleNamespace(image_shape=(8, 8, 1), num_classes=10)
    config = base_config(dataset="digits", model=model_config(architecture="mlp"))
    with pytest.raises(ValueError, match="preprocess='symmetric'"):
        build(config, info)
    training_defaults(config)
    config.model.architecture = "stylegan"
    with pytest.raises(ValueError, match="'stylegan'"):
        build(config, info)
