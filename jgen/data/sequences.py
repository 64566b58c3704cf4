"""Small sequence data sets that need no download, for autoregressive models:
character-level text, synthetic waveforms with mu-law quantisation, and images
flattened to token sequences.

Text. Two corpora, the same on every machine:

* ``"sonnets"`` -- fourteen of Shakespeare's Sonnets (1609; public domain; modern
  spelling), about 8.7 KB, shipped as ``jgen/data/resources/sonnets.txt``;
* ``"grammar"`` -- sentences from a small probabilistic context-free grammar, generated
  with Python's `random.Random(seed)` (Mersenne Twister, stable across versions), as
  long as asked for.

`text_corpus(name)` builds a `CharVocab` (the sorted distinct characters; ids 0..V-1),
encodes the text and splits it contiguously (the last `test_fraction` of the characters
is the test split, so no test window overlaps a training window);
`random_windows(key, ids, batch_size, length)` draws training batches of fixed-length
windows.

Waveforms. `sine_waveforms(key, ...)` draws clips that are sums of 1 to K sinusoids
with random (log-uniform) frequencies, phases and amplitudes under an attack-decay
envelope,

.. math::
    x(t) = e(t) \\sum_{k} a_k \\sin(2\\pi f_k t + \\phi_k), \\qquad
    e(t) = \\min(1, t / t_a)\\, e^{-t / t_d}, \\qquad \\sum_k a_k \\le 0.95,

so :math:`|x| < 1`; `waveform_tokens` quantises them with mu-law companding
(ITU-T G.711; van den Oord et al. 2016, Sec. 2.2) to `mu + 1` = 256 classes:

.. math::
    F(x) = \\operatorname{sign}(x) \\frac{\\ln(1 + \\mu |x|)}{\\ln(1 + \\mu)}, \\qquad
    q = \\left\\lfloor \\frac{F(x) + 1}{2} \\mu + \\frac12 \\right\\rfloor \\in \\{0..\\mu\\},

decoded by :math:`F^{-1}(y) = \\operatorname{sign}(y) ((1 + \\mu)^{|y|} - 1) / \\mu` at
:math:`y = 2q/\\mu - 1`.

Images. `image_to_tokens` flattens uint8 images [B, H, W, C] in raster order (rows,
then columns, then channels: index (h W + w) C + c) to int32 tokens [B, H W C],
optionally quantised to `levels` < 256 bins; `tokens_to_image` inverts it (bin centres).

References:
  Shakespeare, W., "Shake-speares Sonnets", London: Thomas Thorpe, 1609.
  van den Oord et al., "WaveNet: A Generative Model for Raw Audio", arXiv:1609.03499, 2016.
  ITU-T Recommendation G.711, "Pulse code modulation (PCM) of voice frequencies", 1972.
"""

import dataclasses
import functools
import importlib.resources
import math
import random
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgen.typing import Array, PRNGKey

CORPORA = ("sonnets", "grammar")

# -- text ---------------------------------------------------------------------------------


@functools.cache
def _sonnets() -> str:
    return importlib.resources.files("jgen.data").joinpath("resources", "sonnets.txt").read_text("utf-8")


_GRAMMAR = {
    "S": [(["NP", "VP"], 3), (["NP", "VP", "CONJ", "NP", "VP"], 1)],
    "NP": [(["DET", "N"], 3), (["DET", "ADJ", "N"], 2), (["NAME"], 1)],
    "VP": [(["VT", "NP"], 3), (["VI"], 2), (["VT", "NP", "PP"], 1), (["VI", "PP"], 1)],
    "PP": [(["P", "NP"], 1)],
    "DET": [(["the"], 4), (["a"], 2), (["every"], 1), (["some"], 1)],
    "ADJ": [([w], 1) for w in ("small", "old", "quiet", "bright", "lazy", "green", "clever")],
    "N": [([w], 1) for w in ("cat", "dog", "bird", "river", "tree", "child", "garden", "stone", "king")],
    "NAME": [([w], 1) for w in ("Alice", "Bob", "Carol", "Dave")],
    "VT": [([w], 1) for w in ("sees", "likes", "follows", "finds", "carries", "watches")],
    "VI": [([w], 1) for w in ("sleeps", "sings", "waits", "runs", "falls")],
    "P": [([w], 1) for w in ("near", "under", "behind", "with")],
    "CONJ": [(["and"], 2), (["but"], 1), (["while"], 1)],
}


