"""Sequence data: mu-law against its formula in float64 numpy and within the
quantisation error, the character corpora and vocabulary round trips, the grammar's
rule frequencies, uniform window offsets (chi-square), waveforms (reproducible, in
range, the spectral peak inside the frequency range), and images as tokens."""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jgen.data.sequences import (
    CORPORA,
    char_vocab,
    grammar_text,
    image_to_tokens,
    load_text,
    mu_law_decode,
    mu_law_encode,
    random_windows,
    sine_waveforms,
    text_corpus,
    tokens_to_image,
    waveform_tokens,
)

MU = 255

# -- mu-law -----------------------------------------------------------------------------


def _reference_encode(x, mu):
    """sign(x) ln(1 + mu|x|) / ln(1 + mu), mapped to [0, mu] and rounded, in float64."""
    y = np.sign(x) * np.log(1.0 + mu * np.abs(x)) / np.log(1.0 + mu)
    return np.floor((y + 1.0) / 2.0 * mu + 0.5), (y + 1.0) / 2.0 * mu


def test_mu_law_encode_matches_the_formula():
    x = np.concatenate([np.linspace(-1, 1, 2001), np.random.default_rng(0).uniform(-1, 1, 5000),
                        [-1.0, 0.0, 1.0, 1e-6, -1e-6]]).astype(np.float32)
    q = np.asarray(jax.jit(mu_law_encode)(x))
    ref, scaled = _reference_encode(x.astype(np.float64), MU)
    assert q.dtype == np.int32 and q.min() == 0 and q.max() == MU
    # float32 may round differently only within 1e-3 of a rounding boundary.
    near_boundary = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3
    assert np.all((q == ref) | near_boundary)
    assert np.mean(near_boundary) < 0.01
    assert list(np.asarray(mu_law_encode(jnp.array([-1.0, 0.0, 1.0])))) == [0, 128, 255]
    assert np.all(np.diff(np.asarray(mu_law_encode(jnp.linspace(-1, 1, 999)))) >= 0)  # monotone


def test_mu_law_round_trip_is_within_the_quantisation_error():
    x = np.random.default_rng(1).uniform(-1, 1, 20_000).astype(np.float32)
    x_hat = np.asarray(mu_law_decode(mu_law_encode(x)), np.float64)
    # |y_hat - y| <= 1/mu in the companded domain, and |dx/dy| = ln(1+mu) (1+mu)^|y| / mu,
    # so |x_hat - x| <= (1/mu) * ln(1+mu) (1+mu)^min(1, |y| + 1/mu) / mu (+ float32 slack).
    y = np.log1p(MU * np.abs(x)) / np.log1p(MU)
    bound = np.log1p(MU) * (1.0 + MU) ** np.minimum(1.0, y + 1.0 / MU) / MU**2
    assert np.all(np.abs(x_hat - x) <= bound + 1e-6)
    # Near 0 the levels are much finer than uniform 8-bit quantisation (step 2/255).
    small = np.abs(x) < 0.01
    assert np.abs(x_hat - x)[small].max() < 0.2 * (1.0 / MU)
    # Every class is a fixed point: encode(decode(q)) == q; decode is odd-symmetric.
    q = jnp.arange(MU + 1)
    np.testing.assert_array_equal(np.asarray(mu_law_encode(mu_law_decode(q))), np.asarray(q))
    np.testing.assert_allclose(np.asarray(mu_law_decode(q)), -np.asarray(mu_law_decode(MU - q)), atol=1e-6)


def test_mu_law_rejects_bad_input():
    with pytest.raises(TypeError, match="floating audio"):
        mu_law_encode(jnp.array([1, 2]))
    with pytest.raises(ValueError, match=r"floats in \[-1, 1\].*1.5"):
        mu_law_encode(jnp.array([0.0, 1.5]))
    with pytest.raises(ValueError, match="mu must be"):
        mu_law_encode(jnp.zeros(3), mu=0)
    with pytest.raises(TypeError, match="integer classes"):
        mu_law_decode(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"integer classes in \[0, 255\]"):
        mu_law_decode(jnp.array([0, 256]))


