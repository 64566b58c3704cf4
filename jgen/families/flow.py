"""The flow family (`model.family="flow"`): coupling flows on images, from NICE to Glow.

Every model maps a standard normal base on R^D to data in (0, 1)^D, and all of them end
in the logit trick of Dinh et al. written as bijectors (so their log-dets are counted):
in the data -> base direction, y -> alpha + (1 - 2 alpha) y -> logit, which keeps pixels
at 0 and 1 finite. Data are uniformly dequantized, and every NLL is reported as the
discrete-data bound (+ D log 256; see `jgen.losses.flow`). `model.architecture` picks
the part between the base and the logit trick (described in the data -> base direction,
the one the likelihood uses):

- "coupling_mlp" (default): on the flattened image, `num_layers` x [affine coupling
  with a half mask and an MLP conditioner, then Reverse].
- "nice" (Dinh et al. 2015): on the flattened image, `num_layers` additive couplings
  (volume preserving) with MLP conditioners and alternating even/odd masks, then a
  learned diagonal scaling z = h * exp(-s) (NICE's S = exp(-s); its only log-det,
  -sum s).
- "realnvp" (Dinh et al. 2017): multi-scale. Each of the `num_levels` - 1 first scales
  is `num_steps` affine couplings with alternating checkerboard masks, a squeeze,
  `num_steps` affine couplings with alternating channel masks, then half of the
  channels are factored out; the last scale is `num_steps` + 1 checkerboard couplings
  (the paper: 3, 3 and 4). Each coupling is followed by an `ActNorm`, in place of the
  paper's batch normalisation: batch norm as a bijector needs running statistics kept
  outside the parameters (and differs between training and evaluation), which this
  family does not do; actnorm is its data-initialised, fixed-at-test-time analogue.
- "glow" (Kingma & Dhariwal 2018): `num_levels` levels of [squeeze, `num_steps` x
  (actnorm -> invertible 1x1 convolution (LU) -> affine coupling on half the channels),
  factor out half of the channels (not after the last level)]. Samples are drawn at
  `model.temperature` (base samples scaled by it; 1 = the model's own distribution).

- "maf", "iaf", "spline_maf" (Papamakarios et al. 2017; Kingma et al. 2016; Durkan
  et al. 2019): on the flattened image, `num_layers` autoregressive layers whose
  conditioners are MADEs (`hidden` widths), with `Reverse` between layers so the
  orderings alternate. MAF and the spline MAF evaluate the density in one pass
  and sample in D passes; IAF is the other way round, so training an IAF by
  maximum likelihood costs D network passes per step (it is here for
  completeness and for small D; use it as a variational posterior or sampler).

Options on top of any architecture:

- `model.conditional=True` ("coupling_mlp", "maf", "spline_maf"): a class-conditional
  flow p(x | y); the label enters every conditioner (a learned embedding for the
  couplings, a one-hot context for the MADEs), and `jgen sample --label k` draws
  class k. `model.condition.kind="label"` is the same model.
- `model.condition.kind` = "vector", "tokens" or "image" (the shared interface of
  `jgen.conditioning`; same three architectures): a conditional flow p(x | c) whose
  condition is encoded by a `ConditionEncoder` (trained jointly, params under
  "condition") into a context that enters every conditioner: the embedding vec
  [B, E], and for image conditions (`operator` superres:F / colorize / inpaint) the
  condition map [B, H, W, M] flattened and appended (`flat_context`), concatenated
  to every coupling MLP's input, or fed unmasked into every MADE layer. For each
  fixed c the map is an ordinary flow, so log p(x | c) is exact; samples are drawn
  given c. Training drops the condition with probability `condition.p_uncond`
  (the encoder's learned null condition), so the same flow also models p(x); the
  class-label path has no null condition and ignores `p_uncond`. Evaluation
  measures image conditions with a fixed key (the same inpainting holes every time).
- `model.dequantization="variational"` (Flow++): the uniform noise is replaced by a
  learned conditional flow q(u | x) (`dequant_layers` couplings of `dequant_hidden`
  MLPs, conditioned on the image), trained jointly; the NLL reported is the
  variational bound -log p((x + u)/256) + log q(u | x) + D log 256, a bound on the
  discrete NLL, next to the uniform-dequantization bound of the same model.

RealNVP and Glow use ResNet conditioners (`jgen.models.flows.ConvConditioners`;
`width` channels, `num_blocks` residual blocks, the last conv zero-initialised so every
coupling starts as the identity), and their multi-scale structure is one nested
`Chain`/`FactorOut` bijector on [H, W, C] (`jgen.bijectors.multiscale`) seen on the
flattened data through `Flattened`. Their `ActNorm`s are initialised from the first
training batch (`ModelSpec.data_init`, run by the training loop on a fresh start), so
every one of them sees zero mean and unit variance per channel on that batch.

The 1x1 convolutions' permutations and signs are static structure, drawn from
`config.seed` on the host CPU when the model is built (so a checkpoint reloads to the
same model on any machine); their LU factors are parameters.

References:
  Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", ICLR
    workshop 2015. https://arxiv.org/abs/1410.8516
  Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    https://arxiv.org/abs/1605.08803
  Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    NeurIPS 2018. https://arxiv.org/abs/1807.03039
"""

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from jgen.bijectors import (
    IAF,
    MAF,
    ActNorm,
    Affine,
    Bijector,
    Chain,
    FactorOut,
    Flattened,
    Inverse,
    MaskedCoupling,
    Reverse,
    Sigmoid,
    SplineMAF,
    Squeeze,
    actnorm_init,
    channel_mask,
    checkerboard_mask,
    conv1x1_init,
    flow_log_prob,
    flow_sample,
    half_mask,
)
from jgen.bijectors.base import bijector_dataclass, check_input, static_field
from jgen.conditioning.encoder import ConditionEncoder, drop_mask
from jgen.conditioning.spec import (
    ConditionSpec,
    check_condition,
    condition_config,
    condition_of,
    default_condition,
    resolve,
)
from jgen.data import get_preprocess
from jgen.distributions import standard_normal_log_prob
from jgen.families.base import ModelSpec, check_image_batch
from jgen.losses.elbo import masked_mean, preprocessed_input
from jgen.losses.flow import make_variational_dequantizer
from jgen.metrics.likelihood import DEQUANTIZING_PREPROCESSES, dequantization_offset
from jgen.models.autoregressive import MADE, made_conditioner, made_masks
from jgen.models.flows import ConvConditioners, CouplingMLPs
from jgen.models.flows.conditional import (
    ConditionalCouplingMLPs,
    dummy_condition,
    flat_context,
    flat_context_dim,
    make_conditional_coupling_flow,
)
from jgen.typing import Array, Params, PRNGKey


