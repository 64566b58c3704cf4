r"""`jgen solve`: linear inverse problems with a trained diffusion model as the prior.

``jgen solve --workdir DIR --task inpaint|superres|colorize|deblur|ct --input FILE --out FILE``
loads the model of a diffusion workdir (its EMA weights; the unconditional model, i.e. the
null label of a class-conditional one), builds the task's measurement operator, runs a
posterior sampler, and writes ``FILE.png`` (a grid, one row per image: measurement |
baseline(s) | reconstruction | ground truth) and ``FILE.npz``.

Units. Images are in [0, 1] (8-bit inputs are divided by 255) and measurements are in the
units of [0, 1] images, :math:`y = A x + \sigma_y\varepsilon` with ``--noise-std``
:math:`\sigma_y`. The diffusion family models :math:`x_m = 2x - 1` on [-1, 1], so the
samplers see :math:`y_m = 2y - A\mathbf 1 = A x_m + 2\sigma_y\varepsilon` (A is linear):
the same operator, a shifted measurement and twice the noise.

Input (``--input``):

* a PNG (grayscale or RGB, 8-bit) or an ``.npz`` with ``images``: uint8 in 0..255 (what
  `jgen.data` sources return, e.g. ``gather(get_source("digits", "test"), range(8))["image"]``)
  or float in [0, 1], ``[N, H, W, C]`` (or one ``[H, W, C]``) with the model's image
  shape. This is the benchmark mode: the command measures the images itself (noise drawn
  from ``--seed``) and reports PSNR and SSIM of the reconstruction and of each baseline
  against them;
* an ``.npz`` with ``measurements`` ``[N, *A.out_shape]`` (or one ``A.out_shape``), in
  [0, 1]-image units, made with the same task options: reconstruction only.

Tasks and their baselines: ``inpaint`` (`masking`, hiding ``--mask-box TOP,LEFT,BOTTOM,RIGHT``,
default the centre half; baseline the pseudo-inverse, zeros where hidden), ``superres``
(`downsampling` by ``--factor``; bicubic upsampling with `jax.image.resize`),
``colorize`` (`rgb_to_gray`, RGB models; the pseudo-inverse), ``deblur`` (circular
Gaussian `blur`, ``--blur-size``, ``--blur-sigma``; least squares by CGLS, the
pseudo-inverse), ``ct`` (parallel-beam Radon transform with ``--views`` angles in
[0, pi), square single-channel models; filtered back-projection and TV, `tv_reconstruct`
with ``--tv-lam``, non-negative, started from FBP).

Solvers (``--solver``): ``replacement`` (`replacement_sample` for inpainting; for the
other tasks `projection_sample`, the same data-consistency step with the operator's
pseudo-inverse, least squares for deblurring, and a normalised filtered
back-projection for CT: Song et al. 2022's sinogram-domain consistency), ``repaint``
(`repaint_sample`, inpainting only, on the discrete schedule matching the model's SDE,
or a DDPM model's own schedule) and ``dps`` (`dps_sample`, any task, ``--step-scale``).
Replacement and RePaint need noiseless measurements to be exact; DPS models the noise.
For the replacement solver on masks, super-resolution and colorization the output is
made exactly consistent with y in [0, 1] units (``x - A^+ A x + A^+ y``), so observed
pixels are reproduced bit for bit. Reconstructions are clipped to [0, 1] before the
metrics (the data's range); the baselines too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgen.inverse.operators import (
    LinearOperator,
    blur,
    downsampling,
    gaussian_kernel,
    least_squares,
    make_operator,
    masking,
    operator_norm,
    rgb_to_gray,
)
from jgen.inverse.posterior import dps_sample, repaint_sample, replacement_sample
from jgen.inverse.projection import projection_sample
from jgen.inverse.quality import psnr, ssim, ssim_sigma_for
from jgen.inverse.radon import backproject, fbp, parallel_beam_angles, radon
from jgen.inverse.tv import tv_reconstruct
from jgen.sde.adapters import discrete_schedule_from_sde, eps_fn_from_score
from jgen.sde.sde import VPSDE
from jgen.typing import Array

TASKS = ("inpaint", "superres", "colorize", "deblur", "ct")
SOLVERS = ("replacement", "repaint", "dps")


# ----------------------------------------------------------------------------- the prior


class Prior(NamedTuple):
    """A trained diffusion model as functions of its parameters (model pixels on [-1, 1]).

    Attributes:
      params: the evaluation (EMA) parameters, on one device.
      score_of: ``score_of(params) -> score_fn(x, t)`` on `sde` (sde and edm
        formulations), else None.
      sde: the forward `LinearSDE` (None for DDPM models).
      eps_of: ``eps_of(params) -> eps_fn(x, n)`` on `schedule` (DDPM models), else None.
      schedule: a DDPM model's `DiscreteSchedule`, else None.
      image_shape: ``(H, W, C)``.
      formulation: "ddpm", "sde" or "edm".
      step: the checkpoint's training step.
    """

    params: Any
    score_of: Callable | None
    sde: Any
    eps_of: Callable | None
    schedule: Any
    image_shape: tuple[int, int, int]
    formulation: str
    step: int


def load_prior(workdir: str) -> Prior:
    """The diffusion model of a `jgen train` workdir (newest checkpoint) as a `Prior`.

    The network and the formulation's conversions are rebuilt here exactly as
    `jgen.families.diffusion.build` builds them for its samplers (the family exposes
    samplers, not the score itself); a conditional model is used through its null
    condition (the null label, or the condition encoder's learned null for captions,
    vectors and images), i.e. as the unconditional model that condition dropout trains.

    Raises:
      FileNotFoundError / ConfigError: no run or no checkpoint in the workdir.
      ValueError: the run is not a diffusion model.
    """
    from jgen.families.diffusion import _network, model_config
    from jgen.losses.diffusion import edm_precondition
    from jgen.sde import VESDE, get_schedule, get_sde, to_eps, to_score
    from jgen.sde.sde import _expand
    from jgen.train.loop import eval_params, restore_for_inference

    run, state, step = restore_for_inference(workdir)
    config = run.config
    if config.model.family != "diffusion":
        raise ValueError(f"jgen solve needs a diffusion model as the prior; the run in {workdir!r} is "
                         f"model.family={config.model.family!r}. Train one with e.g. "
                         f"experiments/diffusion/configs/mnist_sde.py.")
    m = model_config()
    m.update(config.model)
    image_shape = tuple(int(d) for d in run.info.image_shape)
    num_classes = int(run.spec.num_classes)
    cond = run.spec.condition if run.spec.condition is not None and run.spec.condition.kind != "label" else None
    channels = image_shape[-1]
    learned_variance = m.formulation == "ddpm" and bool(m.learned_variance)
    _, apply = _network(m, image_shape, num_classes, channels * (2 if learned_variance else 1), cond)
    # One device: the sampler is one batch; replicated parameters would repeat it per device.
    params = jax.device_put(eval_params(state, config), jax.devices()[0])

    def null_labels(x):  # the unconditional model of a conditional network (condition dropout trained it)
        if cond is not None:  # any condition, dropped: the encoder's learned null condition
            b = x.shape[0]
            return jnp.zeros((b, *cond.shape), cond.dtype), jnp.ones((b,), bool)
        return jnp.full((x.shape[0],), num_classes, jnp.int32) if num_classes else None

    score_of = eps_of = sde = schedule = None
    if m.formulation == "sde":
        kwargs = ({"sigma_min": float(m.sigma_min), "sigma_max": float(m.sigma_max)} if m.sde == "ve"
                  else {"beta_min": float(m.beta_min), "beta_max": float(m.beta_max)})
        sde = get_sde(m.sde, t_min=float(m.t_min), **kwargs)

        def score_of(params):
            def score_fn(x, t):
                alpha, sigma = sde.marginal(t)
                out = apply(params, x, float(m.time_scale) * t, null_labels(x))
                return to_score(out, x, alpha, sigma, m.prediction)
            return score_fn
    elif m.formulation == "edm":
        sde = VESDE(sigma_min=float(m.edm_sigma_min), sigma_max=float(m.edm_sigma_max), t_min=1e-5)
        denoiser = edm_precondition(lambda p, x, c, y: apply(p, x, c, y), sigma_data=float(m.sigma_data))

        def score_of(params):
            def score_fn(x, t):
                sigma = sde.marginal(t)[1]
                return (denoiser(params, x, sigma, null_labels(x)) - x) / _expand(sigma ** 2, x)
            return score_fn
    else:
        schedule = get_schedule(m.schedule, int(m.num_timesteps))

        def eps_of(params):
            def eps_fn(x, n):
                out = apply(params, x, n, null_labels(x))
                out = out[..., :channels] if learned_variance else out
                alpha, sigma = schedule.marginal(n)
                return to_eps(out, x, alpha, sigma, m.prediction)
            return eps_fn
    return Prior(params, score_of, sde, eps_of, schedule, image_shape, str(m.formulation), int(step))


# ----------------------------------------------------------------------------- tasks


class Task(NamedTuple):
    """A measurement model and its classical reconstructions (all in [0, 1] image units).

    Attributes:
      name: one of `TASKS`.
      A: the operator on ``[B, H, W, C]`` images.
      inverse: B for `projection_sample` (None: ``A.pinv``).
      mask: the inpainting mask ``[H, W, C]`` (1 = observed), else None.
      baselines: ``{name: y -> x}``, the classical reconstructions.
      show: ``y -> [B, H, W, C]``, a picture of the measurement for the grid.
      exact_pinv: ``A.pinv`` is the Moore-Penrose inverse (masks, pooling, gray).
      options: the options the task was built with (for the report).
    """

    name: str
    A: LinearOperator
    inverse: Callable | None
    mask: np.ndarray | None
    baselines: dict[str, Callable[[Array], Array]]
    show: Callable[[Array], Array]
    exact_pinv: bool
    options: dict


def _parse_box(box, h: int, w: int) -> tuple[int, int, int, int]:
    if box is None:
        return h // 4, w // 4, h - h // 4, w - w // 4
    parts = box.split(",") if isinstance(box, str) else list(box)
    try:
        top, left, bottom, right = (int(p) for p in parts)
    except (ValueError, TypeError):
        raise ValueError(f"--mask-box must be four ints TOP,LEFT,BOTTOM,RIGHT (pixels, bottom/right exclusive), "
                         f"e.g. 2,2,6,6; received {box!r}.") from None
    if not (0 <= top < bottom <= h and 0 <= left < right <= w):
        raise ValueError(f"--mask-box {top},{left},{bottom},{right} must satisfy 0 <= TOP < BOTTOM <= {h} and "
                         f"0 <= LEFT < RIGHT <= {w} (the image is {h}x{w}).")
    return top, left, bottom, right


def ct_operator(image_size: int, views: int) -> tuple[LinearOperator, np.ndarray]:
    """The parallel-beam Radon transform on ``[B, N, N, 1]`` images with `views` angles in
    [0, pi) and N detectors, as a `LinearOperator` to ``[B, K, N, 1]`` sinograms."""
    angles = parallel_beam_angles(views)
    n = image_size
    A = make_operator(lambda x: radon(x, angles), lambda y: backproject(y, angles, n),
                      (n, n, 1), (len(angles), n, 1), name="radon")
    return A, angles


def fbp_inverse(A: LinearOperator, angles, image_size: int, *, num_iters: int = 30) -> Callable[[Array], Array]:
    r"""Filtered back-projection divided by :math:`\lambda_{max}(\mathrm{FBP}\,A)` (power
    iteration, +2%), so that the consistency step :math:`x + \lambda B(y - Ax)` with
    :math:`\lambda \le 1` never overshoots: with few views FBP∘A has eigenvalues up to
    about 12 (8 of 64 px views) on streak-like components, while smooth images sit near 1."""
    op = make_operator(lambda x: fbp(A.forward(x), angles, image_size), lambda x: fbp(A.forward(x), angles,
                                                                                       image_size),
                       A.in_shape, A.in_shape, name="fbp*radon")
    lam_max = 1.02 * float(operator_norm(op, num_iters=num_iters))  # symmetric PSD: norm = top eigenvalue
    return lambda r: fbp(r, angles, image_size) / lam_max


def make_task(name: str, image_shape, *, mask_box=None, factor: int = 2, views: int = 18, blur_size: int = 5,
              blur_sigma: float = 1.0, tv_lam: float = 0.3, tv_iters: int = 300, cg_iters: int = 30) -> Task:
    """Builds the operator, its baselines and its picture for task `name` (see the module docstring)."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; choose one of {TASKS}.")
    h, w, c = (int(d) for d in image_shape)
    shape = (h, w, c)
    resize = jax.image.resize
    if name == "inpaint":
        top, left, bottom, right = _parse_box(mask_box, h, w)
        mask = np.ones(shape, np.float32)
        mask[top:bottom, left:right] = 0.0
        A = masking(mask)
        return Task(name, A, None, mask, {"pinv": A.pinv}, lambda y: y, True,
                    {"mask_box": [top, left, bottom, right]})
    if name == "superres":
        A = downsampling(factor, shape)
        bicubic = lambda y: resize(y, (y.shape[0], *shape), "bicubic")
        return Task(name, A, None, None, {"bicubic": bicubic}, A.pinv, True, {"factor": factor})
    if name == "colorize":
        if c != 3:
            raise ValueError(f"--task colorize needs an RGB model (3 channels); this model's images are "
                             f"{h}x{w}x{c}.")
        A = rgb_to_gray(shape)
        return Task(name, A, None, None, {"pinv": A.pinv}, lambda y: jnp.repeat(y, 3, axis=-1), True, {})
    if name == "deblur":
        A = blur(gaussian_kernel(blur_size, blur_sigma), shape)
        lsq = lambda y: least_squares(A, y, num_iters=cg_iters)
        inverse = lambda r: least_squares(A, r, num_iters=10, lam=1e-3)
        return Task(name, A, inverse, None, {"least-squares": lsq}, lambda y: y, False,
                    {"blur_size": blur_size, "blur_sigma": blur_sigma})
    if h != w or c != 1:
        raise ValueError(f"--task ct needs square single-channel images; this model's images are {h}x{w}x{c}.")
    A, angles = ct_operator(h, views)
    fbp_fn = lambda y: fbp(y, angles, h)
    tv_fn = lambda y: tv_reconstruct(A, y, lam=tv_lam, num_iters=tv_iters, nonneg=True, x0=fbp_fn(y)).x

    def show(y):  # the sinogram (angles down, detectors across) stretched to the image size
        y = y / jnp.maximum(jnp.max(y, axis=(1, 2, 3), keepdims=True), 1e-6)
        return resize(y, (y.shape[0], h, w, 1), "nearest")

    return Task(name, A, fbp_inverse(A, angles, h), None, {"fbp": fbp_fn, "tv": tv_fn}, show, False,
                {"views": views, "tv_lam": tv_lam, "tv_iters": tv_iters})