def _expand(symbol: str, rng: random.Random, out: list[str]) -> None:
    rules = _GRAMMAR.get(symbol)
    if rules is None:
        out.append(symbol)
        return
    total = sum(weight for _, weight in rules)
    u = rng.random() * total  # only rng.random(): its stream is stable across Python versions
    for rhs, weight in rules:
        u -= weight
        if u < 0:
            break
    for s in rhs:
        _expand(s, rng, out)


def grammar_text(num_sentences: int = 2000, *, seed: int = 0, sentences_per_line: int = 3) -> str:
    """`num_sentences` sentences of a small probabilistic context-free grammar
    (S -> NP VP [CONJ NP VP]; NP -> DET [ADJ] N | NAME; VP -> VT NP [PP] | VI [PP]; ...),
    capitalised, ended with ".", `sentences_per_line` to a line. Deterministic in `seed`."""
    rng = random.Random(seed)
    lines, line = [], []
    for _ in range(num_sentences):
        words: list[str] = []
        _expand("S", rng, words)
        sentence = " ".join(words)
        line.append(sentence[0].upper() + sentence[1:] + ".")
        if len(line) == sentences_per_line:
            lines.append(" ".join(line))
            line = []
    if line:
        lines.append(" ".join(line))
    return "\n".join(lines) + "\n"


def load_text(name: str = "sonnets") -> str:
    """The raw text of corpus `name` (one of `CORPORA`); "grammar" uses the defaults of
    `grammar_text`."""
    if name == "sonnets":
        return _sonnets()
    if name == "grammar":
        return grammar_text()
    raise ValueError(f"load_text: unknown corpus {name!r}; available: {CORPORA}.")


@dataclasses.dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: `chars[i]` is the character with id i.

    Example:
      vocab = char_vocab("hello")          # chars "ehlo"
      ids = vocab.encode("hole")           # int32 [1, 3, 2, 0]
      vocab.decode(ids) == "hole"
    """

    chars: str

    def __post_init__(self):
        if len(set(self.chars)) != len(self.chars) or not self.chars:
            raise ValueError(f"CharVocab: chars must be non-empty and distinct; received {self.chars!r}.")

    @property
    def size(self) -> int:
        return len(self.chars)

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        """str -> int32 ids [len(text)]; raises naming any character not in the vocabulary."""
        if not isinstance(text, str):
            raise TypeError(f"CharVocab.encode: expected a str; received {type(text).__name__}.")
        index = self._index
        unknown = sorted(set(text) - index.keys())
        if unknown:
            raise ValueError(f"CharVocab.encode: characters {unknown!r} are not in the vocabulary "
                             f"{self.chars!r}. Build the vocabulary from text that contains them "
                             "(char_vocab(text)), or filter them out first.")
        return np.fromiter((index[c] for c in text), np.int32, count=len(text))

    def decode(self, ids) -> str:
        """int ids [N] -> str; raises for ids outside [0, size)."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"CharVocab.decode: expected integer ids [N]; received {ids.dtype} of shape "
                             f"{ids.shape}. Decode a batch row by row: [vocab.decode(r) for r in batch].")
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"CharVocab.decode: ids must lie in [0, {self.size}); received ids in "
                             f"[{ids.min()}, {ids.max()}].")
        return "".join(self.chars[i] for i in ids.tolist())


def char_vocab(text: str) -> CharVocab:
    """The vocabulary of the distinct characters of `text`, sorted by code point."""
    return CharVocab("".join(sorted(set(text))))


class TextCorpus(NamedTuple):
    """An encoded character corpus.

    Attributes:
      vocab: the `CharVocab` (built from the whole text, so the test split has no
        unknown characters).
      train: int32 ids [N_train], the first (1 - test_fraction) of the text.
      test: int32 ids [N_test], the rest.
    """

    vocab: CharVocab
    train: np.ndarray
    test: np.ndarray


