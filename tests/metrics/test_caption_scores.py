"""Caption consistency scores: the dataset's own unseen test images pass, the same
images under shuffled captions score at chance, bad input is rejected."""

import numpy as np
import pytest

from jgen.data import captioned_digits as cd
from jgen.metrics.captions import caption_scores


def test_real_test_images_pass_and_shuffled_captions_do_not():
    a = cd.captioned_arrays("test")
    idx = np.arange(0, 1200, 3)
    imgs = a["image"][idx] / 255.0
    real = caption_scores(imgs, a["label"][idx], a["position"][idx], a["size"][idx])
    assert real["digit"] > 0.95 and real["position"] > 0.95 and real["size"] > 0.99 and real["n"] == 400
    p = np.random.default_rng(0).permutation(len(idx))
    shuffled = caption_scores(imgs, a["label"][idx][p], a["position"][idx][p], a["size"][idx][p])
    # chance: 1/10 digits, 1/5 positions, 1/2 sizes
    assert shuffled["digit"] < 0.2 and shuffled["position"] < 0.35 and 0.3 < shuffled["size"] < 0.7
    blank = caption_scores(np.zeros((4, 24, 24)), np.zeros(4), np.zeros(4), np.ones(4))
    assert blank["size"] == 0.0


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match=r"\[N, 24, 24"):
        caption_scores(np.zeros((2, 8, 8)), [0, 0], [0, 0], [0, 0])
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        caption_scores(np.full((1, 24, 24), 255.0), [0], [0], [0])
