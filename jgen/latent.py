"""Latent-space views of a trained latent-variable model: reconstructions,
interpolations, traversals and per-class sample grids, plus the PNG writers and the
`jgen latent` command that produces them from a trained workdir.

Everything here works on any `ModelSpec` that provides `encode(params, batch) -> z`
(the posterior mean) and `decode(params, z, labels=None) -> images in [0, 1]`
(`jgen.families.base`). The image functions are pure and compiled with `jax.jit`
(the spec is a static argument, so each spec compiles once per shape); the writers
and `latent_command` are the host-side edge.

Image grids are 5-D arrays `[rows, cols, H, W, C]`: rows are examples (or latent
dimensions, or classes), columns are the steps along each row.

References:
  Kingma, D. P. & Welling, M. (2014). Auto-Encoding Variational Bayes. ICLR.
    https://arxiv.org/abs/1312.6114 (Fig. 4: decoded grids over the latent space.)
  White, T. (2016). Sampling Generative Networks. https://arxiv.org/abs/1609.04468
    (Spherical interpolation between latent codes.)
  Burda, Y., Grosse, R. & Salakhutdinov, R. (2016). Importance Weighted
    Autoencoders. ICLR. https://arxiv.org/abs/1509.00519 (Sec. 5.2: active units,
    the latent dimensions whose posterior mean varies across the data.)
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jgen.families.base import ModelSpec
from jgen.train.artifacts import save_image_grid

LATENT_COMMANDS = ("reconstruct", "interpolate", "traverse", "classes")
DEFAULT_TRAVERSAL_VALUES = np.linspace(-3.0, 3.0, 9)
NUM_ACTIVE_DIMS = 8  # rows of a traversal when dims=None
ACTIVE_UNITS_EXAMPLES = 256  # examples `latent_command` ranks the dimensions over
_BATCH_KEYS = ("image", "label", "index", "tokens", "vector")


# ---- checks -----------------------------------------------------------------


def require_latent(spec: ModelSpec, *, family: str | None = None) -> None:
    """Raises ValueError unless `spec` has a latent space (encode and decode)."""
    if spec.encode is None or spec.decode is None:
        who = f"model.family={family!r}" if family else "This model family"
        raise ValueError(
            f"{who} has no latent space: its ModelSpec provides no encode/decode "
            f"(encode={spec.encode!r}, decode={spec.decode!r}, latent_dim={spec.latent_dim}). "
            "Reconstructions, interpolations and traversals need a latent-variable family "
            "such as model.family='vae'; use `jgen sample` for the others."
        )


def _model_batch(spec: ModelSpec, batch, who: str) -> dict:
    """The keys of `batch` that encode reads, checked: image (+ index, + label)."""
    if not hasattr(batch, "keys") or "image" not in batch:
        got = sorted(batch) if hasattr(batch, "keys") else type(batch).__name__
        raise ValueError(
            f"{who} expects a batch dict like jgen.data.gather returns "
            f"({{'image': uint8 [B, H, W, C], 'label': int [B], 'index': int [B]}}); got {got}."
        )
    if spec.num_classes and "label" not in batch:
        raise ValueError(
            f"{who}: the model is class-conditional (num_classes={spec.num_classes}), so the batch "
            f"needs a 'label' key; got keys {sorted(batch)}."
        )
    return {k: batch[k] for k in _BATCH_KEYS if k in batch}


def _labels(spec: ModelSpec, batch):
    """The batch's raw condition for a conditional model's decoder (None: unconditional).
    Image conditions are measured with a fixed key (the same holes on every call)."""
    cond = getattr(spec, "condition", None)
    if cond is not None and cond.kind != "label":
        from jgen.conditioning import condition_of

        return condition_of(cond, batch, jax.random.PRNGKey(0))
    return batch["label"] if spec.num_classes else None


# ---- pure, compiled image functions -----------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(spec, params, batch):
    return spec.decode(params, spec.encode(params, batch), _labels(spec, batch))


def reconstruct(spec: ModelSpec, params, batch) -> jax.Array:
    """decode(encode(x)): the decoder mean at the posterior mean of each example.

    Args:
      spec: a latent-variable `ModelSpec`.
      params: its parameters.
      batch: `{"image": uint8 [B, H, W, C], "index": int [B], "label": int [B]}` as
        `jgen.data.gather` returns (the family's preprocessing runs inside `encode`;
        a conditional model encodes and decodes with the batch's labels).

    Returns:
      Images [B, H, W, C] in [0, 1].
    """
    require_latent(spec)
    return _reconstruct(spec, params, _model_batch(spec, batch, "reconstruct"))


def _slerp_weights(z_a, z_b, t):
    """Spherical interpolation (White, 2016): z(t) = sin((1-t)w)/sin(w) a + sin(tw)/sin(w) b,
    w the angle between a and b; linear where a and b are (anti)parallel or zero."""
    dot = jnp.sum(z_a * z_b, axis=-1, keepdims=True)
    norms = jnp.linalg.norm(z_a, axis=-1, keepdims=True) * jnp.linalg.norm(z_b, axis=-1, keepdims=True)
    omega = jnp.arccos(jnp.clip(dot / jnp.where(norms > 0, norms, 1.0), -1.0, 1.0))[:, None, :]  # [B, 1, 1]
    sin_omega = jnp.sin(omega)
    degenerate = sin_omega < 1e-6
    safe = jnp.where(degenerate, 1.0, sin_omega)
    w_a = jnp.where(degenerate, 1.0 - t, jnp.sin((1.0 - t) * omega) / safe)
    w_b = jnp.where(degenerate, t, jnp.sin(t * omega) / safe)
    return w_a, w_b


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _interpolate(spec, params, batch_a, batch_b, steps, spherical):
    z_a, z_b = spec.encode(params, batch_a), spec.encode(params, batch_b)  # [B, D]
    t = jnp.linspace(0.0, 1.0, steps, dtype=z_a.dtype)[None, :, None]  # [1, S, 1]
    if spherical:
        w_a, w_b = _slerp_weights(z_a, z_b, t)
    else:
        w_a, w_b = 1.0 - t, t
    z = w_a * z_a[:, None, :] + w_b * z_b[:, None, :]  # [B, S, D]
    b, d = z_a.shape
    labels = _labels(spec, batch_a)
    if labels is not None:
        labels = jnp.repeat(jnp.asarray(labels), steps, axis=0)
    images = spec.decode(params, z.reshape(b * steps, d), labels)
    return images.reshape((b, steps) + images.shape[1:])


def interpolate(spec: ModelSpec, params, batch_a, batch_b, *, steps: int = 8,
                spherical: bool = False) -> jax.Array:
    """Decodes paths between the posterior means of paired examples.

    Row i goes from z_a = encode(batch_a)[i] (column 0) to z_b = encode(batch_b)[i]
    (column steps-1) at t = linspace(0, 1, steps): linearly, z(t) = (1-t) z_a + t z_b,
    or along the great circle (`spherical=True`, White 2016), which keeps the norm
    near the prior's typical shell. A conditional model decodes the whole row with
    batch_a's label (so the row shows the style changing under a fixed class).

    Args:
      spec: a latent-variable `ModelSpec`.
      params: its parameters.
      batch_a: start examples, a batch as in `reconstruct` ([B] examples).
      batch_b: end examples, the same batch size B.
      steps: points per path, including both ends (>= 2).
      spherical: slerp instead of linear interpolation.

    Returns:
      Images [B, steps, H, W, C] in [0, 1].
    """
    require_latent(spec)
    batch_a = _model_batch(spec, batch_a, "interpolate (batch_a)")
    batch_b = _model_batch(spec, batch_b, "interpolate (batch_b)")
    if np.shape(batch_a["image"])[0] != np.shape(batch_b["image"])[0]:
        raise ValueError(
            "interpolate pairs example i of batch_a with example i of batch_b, so they need the "
            f"same batch size; got {np.shape(batch_a['image'])[0]} and {np.shape(batch_b['image'])[0]}."
        )
    if not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"interpolate needs steps >= 2 (both end points); got steps={steps!r}.")
    return _interpolate(spec, params, batch_a, batch_b, int(steps), bool(spherical))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _active_dims(spec, params, batch, num):
    variance = jnp.var(spec.encode(params, batch), axis=0)
    return jax.lax.top_k(variance, num)[1]


def active_dims(spec: ModelSpec, params, batch, *, num: int = NUM_ACTIVE_DIMS) -> jax.Array:
    """The `num` latent dimensions whose posterior mean varies most over the batch.

    Burda et al. (2016) call a dimension active when Var_x E_q[z_d | x] is large;
    inactive ("collapsed") dimensions decode to nearly the same image whatever their
    value, so a traversal of them shows nothing. Ties (e.g. a batch of one example,
    where every variance is 0) go to the lower index.

    Returns:
      int32 [min(num, latent_dim)], in order of decreasing variance.
    """
    require_latent(spec)
    batch = _model_batch(spec, batch, "active_dims")
    latent_dim = spec.latent_dim or int(jax.eval_shape(spec.encode, params, batch).shape[-1])
    return _active_dims(spec, params, batch, min(int(num), latent_dim))


@functools.partial(jax.jit, static_argnums=0)
def _traversal(spec, params, batch, dims, values):
    z0 = spec.encode(params, batch)[0]  # [D]
    chosen = jax.nn.one_hot(dims, z0.shape[-1], dtype=bool)[:, None, :]  # [K, 1, D]
    z = jnp.where(chosen, values.astype(z0.dtype)[None, :, None], z0[None, None, :])  # [K, V, D]
    k, v, d = z.shape
    labels = _labels(spec, batch)
    if labels is not None:
        labels = jnp.broadcast_to(jnp.asarray(labels)[:1], (k * v, *jnp.shape(labels)[1:]))
    images = spec.decode(params, z.reshape(k * v, d), labels)
    return images.reshape((k, v) + images.shape[1:])


def traversal(spec: ModelSpec, params, batch, *, dims=None, values=DEFAULT_TRAVERSAL_VALUES) -> jax.Array:
    """Decodes the first example's posterior mean with one latent dimension varied.

    Row i sets dimension dims[i] of z0 = encode(batch)[0] to each of `values` in turn
    (absolute values, in units of the N(0, I) prior's standard deviation) and keeps
    every other dimension at z0. A conditional model decodes with the first example's
    label.

    Args:
      spec: a latent-variable `ModelSpec`.
      params: its parameters.
      batch: a batch as in `reconstruct`; example 0 is traversed, and with dims=None
        the whole batch ranks the dimensions.
      dims: int latent dimensions, one per row; None picks the 8 "active" dimensions,
        those with the largest posterior-mean variance over the batch (`active_dims`;
        fewer if latent_dim < 8), most active first.
      values: float [V], the values each dimension takes (default -3..3 in 9 steps).

    Returns:
      Images [len(dims), len(values), H, W, C] in [0, 1].
    """
    require_latent(spec)
    batch = _model_batch(spec, batch, "traversal")
    if dims is None:
        dims = active_dims(spec, params, batch)
    dims, values = jnp.asarray(dims), jnp.asarray(values)
    latent_dim = spec.latent_dim or int(jax.eval_shape(spec.encode, params, batch).shape[-1])
    if dims.ndim != 1 or not jnp.issubdtype(dims.dtype, jnp.integer) or dims.size == 0:
        raise ValueError(f"traversal: dims must be a non-empty 1-D list of ints; got {dims.dtype} {list(dims.shape)}.")
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"traversal: values must be a non-empty 1-D array; got shape {list(values.shape)}.")
    try:
        concrete = np.asarray(dims)
    except jax.errors.TracerArrayConversionError:  # traced dims (traversal under jit): unchecked
        concrete = None
    if concrete is not None and (concrete.min() < 0 or concrete.max() >= latent_dim):
        raise ValueError(f"traversal: dims must lie in [0, {latent_dim}) (latent_dim={latent_dim}); "
                         f"got {concrete.tolist()}.")
    return _traversal(spec, params, batch, dims, values)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _conditional_grid(spec, params, key, per_class):
    labels = jnp.repeat(jnp.arange(spec.num_classes), per_class).reshape(spec.num_classes, per_class)
    return jax.vmap(lambda y: spec.sample(params, key, per_class, y))(labels)


def conditional_grid(spec: ModelSpec, params, key, *, per_class: int = 8) -> jax.Array:
    """Samples of a class-conditional model, one row per class.

    Every row uses the same `key`, so for the VAE family every row decodes the same
    `per_class` prior draws z ~ N(0, I): a column holds one "style" rendered as each
    class, and the rows differ only through the label.

    Args:
      spec: a `ModelSpec` with num_classes > 0 (a config with model.conditional=true).
      params: its parameters.
      key: PRNG key of the prior draws.
      per_class: samples (columns) per class.

    Returns:
      Images [num_classes, per_class, H, W, C] in [0, 1].
    """
    if not spec.num_classes:
        raise ValueError(
            "conditional_grid needs a class-conditional model (spec.num_classes > 0); this one is "
            "unconditional. Train it with --config.model.conditional=true on a labelled dataset."
        )
    if not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"conditional_grid needs per_class >= 1; got {per_class!r}.")
    return _conditional_grid(spec, params, key, int(per_class))


# ---- PNG writers ---------------------------------------------------------------


def _unit(images) -> np.ndarray:
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def save_grid(path: str, rows) -> str:
    """Writes images [R, C, H, W, ch] (floats in [0, 1], or uint8) as an R x C PNG grid."""
    rows = _unit(rows)
    if rows.ndim != 5:
        raise ValueError(f"save_grid expects images [rows, cols, H, W, C]; got shape {list(rows.shape)}.")
    r, c = rows.shape[:2]
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return save_image_grid(rows.reshape((r * c,) + rows.shape[2:]), path, ncols=c)


def save_reconstructions(path: str, images, recon) -> str:
    """Writes the originals [B, H, W, C] (in [0, 1], or uint8) in a row above their
    reconstructions [B, H, W, C]."""
    images, recon = _unit(images), _unit(recon)
    if images.shape != recon.shape:
        raise ValueError(f"save_reconstructions: images {list(images.shape)} and reconstructions "
                         f"{list(recon.shape)} must have the same shape.")
    return save_grid(path, np.stack([images, recon]))


def save_interpolation(path: str, paths, *, start=None, end=None) -> str:
    """Writes interpolations [B, S, H, W, C], one path per row, optionally framed by
    the original start and end images [B, H, W, C] as extra first and last columns."""
    paths = _unit(paths)
    cols = ([_unit(start)[:, None]] if start is not None else []) + [paths]
    cols += [_unit(end)[:, None]] if end is not None else []
    return save_grid(path, np.concatenate(cols, axis=1))


# ---- from a trained workdir ---------------------------------------------------


def load_examples(config, split: str, num: int, *, seed: int = 0, label: int | None = None) -> dict:
    """Up to `num` examples of the config's dataset split (a seeded random selection,
    only of class `label` if given), as a `gather` batch."""
    from jgen.data import gather, get_source

    source = get_source(config.data.name, split, data_dir=config.data.get("data_dir") or None)
    order = np.random.default_rng(seed).permutation(len(source))
    if label is None:
        return gather(source, order[:num])
    found = []
    for start in range(0, len(order), 1024):
        chunk = gather(source, order[start:start + 1024])
        if "label" not in chunk:
            raise ValueError(f"label={label} selects examples by class, but dataset "
                             f"{config.data.name!r} has no labels.")
        found.extend(chunk["index"][chunk["label"] == label].tolist())
        if len(found) >= num:
            break
    if not found:
        raise ValueError(f"No example of class label={label} in split {split!r} of {config.data.name!r}.")
    return gather(source, found[:num])


def latent_command(workdir: str, what: str, out: str, *, split: str = "test", num: int = 8,
                   seed: int = 0, label: int | None = None) -> str:
    """`jgen latent {reconstruct|interpolate|traverse|classes}`: a PNG from a trained workdir.

    Restores the newest checkpoint (EMA parameters if the run kept them), reads
    examples of `split` (a random selection fixed by `seed`; only class `label` if
    given) and writes:

    - "reconstruct": `num` examples (top row) above their reconstructions.
    - "interpolate": `num` rows, each a linear path of 8 steps between two examples'
      posterior means, framed by the two originals.
    - "traverse": one example's traversal, one row per latent dimension: the `num`
      most active dimensions ranked over up to 256 examples; columns -3..3.
    - "classes": a conditional model's samples, one row per class, `num` per row
      (`label` does not apply).

    Returns:
      `out`.
    """
    from jgen.train.loop import eval_params, restore_for_inference

    if what not in LATENT_COMMANDS:
        raise ValueError(f"Unknown latent command {what!r}; use one of {', '.join(LATENT_COMMANDS)}.")
    if not str(out).endswith(".png"):
        raise ValueError(f"The latent views are written as PNG: out must end in .png; got {out!r}.")
    if num < 1:
        raise ValueError(f"num must be >= 1; got {num}.")
    if what == "classes" and label is not None:
        raise ValueError("label selects the examples to encode; 'classes' draws every class, so it takes no label.")
    run, state, _ = restore_for_inference(workdir)
    spec, config = run.spec, run.config
    require_latent(spec, family=config.model.get("family"))
    params = jax.device_get(eval_params(state, config))  # host copy: run on one device
    if what == "classes":
        if not spec.num_classes:
            raise ValueError(
                f"'classes' needs a class-conditional model, and the run in {workdir} has "
                "model.conditional=false. Train with --config.model.conditional=true."
            )
        return save_grid(out, conditional_grid(spec, params, jax.random.PRNGKey(seed), per_class=num))
    if what == "reconstruct":
        batch = load_examples(config, split, num, seed=seed, label=label)
        return save_reconstructions(out, batch["image"], reconstruct(spec, params, batch))
    if what == "interpolate":
        batch = load_examples(config, split, 2 * num, seed=seed, label=label)
        pairs = len(batch["index"]) // 2
        if pairs < 1:
            raise ValueError(f"interpolate needs two examples; split {split!r} gave {len(batch['index'])}.")
        a = {k: v[:pairs] for k, v in batch.items()}
        b = {k: v[pairs:2 * pairs] for k, v in batch.items()}
        return save_interpolation(out, interpolate(spec, params, a, b), start=a["image"], end=b["image"])
    batch = load_examples(config, split, max(num, ACTIVE_UNITS_EXAMPLES), seed=seed, label=label)
    dims = active_dims(spec, params, batch, num=num)
    return save_grid(out, traversal(spec, params, batch, dims=dims))