# -- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_vocabulary_round_trips_and_splits_contiguously(name):
    text = load_text(name)
    corpus = text_corpus(name, test_fraction=0.1)
    vocab = corpus.vocab
    assert vocab.chars == "".join(sorted(set(text)))
    assert vocab.decode(np.concatenate([corpus.train, corpus.test])) == text
    assert corpus.train.dtype == np.int32 and corpus.train.max() < vocab.size
    assert len(corpus.test) == len(text) - round(0.9 * len(text))
    assert vocab.decode(vocab.encode(text[:500])) == text[:500]


def test_the_shipped_sonnets():
    text = load_text("sonnets")
    assert 8000 < len(text) < 10_000
    assert text.startswith("I\n\nFrom fairest creatures we desire increase,")
    assert "Shall I compare thee to a summer's day?" in text
    # Fourteen sonnets of fourteen lines each (plus the numeral and blank lines).
    blocks = text.strip("\n").split("\n\n")
    assert len(blocks) == 28 and all(len(b.split("\n")) == 14 for b in blocks[1::2])


def test_grammar_text_is_deterministic_and_follows_the_rule_weights():
    assert grammar_text(50, seed=3) == grammar_text(50, seed=3)
    assert grammar_text(50, seed=3) != grammar_text(50, seed=4)
    sentences = [s for line in grammar_text(3000, seed=0).splitlines() for s in line.split(". ") if s]
    assert len(sentences) == 3000
    assert all(s[0].isupper() for s in sentences)
    # S -> NP VP (weight 3) | NP VP CONJ NP VP (weight 1): a quarter have a conjunction.
    conj = sum(any(w in ("and", "but", "while") for w in s.split()) for s in sentences)
    assert stats.binomtest(conj, len(sentences), 0.25).pvalue > 1e-3
    # Every word comes from the lexicon.
    words = collections.Counter(w.strip(".").lower() for s in sentences for w in s.split())
    assert len(words) < 60 and "the" in words


def test_vocabulary_errors_name_the_problem():
    vocab = char_vocab("hello")
    assert vocab.chars == "ehlo" and vocab.size == 4
    np.testing.assert_array_equal(vocab.encode("hole"), [1, 3, 2, 0])
    with pytest.raises(ValueError, match=r"\['w', 'z'\] are not in the vocabulary"):
        vocab.encode("whoz")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\)"):
        vocab.decode([0, 4])
    with pytest.raises(ValueError, match="integer ids"):
        vocab.decode(np.zeros((2, 2), np.int32))
    with pytest.raises(TypeError, match="expected a str"):
        vocab.encode(b"hello")
    with pytest.raises(ValueError, match="unknown corpus"):
        load_text("shakespeare")


def test_random_windows_are_contiguous_uniform_and_reproducible():
    n, length = 14, 5
    ids = jnp.arange(n, dtype=jnp.int32) + 100
    draw = jax.jit(random_windows, static_argnums=(2, 3))
    windows = np.asarray(draw(jax.random.PRNGKey(0), ids, 5000, length))
    assert windows.shape == (5000, length) and windows.dtype == np.int32
    starts = windows[:, 0] - 100
    np.testing.assert_array_equal(windows, 100 + starts[:, None] + np.arange(length)[None])
    counts = np.bincount(starts, minlength=n - length + 1)
    assert len(counts) == n - length + 1  # every start in [0, N - L], none beyond
    assert stats.chisquare(counts).pvalue > 1e-3
    np.testing.assert_array_equal(np.asarray(draw(jax.random.PRNGKey(0), ids, 5000, length)), windows)
    with pytest.raises(ValueError, match="length must be in"):
        random_windows(jax.random.PRNGKey(0), ids, 2, n + 1)
    with pytest.raises(ValueError, match="integer"):
        random_windows(jax.random.PRNGKey(0), jnp.zeros(10), 2, 3)