def model_config(**overrides) -> ConfigDict:
    """Every `config.model` key of the flow family, with its default."""
    c = ConfigDict()
    c.family = "flow"
    c.architecture = "coupling_mlp"  # "coupling_mlp" | "nice" | "realnvp" | "glow"
    c.num_layers = 8  # coupling_mlp, nice: number of couplings
    c.hidden = (256, 256)  # coupling_mlp, nice: MLP conditioner widths
    c.num_levels = 2  # realnvp: scales; glow: levels L
    c.num_steps = 4  # glow: steps K per level; realnvp: couplings per mask type and scale
    c.width = 64  # realnvp, glow: channels of the ResNet conditioners
    c.num_blocks = 2  # realnvp, glow: residual blocks per conditioner (0: Glow's own net)
    c.log_scale_bound = 3.0  # soft clamp of each coupling's log-scale
    c.alpha = 1e-3  # logit trick: y -> logit(alpha + (1 - 2 alpha) y)
    c.num_bins = 8  # spline_maf: spline bins K
    c.spline_bound = 8.0  # spline_maf: the spline acts on [-B, B] (identity outside; logit space)
    c.conditional = False  # coupling_mlp, maf, spline_maf: condition on the class label
    c.condition = condition_config()  # coupling_mlp, maf, spline_maf: kind label | vector | tokens | image
    c.dequantization = "uniform"  # "uniform" | "variational" (Flow++)
    c.dequant_layers = 4  # variational dequantization: couplings of q(u | x)
    c.dequant_hidden = (256,)  # variational dequantization: their MLP widths
    c.temperature = 1.0  # sampling: base samples scaled by this (Glow's temperature)
    for k, v in overrides.items():
        c[k] = v
    return c