def text_corpus(name: str = "sonnets", *, test_fraction: float = 0.1, text: str | None = None) -> TextCorpus:
    """Encodes corpus `name` (or the given `text`) and splits it contiguously."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"text_corpus: test_fraction must be in (0, 1); received {test_fraction}.")
    text = load_text(name) if text is None else text
    vocab = char_vocab(text)
    ids = vocab.encode(text)
    cut = round(len(ids) * (1.0 - test_fraction))
    return TextCorpus(vocab, ids[:cut], ids[cut:])


def random_windows(key: PRNGKey, ids: Array, batch_size: int, length: int) -> Array:
    """`batch_size` windows of `length` consecutive ids, each starting at a uniform
    random offset in [0, N - length] -> int32 [batch_size, length]. Jit-able with
    `batch_size` and `length` static."""
    ids = jnp.asarray(ids)
    if ids.ndim != 1 or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"random_windows: ids must be integer [N]; received {ids.dtype} of shape {ids.shape}.")
    if not 1 <= length <= ids.shape[0]:
        raise ValueError(f"random_windows: length must be in [1, N={ids.shape[0]}]; received {length}.")
    starts = jax.random.randint(key, (batch_size,), 0, ids.shape[0] - length + 1)
    return jnp.take(ids, starts[:, None] + jnp.arange(length)[None, :], axis=0).astype(jnp.int32)


# -- mu-law ---------------------------------------------------------------------------------


def _check_values(x, lo, hi, *, who: str, expected: str, fix: str = "") -> None:
    """Raises if concrete `x` has values outside [lo, hi]; no-op on tracers. (Reads
    the values with numpy: jnp ops on a constant inside a jit trace are staged.)"""
    if isinstance(x, jax.core.Tracer) or x.size == 0:
        return
    values = np.asarray(x)
    if values.min() < lo or values.max() > hi:
        raise ValueError(f"{who}: expected {expected}; received values in [{values.min()}, {values.max()}] "
                         f"({x.dtype}, shape {x.shape}).{' ' + fix if fix else ''}")


def _check_mu(who: str, mu) -> None:
    if isinstance(mu, bool) or not isinstance(mu, int) or mu < 1:
        raise ValueError(f"{who}: mu must be a Python int >= 1 (255 for 256 classes); received {mu!r}.")


def mu_law_encode(x: Array, mu: int = 255) -> Array:
    """Floats in [-1, 1] -> int32 classes in [0, mu] (see the module docstring).

    Concrete inputs outside [-1, 1] raise; traced ones are clipped.
    """
    _check_mu("mu_law_encode", mu)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"mu_law_encode: expected floating audio in [-1, 1]; received {x.dtype}. "
                        "Scale integer PCM first, e.g. x.astype(jnp.float32) / 32768 for int16.")
    _check_values(x, -1.0, 1.0, who="mu_law_encode", expected="floats in [-1, 1]",
                  fix="Normalise the waveform, e.g. x / max(1, abs(x).max()).")
    x = jnp.clip(x, -1.0, 1.0)
    y = jnp.sign(x) * jnp.log1p(mu * jnp.abs(x)) / math.log1p(mu)
    return jnp.clip(jnp.floor((y + 1.0) / 2.0 * mu + 0.5), 0, mu).astype(jnp.int32)


def mu_law_decode(q: Array, mu: int = 255) -> Array:
    """int classes in [0, mu] -> float32 in [-1, 1], the inverse companding at the
    class centre y = 2q/mu - 1."""
    _check_mu("mu_law_decode", mu)
    q = jnp.asarray(q)
    if not jnp.issubdtype(q.dtype, jnp.integer):
        raise TypeError(f"mu_law_decode: expected integer classes in [0, {mu}]; received {q.dtype}.")
    _check_values(q, 0, mu, who="mu_law_decode", expected=f"integer classes in [0, {mu}]")
    y = 2.0 * q.astype(jnp.float32) / mu - 1.0
    return jnp.sign(y) * jnp.expm1(jnp.abs(y) * math.log1p(mu)) / mu


# -- waveforms ------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("batch_size", "length", "sample_rate", "max_components",
                                             "freq_range", "decay_range"))
def sine_waveforms(
    key: PRNGKey,
    batch_size: int,
    length: int,
    *,
    sample_rate: int = 8000,
    max_components: int = 3,
    freq_range: tuple[float, float] = (100.0, 1000.0),
    decay_range: tuple[float, float] = (0.02, 0.5),
) -> Array:
    """Random sinusoid mixtures under attack-decay envelopes -> float32 [B, length] in
    (-1, 1) (see the module docstring). Deterministic in `key`.

    Per clip: K ~ Uniform{1..max_components} active components; frequencies
    log-uniform in `freq_range` (Hz, below sample_rate / 2); phases uniform; weights
    w_k ~ U(0.2, 1), scaled so sum_k a_k = peak ~ U(0.3, 0.95); attack t_a ~ U(1, 20) ms;
    decay t_d log-uniform in `decay_range` (s).
    """
    lo, hi = freq_range
    if not 0 < lo <= hi < sample_rate / 2:
        raise ValueError(f"sine_waveforms: freq_range must satisfy 0 < lo <= hi < sample_rate/2 = "
                         f"{sample_rate / 2}; received {freq_range}.")
    keys = jax.random.split(key, 7)
    shape = (batch_size, max_components)
    num = jax.random.randint(keys[0], (batch_size, 1), 1, max_components + 1)
    active = (jnp.arange(max_components)[None, :] < num).astype(jnp.float32)
    freq = jnp.exp(jax.random.uniform(keys[1], shape, minval=math.log(lo), maxval=math.log(hi)))
    phase = jax.random.uniform(keys[2], shape, maxval=2.0 * math.pi)
    weight = jax.random.uniform(keys[3], shape, minval=0.2, maxval=1.0) * active
    peak = jax.random.uniform(keys[4], (batch_size, 1), minval=0.3, maxval=0.95)
    amp = weight / jnp.sum(weight, axis=1, keepdims=True) * peak  # [B, K], sums to peak
    attack = jax.random.uniform(keys[5], (batch_size, 1), minval=0.001, maxval=0.02)
    decay = jnp.exp(jax.random.uniform(keys[6], (batch_size, 1), minval=math.log(decay_range[0]),
                                       maxval=math.log(decay_range[1])))
    t = (jnp.arange(length, dtype=jnp.float32) / sample_rate)[None, :]  # [1, T] seconds
    envelope = jnp.minimum(1.0, t / attack) * jnp.exp(-t / decay)  # [B, T]
    tones = jnp.sin(2.0 * math.pi * freq[:, :, None] * t[:, None, :] + phase[:, :, None])  # [B, K, T]
    return envelope * jnp.sum(amp[:, :, None] * tones, axis=1)


def waveform_tokens(key: PRNGKey, batch_size: int, length: int, *, mu: int = 255, **kwargs) -> Array:
    """`sine_waveforms(key, batch_size, length, **kwargs)` mu-law quantised -> int32
    [B, length] in [0, mu]."""
    return mu_law_encode(sine_waveforms(key, batch_size, length, **kwargs), mu)


# -- images as tokens -----------------------------------------------------------------------


def _check_levels(who: str, levels) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 256:
        raise ValueError(f"{who}: levels must be a Python int in [2, 256]; received {levels!r}.")


def image_to_tokens(images: Array, levels: int = 256) -> Array:
    """uint8 images [B, H, W, C] -> int32 tokens [B, H*W*C] in raster order (h, w, c),
    quantised to `levels` bins: token = floor(pixel * levels / 256)."""
    _check_levels("image_to_tokens", levels)
    images = jnp.asarray(images)
    if images.ndim != 4 or images.dtype != jnp.uint8:
        raise ValueError(f"image_to_tokens: expected uint8 images [B, H, W, C]; received {images.dtype} of "
                         f"shape {images.shape}. Add a channel axis with x[..., None] for grey images.")
    tokens = (images.astype(jnp.int32) * levels) // 256
    return tokens.reshape((images.shape[0], -1))


def tokens_to_image(tokens: Array, shape: tuple[int, int, int], levels: int = 256) -> Array:
    """int tokens [B, H*W*C] in [0, levels) -> uint8 images [B, H, W, C] (`shape` =
    (H, W, C)), each token mapped to its bin's centre floor((token + 1/2) * 256 / levels);
    exact inverse of `image_to_tokens` for levels = 256."""
    _check_levels("tokens_to_image", levels)
    tokens = jnp.asarray(tokens)
    size = int(np.prod(shape))
    if len(shape) != 3 or tokens.ndim != 2 or tokens.shape[1] != size or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens_to_image: expected integer tokens [B, {size}] for shape (H, W, C) = {shape}; "
                         f"received {tokens.dtype} of shape {tokens.shape}.")
    _check_values(tokens, 0, levels - 1, who="tokens_to_image", expected=f"tokens in [0, {levels})")
    pixels = ((2 * tokens.astype(jnp.int32) + 1) * 256) // (2 * levels)
    return pixels.astype(jnp.uint8).reshape((tokens.shape[0],) + tuple(shape))