# ----------------------------------------------------------------------------- solving


def reconstruct(prior: Prior, task: Task, y: Array, *, solver: str = "replacement", steps: int = 100,
                seed: int = 0, noise_std: float = 0.0, step_scale: float = 1.0, weight: float = 1.0,
                resample_steps: int = 5) -> tuple[np.ndarray, int]:
    """Posterior reconstruction of measurements `y` ([N, *A.out_shape], [0, 1] units).

    Returns:
      ``(x [N, H, W, C] in [0, 1] (float32, numpy), nfe)``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"Unknown solver {solver!r}; choose one of {SOLVERS}.")
    A = task.A
    y = jnp.asarray(y, jnp.float32)
    shape = (y.shape[0], *A.in_shape)
    y_m = 2.0 * y - A.forward(jnp.ones((1, *A.in_shape), jnp.float32))  # = A (2x - 1) + 2 noise
    if solver in ("replacement", "dps") and prior.score_of is None:
        raise ValueError(f"--solver {solver} needs a continuous-time model (formulation 'sde' or 'edm'); this one "
                         f"is a DDPM ({prior.formulation!r}). Use --solver repaint for inpainting.")
    if solver == "repaint":
        if task.mask is None:
            raise ValueError(f"--solver repaint only inpaints (a mask); for --task {task.name} use replacement "
                             f"or dps.")
        if prior.eps_of is None and not isinstance(prior.sde, VPSDE):
            raise ValueError(f"--solver repaint runs on a DDPM schedule and needs a variance-preserving model "
                             f"(VP or sub-VP SDE, or DDPM); this one's SDE is {type(prior.sde).__name__}. Use "
                             f"--solver replacement.")

    def run(params, key, y_m):
        if solver == "repaint":
            if prior.eps_of is not None:
                eps_fn, schedule = prior.eps_of(params), prior.schedule
            else:
                eps_fn = eps_fn_from_score(prior.score_of(params), prior.sde, steps)
                schedule = discrete_schedule_from_sde(prior.sde, steps)
            return repaint_sample(key, eps_fn, task.mask, y_m, shape, schedule=schedule,
                                  resample_steps=resample_steps)
        score_fn = prior.score_of(params)
        if solver == "dps":
            return dps_sample(key, score_fn, A, y_m, shape, sde=prior.sde, num_steps=steps,
                              noise_std=2.0 * noise_std, step_scale=step_scale)
        if task.mask is not None and weight == 1.0:
            return replacement_sample(key, score_fn, A, y_m, shape, sde=prior.sde, num_steps=steps)
        return projection_sample(key, score_fn, A, y_m, shape, sde=prior.sde, num_steps=steps,
                                 inverse=task.inverse, weight=weight)

    x_m, info = jax.jit(run)(prior.params, jax.random.PRNGKey(seed), y_m)
    x = jnp.clip((x_m + 1.0) / 2.0, 0.0, 1.0)
    if solver == "replacement" and task.exact_pinv and weight == 1.0:
        # Consistency with y in [0, 1] units, in replacement form (x - A+Ax + A+y): for a mask
        # the observed pixels become y bit for bit.
        x = x - A.pinv(A.forward(x)) + A.pinv(y)
    return np.asarray(x, np.float32), int(info.nfe)


# ----------------------------------------------------------------------------- files


def read_input(path: str, image_shape, out_shape) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(images [N, H, W, C] in [0, 1] or None, measurements [N, *out_shape] or None)`` from a
    PNG or an .npz (see the module docstring)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input {path!r} does not exist.")
    image_shape = tuple(image_shape)
    if path.lower().endswith(".png"):
        from PIL import Image

        img = Image.open(path)
        mode = "L" if image_shape[-1] == 1 else "RGB"
        if img.mode not in ("L", "RGB", "RGBA", "P", "LA"):
            raise ValueError(f"--input {path!r}: unsupported PNG mode {img.mode!r}; save an 8-bit grayscale or "
                             f"RGB PNG.")
        if img.mode in ("RGB", "RGBA") and mode == "L":
            raise ValueError(f"--input {path!r} is a colour PNG but the model's images have 1 channel "
                             f"{image_shape}; convert it to grayscale first.")
        images = np.asarray(img.convert(mode), np.uint8).reshape(1, img.height, img.width, -1)
    elif path.lower().endswith(".npz"):
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
        if "measurements" in data:
            y = np.asarray(data["measurements"], np.float32)
            if y.shape == tuple(out_shape):
                y = y[None]
            if y.shape[1:] != tuple(out_shape):
                raise ValueError(f"--input {path!r}: 'measurements' has shape {y.shape}, but the task's operator "
                                 f"gives {tuple(out_shape)} per image; expected [N, {', '.join(map(str, out_shape))}]"
                                 f" (check --views / --factor / the model).")
            return None, y
        if "images" not in data:
            raise ValueError(f"--input {path!r} must hold 'images' (uint8 0..255 or float in [0, 1], [N, H, W, C]) "
                             f"or 'measurements'; it has {sorted(data)}.")
        images = data["images"]
    else:
        raise ValueError(f"--input must be a .png or an .npz file; received {path!r}.")
    if images.ndim == len(image_shape):
        images = images[None]
    if images.ndim == 3 and image_shape[-1] == 1:
        images = images[..., None]
    if images.shape[1:] != image_shape:
        raise ValueError(f"--input {path!r}: images of shape {images.shape[1:]} (as [H, W, C]) do not match the "
                         f"model's {image_shape}.")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0, None
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"--input {path!r}: images must be uint8 (0..255) or float in [0, 1]; got dtype "
                         f"{images.dtype}.")
    images = np.asarray(images, np.float32)
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"--input {path!r}: float images must lie in [0, 1] (got range [{images.min():g}, "
                         f"{images.max():g}]); give uint8 0..255 or scale them.")
    return images, None


def _metrics(x: np.ndarray, truth: np.ndarray, sigma: float) -> dict[str, np.ndarray]:
    x, truth = jnp.asarray(np.clip(x, 0.0, 1.0)), jnp.asarray(truth)
    return {"psnr": np.asarray(psnr(x, truth)), "ssim": np.asarray(ssim(x, truth, sigma=sigma))}


def solve(workdir: str, task: str, input_path: str, out: str, *, solver: str = "replacement", steps: int = 100,
          seed: int = 0, noise_std: float = 0.0, step_scale: float = 1.0, weight: float = 1.0,
          resample_steps: int = 5, **task_options) -> dict:
    """The body of `jgen solve`: reads, measures (benchmark mode), reconstructs, writes, reports.

    Returns:
      The JSON-able report (paths, settings, NFE, and mean PSNR/SSIM per method in
      benchmark mode).
    """
    from jgen.train.artifacts import save_image_grid

    stem, ext = os.path.splitext(out)
    if ext.lower() not in (".png", ".npz"):
        raise ValueError(f"--out must end in .png or .npz (both FILE.png and FILE.npz are written); "
                         f"received {out!r}.")
    if task not in TASKS:
        raise ValueError(f"Unknown --task {task!r}; choose one of {TASKS}.")
    if solver not in SOLVERS:
        raise ValueError(f"Unknown --solver {solver!r}; choose one of {SOLVERS}.")
    if not (np.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"--noise-std must be a number >= 0 (in [0, 1] image units); received {noise_std!r}.")
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"--input {input_path!r} does not exist.")
    prior = load_prior(workdir)
    spec = make_task(task, prior.image_shape, **task_options)
    A = spec.A
    truth, y = read_input(input_path, prior.image_shape, A.out_shape)
    if truth is not None:  # benchmark mode: measure the clean images ourselves
        clean = A.forward(jnp.asarray(truth))
        noise = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), 1), clean.shape)
        y = np.asarray(clean + noise_std * noise, np.float32)
    x, nfe = reconstruct(prior, spec, y, solver=solver, steps=steps, seed=seed, noise_std=noise_std,
                         step_scale=step_scale, weight=weight, resample_steps=resample_steps)
    baselines = {k: np.asarray(jax.jit(f)(jnp.asarray(y)), np.float32) for k, f in spec.baselines.items()}

    columns = [np.asarray(spec.show(jnp.asarray(y)))] + [np.clip(b, 0, 1) for b in baselines.values()] + [x]
    if truth is not None:
        columns.append(truth)
    grid = np.stack(columns, axis=1).reshape(-1, *prior.image_shape)
    save_image_grid(np.clip(grid, 0.0, 1.0), stem + ".png", ncols=len(columns))
    arrays = {"reconstruction": x, "measurements": y, **{f"baseline_{k}": v for k, v in baselines.items()}}
    if spec.mask is not None:
        arrays["mask"] = spec.mask
    report = {"png": stem + ".png", "npz": stem + ".npz", "workdir": workdir, "step": prior.step, "task": task,
              "solver": solver, "steps": steps, "nfe": nfe, "seed": seed, "noise_std": noise_std,
              "num_images": int(x.shape[0]), "options": spec.options,
              "columns": ["measurement", *baselines, "reconstruction"] + (["ground truth"] if truth is not None
                                                                         else [])}
    if truth is not None:
        arrays["ground_truth"] = truth
        sigma = ssim_sigma_for(*prior.image_shape[:2])
        scores = {"reconstruction": _metrics(x, truth, sigma)}
        scores.update({f"baseline:{k}": _metrics(v, truth, sigma) for k, v in baselines.items()})
        for name, s in scores.items():
            key = name.replace("baseline:", "baseline_")
            arrays[f"psnr_{key}"], arrays[f"ssim_{key}"] = s["psnr"], s["ssim"]
        report["ssim_sigma"] = sigma
        report["metrics"] = {name: {"psnr": float(np.mean(s["psnr"])), "ssim": float(np.mean(s["ssim"]))}
                             for name, s in scores.items()}
    np.savez(stem + ".npz", **arrays)
    return report


__all__ = ["SOLVERS", "TASKS", "Prior", "Task", "ct_operator", "fbp_inverse", "load_prior", "make_task",
           "read_input", "reconstruct", "solve"]
