"""Evaluation over a whole split: per-example NLL estimates from a family's
`eval_fn`, compiled over the mesh, summarised with standard errors."""

import jax
import numpy as np
from tqdm.auto import tqdm

from jgen.data import eval_batches
from jgen.families.base import ModelSpec
from jgen.metrics import summarize_nll
from jgen.train.mesh import batch_sharding, replicated


class _Prefix:
    """The first `n` examples of a random-access source."""

    def __init__(self, source, n):
        self._source, self._n = source, min(n, len(source))

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._source[i]

    def __getitems__(self, indices):
        if hasattr(self._source, "__getitems__"):
            return self._source.__getitems__(list(indices))
        return [self._source[int(i)] for i in indices]


def evaluate(
    spec: ModelSpec,
    params,
    source,
    *,
    mesh,
    batch_size: int,
    key,
    num_examples: int = 0,
    progress: bool = False,
) -> dict:
    """Runs `spec.eval_fn` over the source (or its first `num_examples`).

    Returns:
      {estimator: summary} with the NLL mean and standard error in nats and
      bits/dim (see `jgen.metrics.summarize_nll`).
    """
    if num_examples:
        source = _Prefix(source, num_examples)
    eval_step = jax.jit(
        spec.eval_fn,
        in_shardings=(replicated(mesh), replicated(mesh), batch_sharding(mesh)),
        out_shardings=replicated(mesh),
    )
    values: dict[str, list] = {}
    batches = eval_batches(source, global_batch_size=batch_size, sharding=batch_sharding(mesh))
    total = -(-len(source) // batch_size)
    for i, batch in enumerate(tqdm(batches, total=total, desc="eval", disable=not progress or jax.process_index() != 0)):
        out = eval_step(params, jax.random.fold_in(key, i), batch)
        mask = np.asarray(replicated_copy(batch["mask"], mesh)) > 0
        for name, v in out.items():
            values.setdefault(name, []).append(np.asarray(v.addressable_data(0))[mask])
    values = {name: np.concatenate(v) for name, v in values.items()}
    nll_names = spec.nll_estimators if spec.nll_estimators is not None else tuple(values)
    results = {
        name: summarize_nll(v, estimator=name, num_dims=spec.num_dims, stochastic=name in spec.stochastic)
        for name, v in values.items() if name in nll_names
    }
    rest = {name: v for name, v in values.items() if name not in nll_names}
    if rest and spec.summarize is not None:
        results.update(spec.summarize(rest))
    return results


def replicated_copy(x, mesh):
    """A host numpy copy of a (possibly multi-process sharded) global array."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(jax.jit(lambda a: a, out_shardings=replicated(mesh))(x).addressable_data(0))
