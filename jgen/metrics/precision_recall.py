r"""Sample fidelity and diversity from k-nearest-neighbour manifolds: improved precision
and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020).

Each feature set :math:`\Phi = \{\phi_i\}` defines a manifold estimate, the union of
balls around its points whose radius is the distance to the point's k-th nearest
neighbour within the set, :math:`\mathrm{NND}_k(\phi_i)` (itself excluded):

.. math::
    \mathrm{manifold}(\Phi) = \bigcup_i B\big(\phi_i, \mathrm{NND}_k(\phi_i)\big).

With real features :math:`X = \{x_i\}_{i=1}^N` and generated features :math:`Y =
\{y_j\}_{j=1}^M`:

- precision: the fraction of :math:`y_j` inside :math:`\mathrm{manifold}(X)`
  (fidelity: are generated samples realistic?);
- recall: the fraction of :math:`x_i` inside :math:`\mathrm{manifold}(Y)`
  (diversity: is the real distribution covered?);
- density: :math:`\frac{1}{kM} \sum_j \sum_i 1[y_j \in B(x_i, \mathrm{NND}_k(x_i))]`,
  how many real balls contain each generated sample, normalised so that it is about
  1 when Y and X follow the same distribution (it can exceed 1);
- coverage: :math:`\frac1N \sum_i 1[\exists j: y_j \in B(x_i, \mathrm{NND}_k(x_i))]`,
  the fraction of real balls containing at least one generated sample.

Density and coverage use only the real manifold, so they are less sensitive to
outliers among the generated samples than precision and recall.

**Memory.** Pairwise squared distances are computed block by block
(``||a||^2 + ||b||^2 - 2 a.b``, as `jgen.metrics.mmd.squared_distances`): `block_size`
query rows against the whole other set at a time, under `lax.map`, with full-precision
float32 matrix products, so the peak memory
is :math:`O(\text{block\_size} \cdot \max(N, M))` rather than :math:`O(NM)`. Balls are
closed (:math:`\le`, as in Kynkäänniemi et al.'s code; Naeem et al.'s code uses
:math:`<`, which differs only on ties). All functions are jit-able with `k` and
`block_size` static.

References:
  Kynkäänniemi, T., Karras, T., Laine, S., Lehtinen, J. & Aila, T. (2019). Improved
    Precision and Recall Metric for Assessing Generative Models. NeurIPS (Section 2,
    eqs. 1-2; k = 3). https://arxiv.org/abs/1904.06991
    Reference code: https://github.com/kynkaat/improved-precision-and-recall-metric
  Naeem, M. F., Oh, S. J., Uh, Y., Choi, Y. & Yoo, J. (2020). Reliable Fidelity and
    Diversity Metrics for Generative Models. ICML (Section 3, eqs. 3-4).
    https://arxiv.org/abs/2002.09797  Reference code: https://github.com/clovaai/generative-evaluation-prdc
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jgen.metrics.mmd import _check_samples, squared_distances


class PRDC(NamedTuple):
    """Improved precision and recall, density and coverage (scalars)."""

    precision: jax.Array
    recall: jax.Array
    density: jax.Array
    coverage: jax.Array


def _check_static(fn: str, k, block_size) -> None:
    for name, v in (("k", k), ("block_size", block_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(
                f"{fn}: {name} must be a positive Python int (static under jit); received "
                f"{v!r}."
            )


def _check_k(fn: str, k: int, name: str, a: jax.Array) -> None:
    if k >= a.shape[0]:
        raise ValueError(
            f"{fn}: the k-th nearest neighbour within {name} needs more than k = {k} "
            f"samples; {name} has {a.shape[0]} (shape {a.shape}). Use more samples or a "
            "smaller k."
        )


def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """`squared_distances` with full float32 matrix products: the expansion
    ||a||^2 + ||b||^2 - 2 a.b cancels, so the TF32/bf16 products that some GPUs use by
    default would visibly move neighbour radii."""
    with jax.default_matmul_precision("highest"):
        return squared_distances(a, b)


def _map_blocks(fn: Callable[[jax.Array], jax.Array], queries: jax.Array, block_size: int):
    """Applies fn to row blocks [B, D] of queries [Q, D] one block at a time (lax.map)
    and concatenates the per-row results [Q, ...]. The last block is zero-padded; its
    padded rows' results are dropped."""
    q, d = queries.shape
    b = min(block_size, q)
    num_blocks = -(-q // b)
    padded = jnp.pad(queries, ((0, num_blocks * b - q), (0, 0)))
    out = jax.lax.map(fn, padded.reshape(num_blocks, b, d))
    return out.reshape(num_blocks * b, *out.shape[2:])[:q]


def nearest_neighbour_radii(x: jax.Array, *, k: int = 3, block_size: int = 1024) -> jax.Array:
    r"""Squared distance from each point to its k-th nearest neighbour in the same set.

    :math:`\mathrm{NND}_k(x_i)^2`, the point itself excluded (it is the nearest, at
    distance 0, so this is the (k+1)-th smallest entry of row i of the distance
    matrix; duplicates of :math:`x_i` count as neighbours).

    Args:
      x: floating [N, *feature], N > k.
      k: neighbourhood size, static.
      block_size: rows per block, static.

    Returns:
      [N] squared radii.
    """
    fn = "nearest_neighbour_radii"
    _check_static(fn, k, block_size)
    x, _ = _check_samples(fn, x, x)
    _check_k(fn, k, "x", x)
    return _radii2(x, k, block_size)


def _radii2(x: jax.Array, k: int, block_size: int) -> jax.Array:
    def block(xb):
        neg_smallest, _ = jax.lax.top_k(-_sq_dists(xb, x), k + 1)
        return -neg_smallest[:, k]

    return _map_blocks(block, x, block_size)


def _fraction_inside(queries, centres, radii2, block_size):
    """Fraction of query rows inside at least one ball (centres, radii2)."""
    def block(qb):
        return jnp.any(_sq_dists(qb, centres) <= radii2[None, :], axis=1)

    return jnp.mean(_map_blocks(block, queries, block_size).astype(queries.dtype))


def _density_coverage(real, fake, real_radii2, k, block_size):
    def count(fb):  # number of real balls containing each fake row
        inside = _sq_dists(fb, real) <= real_radii2[None, :]
        return jnp.sum(inside.astype(real.dtype), axis=1)

    def nearest_fake(rb):  # squared distance from each real row to its nearest fake row
        return jnp.min(_sq_dists(rb, fake), axis=1)

    density = jnp.mean(_map_blocks(count, fake, block_size)) / k
    covered = _map_blocks(nearest_fake, real, block_size) <= real_radii2
    return density, jnp.mean(covered.astype(real.dtype))


def precision_recall(
    real: jax.Array, fake: jax.Array, *, k: int = 3, block_size: int = 1024
) -> tuple[jax.Array, jax.Array]:
    r"""Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1-2).

    .. math::
        \mathrm{precision} = \frac1M \sum_j 1\big[y_j \in \mathrm{manifold}(X)\big],
        \qquad
        \mathrm{recall} = \frac1N \sum_i 1\big[x_i \in \mathrm{manifold}(Y)\big].

    Args:
      real: floating [N, *feature] real features, N > k.
      fake: floating [M, *feature] generated features, M > k.
      k: neighbourhood size (the paper's default 3), static.
      block_size: query rows per distance block, static (memory is
        O(block_size * max(N, M))).

    Returns:
      `(precision, recall)`, scalars in [0, 1].

    Raises:
      ValueError / TypeError: for inputs that are not floating [N, *feature] with a
        common feature shape, too few samples for k, or bad static arguments.
    """
    fn = "precision_recall"
    _check_static(fn, k, block_size)
    real, fake = _check_samples(fn, real, fake)
    _check_k(fn, k, "real", real)
    _check_k(fn, k, "fake", fake)
    precision = _fraction_inside(fake, real, _radii2(real, k, block_size), block_size)
    recall = _fraction_inside(real, fake, _radii2(fake, k, block_size), block_size)
    return precision, recall


def density_coverage(
    real: jax.Array, fake: jax.Array, *, k: int = 3, block_size: int = 1024
) -> tuple[jax.Array, jax.Array]:
    r"""Density and coverage (Naeem et al. 2020, eqs. 3-4), from the real manifold only.

    .. math::
        \mathrm{density} = \frac{1}{kM} \sum_j \sum_i
          1\big[\|y_j - x_i\| \le \mathrm{NND}_k(x_i)\big], \qquad
        \mathrm{coverage} = \frac1N \sum_i
          1\big[\min_j \|y_j - x_i\| \le \mathrm{NND}_k(x_i)\big].

    Args:
      real: floating [N, *feature] real features, N > k.
      fake: floating [M, *feature] generated features, M >= 2.
      k: neighbourhood size, static (Naeem et al. use 5; 3 here for consistency with
        precision/recall, pass k=5 to match their setting).
      block_size: query rows per distance block, static.

    Returns:
      `(density, coverage)`: density >= 0 (about 1 for matching distributions, can
      exceed 1), coverage in [0, 1].
    """
    fn = "density_coverage"
    _check_static(fn, k, block_size)
    real, fake = _check_samples(fn, real, fake)
    _check_k(fn, k, "real", real)
    return _density_coverage(real, fake, _radii2(real, k, block_size), k, block_size)


def prdc(real: jax.Array, fake: jax.Array, *, k: int = 3, block_size: int = 1024) -> PRDC:
    """All four metrics at once, sharing the real radii: `PRDC(precision, recall,
    density, coverage)`. Same arguments and conditions as `precision_recall`."""
    fn = "prdc"
    _check_static(fn, k, block_size)
    real, fake = _check_samples(fn, real, fake)
    _check_k(fn, k, "real", real)
    _check_k(fn, k, "fake", fake)
    real_radii2 = _radii2(real, k, block_size)
    precision = _fraction_inside(fake, real, real_radii2, block_size)
    recall = _fraction_inside(real, fake, _radii2(fake, k, block_size), block_size)
    density, coverage = _density_coverage(real, fake, real_radii2, k, block_size)
    return PRDC(precision, recall, density, coverage)
