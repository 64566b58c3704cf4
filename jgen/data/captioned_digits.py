"""Captioned digits: a procedurally captioned dataset made from the embedded real digits,
for text-conditional generation (`data.name = "captioned_digits"`).

Each of scikit-learn's real 8x8 handwritten digits (`jgen.data.digits`) is placed
`PLACEMENTS` times on a blank 24x24 canvas, each time at a random position (top left,
top right, bottom left, bottom right, center; +-1 pixel of jitter) and size (small =
8x8 as is, large = 16x16, bilinear), all drawn from a fixed seed. Every placement gets
a caption naming the digit, its size and its position in one of several templates with
synonyms ("a small 3 in the top left", "the digit seven , big , lower right", ...),
so a text encoder has to learn that "3" and "three", "large" and "big" mean the same.

Features of an example:
    image   uint8 [24, 24, 1]
    label   the digit, 0..9
    tokens  int32 [MAX_TOKENS], word ids into `VOCAB` (0 = padding)
    vector  float32 [13]: one-hot digit (10), then the digit's centre row and column
            and its size as fractions of the canvas (an attribute vector, for
            vector-conditional models)
    position, size   the attribute ids (indices into POSITIONS, SIZES)

Splits: "train" places the 1,497 training digits (5,988 examples), "test" the 300
test digits (1,200 examples): no handwritten digit appears in both.
"""

from __future__ import annotations

import functools

import numpy as np

from jgen.data import digits

CANVAS = 24
IMAGE_SHAPE = (CANVAS, CANVAS, 1)
PLACEMENTS = 4
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
SIZES = ("small", "large")
SIZE_PIXELS = (8, 16)
_CENTRES = {"top left": (6, 6), "top right": (6, 18), "bottom left": (18, 6), "bottom right": (18, 18),
            "center": (12, 12)}
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SYNONYMS = {"small": ("small", "little"), "large": ("large", "big"), "top": ("top", "upper"),
             "bottom": ("bottom", "lower"), "center": ("center", "middle"), "left": ("left",), "right": ("right",)}
_TEMPLATES = ("a {size} {digit} in the {pos}", "the digit {digit} , {size} , {pos}", "{digit} at the {pos} , {size}")
VOCAB = ("<pad>", "a", "in", "the", "at", "digit", ",", "small", "little", "large", "big", "top", "upper",
         "bottom", "lower", "left", "right", "center", "middle",
         *(str(d) for d in range(10)), *_DIGIT_WORDS)
MAX_TOKENS = 10
VECTOR_DIM = 13
NUM_EXAMPLES = {"train": digits.NUM_EXAMPLES["train"] * PLACEMENTS, "test": digits.NUM_EXAMPLES["test"] * PLACEMENTS}
_SEED = {"train": 1, "test": 2}
_WORD_ID = {w: i for i, w in enumerate(VOCAB)}


def tokenize(texts, max_len: int = MAX_TOKENS) -> np.ndarray:
    """Captions -> int32 [N, max_len] word ids (lower-cased, split on spaces and commas,
    padded with 0).

    Raises:
      ValueError: a word outside `VOCAB` or a caption longer than `max_len` words; the
        message lists the vocabulary.
    """
    if isinstance(texts, str):
        texts = [texts]
    out = np.zeros((len(texts), max_len), np.int32)
    for n, text in enumerate(texts):
        words = str(text).lower().replace(",", " , ").split()
        unknown = [w for w in words if w not in _WORD_ID]
        if unknown:
            raise ValueError(f"Caption {text!r} has words outside the captioned-digits vocabulary: {unknown}. "
                             f"Known words: {' '.join(VOCAB[1:])}.")
        if not words or len(words) > max_len:
            raise ValueError(f"Caption {text!r} has {len(words)} words; captions have 1 to {max_len}.")
        out[n, : len(words)] = [_WORD_ID[w] for w in words]
    return out


def detokenize(tokens) -> list[str]:
    """int [N, L] word ids -> captions (padding dropped)."""
    return [" ".join(VOCAB[int(t)] for t in row if int(t) > 0) for row in np.asarray(tokens).reshape(-1, np.shape(tokens)[-1])]


