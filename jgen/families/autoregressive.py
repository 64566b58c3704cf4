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

`model.conditional=True` (= `model.condition.kind="label"`) makes "pixelcnn",
"gated_pixelcnn", "pixelcnn_pp" and "transformer" class-conditional (a label bias in
every layer); `jgen sample --label k` then draws class k.

`model.condition.kind` = "vector", "tokens" or "image" (the shared interface of
`jgen.conditioning`) conditions "pixelcnn", "gated_pixelcnn" and "transformer" on
that condition: a `ConditionEncoder` (params under "condition", trained jointly)
gives an embedding s and, for image conditions, a map m at the image's resolution.
The PixelCNNs add :math:`V^\top s` to every layer and :math:`W \star m` through
1x1 convolutions (Conditional PixelCNN, van den Oord et al. 2016b, Eqs. 4-5); the
transformer adds :math:`W_s s` to every position and :math:`W_m m_t` at the
position that predicts subpixel t. None of these depends on x, so the NLL is the
exact -log p(x | c); `sample(params, key, num, condition)` draws ancestrally (the
transformer with its KV cache) given the raw condition, encoded once. Training
drops the condition with probability `condition.p_uncond` (the encoder's null
condition, so the same network also models p(x)); the class-label path keeps its
own label biases, without a null label (`p_uncond` does not apply). Evaluation
measures image conditions with a fixed key (the same inpainting holes every time).

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

from jgen.conditioning.encoder import drop_mask
from jgen.conditioning.spec import (
    check_condition,
    condition_config,
    condition_of,
    default_condition,
    resolve,
)
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
from jgen.models.autoregressive.transformer import CausalTransformer, init_kv_cache
from jgen.samplers.ancestral import ancestral_sample
from jgen.samplers.kv_cache import DecodeFns, sample_transformer

ARCHITECTURES = ("fvsbn", "nade", "made", "pixelcnn", "gated_pixelcnn", "pixelcnn_pp", "transformer")
CONDITIONAL_ARCHITECTURES = ("pixelcnn", "gated_pixelcnn", "pixelcnn_pp", "transformer")  # class labels
ENCODED_ARCHITECTURES = ("pixelcnn", "gated_pixelcnn", "transformer")  # vector / tokens / image conditions
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
    c.condition = condition_config()  # label (pixelcnn*, transformer) | vector | tokens | image (pixelcnn,
    #                                   gated_pixelcnn, transformer)
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


