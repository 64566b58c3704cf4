"""The conditioning interface shared by every family: what a condition is, where it
comes from in a batch, and how a user writes one on the command line.

A model's condition is configured by `model.condition` (see `condition_config`):

    kind      what the model is conditioned on
    --------  -----------------------------------------------------------------------
    "none"    nothing (an unconditional model)
    "label"   a class id, int32 [B] from batch["label"] (`model.conditional=True` is
              the older spelling of this kind)
    "vector"  a real vector, float32 [B, D] from batch["vector"]
    "tokens"  a token sequence, int32 [B, L] from batch["tokens"] (0 = padding), e.g.
              a caption; encoded by a small transformer trained jointly with the model
    "image"   an image-valued measurement of the image itself, made on the fly by a
              `jgen.inverse` operator: `operator="superres:F"` (F x F average pooling:
              low-res -> high-res), `"colorize"` (RGB -> gray), `"inpaint"` (a random
              box is hidden: masked -> complete)

The *raw* condition is what a batch, `ModelSpec.sample(params, key, num, condition)`
and `jgen sample --condition` carry; it is family-agnostic and in data units:

    label [B] int32 · vector [B, D] float32 · tokens [B, L] int32 ·
    image [B, *measurement_shape] float32 in [0, 1] pixel units (superres:
    [B, H/F, W/F, C]; colorize: [B, H, W, 1]; inpaint: [B, H, W, C + 1], the masked
    image then the 0/1 mask of observed pixels)

`jgen.conditioning.encoder.ConditionEncoder` turns a raw condition into what a
network consumes: an embedding vector [B, D] and, for images, a map [B, H, W, C']
at the model's resolution. Every conditional model is trained with condition
dropout (`p_uncond`), so the same network also gives the unconditional prediction
that classifier-free guidance needs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from jgen.typing import Array, PRNGKey

KINDS = ("none", "label", "vector", "tokens", "image")
OPERATORS = ("superres", "colorize", "inpaint")
BATCH_KEYS = {"label": "label", "vector": "vector", "tokens": "tokens"}


def condition_config() -> ConfigDict:
    """The `model.condition` block every family's `model_config()` carries."""
    c = ConfigDict()
    c.kind = "none"  # none | label | vector | tokens | image
    c.p_uncond = 0.1  # condition dropout in training (the null condition, for guidance)
    c.embed_dim = 64  # width of the condition embedding a network receives
    c.operator = ""  # kind="image": superres:F | colorize | inpaint
    c.text_layers = 2  # kind="tokens": transformer encoder depth
    c.text_heads = 4
    return c


