r"""The autoregressive family: exact-likelihood models of images, one pixel (or
subpixel) at a time, trained by maximum likelihood and sampled ancestrally in
one compiled loop.

`config.model.architecture` picks the network:

- "fvsbn", "nade": binary images (Bernoulli conditionals) on the flattened image.
- "made": MADE with `num_masks` connectivities (and orderings, with
  `order_agnostic=True`) drawn from `mask_seed`; training picks one at random each
  step, evaluation reports the exact likelihood of the ensemble
  :math:`\frac1M \sum_m p_m(x)` (a mixture of M autoregressive models, itself
  normalised), and sampling uses the first member's ordering.
- "pixelcnn", "gated_pixelcnn": masked-convolution models of binary images
  (Bernoulli conditionals); the gated one has no blind spot.
- "pixelcnn_pp": a PixelCNN++-style model of 8-bit images (grayscale or RGB) with
  a discretized logistic mixture per subpixel and channel-wise coupling of the
  means; data.preprocess must be "symmetric" (pixels on the 256-value grid in
  [-1, 1]); the exact NLL is over the 256 discrete values.
- "transformer": a decoder-only causal transformer over the flattened pixels as
  tokens (ImageGPT-style): binary tokens for binarized data, 256 levels for
  data.preprocess="symmetric"; a beginning-of-sequence token starts every
  sequence so the first pixel is modelled too; sampling uses the KV cache
  (`model.kv_cache`).

`model.conditional=True` makes "pixelcnn", "gated_pixelcnn", "pixelcnn_pp" and "transformer"
class-conditional (a label bias in every layer); `jgen sample --label k` then
draws class k.

Every architecture returns, in one teacher-forced pass, the parameters of all
conditionals; the exact NLL is their sum (`jgen.losses.autoregressive`).
Evaluation reports it as the "exact" estimator (deterministic on a statically
binarized split). Sampling is `jgen.samplers.ancestral.ancestral_sample`: D
network passes in one `lax.fori_loop`.

`model_config()` holds every `config.model` key with its default; experiment
configs start from it. `build(config, info)` returns the `ModelSpec`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from jgen.data import get_preprocess
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses.autoregressive import (
    bernoulli_autoregressive_log_prob,
    categorical_autoregressive_log_prob,
)
from jgen.losses.elbo import masked_mean
from jgen.losses.likelihoods import dlogistic_mixture_value_log_probs
from jgen.models.autoregressive import MADE, made_masks
from jgen.models.autoregressive.fvsbn import FVSBN, NADE
from jgen.models.autoregressive.pixelcnn import GatedPixelCNN, PixelCNN
from jgen.models.autoregressive.pixelcnn_pp import (
    PixelCNNPlusPlus,
    channel_coupled_mixture_params,
    pixelcnn_pp_log_prob,
)
from jgen.models.autoregressive.transformer import CausalTransformer
from jgen.samplers.ancestral import ancestral_sample
from jgen.samplers.kv_cache import DecodeFns, sample_transformer, transformer_decode_fns

ARCHITECTURES = ("fvsbn", "nade", "made", "pixelcnn", "gated_pixelcnn", "pixelcnn_pp", "transformer")
CONDITIONAL_ARCHITECTURES = ("pixelcnn", "gated_pixelcnn", "pixelcnn_pp", "transformer")
BINARY_PREPROCESSES = ("binarize_dynamic", "binarize_static")


def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the autoregressive family, with its default."""
    c = ConfigDict()
    c.family = "autoregressive"
    c.architecture = "nade"  # see ARCHITECTURES
    c.hidden = 500  # nade: hidden units shared across positions
    c.made_hidden = (1000, 1000)  # made: hidden widths
    c.made_direct = True  # made: masked direct input -> output connection
    c.num_masks = 1  # made: connectivities (orderings) in the ensemble; 1 = natural order, fixed
    c.order_agnostic = False  # made: also draw a random ordering per mask
    c.mask_seed = 0  # made: the masks are drawn from this seed
    c.channels = 64  # pixelcnn / gated_pixelcnn / pixelcnn_pp: feature channels
    c.num_layers = 7  # pixelcnn / gated_pixelcnn: residual (gated) layers; pixelcnn_pp: blocks
    c.kernel_size = 3  # pixelcnn / gated_pixelcnn: kernel of the type-B convolutions
    c.first_kernel_size = 7  # pixelcnn / gated_pixelcnn: kernel of the type-A first layer
    c.num_mixtures = 5  # pixelcnn_pp: logistic components per subpixel
    c.d_model = 128  # transformer: width
    c.num_heads = 4  # transformer: attention heads
    c.kv_cache = True  # transformer: sample with the key-value cache (False: recompute the prefix)
    c.conditional = False  # pixelcnn* / transformer: condition on the class label
    c.temperature = 1.0  # sampling temperature on the logits
    for k, v in overrides.items():
        c[k] = v
    return c


