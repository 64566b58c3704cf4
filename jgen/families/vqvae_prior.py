r"""The learned prior of a VQ-VAE: the second stage of the two-stage VQ-VAE recipe.

Stage 1 trains a VQ-VAE (`jgen.families.vqvae`), which maps an image x to a code map
:math:`k(x) \in \{0..K-1\}^{h \times w}`, the nearest codebook entry of each encoding.
Its own prior is uniform, so its samples are noise. Stage 2 (this family) freezes the
VQ-VAE and fits an autoregressive model to the code maps of the training images,

.. math::
    p_\theta(k) = \prod_{i=1}^{hw} p_\theta(k_i \mid k_{<i}),
    \qquad \min_\theta\; \mathbb{E}_x\left[-\log p_\theta(k(x))\right],

a categorical over the K codes at every position of the h x w grid, in raster order.
Sampling draws a code map ancestrally (one compiled loop) and decodes it with the
frozen decoder, :math:`x = \mathrm{mean}\; p(x \mid e_k)`.

The bound. With the deterministic one-hot posterior :math:`q(k \mid x) = \delta_{k(x)}`
the ELBO's KL term is :math:`\mathrm{KL}(q \,\|\, p) = -\log p(k(x))` (q has zero
entropy), so

.. math::
    -\log p(x) \le -\log p(x \mid e_{k(x)}) - \log p_\theta(k(x)),

and with the uniform prior the second term is :math:`hw \log K` (the stage-1 bound).
`jgen eval` reports both, as "ELBO (learned code prior)" and "ELBO (uniform code
prior)", plus the prior's exact NLL of the code maps (nats per image and bits per
code) and the reconstruction NLL.

`config.model`:

- `vqvae_workdir` (required): the `--workdir` of a trained VQ-VAE run. Its saved
  config.json fixes the architecture; its newest checkpoint's (EMA, if any) weights
  are copied into this run's parameters at initialisation (`ModelSpec.data_init`),
  so the prior's checkpoints hold the frozen VQ-VAE too and sampling or evaluating
  the prior run later needs only the stage-1 config.json, not its checkpoint.
- `prior`: "gated_pixelcnn" (no blind spot) or "pixelcnn" over the one-hot code map
  (`PixelCNN(..., data_channels=1)`: one categorical of K values per position), or
  "transformer" (decoder-only over the h*w codes as tokens, a beginning-of-sequence
  token first, sampled with the KV cache). The modules, loss and samplers are the autoregressive
  family's (`jgen.models.autoregressive`, `jgen.losses.autoregressive`,
  `jgen.samplers.ancestral`, `jgen.samplers.kv_cache`).

Codes are computed *inside the compiled train step* from the batch the ordinary data
pipeline delivers (no precomputed code file): it keeps `jgen train` unchanged, and
with dynamic binarisation every epoch gives the prior freshly binarised images' codes,
i.e. samples of the same distribution the VQ-VAE was trained on. The cost is one
encoder forward pass per step (no backward: the VQ-VAE's parameters sit behind a
`stop_gradient` and the optimizer leaves them unchanged, `optax.set_to_zero`).

References:
  van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning",
    NeurIPS 2017. https://arxiv.org/abs/1711.00937 (Sec. 3.3, 4: the PixelCNN prior
    over the latents, trained after the VQ-VAE.)
  Razavi, van den Oord & Vinyals, "Generating Diverse High-Fidelity Images with
    VQ-VAE-2", NeurIPS 2019. https://arxiv.org/abs/1906.00446
  van den Oord et al., "Conditional Image Generation with PixelCNN Decoders",
    NeurIPS 2016. https://arxiv.org/abs/1606.05328
"""

import math
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from jgen.data import get_preprocess
from jgen.families.base import ModelSpec, check_image_batch
from jgen.families.vqvae import code_model
from jgen.losses.autoregressive import categorical_autoregressive_log_prob
from jgen.losses.elbo import masked_mean
from jgen.models.autoregressive.pixelcnn import GatedPixelCNN, PixelCNN
from jgen.models.autoregressive.transformer import CausalTransformer
from jgen.samplers.ancestral import ancestral_sample
from jgen.samplers.kv_cache import DecodeFns, sample_transformer, transformer_decode_fns
from jgen.train.optim import make_optimizer