class FlowModel(NamedTuple):
    """A configured flow architecture, as pure functions.

    Attributes:
      init: `init(key) -> params`.
      flow_fn: `flow_fn(params) -> bijector` on flattened data [B, D] (base -> data in
        (0, 1)^D), built inside the loss so the parameters are traced; a
        class-conditional model's is `flow_fn(params, labels)` (int [B]), a model
        with a `ConditionSpec` `flow_fn(params, condition, drop=None)` (the raw
        condition [B, ...] and the optional condition-dropout mask bool [B]).
      data_init: `data_init(params, y) -> params` given a dequantized batch y [B, D] in
        [0, 1]: the data-dependent initialisation of the ActNorms; None if there are none.
    """

    init: Callable[[PRNGKey], Params]
    flow_fn: Callable[[Params], Bijector]
    data_init: Callable[[Params, Array], Params] | None = None


def _full_config(model: ConfigDict) -> ConfigDict:
    m = model_config()
    m.update(model)
    return m


def _logit_trick(alpha: float, dim: int) -> list[Bijector]:
    """base -> data: s = sigmoid(.) in (0, 1), then y = (s - alpha) / (1 - 2 alpha)."""
    unsquash = Affine(jnp.full((dim,), -alpha / (1.0 - 2.0 * alpha)),
                      jnp.full((dim,), -math.log(1.0 - 2.0 * alpha)))
    return [Sigmoid(), unsquash]


def make_flow(model: ConfigDict, dim: int):
    """(conditioner module, `flow_fn(params) -> bijector`) of the "coupling_mlp" architecture."""
    m = _full_config(model)
    nets = CouplingMLPs(m.num_layers, tuple(m.hidden), dim)
    alpha = float(m.alpha)

    def flow_fn(params):
        layers = []
        for i in range(m.num_layers):
            def conditioner(xm, i=i):
                return nets.apply(params, xm, i, method=CouplingMLPs.condition)

            # The same half mask every time: the Reverse after each coupling is what
            # alternates which half is transformed (flipping the mask too would undo it).
            layers += [MaskedCoupling(half_mask(dim), conditioner, log_scale_bound=m.log_scale_bound), Reverse()]
        return Chain(layers + _logit_trick(alpha, dim))

    return nets, flow_fn


def _coupling_mlp_model(m: ConfigDict, image_shape: tuple, *, seed: int) -> FlowModel:
    dim = math.prod(image_shape)
    nets, flow_fn = make_flow(m, dim)
    return FlowModel(init=lambda key: nets.init(key, jnp.zeros((1, dim), jnp.float32)), flow_fn=flow_fn)


def parity_mask(dim: int, *, flip: bool = False) -> jax.Array:
    """Boolean mask [dim], True on even indices (odd if `flip`): NICE's partition."""
    return jnp.asarray((np.arange(dim) % 2 == 0) != flip)


def _nice_model(m: ConfigDict, image_shape: tuple, *, seed: int) -> FlowModel:
    dim = math.prod(image_shape)
    nets = CouplingMLPs(m.num_layers, tuple(m.hidden), dim, additive=True)

    def flow_fn(params):
        couplings = []  # data -> base order
        for i in range(m.num_layers):
            def conditioner(xm, i=i):
                return nets.apply(params["nets"], xm, i, method=CouplingMLPs.condition)

            couplings.append(MaskedCoupling(parity_mask(dim, flip=i % 2 == 1), conditioner, kind="additive"))
        log_scale = params["log_scale"]
        # data -> base: couplings, then z = h * exp(-log_scale) (Affine's inverse).
        scaling = Affine(jnp.zeros_like(log_scale), log_scale)
        return Chain([scaling, *reversed(couplings), *_logit_trick(float(m.alpha), dim)])

    def init(key):
        return {"nets": nets.init(key, jnp.zeros((1, dim), jnp.float32)),
                "log_scale": jnp.zeros((dim,), jnp.float32)}

    return FlowModel(init=init, flow_fn=flow_fn)


# --- image flows: layers numbered in construction order ------------------------------


def _host_cpu():
    """`jax.default_device(cpu)`, or nothing where JAX runs without a CPU backend."""
    try:
        return jax.default_device(jax.devices("cpu")[0])
    except RuntimeError:
        return contextlib.nullcontext()


def _zero_conditioner(h):
    return jnp.zeros_like(h), jnp.zeros_like(h)