def _bernoulli_network(m: ConfigDict, dim: int):
    """(module, logits_fn(params, x_flat [B, D], mask_index) -> logits [B, D], masks_for).

    `masks_for(i)` gives MADE's i-th connectivity (None for FVSBN / NADE, whose
    ordering is fixed); `mask_index` may be traced.
    """
    if m.architecture in ("fvsbn", "nade"):
        module = FVSBN(dim) if m.architecture == "fvsbn" else NADE(dim, hidden=int(m.hidden))

        def logits_fn(params, x, mask_index=0):
            del mask_index
            return module.apply(params, x)

        return module, logits_fn, lambda i: None

    if m.architecture in ("pixelcnn", "gated_pixelcnn"):
        raise AssertionError("image networks are built by _image_network")
    hidden = tuple(int(h) for h in m.made_hidden)
    module = MADE(hidden=hidden, dim=dim, num_params=1, direct_connection=bool(m.made_direct))
    if int(m.num_masks) < 1:
        raise ValueError(f"model.num_masks must be >= 1; received {m.num_masks}.")
    fixed = int(m.num_masks) == 1 and not m.order_agnostic

    def masks_for(i):
        if fixed:
            return made_masks(None, dim, hidden)
        key = jax.random.fold_in(jax.random.PRNGKey(int(m.mask_seed)), i)
        return made_masks(key, dim, hidden, random_order=bool(m.order_agnostic))

    def logits_fn(params, x, mask_index=0):
        return module.apply(params, x, masks_for(mask_index))[..., 0]

    return module, logits_fn, masks_for