# -- waveforms ---------------------------------------------------------------------------------


def test_waveforms_are_reproducible_in_range_and_have_their_tones_in_the_frequency_range():
    key = jax.random.PRNGKey(0)
    rate, length = 8000, 2048
    x = np.asarray(sine_waveforms(key, 16, length, sample_rate=rate, max_components=1,
                                  decay_range=(0.5, 1.0)))
    assert x.shape == (16, length) and x.dtype == np.float32
    assert np.abs(x).max() < 0.95 + 1e-6 and np.abs(x).max() > 0.1
    np.testing.assert_array_equal(np.asarray(sine_waveforms(key, 16, length, sample_rate=rate, max_components=1,
                                                            decay_range=(0.5, 1.0))), x)
    assert not np.array_equal(np.asarray(sine_waveforms(jax.random.PRNGKey(1), 16, length, sample_rate=rate,
                                                        max_components=1, decay_range=(0.5, 1.0))), x)
    # A single tone: the spectral peak (Hann window) lies in [100, 1000] Hz, within a bin.
    spectrum = np.abs(np.fft.rfft(x * np.hanning(length)[None], axis=1))
    peak_hz = np.argmax(spectrum, axis=1) * rate / length
    assert np.all((peak_hz >= 100 - rate / length) & (peak_hz <= 1000 + rate / length)), peak_hz
    assert len(np.unique(np.round(peak_hz))) > 8  # random frequencies
    tokens = np.asarray(waveform_tokens(key, 4, 256))
    assert tokens.dtype == np.int32 and tokens.min() >= 0 and tokens.max() <= MU
    np.testing.assert_array_equal(tokens, np.asarray(mu_law_encode(sine_waveforms(key, 4, 256))))
    with pytest.raises(ValueError, match="freq_range"):
        sine_waveforms(key, 2, 8, sample_rate=1000, freq_range=(100.0, 600.0))


# -- images as tokens ------------------------------------------------------------------------


def test_images_to_tokens_and_back():
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 2), dtype=np.uint8)
    tokens = np.asarray(image_to_tokens(images))
    assert tokens.shape == (3, 40) and tokens.dtype == np.int32
    assert tokens[1, (2 * 5 + 3) * 2 + 1] == images[1, 2, 3, 1]  # raster order (h, w, c)
    np.testing.assert_array_equal(np.asarray(tokens_to_image(tokens, (4, 5, 2))), images)
    levels = 4
    coarse = np.asarray(image_to_tokens(images, levels))
    np.testing.assert_array_equal(coarse, (images // 64).reshape(3, -1))
    back = np.asarray(tokens_to_image(coarse, (4, 5, 2), levels))
    assert np.abs(back.astype(int) - images.astype(int)).max() <= 32  # half a bin
    np.testing.assert_array_equal(np.asarray(image_to_tokens(back, levels)), coarse)
    with pytest.raises(ValueError, match="uint8 images"):
        image_to_tokens(images.astype(np.float32))
    with pytest.raises(ValueError, match="levels"):
        image_to_tokens(images, 1)
    with pytest.raises(ValueError, match=r"tokens in \[0, 4\)"):
        tokens_to_image(coarse + 1, (4, 5, 2), levels)
    with pytest.raises(ValueError, match="shape"):
        tokens_to_image(coarse, (4, 4, 2), levels)


def test_mu_law_levels_are_log_spaced():
    # Independent check of the companding: level spacing grows geometrically with |x|,
    # ratio (1+mu)^(2/mu) per class above zero.
    levels = np.asarray(mu_law_decode(jnp.arange(129, 256)), np.float64)
    steps = np.diff(levels)
    np.testing.assert_allclose(steps[1:] / steps[:-1], (1 + MU) ** (2 / MU), rtol=1e-3)
    assert math.isclose(levels[-1], 1.0, rel_tol=1e-6)
