"""Invertible maps with tractable Jacobian log-determinants, for normalizing flows.

Every bijector is an immutable pytree with pure `forward_and_log_det(x)` and
`inverse_and_log_det(y)` on batches [B, *event] (log-dets of shape [B]); `forward` is
the sampling direction (base -> data). `Chain([f1, f2])` applies `f1` first.
`flow_log_prob` and `flow_sample` turn a bijector and a base distribution into a flow.
"""

from jgen.bijectors.actnorm import ActNorm, actnorm_init
from jgen.bijectors.autoregressive import IAF, MAF, SplineIAF, SplineMAF
from jgen.bijectors.base import Bijector, Chain, Inverse
from jgen.bijectors.cnf import CNFSolution, CNFStats, ContinuousFlow, cnf_stats
from jgen.bijectors.conv1x1 import Conv1x1LU, conv1x1_init
from jgen.bijectors.coupling import (
    MaskedCoupling,
    channel_mask,
    checkerboard_mask,
    half_mask,
)
from jgen.bijectors.elementwise import Affine, Exp, Sigmoid, Tanh
from jgen.bijectors.multiscale import FactorOut, Flattened
from jgen.bijectors.permute import Permute, Reverse
from jgen.bijectors.reshape import Squeeze
from jgen.bijectors.spline import RationalQuadraticSpline, SplineCoupling
from jgen.bijectors.transformed import (
    flow_log_prob,
    flow_sample,
    flow_sample_and_log_prob,
)

__all__ = [
    "IAF",
    "MAF",
    "ActNorm",
    "Affine",
    "Bijector",
    "CNFSolution",
    "CNFStats",
    "Chain",
    "ContinuousFlow",
    "Conv1x1LU",
    "Exp",
    "FactorOut",
    "Flattened",
    "Inverse",
    "MaskedCoupling",
    "Permute",
    "RationalQuadraticSpline",
    "Reverse",
    "Sigmoid",
    "SplineCoupling",
    "SplineIAF",
    "SplineMAF",
    "Squeeze",
    "Tanh",
    "actnorm_init",
    "channel_mask",
    "checkerboard_mask",
    "cnf_stats",
    "conv1x1_init",
    "flow_log_prob",
    "flow_sample",
    "flow_sample_and_log_prob",
    "half_mask",
]
