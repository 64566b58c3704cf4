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
from ml_collections import ConfigDict

from jgen.data import get_preprocess
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses.autoregressive import bernoulli_autoregressive_log_prob
from jgen.losses.elbo import masked_mean
from jgen.models.autoregressive import MADE, made_masks
from jgen.models.autoregressive.fvsbn import FVSBN, NADE
from jgen.samplers.ancestral import ancestral_sample

ARCHITECTURES = ("fvsbn", "nade", "made")
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


def build(config: ConfigDict, info) -> ModelSpec:
    m = model_config()
    m.update(config.model)
    if m.architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown model.architecture={m.architecture!r} for the autoregressive family; "
                         f"known: {', '.join(ARCHITECTURES)}.")
    for key in ("preprocess", "eval_preprocess"):
        if config.data[key] not in BINARY_PREPROCESSES:
            raise ValueError(
                f"model.architecture={m.architecture!r} models binary pixels: set data.{key} to one of "
                f"{BINARY_PREPROCESSES} (got {config.data[key]!r})."
            )
    image_shape = tuple(info.image_shape)
    dim = math.prod(image_shape)
    module, logits_fn, masks_for = _bernoulli_network(m, dim)
    num_masks = int(m.num_masks) if m.architecture == "made" else 1
    preprocess = get_preprocess(config.data.preprocess)
    eval_preprocess = get_preprocess(config.data.eval_preprocess)

    def nll(params, x, mask_index=0):
        x = x.reshape((x.shape[0], -1))
        return -bernoulli_autoregressive_log_prob(logits_fn(params, x, mask_index), x)

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The autoregressive loss")
        key_pre, key_mask = jax.random.split(key)
        mask_index = jax.random.randint(key_mask, (), 0, num_masks)  # one connectivity per step
        values = nll(params, preprocess(key_pre, batch["image"], batch.get("index")), mask_index)
        return masked_mean(values, batch.get("mask")), {"nll": values}

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The autoregressive evaluator")
        key_pre, _ = jax.random.split(key)
        x = eval_preprocess(key_pre, batch["image"], batch.get("index"))
        if num_masks == 1:
            return {"exact": nll(params, x)}
        # The ensemble's exact likelihood: log (1/M) sum_m p_m(x), one mask at a time.
        per_mask = jax.lax.map(lambda i: -nll(params, x, i), jnp.arange(num_masks))  # [M, B]
        return {"exact": -(jax.nn.logsumexp(per_mask, axis=0) - math.log(num_masks))}

    def init(key):
        x = jnp.zeros((1, dim), jnp.float32)
        masks = masks_for(0)
        return module.init(key, x) if masks is None else module.init(key, x, masks)

    def sample(params, key, num, labels=None):
        del labels
        masks = masks_for(0)
        order = None if masks is None else masks.order
        x = ancestral_sample(key, lambda v: logits_fn(params, v, 0), jnp.zeros((num, dim), jnp.float32),
                             order=order, temperature=float(m.temperature))
        return x.reshape((num, *image_shape))

    stochastic = ("exact",) if config.data.eval_preprocess == "binarize_dynamic" else ()
    return ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=dim,
                     stochastic=stochastic, nll_estimators=("exact",))
