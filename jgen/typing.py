"""Type aliases shared across jgen: keys, parameter pytrees, batches and the
function signatures that connect losses, samplers and the training loop."""

from typing import Any, Callable, Mapping

import jax

PRNGKey = jax.Array
Array = jax.Array
Params = Any  # a pytree of arrays
Batch = Mapping[str, Array]  # e.g. {"image": [B, H, W, C] float, "label": [B] int}
Aux = Mapping[str, Array]  # named per-example terms, each of shape [B]

# loss_fn(params, key, batch) -> (scalar loss, aux of per-example terms)
LossFn = Callable[[Params, PRNGKey, Batch], tuple[Array, Aux]]
# apply_fn(params, *inputs) -> outputs (a Flax module's `apply`)
ApplyFn = Callable[..., Any]
# log_density_fn(x) -> per-example log-density [B]
LogDensityFn = Callable[[Array], Array]