class ConditionSpec(NamedTuple):
    """A resolved condition: everything a family, the CLI and the samplers need.

    Attributes:
      kind: one of `KINDS` other than "none".
      p_uncond: probability of dropping the condition in training.
      embed_dim: width of the condition embedding.
      image_shape: the model's image shape (H, W, C).
      num_classes: kind="label": number of classes.
      vector_dim: kind="vector": D.
      vocab: kind="tokens": the words (index 0 is the padding token "<pad>").
      max_tokens: kind="tokens": L.
      operator: kind="image": "superres:F", "colorize" or "inpaint".
      text_layers, text_heads: the text encoder's size.
    """

    kind: str
    p_uncond: float
    embed_dim: int
    image_shape: tuple[int, int, int]
    num_classes: int = 0
    vector_dim: int = 0
    vocab: tuple[str, ...] = ()
    max_tokens: int = 0
    operator: str = ""
    text_layers: int = 2
    text_heads: int = 4

    @property
    def factor(self) -> int:
        """The super-resolution factor (1 for other kinds)."""
        return int(self.operator.split(":")[1]) if self.operator.startswith("superres") else 1

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-example shape of the raw condition."""
        h, w, c = self.image_shape
        if self.kind == "label":
            return ()
        if self.kind == "vector":
            return (self.vector_dim,)
        if self.kind == "tokens":
            return (self.max_tokens,)
        if self.operator.startswith("superres"):
            return (h // self.factor, w // self.factor, c)
        if self.operator == "colorize":
            return (h, w, 1)
        return (h, w, c + 1)  # inpaint

    @property
    def dtype(self):
        return np.int32 if self.kind in ("label", "tokens") else np.float32

    @property
    def map_channels(self) -> int:
        """Channels of the map ConditionEncoder returns (0: no map)."""
        if self.kind != "image":
            return 0
        return self.shape[-1] + 1  # the lifted measurement and a "condition present" flag


def resolve(config: ConfigDict, info) -> ConditionSpec | None:
    """The `ConditionSpec` of a config's model on a dataset, or None (unconditional).

    Args:
      config: a full config; reads `config.model.condition` (if present) and the older
        `config.model.conditional` flag (= kind "label").
      info: the dataset's `jgen.data.DatasetInfo`.

    Raises:
      ValueError: an unknown kind or operator, a condition the dataset cannot provide
        (e.g. labels of an unlabelled dataset), or both spellings set differently;
        the message says what was received and what to set instead.
    """
    m = config.model
    c = m.get("condition", None)
    kind = str(c.kind) if c is not None else "none"
    legacy = bool(m.get("conditional", False))
    if kind not in KINDS:
        raise ValueError(f"model.condition.kind={kind!r} is not a condition kind; use one of {KINDS}.")
    if legacy:
        if kind not in ("none", "label"):
            raise ValueError(
                f"model.conditional=True means class labels, but model.condition.kind={kind!r}; "
                "set model.conditional=False and keep model.condition.kind, or drop model.condition.")
        kind = "label"
    if kind == "none":
        return None
    c = c if c is not None else condition_config()
    p_uncond = float(c.get("p_uncond", 0.1))
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"model.condition.p_uncond must lie in [0, 1); received {p_uncond}.")
    shape = tuple(int(d) for d in info.image_shape)
    name = config.data.name
    common = {"kind": kind, "p_uncond": p_uncond, "embed_dim": int(c.get("embed_dim", 64)), "image_shape": shape,
              "text_layers": int(c.get("text_layers", 2)), "text_heads": int(c.get("text_heads", 4))}
    if kind == "label":
        if not info.num_classes:
            raise ValueError(f"A label-conditional model needs a labelled dataset; {name!r} has no classes. "
                             "Pick a labelled dataset (digits, mnist) or another condition kind.")
        return ConditionSpec(num_classes=int(info.num_classes), **common)
    if kind == "vector":
        dim = int(getattr(info, "vector_dim", 0) or 0)
        if not dim:
            raise ValueError(f"A vector-conditional model needs a dataset with a 'vector' feature; {name!r} "
                             "has none (e.g. use data.name='captioned_digits', which provides one).")
        return ConditionSpec(vector_dim=dim, **common)
    if kind == "tokens":
        vocab = tuple(getattr(info, "vocab", None) or ())
        if not vocab:
            raise ValueError(f"A token-conditional (text) model needs a captioned dataset; {name!r} has no "
                             "'tokens' feature. Use data.name='captioned_digits'.")
        return ConditionSpec(vocab=vocab, max_tokens=int(info.max_tokens), **common)
    op = str(c.get("operator", ""))
    base = op.split(":")[0]
    if base not in OPERATORS:
        raise ValueError(f"model.condition.kind='image' needs model.condition.operator, one of "
                         f"'superres:F' (e.g. 'superres:2'), 'colorize', 'inpaint'; received {op!r}.")
    if base == "superres":
        try:
            f = int(op.split(":")[1])
        except (IndexError, ValueError):
            raise ValueError(f"model.condition.operator={op!r}: write the factor, e.g. 'superres:2'.") from None
        if f < 2 or shape[0] % f or shape[1] % f:
            raise ValueError(f"model.condition.operator={op!r}: the factor must be >= 2 and divide the image "
                             f"size {shape[0]}x{shape[1]}.")
    elif base == "colorize" and shape[2] != 3:
        raise ValueError(f"model.condition.operator='colorize' needs RGB images; {name!r} has {shape[2]} "
                         "channel(s). Use data.name='photo_patches'.")
    elif op != base:
        raise ValueError(f"model.condition.operator={op!r}: {base!r} takes no argument.")
    return ConditionSpec(operator=op, **common)


# ----------------------------------------------------------------------------- batches


def inpaint_masks(key: PRNGKey, num: int, height: int, width: int) -> Array:
    """Random rectangular holes: float32 [num, H, W, 1], 1 = observed, 0 = hidden.

    Each hole's height and width are drawn uniformly in [H/4, H/2] (resp. W), its
    corner uniformly where it fits.
    """
    k1, k2, k3, k4 = jax.random.split(key, 4)
    lo_h, hi_h = max(1, height // 4), max(1, height // 2)
    lo_w, hi_w = max(1, width // 4), max(1, width // 2)
    bh = jax.random.randint(k1, (num,), lo_h, hi_h + 1)
    bw = jax.random.randint(k2, (num,), lo_w, hi_w + 1)
    top = jax.random.randint(k3, (num,), 0, height - bh + 1)
    left = jax.random.randint(k4, (num,), 0, width - bw + 1)
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    hole = ((rows >= top[:, None, None]) & (rows < (top + bh)[:, None, None])
            & (cols >= left[:, None, None]) & (cols < (left + bw)[:, None, None]))
    return (~hole).astype(jnp.float32)[..., None]


def box_mask(height: int, width: int, box) -> np.ndarray:
    """float32 [H, W, 1]: 0 inside `box = (top, left, bottom, right)`, 1 elsewhere."""
    top, left, bottom, right = (int(v) for v in box)
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise ValueError(f"box (top, left, bottom, right) = {tuple(box)} does not lie inside the "
                         f"{height}x{width} image; use 0 <= top < bottom <= {height}, 0 <= left < right <= {width}.")
    m = np.ones((height, width, 1), np.float32)
    m[top:bottom, left:right] = 0.0
    return m


def measure(spec: ConditionSpec, u: Array, key: PRNGKey | None = None, mask: Array | None = None) -> Array:
    """The raw image condition of images `u` [B, H, W, C] in [0, 1].

    superres: F x F average pooling; colorize: the luma (ITU-R 601 weights, as
    `jgen.inverse.rgb_to_gray`); inpaint: `(u * m, m)` stacked on the channel axis, with
    `mask` m [B, H, W, 1] (1 = observed) or random boxes drawn with `key`.
    """
    u = jnp.asarray(u, jnp.float32)
    b, h, w, c = u.shape
    if spec.operator.startswith("superres"):
        f = spec.factor
        return u.reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))
    if spec.operator == "colorize":
        from jgen.inverse.operators import rgb_to_gray

        return rgb_to_gray((h, w, c)).forward(u)
    if mask is None:
        if key is None:
            raise ValueError("measure(inpaint) needs a key for random holes, or an explicit mask.")
        mask = inpaint_masks(key, b, h, w)
    mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), (b, h, w, 1))
    return jnp.concatenate([u * mask, mask], axis=-1)


def lift(spec: ConditionSpec, y: Array) -> Array:
    """A raw image condition brought to the model's resolution [B, H, W, C_y]
    (nearest-neighbour upsampling for superres, the identity otherwise)."""
    if spec.operator.startswith("superres"):
        f = spec.factor
        return jnp.repeat(jnp.repeat(y, f, axis=1), f, axis=2)
    return y


def condition_of(spec: ConditionSpec | None, batch, key: PRNGKey | None = None) -> Array | None:
    """The raw condition of a training / evaluation batch (None when unconditional).

    Image conditions are measured from `batch["image"]` (uint8 or [0, 1] floats); the
    others are read from the batch key of their kind, with a clear error when the batch
    lacks it.
    """
    if spec is None:
        return None
    if spec.kind == "image":
        x = batch["image"]
        u = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else jnp.asarray(x, jnp.float32)
        return measure(spec, u, key)
    name = BATCH_KEYS[spec.kind]
    if name not in batch:
        raise KeyError(f"A {spec.kind}-conditional model needs batch[{name!r}]; the batch has keys "
                       f"{sorted(batch)}. Use a dataset that provides {name!r}.")
    return jnp.asarray(batch[name], jnp.int32 if spec.kind in ("label", "tokens") else jnp.float32)


def check_condition(spec: ConditionSpec | None, condition, num: int, *, who: str = "sample"):
    """Validates a raw condition for `num` examples and returns it as an array (None
    stays None for an unconditional model). Errors name the expected shape and dtype."""
    if spec is None:
        if condition is not None:
            raise ValueError(f"{who}: this model is unconditional; received a condition. Train with "
                             "model.condition.kind set to condition a model.")
        return None
    if condition is None:
        raise ValueError(f"{who}: this {spec.kind}-conditional model needs a condition of shape "
                         f"[{num}, {', '.join(map(str, spec.shape))}] ({np.dtype(spec.dtype).name}).")
    arr = jnp.asarray(condition)
    expected = (num, *spec.shape)
    if tuple(arr.shape) != expected:
        raise ValueError(f"{who}: the {spec.kind} condition must have shape {list(expected)}; received "
                         f"{arr.dtype} {list(arr.shape)}.")
    integer = jnp.issubdtype(arr.dtype, jnp.integer)
    if spec.kind in ("label", "tokens") and not integer:
        raise ValueError(f"{who}: a {spec.kind} condition holds integer ids; received dtype {arr.dtype}.")
    if spec.kind in ("label", "tokens") and not isinstance(arr, jax.core.Tracer):
        top = spec.num_classes if spec.kind == "label" else len(spec.vocab)
        lo, hi = int(np.asarray(arr).min()), int(np.asarray(arr).max())
        if lo < 0 or hi >= top:
            raise ValueError(f"{who}: {spec.kind} ids must lie in [0, {top}); received values {lo}..{hi}.")
    return arr.astype(spec.dtype)


def default_condition(spec: ConditionSpec | None, num: int) -> Array | None:
    """The condition a preview grid uses when none is given: labels cycle through the
    classes; other kinds have no canonical value (the caller takes them from data)."""
    if spec is None:
        return None
    if spec.kind == "label":
        return jnp.arange(num, dtype=jnp.int32) % spec.num_classes
    return None
