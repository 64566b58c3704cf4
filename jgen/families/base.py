"""What a model family hands to the shared machinery (train, sample, eval, CLI).

A family's `build(config, info)` returns a `ModelSpec` of pure functions; the
training loop compiles them over the device mesh. Every later family (flows,
autoregressive, diffusion, ...) plugs in by providing the same five pieces.
"""

from collections.abc import Callable
from typing import NamedTuple

from jgen.typing import Array, Batch, LossFn, Params, PRNGKey


class ModelSpec(NamedTuple):
    """The functions of one configured model.

    Attributes:
      init: `init(key) -> params`.
      loss_fn: `loss_fn(params, key, batch) -> (loss, aux)`; aux holds named
        per-example terms [B].
      sample: `sample(params, key, num, condition=None) -> images [num, H, W, C]` in
        [0, 1]; a conditional model samples the given raw condition [num, ...] (see
        `jgen.conditioning`; for class labels int [num], default: labels cycling
        through the classes).
      eval_fn: `eval_fn(params, key, batch) -> {estimator: per-example NLL [B] in nats}`,
        e.g. {"ELBO": ..., "IWAE-5000": ...}; padded rows are masked by the caller.
      num_dims: the number of data dimensions, for bits/dim.
      stochastic: which estimators in eval_fn are random (others are exact).
      encode: latent-variable models: `encode(params, batch) -> z [B, latent_dim]`
        (the posterior mean), for reconstructions, interpolations and traversals.
      decode: latent-variable models: `decode(params, z, labels=None) -> images in [0, 1]`.
      latent_dim: size of z (0 if the family has no latent space).
      num_classes: > 0 for a class-conditional model.
      init_extra: `init_extra(params) -> extra`, the initial non-gradient state
        (TrainState.extra); None for families without one.
      post_update: `post_update(params, extra, key, batch) -> (params, extra,
        metrics)`, run inside the compiled step after the optimizer update.
      pre_update: `pre_update(params, extra, key, batch) -> (batch, extra,
        metrics)`, run inside the compiled step before the gradient step: it may add
        inputs for `loss_fn` to the batch and update `extra` (e.g. the EBM family
        draws Langevin negatives from the replay buffer in `extra` into
        `batch["negatives"]` and writes the chains' end points back); None: no
        pre-step.
      nll_estimators: which eval_fn outputs are per-example NLL estimates (None:
        all of them); the others go to `summarize`.
      summarize: `summarize({name: values over the split}) -> dict` for eval_fn
        outputs that are not NLL estimates (e.g. a codebook's perplexity).
      data_init: `data_init(params, key, batch) -> params`, a data-dependent
        initialisation (e.g. Glow's ActNorm) that the training loop applies to the
        fresh `init(key)` params on the first training batch, before the optimizer
        state is created; never on a resumed run. None: no data-dependent init.
      complete: `complete(params, key, x, observed, labels=None) -> images`, for
        models that can fill in the unobserved part of preprocessed images `x`
        (autoregressive completion, e.g. the bottom half given the top half).
      optimizer: a family's own optax transformation (e.g. the GAN's
        `jgen.train.two_player.paired_optimizer`), used instead of the one built
        from `config.optim`; None: the config's.
      update: a family's own step, `update(params, opt_state, key, batch) ->
        (params, opt_state, metrics)`, run by the compiled train step instead of the
        gradient step on `loss_fn` (e.g. n_critic discriminator updates then one
        generator update); None: the gradient step on `loss_fn`.
      condition: the model's `jgen.conditioning.ConditionSpec` (None: unconditional);
        `condition_of(spec, batch, key)` gives a batch's raw condition.
      sampler_fns: diffusion models: a `jgen.families.diffusion.SamplerFns`, every
        sampler the model runs (for `jgen bench samplers`); None for other families.
    """

    init: Callable[[PRNGKey], Params]
    loss_fn: LossFn
    sample: Callable[[Params, PRNGKey, int], Array]
    eval_fn: Callable[[Params, PRNGKey, Batch], dict[str, Array]]
    num_dims: int
    stochastic: tuple[str, ...] = ()
    encode: Callable[[Params, Batch], Array] | None = None
    decode: Callable[..., Array] | None = None
    latent_dim: int = 0
    num_classes: int = 0
    init_extra: Callable[[Params], object] | None = None
    post_update: Callable | None = None
    nll_estimators: tuple[str, ...] | None = None
    summarize: Callable[[dict], dict] | None = None
    data_init: Callable[[Params, PRNGKey, Batch], Params] | None = None
    complete: Callable | None = None
    sampler_fns: object | None = None
    optimizer: object | None = None
    update: Callable | None = None
    pre_update: Callable | None = None
    condition: object | None = None


def check_image_batch(batch, image_shape, *, who: str) -> None:
    """Raises a clear error unless `batch["image"]` is raw pixels [B, *image_shape].

    Static (shape/dtype) checks only, so it is safe under `jit`; pixel ranges
    are checked by the preprocessing functions in `jgen.data`.
    """
    if "image" not in batch:
        raise KeyError(f"{who} expects a batch dict with an 'image' key; got keys {sorted(batch)}.")
    x = batch["image"]
    expected = (tuple(image_shape))
    if x.ndim != 1 + len(expected) or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"{who} expects batch['image'] of shape [B, {', '.join(map(str, expected))}] "
            f"(the dataset's image shape); got {x.dtype} {list(x.shape)}. "
            "Images are [batch, height, width, channels]: reshape flattened data, and add a "
            "trailing channel axis to grayscale [B, H, W] images."
        )
