"""`jgen sample --condition ...`: a condition written on the command line, parsed into a
raw condition for `num` samples (see `jgen.conditioning.spec` for the raw formats).

    --condition 3                          label 3 (also "label=3"; "label=1,2,3" cycles)
    --condition "text=a large 7 in the top left"   a caption ("|" separates several,
                                            which are cycled over the samples)
    --condition "vector=1,0,0,...,0.25"    a vector (or "vector=FILE.npy", [D] or [N, D])
    --condition image=FILE                 a measurement in [0, 1] (.png, .npy, .npz):
                                            superres: the low-res image; colorize: the
                                            gray image (an RGB file is converted to luma)
    --condition "image=FILE;box=T,L,B,R"   inpaint: the full image and the hidden box
    --condition split=test                 the conditions of a split's first examples
"""

from __future__ import annotations

import os

import numpy as np

from jgen.conditioning.spec import ConditionSpec, box_mask, check_condition


def _cycle(rows: np.ndarray, num: int) -> np.ndarray:
    return rows[np.arange(num) % len(rows)]


def read_array(path: str) -> np.ndarray:
    """An image or array file as float32 in [0, 1] ([h, w, c] or [N, h, w, c])."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--condition: no file {path!r}.")
    if path.endswith(".npy"):
        arr = np.load(path)
    elif path.endswith(".npz"):
        with np.load(path) as f:
            arr = f[f.files[0]]
    elif path.lower().endswith((".png", ".jpg", ".jpeg")):
        from PIL import Image

        arr = np.asarray(Image.open(path))
        if arr.ndim == 2:
            arr = arr[..., None]
        arr = arr[..., :3].astype(np.float32) / 255.0
    else:
        raise ValueError(f"--condition: {path!r} is not .png, .jpg, .npy or .npz.")
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError(f"--condition: {path!r} holds values {arr.min():.3g}..{arr.max():.3g}; images are read "
                         "in [0, 1] (uint8 files are divided by 255). Rescale the array.")
    return arr


def parse_condition(spec: ConditionSpec | None, text: str, num: int, *, data_conditions=None) -> np.ndarray:
    """The raw condition [num, ...] that `text` describes for a model with `spec`.

    Args:
      spec: the model's ConditionSpec (None: unconditional, which is an error here).
      text: see the module doc.
      num: number of samples.
      data_conditions: `(split, num) -> raw conditions`, for "split=NAME".

    Raises:
      ValueError: a form that does not fit the model's condition kind, with the form
        that does.
    """
    if spec is None:
        raise ValueError("--condition was given, but this model is unconditional.")
    key, _, value = text.partition("=")
    if not _:
        key, value = {"label": ("label", text)}.get(spec.kind, (spec.kind, text))
    key = key.strip()
    if key == "split":
        if data_conditions is None:
            raise ValueError("--condition split=NAME needs the dataset; use it with `jgen sample`.")
        return np.asarray(data_conditions(value.strip(), num))
    forms = {"label": "label=K (or just K)", "tokens": "text=CAPTION", "vector": "vector=v1,v2,... or vector=FILE.npy",
             "image": "image=FILE" + (";box=T,L,B,R" if spec.operator == "inpaint" else "")}
    want = {"label": "label", "tokens": "text", "vector": "vector", "image": "image"}[spec.kind]
    if key != want:
        raise ValueError(f"--condition {text!r}: this model is {spec.kind}-conditional; write "
                         f"--condition {forms[spec.kind]!r} (or split=test for the test split's conditions).")
    if spec.kind == "label":
        try:
            ids = np.array([int(v) for v in value.split(",")], np.int32)
        except ValueError:
            raise ValueError(f"--condition {text!r}: labels are integers, e.g. label=3 or label=0,1,2.") from None
        return np.asarray(check_condition(spec, _cycle(ids, num), num, who="--condition"))
    if spec.kind == "tokens":
        from jgen.data.captioned_digits import tokenize

        captions = [c.strip() for c in value.split("|") if c.strip()]
        if not captions:
            raise ValueError("--condition text=...: give a caption, e.g. text=a small 3 in the top left.")
        tokens = tokenize(captions, spec.max_tokens)
        return np.asarray(check_condition(spec, _cycle(tokens, num), num, who="--condition"))
    if spec.kind == "vector":
        if os.path.isfile(value):
            rows = np.load(value).astype(np.float32).reshape(-1, spec.vector_dim)
        else:
            try:
                rows = np.array([[float(v) for v in value.split(",")]], np.float32)
            except ValueError:
                raise ValueError(f"--condition {text!r}: write vector=v1,v2,... ({spec.vector_dim} numbers) "
                                 "or vector=FILE.npy.") from None
        if rows.shape[-1] != spec.vector_dim:
            raise ValueError(f"--condition: the model's vectors have {spec.vector_dim} entries; received "
                             f"{rows.shape[-1]}.")
        return np.asarray(check_condition(spec, _cycle(rows, num), num, who="--condition"))
    path, _, rest = value.partition(";")
    arr = read_array(path.strip())
    if arr.ndim == 3:
        arr = arr[None]
    h, w, c = spec.image_shape
    if spec.operator == "inpaint":
        if not rest.strip().startswith("box="):
            raise ValueError("--condition image=FILE;box=T,L,B,R: an inpainting model needs the hidden box "
                             "(top, left, bottom, right in pixels).")
        box = [int(v) for v in rest.strip()[4:].split(",")]
        if arr.shape[1:] != (h, w, c):
            raise ValueError(f"--condition: an inpainting model reads the full {h}x{w}x{c} image; {path!r} is "
                             f"{list(arr.shape[1:])}.")
        m = box_mask(h, w, box)[None]
        arr = np.concatenate([arr * m, np.broadcast_to(m, (*arr.shape[:3], 1))], axis=-1)
    elif spec.operator == "colorize" and arr.shape[-1] == 3:
        arr = (arr @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    expected = spec.shape
    if tuple(arr.shape[1:]) != tuple(expected):
        raise ValueError(f"--condition: this model ({spec.operator}) reads measurements of shape "
                         f"{list(expected)}; {path!r} holds {list(arr.shape[1:])}.")
    return np.asarray(check_condition(spec, _cycle(arr, num), num, who="--condition"))