class _Recorder:
    """Runs an architecture once to learn what it needs: the coupling input shapes,
    the ActNorm channel counts, and the static structure of the 1x1 convolutions.
    Returns placeholder layers (never applied)."""

    def __init__(self, seed: int):
        self.coupling_shapes: list[tuple] = []
        self.actnorm_channels: list[int] = []
        self.convs: list = []
        self._seed = seed

    def coupling(self, mask):
        self.coupling_shapes.append(tuple(mask.shape))
        return MaskedCoupling(mask, _zero_conditioner)

    def actnorm(self, channels: int):
        self.actnorm_channels.append(channels)
        return ActNorm(jnp.zeros(channels), jnp.zeros(channels), event_ndims=3)

    def conv1x1(self, channels: int):
        # On the host CPU, so the static permutation and signs (from an LU with
        # pivoting) do not depend on the accelerator the model is built on.
        with _host_cpu():
            key = jax.random.fold_in(jax.random.PRNGKey(self._seed), len(self.convs))
            conv = conv1x1_init(key, channels, dtype=jnp.float32)
        conv = dataclasses.replace(conv, l_raw=np.asarray(conv.l_raw), u_raw=np.asarray(conv.u_raw),
                                   log_s=np.asarray(conv.log_s))
        self.convs.append(conv)
        return conv


class _Builder:
    """Makes the layers of an image flow from `params`, numbered as `_Recorder` saw them.

    `actnorm_override(name, channels) -> bijector`, if given, replaces every ActNorm
    (the data-dependent initialisation uses it).
    """

    def __init__(self, params, nets: ConvConditioners, convs, log_scale_bound, actnorm_override=None):
        self.params, self.nets, self.convs = params, nets, convs
        self.log_scale_bound = log_scale_bound
        self.actnorm_override = actnorm_override
        self._count = {"coupling": 0, "actnorm": 0, "conv1x1": 0}

    def _next(self, kind: str) -> int:
        i = self._count[kind]
        self._count[kind] += 1
        return i

    def coupling(self, mask):
        i = self._next("coupling")
        variables = self.params["nets"]

        def conditioner(xm):
            return self.nets.apply(variables, xm, i, method=ConvConditioners.condition)

        return MaskedCoupling(mask, conditioner, log_scale_bound=self.log_scale_bound)

    def actnorm(self, channels: int):
        name = f"actnorm_{self._next('actnorm')}"
        if self.actnorm_override is not None:
            return self.actnorm_override(name, channels)
        p = self.params["actnorm"][name]
        return ActNorm(p["shift"], p["log_scale"], event_ndims=3)

    def conv1x1(self, channels: int):
        k = self._next("conv1x1")
        p = self.params["conv1x1"][f"conv1x1_{k}"]
        return dataclasses.replace(self.convs[k], l_raw=p["l_raw"], u_raw=p["u_raw"], log_s=p["log_s"])


@bijector_dataclass
class _DataInitActNorm(Bijector):
    """An ActNorm that, in the data -> base direction, takes its parameters from the batch
    it sees (`actnorm_init`) and hands them to `record(params)`; it then standardises the
    batch with them, so the layers after it see what they will see after the init."""

    record: Callable = static_field()

    @property
    def event_ndims(self) -> int:
        return 3

    def forward_and_log_det(self, x):
        raise TypeError(
            "The data-dependent ActNorm initialisation runs in the data -> base direction "
            "(inverse) only; build the flow from the initialised params to sample."
        )

    def inverse_and_log_det(self, y):
        y = check_input("ActNorm (data init)", "y", y, 3)
        shift, log_scale = actnorm_init(y)
        self.record({"shift": shift, "log_scale": log_scale})
        return ActNorm(shift, log_scale, event_ndims=3).inverse_and_log_det(y)