def _image_network(m: ConfigDict, image_shape, num_classes: int, condition=None):
    """(module, raw_fn(params, image [B, H, W, C], ctx) -> network output), where ctx
    is the labels (class-conditional), the encoded context (vec, cmap) of a
    `condition` (a ConditionSpec), or None."""
    classes = num_classes or None
    if m.architecture == "pixelcnn_pp":
        module = PixelCNNPlusPlus(num_mixtures=int(m.num_mixtures), channels=int(m.channels),
                                  num_blocks=int(m.num_layers), num_classes=classes)
    else:
        cls = PixelCNN if m.architecture == "pixelcnn" else GatedPixelCNN
        module = cls(channels=int(m.channels), num_layers=int(m.num_layers), kernel_size=int(m.kernel_size),
                     first_kernel_size=int(m.first_kernel_size), num_classes=classes, condition_spec=condition)

    def raw_fn(params, x, ctx=None):
        if condition is not None:
            return module.apply(params, x, context=ctx)
        return module.apply(params, x, ctx)

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
    cond = resolve(config, info)
    num_classes = int(cond.num_classes) if cond is not None and cond.kind == "label" else 0
    encoded = cond if cond is not None and cond.kind != "label" else None  # through the ConditionEncoder
    if num_classes and m.architecture not in CONDITIONAL_ARCHITECTURES:
        raise ValueError(f"model.conditional=True is available for {CONDITIONAL_ARCHITECTURES}; "
                         f"got architecture {m.architecture!r}.")
    if encoded is not None and m.architecture not in ENCODED_ARCHITECTURES:
        raise ValueError(f"model.condition.kind={encoded.kind!r} is available for architectures "
                         f"{ENCODED_ARCHITECTURES}; got {m.architecture!r}. Use e.g. "
                         "model.architecture='gated_pixelcnn' (or class labels, condition.kind='label').")
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
                                   num_classes=num_classes, condition_spec=encoded)
        sample_order = None

        def apply(params, tokens, ctx):
            if encoded is not None:
                return module.apply(params, tokens, context=ctx)
            return module.apply(params, tokens, ctx)

        def to_tokens(x):
            x = x.reshape((x.shape[0], -1))
            return jnp.round((x + 1.0) * 127.5).astype(jnp.int32) if eight_bit else x.astype(jnp.int32)

        def nll(params, x, ctx=None, mask_index=0):
            tokens = to_tokens(x)
            inputs = jnp.concatenate([jnp.full((tokens.shape[0], 1), bos, jnp.int32), tokens[:, :-1]], axis=1)
            logits = apply(params, inputs, ctx)[..., :levels]  # the BOS is never a target
            return -categorical_autoregressive_log_prob(logits, tokens)

        def init(key):
            if encoded is not None:
                return module.init(key, jnp.zeros((1, dim), jnp.int32), condition=_dummy(encoded))
            labels = jnp.zeros((1,), jnp.int32) if num_classes else None
            return module.init(key, jnp.zeros((1, dim), jnp.int32), labels)

        def decode_fns(params, ctx):
            """The sampler's DecodeFns given labels or an encoded context."""
            kw = {"label": ctx} if encoded is None else {"context": ctx}
            return DecodeFns(lambda t: module.apply(params, t, **kw), lambda b, n: init_kv_cache(module, b, n),
                             lambda t, cache: module.apply(params, t, cache, method=module.extend, **kw))

        def complete(params, key, x, observed, condition=None):
            """Samples the pixels after the observed raster-order prefix (e.g. the
            bottom half given the top half) with the KV cache, given the raw condition."""
            num = x.shape[0]
            ctx = encode(params, checked(condition, num))
            mask = np.broadcast_to(np.asarray(observed, bool), x.shape).reshape((num, dim))
            prefix = int(mask[0].sum())
            if not (mask[:, :prefix].all() and not mask[:, prefix:].any()):
                raise ValueError("The transformer completes a raster-order prefix (e.g. the top rows); "
                                 "`observed` must be True on the first P pixels of every image and False after.")
            full = decode_fns(params, ctx)

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
        module, raw_fn = _image_network(m, image_shape, num_classes, encoded)
        sample_order = None

        def nll(params, x, ctx=None, mask_index=0):
            raw = raw_fn(params, x, ctx)
            if eight_bit:
                return -pixelcnn_pp_log_prob(raw, x, k_mix)
            return -bernoulli_autoregressive_log_prob(raw, x)

        def init(key):
            x = jnp.zeros((1, *image_shape), jnp.float32)
            if encoded is not None:
                return module.init(key, x, condition=_dummy(encoded))
            labels = jnp.zeros((1,), jnp.int32) if num_classes else None
            return module.init(key, x, labels)

        def canvas_logits(params, canvas, ctx=None):
            """The canvas [B, D] (binary, or 8-bit values 0..255) -> logits [B, D(, 256)]."""
            x = canvas.reshape((canvas.shape[0], *image_shape))
            if not eight_bit:
                return raw_fn(params, x, ctx).reshape(canvas.shape)
            xs = x / 127.5 - 1.0
            out = channel_coupled_mixture_params(raw_fn(params, xs, ctx), xs, k_mix)
            return dlogistic_mixture_value_log_probs(out, k_mix).reshape((canvas.shape[0], dim, 256))

    def encode(params, c, drop=None):
        """What the networks take: labels as they are, other kinds encoded once into
        (vec, cmap) by the model's ConditionEncoder."""
        if encoded is None:
            return c
        return module.apply(params, c, drop, method=module.encode)

    def checked(condition, num):
        """The raw condition of `num` samples (labels default to 0, 1, ..., K-1, 0, ...)."""
        return check_condition(cond, condition if condition is not None else default_condition(cond, num), num,
                               who="The autoregressive sampler")

    def context_of(params, key, batch, train):
        """The network's condition input for a batch: labels, the encoded context of
        the batch's raw condition (condition dropout in training; image conditions
        measured with a fixed key in evaluation), or None."""
        if cond is None:
            return None
        if encoded is None:
            return condition_of(cond, batch)
        c = condition_of(cond, batch, jax.random.fold_in(key, 101) if train else jax.random.PRNGKey(0))
        drop = drop_mask(jax.random.fold_in(key, 102), c.shape[0], cond.p_uncond) if train else None
        return encode(params, c, drop)

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The autoregressive loss")
        key_pre, key_mask = jax.random.split(key)
        mask_index = jax.random.randint(key_mask, (), 0, num_masks)  # MADE: one connectivity per step
        x = preprocess(key_pre, batch["image"], batch.get("index"))
        values = nll(params, x, context_of(params, key, batch, True), mask_index)
        return masked_mean(values, batch.get("mask")), {"nll": values}

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The autoregressive evaluator")
        key_pre, _ = jax.random.split(key)
        x = eval_preprocess(key_pre, batch["image"], batch.get("index"))
        if num_masks == 1:
            return {"exact": nll(params, x, context_of(params, key, batch, False))}
        # The ensemble's exact likelihood: log (1/M) sum_m p_m(x), one mask at a time.
        per_mask = jax.lax.map(lambda i: -nll(params, x, None, i), jnp.arange(num_masks))  # [M, B]
        return {"exact": -(jax.nn.logsumexp(per_mask, axis=0) - math.log(num_masks))}

    def ancestral_complete(params, key, x, observed, condition=None):
        """Fills the unobserved pixels of preprocessed images `x` [B, H, W, C]
        (`observed` bool, broadcastable to x) with draws from the model's conditionals
        given everything before them and the raw condition; returns images in the
        `sample` range."""
        num = x.shape[0]
        ctx = encode(params, checked(condition, num))
        canvas = jnp.round((x + 1.0) * 127.5) if eight_bit else x
        canvas = canvas.reshape((num, dim)).astype(jnp.float32)
        observed = jnp.broadcast_to(jnp.asarray(observed, bool), x.shape).reshape((num, dim))
        out = ancestral_sample(key, lambda v: canvas_logits(params, v, ctx), canvas, observed=observed,
                               kind="categorical" if eight_bit else "bernoulli", order=sample_order,
                               temperature=float(m.temperature))
        out = out.reshape((num, *image_shape))
        return out / 255.0 if eight_bit else out

    if m.architecture != "transformer":
        complete = ancestral_complete

    def sample(params, key, num, condition=None):
        """`num` images given the raw condition [num, ...] (see `jgen.conditioning`)."""
        x = jnp.zeros((num, *image_shape), jnp.float32) - (1.0 if eight_bit else 0.0)
        return complete(params, key, x, False, condition)

    stochastic = ("exact",) if config.data.eval_preprocess == "binarize_dynamic" else ()
    return ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=dim,
                     stochastic=stochastic, nll_estimators=("exact",), num_classes=num_classes,
                     complete=complete, condition=cond)


def _dummy(spec):
    """A zero raw condition [1, ...] (for `init`)."""
    return jnp.zeros((1, *spec.shape), spec.dtype)