def caption(digit: int, position: int, size: int, rng: np.random.Generator) -> str:
    """One caption of a placement, in a random template with random synonyms."""
    pos_words = [rng.choice(_SYNONYMS[w]) for w in POSITIONS[position].split()]
    size_word = rng.choice(_SYNONYMS[SIZES[size]])
    digit_word = str(digit) if rng.random() < 0.5 else _DIGIT_WORDS[digit]
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    return template.format(size=size_word, digit=digit_word, pos=" ".join(pos_words))


def _resize(img: np.ndarray, side: int) -> np.ndarray:
    if img.shape[0] == side:
        return img.astype(np.float32)
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR), np.float32)


def place(img: np.ndarray, position: int, size: int, jitter=(0, 0)) -> np.ndarray:
    """One 8x8 uint8 digit [8, 8] drawn on the blank canvas: uint8 [24, 24]."""
    side = SIZE_PIXELS[size]
    glyph = _resize(img, side)
    cy, cx = _CENTRES[POSITIONS[position]]
    top = int(np.clip(cy - side // 2 + jitter[0], 0, CANVAS - side))
    left = int(np.clip(cx - side // 2 + jitter[1], 0, CANVAS - side))
    canvas = np.zeros((CANVAS, CANVAS), np.float32)
    canvas[top:top + side, left:left + side] = glyph
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


@functools.cache
def captioned_arrays(split: str) -> dict[str, np.ndarray]:
    """All examples of a split as read-only arrays (see the module doc for the keys)."""
    if split not in NUM_EXAMPLES:
        raise ValueError(f"Unknown split {split!r} for 'captioned_digits'; valid splits are {list(NUM_EXAMPLES)}.")
    images, labels = digits.digits_arrays(split)
    rng = np.random.default_rng(_SEED[split])
    n = len(images) * PLACEMENTS
    out = {"image": np.zeros((n, CANVAS, CANVAS, 1), np.uint8), "label": np.zeros(n, np.int64),
           "tokens": np.zeros((n, MAX_TOKENS), np.int32), "vector": np.zeros((n, VECTOR_DIM), np.float32),
           "position": np.zeros(n, np.int64), "size": np.zeros(n, np.int64)}
    captions = []
    for i in range(n):
        src = i // PLACEMENTS
        d = int(labels[src])
        pos, size = int(rng.integers(len(POSITIONS))), int(rng.integers(len(SIZES)))
        jitter = tuple(int(v) for v in rng.integers(-1, 2, size=2))
        out["image"][i, ..., 0] = place(images[src, ..., 0], pos, size, jitter)
        out["label"][i], out["position"][i], out["size"][i] = d, pos, size
        captions.append(caption(d, pos, size, rng))
        cy, cx = _CENTRES[POSITIONS[pos]]
        out["vector"][i, d] = 1.0
        out["vector"][i, 10:] = (cy / CANVAS, cx / CANVAS, SIZE_PIXELS[size] / CANVAS)
    out["tokens"] = tokenize(captions)
    for v in out.values():
        v.setflags(write=False)
    return out


def attribute_vector(digit: int, position: int, size: int) -> np.ndarray:
    """The 13-dim attribute vector of a placement (the dataset's "vector" feature)."""
    v = np.zeros(VECTOR_DIM, np.float32)
    v[digit] = 1.0
    cy, cx = _CENTRES[POSITIONS[position]]
    v[10:] = (cy / CANVAS, cx / CANVAS, SIZE_PIXELS[size] / CANVAS)
    return v


def crop(image: np.ndarray, position: int, size: int) -> np.ndarray:
    """The canvas region where a placement's digit lies, resized to 8x8 (float [8, 8] in
    0..255): what a digit classifier reads to check a generated image's caption."""
    side = SIZE_PIXELS[size]
    cy, cx = _CENTRES[POSITIONS[position]]
    top = int(np.clip(cy - side // 2, 0, CANVAS - side))
    left = int(np.clip(cx - side // 2, 0, CANVAS - side))
    patch = np.asarray(image, np.float32).reshape(CANVAS, CANVAS)[top:top + side, left:left + side]
    if side == 8:
        return patch
    return patch.reshape(8, side // 8, 8, side // 8).mean(axis=(1, 3))
