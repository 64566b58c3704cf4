"""The flow objective: exact negative log-likelihood, with dequantization.

For 8-bit data x, training uses y = (x + u) / 256, u ~ U[0, 1)^D (uniform
dequantization). The flow models a density p(y) on [0, 1]^D, and

    log P(x) >= E_u[log p((x + u) / 256)] - D log 256,

so the reported NLL of the discrete data is -log p(y) + D log 256 per example:
a bound on the discrete NLL, never the continuous density passed off as one.

References:
  Theis, van den Oord & Bethge, "A note on the evaluation of generative models", ICLR 2016.
  Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from typing import Callable

from jgen.bijectors import Bijector, flow_log_prob
from jgen.losses.elbo import masked_mean, preprocessed_input
from jgen.typing import Array, Params


def make_flow_nll_loss(
    flow_fn: Callable[[Params], Bijector],
    base_log_prob_fn: Callable[[Array], Array],
    *,
    preprocess=None,
    nll_offset: float = 0.0,
):
    """Returns `loss_fn(params, key, batch) -> (loss, aux)`: the mean flow NLL.

    Args:
      flow_fn: `params -> bijector` (base -> data), built inside the loss so the
        parameters are traced.
      base_log_prob_fn: the base log-density, `z -> [B]`.
      preprocess: `preprocess(key, image, index) -> y` (e.g. uniform dequantization).
      nll_offset: added to every per-example NLL: D log 256 turns the density of
        dequantized data into the discrete-data bound.

    The aux dict holds `nll` [B] in nats (the discrete-data bound when
    `nll_offset` is set).
    """

    def loss_fn(params, key, batch):
        y, _ = preprocessed_input(preprocess, key, batch)
        nll = -flow_log_prob(flow_fn(params), base_log_prob_fn, y.reshape((y.shape[0], -1))) + nll_offset
        return masked_mean(nll, batch.get("mask")), {"nll": nll}

    return loss_fn