def _image_network(m: ConfigDict, image_shape, num_classes: int):
    """(module, raw_fn(params, image [B, H, W, C], labels) -> network output)."""
    classes = num_classes or None
    if m.architecture == "pixelcnn_pp":
        module = PixelCNNPlusPlus(num_mixtures=int(m.num_mixtures), channels=int(m.channels),
                                  num_blocks=int(m.num_layers), num_classes=classes)
    else:
        cls = PixelCNN if m.architecture == "pixelcnn" else GatedPixelCNN
        module = cls(channels=int(m.channels), num_layers=int(m.num_layers), kernel_size=int(m.kernel_size),
                     first_kernel_size=int(m.first_kernel_size), num_classes=classes)

    def raw_fn(params, x, labels=None):
        return module.apply(params, x, labels)

    return module, raw_fn


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)
    if m.architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown model.architecture={m.architecture!r} for the autoregressive family; "
                         f"known: {', '.join(ARCHITECTURES)}.")
    if m.architecture == "transformer":
        eight_bit = config.data.preprocess == "symmetric"
    else:
        eight_bit = m.architecture == "pixelcnn_pp"
    allowed = ("symmetric",) if eight_bit else BINARY_PREPROCESSES
    for key in ("preprocess", "eval_preprocess"):
        if config.data[key] not in allowed:
            what = "8-bit pixels on the [-1, 1] grid" if eight_bit else "binary pixels"
            raise ValueError(
                f"model.architecture={m.architecture!r} models {what}: set data.{key} to one of "
                f"{allowed} (got {config.data[key]!r})."
            )
    conditional = bool(m.get("conditional", False))
    if conditional and m.architecture not in CONDITIONAL_ARCHITECTURES:
        raise ValueError(f"model.conditional=True is available for {CONDITIONAL_ARCHITECTURES}; "
                         f"got architecture {m.architecture!r}.")
    num_classes = int(info.num_classes) if conditional else 0
    if conditional and not num_classes:
        raise ValueError(f"model.conditional=True needs a labelled dataset; {config.data.name!r} has no classes.")
    image_shape = tuple(info.image_shape)
    dim = math.prod(image_shape)
    preprocess = get_preprocess(config.data.preprocess)
    eval_preprocess = get_preprocess(config.data.eval_preprocess)
    num_masks = int(m.num_masks) if m.architecture == "made" else 1
    k_mix = int(m.num_mixtures)

    if m.architecture in ("fvsbn", "nade", "made"):
        module, flat_logits, masks_for = _bernoulli_network(m, dim)

        def nll(params, x, labels=None, mask_index=0):
            x = x.reshape((x.shape[0], -1))
            return -bernoulli_autoregressive_log_prob(flat_logits(params, x, mask_index), x)

        def init(key):
            x = jnp.zeros((1, dim), jnp.float32)
            masks = masks_for(0)
            return module.init(key, x) if masks is None else module.init(key, x, masks)

        def canvas_logits(params, canvas, labels=None):
            return flat_logits(params, canvas, 0)

        masks0 = masks_for(0)
        sample_order = None if masks0 is None else masks0.order
    elif m.architecture == "transformer":
        levels = 256 if eight_bit else 2
        bos = levels  # the beginning-of-sequence token
        module = CausalTransformer(vocab_size=levels + 1, max_len=dim + 1, d_model=int(m.d_model),
                                   num_heads=int(m.num_heads), num_layers=int(m.num_layers),
                                   num_classes=num_classes)
        sample_order = None

        def to_tokens(x):
            x = x.reshape((x.shape[0], -1))
            return jnp.round((x + 1.0) * 127.5).astype(jnp.int32) if eight_bit else x.astype(jnp.int32)

        def nll(params, x, labels=None, mask_index=0):
            tokens = to_tokens(x)
            inputs = jnp.concatenate([jnp.full((tokens.shape[0], 1), bos, jnp.int32), tokens[:, :-1]], axis=1)
            logits = module.apply(params, inputs, labels)[..., :levels]  # the BOS is never a target
            return -categorical_autoregressive_log_prob(logits, tokens)

        def init(key):
            labels = jnp.zeros((1,), jnp.int32) if num_classes else None
            return module.init(key, jnp.zeros((1, dim), jnp.int32), labels)

        def complete(params, key, x, observed, labels=None):
            """Samples the pixels after the observed raster-order prefix (e.g. the
            bottom half given the top half) with the KV cache."""
            num = x.shape[0]
            if num_classes and labels is None:
                labels = jnp.arange(num) % num_classes
            mask = np.broadcast_to(np.asarray(observed, bool), x.shape).reshape((num, dim))
            prefix = int(mask[0].sum())
            if not (mask[:, :prefix].all() and not mask[:, prefix:].any()):
                raise ValueError("The transformer completes a raster-order prefix (e.g. the top rows); "
                                 "`observed` must be True on the first P pixels of every image and False after.")
            full = transformer_decode_fns(module, params, label=labels)

            def extend_fn(tokens, cache):  # the BOS is never drawn: keep the data levels only
                logits, cache = full.extend_fn(tokens, cache)
                return logits[..., :levels], cache

            fns = DecodeFns(lambda t: full.logits_fn(t)[..., :levels], full.init_cache, extend_fn)
            prompt = jnp.concatenate([jnp.full((num, 1), bos, jnp.int32), to_tokens(x)[:, :prefix]], axis=1)
            tokens = sample_transformer(key, fns, prompt, dim - prefix, temperature=float(m.temperature),
                                        use_cache=bool(m.kv_cache))[:, 1:]
            out = tokens.reshape((num, *image_shape)).astype(jnp.float32)
            return out / 255.0 if eight_bit else out
    else:
        module, raw_fn = _image_network(m, image_shape, num_classes)
        sample_order = None

        def nll(params, x, labels=None, mask_index=0):
            raw = raw_fn(params, x, labels)
            if eight_bit:
                return -pixelcnn_pp_log_prob(raw, x, k_mix)
            return -bernoulli_autoregressive_log_prob(raw, x)

        def init(key):
            labels = jnp.zeros((1,), jnp.int32) if num_classes else None
            return module.init(key, jnp.zeros((1, *image_shape), jnp.float32), labels)

        def canvas_logits(params, canvas, labels=None):
            """The canvas [B, D] (binary, or 8-bit values 0..255) -> logits [B, D(, 256)]."""
            x = canvas.reshape((canvas.shape[0], *image_shape))
            if not eight_bit:
                return raw_fn(params, x, labels).reshape(canvas.shape)
            xs = x / 127.5 - 1.0
            out = channel_coupled_mixture_params(raw_fn(params, xs, labels), xs, k_mix)
            return dlogistic_mixture_value_log_probs(out, k_mix).reshape((canvas.shape[0], dim, 256))

    def labels_of(batch):
        return jnp.asarray(batch["label"], jnp.int32) if num_classes else None

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The autoregressive loss")
        key_pre, key_mask = jax.random.split(key)
        mask_index = jax.random.randint(key_mask, (), 0, num_masks)  # MADE: one connectivity per step
        x = preprocess(key_pre, batch["image"], batch.get("index"))
        values = nll(params, x, labels_of(batch), mask_index)
        return masked_mean(values, batch.get("mask")), {"nll": values}

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The autoregressive evaluator")
        key_pre, _ = jax.random.split(key)
        x = eval_preprocess(key_pre, batch["image"], batch.get("index"))
        if num_masks == 1:
            return {"exact": nll(params, x, labels_of(batch))}
        # The ensemble's exact likelihood: log (1/M) sum_m p_m(x), one mask at a time.
        per_mask = jax.lax.map(lambda i: -nll(params, x, None, i), jnp.arange(num_masks))  # [M, B]
        return {"exact": -(jax.nn.logsumexp(per_mask, axis=0) - math.log(num_masks))}

    def ancestral_complete(params, key, x, observed, labels=None):
        """Fills the unobserved pixels of preprocessed images `x` [B, H, W, C]
        (`observed` bool, broadcastable to x) with draws from the model's conditionals
        given everything before them; returns images in the `sample` range."""
        num = x.shape[0]
        if num_classes and labels is None:
            labels = jnp.arange(num) % num_classes
        canvas = jnp.round((x + 1.0) * 127.5) if eight_bit else x
        canvas = canvas.reshape((num, dim)).astype(jnp.float32)
        observed = jnp.broadcast_to(jnp.asarray(observed, bool), x.shape).reshape((num, dim))
        out = ancestral_sample(key, lambda v: canvas_logits(params, v, labels), canvas, observed=observed,
                               kind="categorical" if eight_bit else "bernoulli", order=sample_order,
                               temperature=float(m.temperature))
        out = out.reshape((num, *image_shape))
        return out / 255.0 if eight_bit else out

    if m.architecture != "transformer":
        complete = ancestral_complete

    def sample(params, key, num, labels=None):
        x = jnp.zeros((num, *image_shape), jnp.float32) - (1.0 if eight_bit else 0.0)
        return complete(params, key, x, False, labels)

    stochastic = ("exact",) if config.data.eval_preprocess == "binarize_dynamic" else ()
    return ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=dim,
                     stochastic=stochastic, nll_estimators=("exact",), num_classes=num_classes,
                     complete=complete)