PRIOR_ARCHITECTURES = ("gated_pixelcnn", "pixelcnn", "transformer")
LEARNED = "ELBO (learned code prior)"
UNIFORM = "ELBO (uniform code prior)"


def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the VQ-VAE prior family, with its default."""
    c = ConfigDict()
    c.family = "vqvae_prior"
    c.vqvae_workdir = ""  # required: the workdir of a trained VQ-VAE run (stage 1)
    c.prior = "gated_pixelcnn"  # see PRIOR_ARCHITECTURES
    c.num_layers = 4  # transformer blocks / (gated) PixelCNN layers
    c.d_model = 128  # transformer: width
    c.num_heads = 4  # transformer: attention heads
    c.kv_cache = True  # transformer: sample with the key-value cache (False: recompute the prefix)
    c.channels = 64  # pixelcnn / gated_pixelcnn: feature channels
    c.kernel_size = 3  # pixelcnn / gated_pixelcnn: kernel of the later layers
    c.first_kernel_size = 5  # pixelcnn / gated_pixelcnn: kernel of the first (type-A) layer
    c.temperature = 1.0  # sampling temperature on the prior's logits
    for k, v in overrides.items():
        c[k] = v
    return c


class CodePrior(NamedTuple):
    """An autoregressive prior over code maps [h, w] with values in 0..K-1 (raster order).

    Attributes:
      init: `init(key) -> params`.
      logits: `logits(params, codes int [B, h, w]) -> [B, h * w, K]`: at flat position
        i, the logits of p(k_i | k_<i), all from one teacher-forced pass.
      log_prob: `log_prob(params, codes) -> [B]`, the exact log p(codes) (chain rule).
      sample: `sample(params, key, num) -> int32 [num, h, w]`, ancestral draws in one
        compiled loop.
      grid: (h, w).
      num_codes: K.
    """

    init: Callable
    logits: Callable
    log_prob: Callable
    sample: Callable
    grid: tuple[int, int]
    num_codes: int


def make_code_prior(m: ConfigDict, grid, num_codes: int) -> CodePrior:
    """The `CodePrior` named by `m.prior` (a `model_config()` section) on an h x w grid of K codes.

    Example (K = 3 codes on a 2 x 2 grid, so all 81 code maps can be enumerated)::

        prior = make_code_prior(model_config(prior="transformer", d_model=32), (2, 2), 3)
        params = prior.init(key)
        prior.log_prob(params, codes)         # codes int [B, 2, 2] -> [B]
        prior.sample(params, key, 16)         # int32 [16, 2, 2]
    """
    if m.prior not in PRIOR_ARCHITECTURES:
        raise ValueError(f"Unknown model.prior={m.prior!r} for a VQ-VAE prior; known: "
                         f"{', '.join(PRIOR_ARCHITECTURES)}.")
    h, w = (int(g) for g in grid)
    k, dim = int(num_codes), int(grid[0]) * int(grid[1])
    if k < 2:
        raise ValueError(f"A prior over codes needs a codebook of K >= 2 entries; received num_codes={k}.")
    temperature = float(m.temperature)

    def check_codes(codes):
        if codes.ndim != 3 or tuple(codes.shape[1:]) != (h, w) or not jnp.issubdtype(codes.dtype, jnp.integer):
            raise ValueError(f"The code prior expects integer code maps [B, {h}, {w}]; received "
                             f"{codes.dtype} of shape {tuple(codes.shape)}.")

    if m.prior == "transformer":
        bos = k  # a beginning-of-sequence token after the K codes, so the first code is modelled too
        module = CausalTransformer(vocab_size=k + 1, max_len=dim + 1, d_model=int(m.d_model),
                                   num_heads=int(m.num_heads), num_layers=int(m.num_layers))

        def init(key):
            return module.init(key, jnp.zeros((1, dim), jnp.int32))

        def logits(params, codes):
            check_codes(codes)
            flat = codes.reshape((codes.shape[0], dim)).astype(jnp.int32)
            inputs = jnp.concatenate([jnp.full((flat.shape[0], 1), bos, jnp.int32), flat[:, :-1]], axis=1)
            return module.apply(params, inputs)[..., :k]  # the BOS is never a target

        def sample(params, key, num):
            full = transformer_decode_fns(module, params)

            def extend_fn(tokens, cache):  # the BOS is never drawn: keep the K codes only
                out, cache = full.extend_fn(tokens, cache)
                return out[..., :k], cache

            fns = DecodeFns(lambda t: full.logits_fn(t)[..., :k], full.init_cache, extend_fn)
            prompt = jnp.full((num, 1), bos, jnp.int32)
            tokens = sample_transformer(key, fns, prompt, dim, temperature=temperature, use_cache=bool(m.kv_cache))
            return tokens[:, 1:].reshape((num, h, w))
    else:
        cls = PixelCNN if m.prior == "pixelcnn" else GatedPixelCNN
        # One colour group (data_channels=1) fed the one-hot code map [B, h, w, K]; K logits out.
        module = cls(channels=int(m.channels), num_layers=int(m.num_layers), kernel_size=int(m.kernel_size),
                     num_outputs_per_subpixel=k, first_kernel_size=int(m.first_kernel_size), data_channels=1)

        def init(key):
            return module.init(key, jnp.zeros((1, h, w, k), jnp.float32))

        def logits(params, codes):
            check_codes(codes)
            out = module.apply(params, jax.nn.one_hot(codes, k, dtype=jnp.float32))  # [B, h, w, 1, K]
            return out.reshape((codes.shape[0], dim, k))

        def sample(params, key, num):
            canvas = jnp.zeros((num, dim), jnp.int32)
            out = ancestral_sample(key, lambda c: logits(params, c.reshape((c.shape[0], h, w))), canvas,
                                   kind="categorical", temperature=temperature)
            return out.reshape((num, h, w))

    def log_prob(params, codes):
        return categorical_autoregressive_log_prob(logits(params, codes), codes.reshape((codes.shape[0], dim)))

    return CodePrior(init=init, logits=logits, log_prob=log_prob, sample=sample, grid=(h, w), num_codes=k)


def load_vqvae_config(workdir: str) -> ConfigDict:
    """The saved config of the stage-1 VQ-VAE run `workdir`, with clear errors when
    it is unset, missing, or not a VQ-VAE run."""
    from jgen.config import load_saved_config

    how = ("Train one first, e.g. `jgen train --config experiments/vae/configs/mnist_vqvae.py "
           "--workdir runs/mnist_vqvae`, then pass --config.model.vqvae_workdir=runs/mnist_vqvae.")
    if not workdir:
        raise ValueError("model.vqvae_workdir is required: the --workdir of a trained VQ-VAE run (stage 1) "
                         f"whose code maps the prior models. {how}")
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"model.vqvae_workdir={workdir!r} does not exist (relative paths are taken from "
                                f"the current directory, {os.getcwd()!r}). {how}")
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise FileNotFoundError(f"model.vqvae_workdir={workdir!r} has no config.json, so it is not the workdir "
                                f"of a `jgen train` run. {how}")
    stage1 = load_saved_config(workdir)
    family = stage1.get("model", {}).get("family")
    if family != "vqvae":
        raise ValueError(f"model.vqvae_workdir={workdir!r} is a run of model.family={family!r}, not a VQ-VAE "
                         f"(family 'vqvae'): a code prior needs a VQ-VAE's codebook. {how}")
    return stage1


def load_vqvae_params(workdir: str):
    """Host (numpy) copies of the newest checkpoint's evaluation parameters (EMA if
    the run kept one) of the VQ-VAE run `workdir`, and its step."""
    from jgen.train.loop import eval_params, host_value, restore_for_inference

    load_vqvae_config(workdir)
    try:
        run, state, step = restore_for_inference(workdir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"model.vqvae_workdir={workdir!r}: {e}") from None
    return jax.tree.map(host_value, eval_params(state, run.config)), int(step)


def freeze_vqvae(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """`optimizer` on params["prior"], zero updates (and no optimizer state) for params["vqvae"]."""

    def labels(params):
        return {"prior": jax.tree.map(lambda _: "prior", params["prior"]),
                "vqvae": jax.tree.map(lambda _: "vqvae", params["vqvae"])}

    return optax.multi_transform({"prior": optimizer, "vqvae": optax.set_to_zero()}, labels)


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)
    stage1 = load_vqvae_config(m.vqvae_workdir)
    for key in ("name", "preprocess", "eval_preprocess"):
        if config.data[key] != stage1.data[key]:
            raise ValueError(
                f"data.{key}={config.data[key]!r}, but the VQ-VAE in model.vqvae_workdir={m.vqvae_workdir!r} was "
                f"trained with data.{key}={stage1.data[key]!r}; the prior must see the images as its encoder "
                f"did: set --config.data.{key}={stage1.data[key]}."
            )
    image_shape = tuple(info.image_shape)
    num_dims = math.prod(image_shape)
    vq = code_model(stage1.model, image_shape)
    prior = make_code_prior(m, vq.grid, vq.num_codes)
    positions = vq.grid[0] * vq.grid[1]
    uniform_nll = positions * math.log(vq.num_codes)
    preprocess = get_preprocess(config.data.preprocess)
    eval_preprocess = get_preprocess(config.data.eval_preprocess)

    def init(key):
        # Zeros of the VQ-VAE's shapes (no random init to compile): data_init puts stage 1's weights in.
        shapes = jax.eval_shape(vq.init, key)
        return {"prior": prior.init(key), "vqvae": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)}

    def data_init(params, key, batch):
        with jax.ensure_compile_time_eval():
            frozen, _ = load_vqvae_params(m.vqvae_workdir)
        expected = jax.tree.map(lambda a: (a.shape, a.dtype), params["vqvae"])
        got = jax.tree.map(lambda a: (a.shape, a.dtype), frozen)
        if jax.tree.structure(expected) != jax.tree.structure(got) or jax.tree.leaves(expected) != jax.tree.leaves(got):
            raise ValueError(f"The checkpoint in model.vqvae_workdir={m.vqvae_workdir!r} does not match the VQ-VAE "
                             "its config.json describes; was config.json edited after training?")
        return {"prior": params["prior"], "vqvae": jax.tree.map(jnp.asarray, frozen)}

    def codes_of(params, x):
        return vq.codes(jax.lax.stop_gradient(params["vqvae"]), x)

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The VQ-VAE prior's loss")
        x = preprocess(key, batch["image"], batch.get("index"))
        nll = -prior.log_prob(params["prior"], codes_of(params, x))
        return masked_mean(nll, batch.get("mask")), {"nll": nll}

    def sample(params, key, num, labels=None):
        codes = prior.sample(params["prior"], key, num)
        return vq.mean(vq.decode_codes(params["vqvae"], codes))

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The VQ-VAE prior's evaluator")
        x = eval_preprocess(key, batch["image"], batch.get("index"))
        codes = codes_of(params, x)
        recon_nll = vq.recon_nll(x, vq.decode_codes(params["vqvae"], codes))
        prior_nll = -prior.log_prob(params["prior"], codes)
        return {
            LEARNED: recon_nll + prior_nll,
            UNIFORM: recon_nll + uniform_nll,
            "prior_nll": prior_nll,
            "reconstruction_nll": recon_nll,
        }

    def summarize(values):
        prior_nll = np.asarray(values["prior_nll"], np.float64)
        recon = np.asarray(values["reconstruction_nll"], np.float64)
        n = prior_nll.size

        def se(v):
            return float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else None

        return {
            "code_prior_nll": {
                "method": f"exact: -log p_prior(k(x)), chain rule over the {positions} codes of the "
                          f"{vq.grid[0]}x{vq.grid[1]} map",
                "nats": float(prior_nll.mean()), "nats_stderr": se(prior_nll),
                "bits_per_code": float(prior_nll.mean() / (positions * math.log(2))),
                "uniform_prior_nats": uniform_nll,
            },
            "reconstruction_nll_nats": {"mean": float(recon.mean()), "stderr": se(recon)},
            "num_examples": int(n),
        }

    stochastic = (LEARNED, UNIFORM) if config.data.eval_preprocess == "binarize_dynamic" else ()
    optimizer = freeze_vqvae(make_optimizer(config.optim, config.train.num_steps))
    return ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=num_dims,
                     stochastic=stochastic, nll_estimators=(LEARNED, UNIFORM), summarize=summarize,
                     data_init=data_init, optimizer=optimizer)
