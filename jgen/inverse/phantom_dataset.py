r"""Random-ellipse CT phantoms as a dataset: ``data.name = "phantoms"`` (64x64) or
``"phantoms<N>"`` (NxN, e.g. ``"phantoms16"`` for tests), served by `jgen.data.get_source`.

Each split is drawn once per process by `jgen.inverse.phantoms.random_ellipses` from a
fixed key (train: seed 0, test: seed 1, so the test phantoms are held out: different
draws from the same distribution), in chunks of 500 (chunk c uses
``fold_in(PRNGKey(seed), c)``, so the first examples do not depend on the split's size),
and quantised to 8-bit images like every jgen dataset: uint8 ``[N, N, 1]`` with
``round(255 x)``, x in [0, 1] the phantom's intensity. There are no classes (every
label is 0, `DatasetInfo.num_classes` is None). Sizes: 10,000 train and 1,000 test
phantoms (at 64x64 about 41 MB, a few seconds to draw on a CPU).

References:
  Adler, J. & Öktem, O. (2018). Learned primal-dual reconstruction. IEEE Trans. Med.
    Imaging 37(6) (random-ellipse training phantoms).
"""

from __future__ import annotations

import functools
import re

import jax
import numpy as np

from jgen.inverse.phantoms import random_ellipses

NUM_EXAMPLES = {"train": 10_000, "test": 1_000}
SEEDS = {"train": 0, "test": 1}
DEFAULT_SIZE = 64
CHUNK = 500
_NAME = re.compile(r"phantoms(\d+)?")


def phantom_size(name: str) -> int | None:
    """The image side encoded in a dataset name ("phantoms" -> 64, "phantoms16" -> 16), or
    None if `name` is not a phantoms dataset."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    size = int(match.group(1) or DEFAULT_SIZE)
    if not 4 <= size <= 1024:
        raise ValueError(f"Dataset {name!r}: the phantom size must be between 4 and 1024 pixels; use e.g. "
                         f"'phantoms' (64x64) or 'phantoms32'.")
    return size


@functools.cache
def _draw(size: int):
    return jax.jit(lambda key: random_ellipses(key, CHUNK, size))


@functools.cache
def phantom_arrays(split: str, size: int = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The phantoms of one split: read-only ``(uint8 [N, size, size, 1], int64 zeros [N])``.

    Raises:
      ValueError: an unknown split.
    """
    if split not in NUM_EXAMPLES:
        raise ValueError(f"Unknown split {split!r} of the phantoms dataset; valid splits are "
                         f"{list(NUM_EXAMPLES)}.")
    n = NUM_EXAMPLES[split]
    key = jax.random.PRNGKey(SEEDS[split])
    chunks = [np.asarray(_draw(size)(jax.random.fold_in(key, c))) for c in range(-(-n // CHUNK))]
    images = np.round(255.0 * np.concatenate(chunks)[:n]).astype(np.uint8)[..., None]
    labels = np.zeros((n,), np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


__all__ = ["DEFAULT_SIZE", "NUM_EXAMPLES", "SEEDS", "phantom_arrays", "phantom_size"]