def glow_levels(layers, shape: tuple, num_levels: int, num_steps: int) -> Bijector:
    """Glow's multi-scale architecture on [B, H, W, C] -> [B, H, W, C] (base -> data).

    Data -> base, per level: squeeze to [H/2, W/2, 4C]; `num_steps` x (actnorm ->
    1x1 conv -> affine coupling on half the channels); then (all but the last level)
    factor out 2C channels and recurse on the other 2C; unsqueeze.

    Args:
      layers: makes the parametrised layers: `coupling(mask)`, `actnorm(channels)` and
        `conv1x1(channels)`, each returning a bijector (see `make_flow_model`).
      shape: (H, W, C), H and W divisible by 2**num_levels.
      num_levels: L >= 1.
      num_steps: K >= 1.
    """
    h, w, c = shape
    s = (h // 2, w // 2, 4 * c)
    steps = []  # each a Chain in forward (base -> data) order: coupling, conv, actnorm
    for _ in range(num_steps):
        # Inverse(conv): the data -> base direction is the cheap matmul y = W x.
        steps.append(Chain([layers.coupling(channel_mask(s)), Inverse(layers.conv1x1(4 * c)),
                            layers.actnorm(4 * c)]))
    inner = []
    if num_levels > 1:
        inner = [FactorOut(glow_levels(layers, (h // 2, w // 2, 2 * c), num_levels - 1, num_steps), 2 * c)]
    return Chain([Squeeze(), *inner, *reversed(steps), Inverse(Squeeze())])


def realnvp_scales(layers, shape: tuple, num_scales: int, num_steps: int) -> Bijector:
    """Real NVP's multi-scale architecture on [B, H, W, C] -> [B, H, W, C] (base -> data).

    Data -> base, per scale: `num_steps` checkerboard couplings (alternating masks), squeeze,
    `num_steps` channel couplings (alternating), factor out 2C channels and recurse on the
    other 2C, unsqueeze; the last scale is `num_steps` + 1 checkerboard couplings. Each
    coupling is followed by an ActNorm.

    Args:
      layers: makes the parametrised layers, as in `glow_levels`.
      shape: (H, W, C), H and W divisible by 2**(num_scales - 1).
      num_scales: >= 1.
      num_steps: couplings per mask type and scale, >= 1.
    """
    h, w, c = shape

    def coupled(mask):  # data -> base: coupling, then actnorm
        return Chain([layers.actnorm(mask.shape[-1]), layers.coupling(mask)])

    if num_scales == 1:
        board = [coupled(checkerboard_mask(shape, flip=i % 2 == 1)) for i in range(num_steps + 1)]
        return Chain(list(reversed(board)))
    board = [coupled(checkerboard_mask(shape, flip=i % 2 == 1)) for i in range(num_steps)]
    s = (h // 2, w // 2, 4 * c)
    chan = [coupled(channel_mask(s, flip=i % 2 == 1)) for i in range(num_steps)]
    inner = FactorOut(realnvp_scales(layers, (h // 2, w // 2, 2 * c), num_scales - 1, num_steps), 2 * c)
    return Chain([Squeeze(), inner, *reversed(chan), Inverse(Squeeze()), *reversed(board)])


def _image_flow_model(m: ConfigDict, image_shape: tuple, arch, *, seed: int) -> FlowModel:
    """FlowModel of a convolutional architecture `arch(layers) -> bijector on images`."""
    recorder = _Recorder(seed)
    arch(recorder)
    nets = ConvConditioners(len(recorder.coupling_shapes), int(m.width), int(m.num_blocks))
    convs = tuple(recorder.convs)
    dim = math.prod(image_shape)
    alpha = float(m.alpha)

    def flow(params, actnorm_override=None):
        core = arch(_Builder(params, nets, convs, m.log_scale_bound, actnorm_override))
        return Chain([Flattened(core, image_shape), *_logit_trick(alpha, dim)])

    def init(key):
        xs = [jnp.zeros((1, *s), jnp.float32) for s in recorder.coupling_shapes]
        params = {"nets": nets.init(key, xs)}
        if recorder.actnorm_channels:
            params["actnorm"] = {
                f"actnorm_{j}": {"shift": jnp.zeros((ch,), jnp.float32), "log_scale": jnp.zeros((ch,), jnp.float32)}
                for j, ch in enumerate(recorder.actnorm_channels)}
        if convs:
            params["conv1x1"] = {
                f"conv1x1_{k}": {"l_raw": jnp.asarray(cv.l_raw), "u_raw": jnp.asarray(cv.u_raw),
                                 "log_s": jnp.asarray(cv.log_s)}
                for k, cv in enumerate(convs)}
        return params

    def data_init(params, y):
        recorded = {}

        def override(name, channels):
            return _DataInitActNorm(record=functools.partial(recorded.__setitem__, name))

        flow(params, override).inverse(y)  # fills `recorded`, layer by layer
        actnorm = {name: {k: jnp.asarray(v, params["actnorm"][name][k].dtype) for k, v in p.items()}
                   for name, p in recorded.items()}
        return {**params, "actnorm": actnorm}

    return FlowModel(init=init, flow_fn=flow, data_init=data_init if recorder.actnorm_channels else None)


def _check_levels(m: ConfigDict, image_shape: tuple, num_squeezes: int, why: str) -> None:
    for key in ("num_levels", "num_steps"):
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model.{key} must be an int >= 1 for architecture={m.architecture!r}; got {value!r}.")
    f = 2**num_squeezes
    h, w = image_shape[0], image_shape[1]
    if h % f or w % f:
        fits = max(n for n in range(num_squeezes + 1) if h % 2**n == 0 and w % 2**n == 0)
        raise ValueError(
            f"model.num_levels={m.num_levels} with architecture={m.architecture!r} squeezes the image "
            f"{num_squeezes} times ({why}), so its height and width must be divisible by 2**{num_squeezes} "
            f"= {f}; the images are {h}x{w}. Lower model.num_levels so that at most {fits} squeezes "
            "happen, or crop/pad the images."
        )


def _realnvp_model(m: ConfigDict, image_shape: tuple, *, seed: int) -> FlowModel:
    _check_levels(m, image_shape, m.num_levels - 1, "one per scale but the last")
    arch = functools.partial(realnvp_scales, shape=image_shape, num_scales=m.num_levels, num_steps=m.num_steps)
    return _image_flow_model(m, image_shape, arch, seed=seed)


def _glow_model(m: ConfigDict, image_shape: tuple, *, seed: int) -> FlowModel:
    _check_levels(m, image_shape, m.num_levels, "one per level")
    arch = functools.partial(glow_levels, shape=image_shape, num_levels=m.num_levels, num_steps=m.num_steps)
    return _image_flow_model(m, image_shape, arch, seed=seed)


def _conditional_coupling_mlp_model(m: ConfigDict, image_shape: tuple, *, seed: int, num_classes: int = 0,
                                    condition: ConditionSpec | None = None) -> FlowModel:
    dim = math.prod(image_shape)
    if condition is not None:  # the ConditionEncoder's flat context, as is, into every conditioner
        nets = ConditionalCouplingMLPs(m.num_layers, tuple(m.hidden), dim, context_features=0,
                                       condition_spec=condition)
        context = dummy_condition(condition)
    else:
        nets = ConditionalCouplingMLPs(m.num_layers, tuple(m.hidden), dim, num_classes=num_classes)
        context = jnp.zeros((1,), jnp.int32)
    flow_fn = make_conditional_coupling_flow(nets, log_scale_bound=m.log_scale_bound,
                                             final=_logit_trick(float(m.alpha), dim))
    return FlowModel(init=lambda key: nets.init(key, jnp.zeros((1, dim), jnp.float32), context), flow_fn=flow_fn)


def _autoregressive_model(m: ConfigDict, image_shape: tuple, *, seed: int, num_classes: int = 0,
                          condition: ConditionSpec | None = None) -> FlowModel:
    """MAF / IAF / spline MAF on the flattened image (MADE conditioners); with
    `num_classes` the one-hot label, with `condition` the `ConditionEncoder`'s flat
    context (params["condition"]) feeds every MADE, unmasked."""
    dim = math.prod(image_shape)
    hidden = tuple(int(h) for h in m.hidden)
    spline = m.architecture == "spline_maf"
    num_params = 3 * int(m.num_bins) - 1 if spline else 2
    made = MADE(hidden=hidden, dim=dim, num_params=num_params, zero_init_output=True)
    # One connectivity for every layer (natural order, deterministic degrees); the
    # Reverse between layers alternates the ordering.
    masks = made_masks(None, dim, hidden, conditional=bool(num_classes) or condition is not None)
    encoder = ConditionEncoder(condition) if condition is not None else None
    context_dim = num_classes or (flat_context_dim(condition) if condition is not None else 0)

    def layer(conditioner):
        if spline:
            return SplineMAF(conditioner, bound=float(m.spline_bound))
        cls = MAF if m.architecture == "maf" else IAF
        return cls(conditioner, log_scale_bound=m.log_scale_bound)

    def flow_fn(params, labels=None, drop=None):
        if encoder is not None:  # `labels` is the raw condition
            c = check_condition(condition, labels, jnp.shape(labels)[0] if jnp.ndim(labels) else 1,
                                who="The conditional MAF")
            context = flat_context(*encoder.apply(params["condition"], c, drop))
        else:
            context = jax.nn.one_hot(labels, num_classes) if num_classes else None
        layers = []
        for i in range(int(m.num_layers)):
            layers += [layer(made_conditioner(made, params[f"made_{i}"], masks, context=context)), Reverse()]
        return Chain(layers + _logit_trick(float(m.alpha), dim))

    def init(key):
        x = jnp.zeros((1, dim), jnp.float32)
        context = jnp.zeros((1, context_dim), jnp.float32) if context_dim else None
        keys = jax.random.split(key, int(m.num_layers))
        params = {f"made_{i}": made.init(k, x, masks, context) for i, k in enumerate(keys)}
        if encoder is not None:
            params["condition"] = encoder.init(jax.random.fold_in(key, int(m.num_layers)), dummy_condition(condition))
        return params

    return FlowModel(init=init, flow_fn=flow_fn)


CONDITIONAL_ARCHITECTURES = ("coupling_mlp", "maf", "spline_maf")

ARCHITECTURES = {
    "coupling_mlp": _coupling_mlp_model,
    "maf": _autoregressive_model,
    "iaf": _autoregressive_model,
    "spline_maf": _autoregressive_model,
    "nice": _nice_model,
    "realnvp": _realnvp_model,
    "glow": _glow_model,
}


def make_flow_model(model: ConfigDict, image_shape, *, seed: int = 0, num_classes: int = 0,
                    condition: ConditionSpec | None = None) -> FlowModel:
    """The `FlowModel` of a `config.model` for images of `image_shape` (H, W, C).

    Args:
      model: the `config.model` section (missing keys take `model_config()`'s defaults).
      image_shape: (H, W, C) of the data.
      seed: fixes the static structure (1x1-convolution permutations) of "glow".
      num_classes: > 0 builds the class-conditional model (`flow_fn(params, labels)`).
      condition: a `jgen.conditioning.ConditionSpec` builds the model conditioned on it
        (`flow_fn(params, condition, drop=None)`; kind "label" is the same as
        `num_classes=spec.num_classes`).

    Raises:
      ValueError: an unknown `model.architecture`, levels that do not fit the image,
        or a condition the architecture cannot take.
    """
    m = _full_config(model)
    if m.architecture not in ARCHITECTURES:
        raise ValueError(
            f"Unknown model.architecture={m.architecture!r} for the flow family; known: "
            f"{', '.join(sorted(ARCHITECTURES))} (e.g. --config.model.architecture=glow)."
        )
    shape = tuple(int(s) for s in image_shape)
    if condition is not None and condition.kind == "label":
        num_classes, condition = int(condition.num_classes), None
    if num_classes or condition is not None:
        if m.architecture not in CONDITIONAL_ARCHITECTURES:
            what = "model.conditional=True" if num_classes else f"model.condition.kind={condition.kind!r}"
            raise ValueError(f"{what} is available for architectures {CONDITIONAL_ARCHITECTURES}; got "
                             f"{m.architecture!r}, whose conditioners take no condition. Use e.g. "
                             "model.architecture='coupling_mlp' (or 'maf').")
        if m.architecture == "coupling_mlp":
            return _conditional_coupling_mlp_model(m, shape, seed=int(seed), num_classes=num_classes,
                                                   condition=condition)
        return _autoregressive_model(m, shape, seed=int(seed), num_classes=num_classes, condition=condition)
    return ARCHITECTURES[m.architecture](m, shape, seed=int(seed))


def build(config: ConfigDict, info) -> ModelSpec:
    m = _full_config(config.model)
    for key in ("preprocess", "eval_preprocess"):
        if config.data[key] not in DEQUANTIZING_PREPROCESSES:
            raise ValueError(
                f"The flow family models a density of dequantized pixels: set data.{key}="
                f"'dequantize_uniform' (got {config.data[key]!r})."
            )
    if m.dequantization not in ("uniform", "variational"):
        raise ValueError(f"Unknown model.dequantization={m.dequantization!r}; use 'uniform' or 'variational'.")
    variational = m.dequantization == "variational"
    cond = resolve(config, info)
    num_classes = int(cond.num_classes) if cond is not None and cond.kind == "label" else 0
    encoded = cond is not None and cond.kind != "label"  # through the ConditionEncoder (condition dropout)
    image_shape = tuple(info.image_shape)
    dim = math.prod(image_shape)
    flow_model = make_flow_model(m, image_shape, seed=config.get("seed", 0), condition=cond)
    preprocess = get_preprocess(config.data.preprocess)
    eval_preprocess = get_preprocess(config.data.eval_preprocess)
    train_offset = dequantization_offset(config.data.preprocess, dim)
    eval_offset = dequantization_offset(config.data.eval_preprocess, dim)

    if variational:
        deq_nets = ConditionalCouplingMLPs(int(m.dequant_layers), tuple(m.dequant_hidden), dim,
                                           context_features=64)
        dequantize = make_variational_dequantizer(make_conditional_coupling_flow(deq_nets))

    def flow_params(params):
        return params["flow"] if variational else params

    def bijector(params, c, drop=None):
        """The flow (base -> data) given the raw condition c (None: unconditional)."""
        if encoded:
            return flow_model.flow_fn(flow_params(params), c, drop)
        if num_classes:
            return flow_model.flow_fn(flow_params(params), c)
        return flow_model.flow_fn(flow_params(params))

    def conditions(key, batch, train):
        """(raw condition, dropout mask) of a batch; image conditions are measured with
        a fixed key in evaluation."""
        if cond is None:
            return None, None
        if not encoded:
            return condition_of(cond, batch), None
        key_c = jax.random.fold_in(key, 101) if train else jax.random.PRNGKey(0)
        c = condition_of(cond, batch, key_c)
        drop = drop_mask(jax.random.fold_in(key, 102), c.shape[0], cond.p_uncond) if train else None
        return c, drop

    def uniform_nll(params, key, batch, pre, offset, c, drop):
        y, _ = preprocessed_input(pre, key, batch)
        flow = bijector(params, c, drop)
        return -flow_log_prob(flow, standard_normal_log_prob, y.reshape((y.shape[0], dim))) + offset

    def variational_nll(params, key, batch, c, drop):
        x = jnp.asarray(batch["image"], jnp.float32)
        u, log_q = dequantize(params["dequantizer"], key, x)
        y = ((x + u) / 256.0).reshape((x.shape[0], dim))
        flow = bijector(params, c, drop)
        return -flow_log_prob(flow, standard_normal_log_prob, y) + log_q + dim * math.log(256.0)

    def loss_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The flow loss")
        c, drop = conditions(key, batch, True)
        nll = variational_nll(params, key, batch, c, drop) if variational else uniform_nll(
            params, key, batch, preprocess, train_offset, c, drop)
        return masked_mean(nll, batch.get("mask")), {"nll": nll}

    def eval_fn(params, key, batch):
        check_image_batch(batch, image_shape, who="The flow evaluator")
        c, _ = conditions(key, batch, False)
        out = {"exact (uniform dequantization)": uniform_nll(params, key, batch, eval_preprocess, eval_offset, c,
                                                             None)}
        if variational:
            out["variational dequantization bound"] = variational_nll(params, jax.random.fold_in(key, 1), batch, c,
                                                                      None)
        return out

    def init(key):
        k1, k2 = jax.random.split(key)
        params = flow_model.init(k1)
        if not variational:
            return params
        return {"flow": params, "dequantizer": deq_nets.init(k2, jnp.zeros((1, dim)), jnp.zeros((1, dim)))}

    def sample(params, key, num, condition=None):
        """`num` images given the raw condition [num, ...] (class labels default to
        0, 1, ..., K-1, 0, ...; other kinds must be given)."""
        c = check_condition(cond, condition if condition is not None else default_condition(cond, num), num,
                            who="The flow sampler")
        y = flow_sample(bijector(params, c), lambda k, n: m.temperature * jax.random.normal(k, (n, dim)), key, num)
        return jnp.clip(y, 0.0, 1.0).reshape((num, *image_shape))

    data_init = None
    if flow_model.data_init is not None:

        def data_init(params, key, batch):
            """ActNorms set from `batch`, dequantized as in training (`key`)."""
            check_image_batch(batch, image_shape, who="The flow's data-dependent init")
            y, _ = preprocessed_input(preprocess, key, batch)
            flow = flow_model.data_init(flow_params(params), y.reshape((y.shape[0], dim)))
            return {**params, "flow": flow} if variational else flow

    estimators = ("exact (uniform dequantization)",) + (("variational dequantization bound",) if variational else ())
    return ModelSpec(init=init, loss_fn=loss_fn, sample=sample, eval_fn=eval_fn, num_dims=dim,
                     stochastic=estimators, data_init=data_init, num_classes=num_classes, condition=cond)
