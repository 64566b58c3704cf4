"""Continuous normalizing flows (Neural ODE flows, FFJORD): a bijector defined by an ODE.

The map is the time-:math:`t_1` flow of a learned vector field, solved on device with
diffrax, and its log-determinant is the time integral of the vector field's divergence
(the instantaneous change of variables), solved jointly with the state. The divergence
is exact (D Jacobian-vector products per evaluation, for small D) or Hutchinson's
stochastic estimate (one vector-Jacobian product, FFJORD). `cnf_stats` reports the
solver's step counts and number of function evaluations (NFE) for one solve.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from jgen.bijectors.base import Bijector, bijector_dataclass, check_input, static_field

# Config-edge maps from names to diffrax objects (the only place strings are resolved).
_SOLVERS = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "bosh3": diffrax.Bosh3,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
}
_FIXED_BY_DEFAULT = ("euler", "heun")  # adaptive=None means fixed steps for these
_TRACES = ("exact", "hutchinson")
_NOISES = ("rademacher", "gaussian")
_ADJOINTS = ("recursive_checkpoint", "backsolve")


class CNFStats(NamedTuple):
    """Solver statistics of one ODE solve (int32 scalars; arrays under jit).

    Attributes:
      num_steps: steps attempted (accepted + rejected), diffrax's `sol.stats`.
      num_accepted_steps: steps accepted by the step-size controller.
      num_rejected_steps: steps rejected (always 0 for fixed steps).
      nfe: evaluations of the augmented dynamics (vector field + divergence), from the
        step count: the solver's stages per attempted step times `num_steps`, but one
        fewer per step plus one up front for first-same-as-last (FSAL) solvers (Bosh3,
        Tsit5, Dopri5/8), whose last stage is the next step's first. E.g.
        `1 + 6 * num_steps` for Tsit5, `1 + 12 * num_steps` for Dopri8, `num_steps`
        for Euler, `2 * num_steps` for Heun. Exact, with one exception: diffrax redoes
        the first stage when it retries a rejected *first* step (its FSAL cache is only
        filled by an accepted step), so an adaptive FSAL solve whose initial step
        `(t1 - t0) / num_steps` is rejected k times makes k more evaluations than
        reported (k <= num_rejected_steps; raise `num_steps` for a smaller first step).
    """

    num_steps: jax.Array
    num_accepted_steps: jax.Array
    num_rejected_steps: jax.Array
    nfe: jax.Array


class CNFSolution(NamedTuple):
    """Output of `ContinuousFlow.solve`: the mapped batch, its log-dets, and the stats."""

    y: jax.Array
    log_det: jax.Array
    stats: CNFStats


def _evals_per_step(solver: Any) -> tuple[int, int]:
    """(initial evaluations, evaluations per attempted step) of a diffrax RK solver."""
    tableau = getattr(solver, "tableau", None)
    if tableau is None:  # Euler: one evaluation per step
        return 0, 1
    stages = len(tableau.c) + 1
    # FSAL: the last stage of a step is the first of the next (also after a rejected
    # step, whose start point is unchanged), so one evaluation up front, then stages - 1.
    return (1, stages - 1) if tableau.fsal else (0, stages)


def _exact_divergence(fn: Callable, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """fn(z) [B, D] and tr(d fn_i / d z_i) [B] by D batched JVPs (fn acts row-wise).

    The tangent e_j in every row gives, for a row-wise fn, column j of each example's
    Jacobian; its j-th entry is the diagonal element J_i[j, j].
    """
    fz, jvp = jax.linearize(fn, z)
    d = z.shape[1]
    basis = jnp.broadcast_to(jnp.eye(d, dtype=z.dtype)[:, None, :], (d, *z.shape))
    columns = jax.vmap(jvp)(basis)  # [D, B, D]: columns[j, i] = J_i e_j
    return fz, jnp.sum(jnp.diagonal(columns, axis1=0, axis2=2), axis=-1)


def _hutchinson_divergence(
    fn: Callable, z: jax.Array, eps: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """fn(z) [B, D] and eps_i^T (d fn_i / d z_i) eps_i [B] by one VJP (fn acts row-wise)."""
    fz, vjp = jax.vjp(fn, z)
    (eps_jac,) = vjp(eps)  # row i: eps_i^T J_i, for a row-wise fn
    return fz, jnp.sum(eps_jac * eps, axis=1)


@dataclasses.dataclass(frozen=True)
class _AugmentedDynamics:
    """(t, (z, log_det), eps) -> (f(t, z), divergence): the ODE right-hand side.

    A frozen dataclass (equal and hashed by its fields) rather than a closure, so that
    solves with the same vector field share diffrax's compiled trace.
    """

    vector_field: Callable
    hutchinson: bool

    def __call__(self, t, state, eps):
        fn = lambda z: self.vector_field(t, z)
        if self.hutchinson:
            return _hutchinson_divergence(fn, state[0], eps)
        return _exact_divergence(fn, state[0])


@bijector_dataclass
class ContinuousFlow(Bijector):
    r"""Continuous normalizing flow: the time-:math:`t_1` map of :math:`dz/dt = f(t, z)`.

    Forward (base -> data) solves, from :math:`z(t_0) = x` to :math:`t_1`, the augmented
    ODE of the state and its log-determinant (Chen et al. 2018, Theorem 1)

    .. math::
        \frac{d}{dt}\begin{bmatrix} z \\ \ell \end{bmatrix} =
        \begin{bmatrix} f(t, z) \\ \operatorname{tr}\frac{\partial f}{\partial z}(t, z)
        \end{bmatrix},\qquad
        y = z(t_1),\quad \log|\det J(x)| = \ell(t_1) =
        \int_{t_0}^{t_1} \operatorname{tr}\frac{\partial f}{\partial z}(t, z(t))\,dt,

    with :math:`\ell(t_0) = 0`; equivalently :math:`\frac{d}{dt}\log p(z(t)) =
    -\operatorname{tr}(\partial f / \partial z)`. The inverse solves the same ODE
    backwards from :math:`t_1` to :math:`t_0`, which gives :math:`f^{-1}` and its
    log-det :math:`\int_{t_1}^{t_0}\operatorname{tr}(\cdot)\,dt`, minus the forward one.
    For the linear field :math:`f = Az` the map is
    :math:`x \mapsto e^{(t_1 - t_0)A}x` and the log-det is :math:`(t_1 - t_0)\operatorname{tr}A`.

    **Divergence.** `trace="exact"`: per example, :math:`\sum_j (J e_j)_j` from D
    Jacobian-vector products (`jax.linearize` once, then a `vmap` over the D basis
    vectors), :math:`O(D)` cost per evaluation; for small D. `trace="hutchinson"`
    (FFJORD): :math:`\operatorname{tr}J \approx \epsilon^\top J \epsilon` with one
    vector-Jacobian product, unbiased for :math:`E[\epsilon] = 0,\ E[\epsilon
    \epsilon^\top] = I`; with :math:`S = (J + J^\top)/2` the variance is
    :math:`2\|S\|_F^2` for Gaussian noise and :math:`2(\|S\|_F^2 - \sum_k S_{kk}^2)`
    for Rademacher noise (the default). One :math:`\epsilon` per example is drawn from
    `noise_key` at the start of each solve and held fixed over it; the path
    :math:`z(t)` does not depend on it, so the log-det estimate is unbiased for the
    integral (exactly so for fixed steps; adaptive step sizes see the noisy log-det
    through the error control, a bias of the order of the tolerances). The key is a
    pytree leaf: build a new flow with a fresh key per training step (e.g.
    `jax.random.fold_in(key, step)`), never rely on hidden state.

    **The vector field must act row-wise.** `vector_field(t, z)` receives a scalar time
    `t` (z's dtype) and the whole batch `z` [B, D], and must return [B, D] where row i
    depends on `z[i]` only (an MLP applied to each row, no batch norm or attention over
    the batch). Both divergences use this to get per-example traces from batched
    JVPs/VJPs without materialising a [B*D, B*D] Jacobian; a field that mixes rows
    gives wrong log-dets silently. Like `MaskedCoupling`'s conditioner, it is static
    pytree metadata (hashed by identity; a new function passed into a jitted function
    means a new trace): to train, build the flow inside the loss from the params being
    differentiated, e.g. `ContinuousFlow(lambda t, z: net.apply(params, t, z))`.

    **Solving.** `solver` names a diffrax explicit Runge-Kutta method. Adaptive solves
    use a PID step-size controller with `rtol`/`atol` (on the state and the log-det,
    shared by the batch: one step size for all examples) and initial step
    :math:`(t_1 - t_0)/`\ `num_steps`; the controller's choices carry no gradient
    (diffrax). Fixed solves take exactly `num_steps` equal steps. The whole solve is
    one `lax.while_loop`, so it compiles under `jax.jit` and vectorises under
    `jax.vmap`. Gradients: `adjoint="recursive_checkpoint"` (default) differentiates
    through the solver's operations with checkpointing (exact gradients of the
    discretised solve, with :math:`O(\log \text{max\_steps})` checkpoints for adaptive
    solves and one per step for fixed ones; reverse mode only, so use `jax.jacrev`, not
    `jax.jacfwd`); `adjoint="backsolve"` solves the adjoint ODE backwards in time
    (Chen et al. 2018; :math:`O(1)` memory, gradients only as accurate as the
    tolerances, reverse mode only). Closed-over arrays in `vector_field` (the params)
    are hoisted by `jax.closure_convert` into diffrax's `args` for the backsolve.
    More than `max_steps` steps raises a runtime error (diffrax's `throw=True`).

    Args:
      vector_field: `(t, z [B, D]) -> dz/dt [B, D]`, row-wise (see above). Static.
      noise_key: PRNG key for Hutchinson's noise (a pytree leaf); required for
        `trace="hutchinson"`, ignored for `trace="exact"`.
      t0, t1: integration interval, `t1 > t0` (floats). Static.
      solver: "tsit5" (default), "dopri5", "dopri8", "bosh3", "heun" or "euler".
      adaptive: adaptive step size (True) or `num_steps` fixed steps (False). The
        default None means True, except False for "euler" (which has no error estimate,
        so it cannot be adaptive) and "heun".
      rtol, atol: relative/absolute tolerances of adaptive solves (FFJORD uses 1e-5).
      num_steps: number of steps of a fixed solve; for adaptive solves the initial step
        is `(t1 - t0) / num_steps`.
      max_steps: most steps of an adaptive solve (also sizes the checkpointing).
      trace: "exact" or "hutchinson" (see above).
      hutchinson_noise: "rademacher" (default) or "gaussian".
      adjoint: "recursive_checkpoint" (default) or "backsolve".

    Raises:
      ValueError: for an unknown `solver`, `trace`, `hutchinson_noise` or `adjoint`,
        `adaptive=True` with "euler", `t1 <= t0`, non-positive tolerances or step
        counts; when called, an input that is not [B, D], a vector field whose output
        shape or dtype differs from its input's, or `trace="hutchinson"` without a key.
      TypeError: for a `vector_field` that is not callable, or a non-floating input.

    Example:
      >>> net = CNFVectorField(hidden=(32, 32))  # jgen.models.flows.cnf_nets
      >>> params = net.init(key, 0.0, jnp.zeros((1, 2)))
      >>> flow = ContinuousFlow(lambda t, z: net.apply(params, t, z))
      >>> y, log_det = flow.forward_and_log_det(x)  # x [B, 2]
      >>> log_p = flow_log_prob(flow, standard_normal_log_prob, data)
      >>> cnf_stats(flow, x).nfe  # function evaluations of that solve
      >>> # FFJORD training: stochastic trace with a fresh key per step
      >>> flow = ContinuousFlow(vf, trace="hutchinson", noise_key=jax.random.fold_in(key, step))

    References:
      Chen, R. T. Q., Rubanova, Y., Bettencourt, J. & Duvenaud, D. (2018). Neural
        Ordinary Differential Equations. NeurIPS. https://arxiv.org/abs/1806.07366
      Grathwohl, W., Chen, R. T. Q., Bettencourt, J., Sutskever, I. & Duvenaud, D.
        (2019). FFJORD: Free-form Continuous Dynamics for Scalable Reversible
        Generative Models. ICLR. https://arxiv.org/abs/1810.01367
      Hutchinson, M. F. (1989). A stochastic estimator of the trace of the influence
        matrix for Laplacian smoothing splines. Comm. Statist. Simulation Comput. 18(3).
      Kidger, P. (2021). On Neural Differential Equations. PhD thesis (diffrax).
        https://arxiv.org/abs/2202.02435
    """

    vector_field: Callable = static_field()
    noise_key: jax.Array | None = dataclasses.field(default=None, kw_only=True)
    t0: float = static_field(default=0.0, kw_only=True)
    t1: float = static_field(default=1.0, kw_only=True)
    solver: str = static_field(default="tsit5", kw_only=True)
    adaptive: bool | None = static_field(default=None, kw_only=True)
    rtol: float = static_field(default=1e-5, kw_only=True)
    atol: float = static_field(default=1e-5, kw_only=True)
    num_steps: int = static_field(default=10, kw_only=True)
    max_steps: int = static_field(default=4096, kw_only=True)
    trace: str = static_field(default="exact", kw_only=True)
    hutchinson_noise: str = static_field(default="rademacher", kw_only=True)
    adjoint: str = static_field(default="recursive_checkpoint", kw_only=True)

    event_ndims = 1

    def __post_init__(self):
        # Only static fields are checked here: JAX rebuilds the dataclass with arbitrary
        # leaves (tracers, None placeholders), so noise_key is checked when called.
        if not callable(self.vector_field):
            raise TypeError(
                "ContinuousFlow: vector_field must be a function (t, z [B, D]) -> dz/dt "
                f"[B, D]; received {self.vector_field!r} of type "
                f"{type(self.vector_field).__name__}. E.g. "
                "ContinuousFlow(lambda t, z: net.apply(params, t, z))."
            )
        for name, value, allowed in (
            ("solver", self.solver, tuple(_SOLVERS)),
            ("trace", self.trace, _TRACES),
            ("hutchinson_noise", self.hutchinson_noise, _NOISES),
            ("adjoint", self.adjoint, _ADJOINTS),
        ):
            if value not in allowed:
                raise ValueError(
                    f"ContinuousFlow: {name} must be one of {allowed}; received {value!r}."
                )
        if self.solver == "euler" and self.adaptive:
            raise ValueError(
                "ContinuousFlow: solver='euler' has no error estimate, so it cannot be "
                "adaptive; received adaptive=True. Use solver='heun' (or 'tsit5') for "
                "an adaptive solve, or adaptive=False with num_steps."
            )
        if not float(self.t1) > float(self.t0):
            raise ValueError(
                f"ContinuousFlow: need t1 > t0; received t0={self.t0!r}, t1={self.t1!r}. "
                "The inverse integrates from t1 back to t0; for the reverse map use "
                "Inverse(flow)."
            )
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(
                "ContinuousFlow: rtol and atol must be positive; received "
                f"rtol={self.rtol!r}, atol={self.atol!r}."
            )
        for name in ("num_steps", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ContinuousFlow: {name} must be a positive int; received {value!r}."
                )

    @property
    def is_adaptive(self) -> bool:
        """Whether solves use the adaptive step-size controller (resolves `adaptive=None`)."""
        if self.adaptive is None:
            return self.solver not in _FIXED_BY_DEFAULT
        return bool(self.adaptive)

    def _check_vector_field(self, t: jax.Array, z: jax.Array) -> None:
        out = jax.eval_shape(self.vector_field, t, z)
        if not hasattr(out, "shape") or out.shape != z.shape or out.dtype != z.dtype:
            got = (
                f"shape {out.shape} and dtype {out.dtype}"
                if hasattr(out, "shape")
                else f"{type(out).__name__}"
            )
            raise ValueError(
                "ContinuousFlow: vector_field(t, z) must return an array of z's shape "
                f"{z.shape} and dtype {z.dtype} (dz/dt for each row); received {got}. "
                "It is called with a scalar t and the whole batch z [B, D]."
            )

    def _noise(self, z: jax.Array) -> jax.Array | None:
        if self.trace == "exact":
            return None
        if self.noise_key is None:
            raise ValueError(
                "ContinuousFlow: trace='hutchinson' needs noise_key, the PRNG key of the "
                "trace estimator's noise; received noise_key=None. Pass a fresh key per "
                "step, e.g. ContinuousFlow(vf, trace='hutchinson', "
                "noise_key=jax.random.fold_in(key, step)), or use trace='exact'."
            )
        if self.hutchinson_noise == "gaussian":
            return jax.random.normal(self.noise_key, z.shape, z.dtype)
        return jax.random.rademacher(self.noise_key, z.shape, jnp.int32).astype(z.dtype)

    def solve(self, x: jax.Array, *, inverse: bool = False) -> CNFSolution:
        """Solves the augmented ODE forward (t0 -> t1) or, if `inverse`, backward.

        Args:
          x: floating batch [B, D].
          inverse: static bool; False for `forward_and_log_det`, True for the inverse.

        Returns:
          `CNFSolution(y [B, D], log_det [B], stats: CNFStats)`.
        """
        x = check_input("ContinuousFlow", "y" if inverse else "x", x, self.event_ndims)
        dtype = x.dtype
        t0, t1 = jnp.asarray(self.t0, dtype), jnp.asarray(self.t1, dtype)
        self._check_vector_field(t0, x)
        eps = self._noise(x)

        dynamics = _AugmentedDynamics(self.vector_field, eps is not None)
        y0 = (x, jnp.zeros(x.shape[:1], dtype))
        start, end = (t1, t0) if inverse else (t0, t1)
        if self.adjoint == "backsolve":
            # Hoist closed-over differentiated arrays (params) into `args`, the inputs
            # BacksolveAdjoint differentiates with respect to.
            converted, consts = jax.closure_convert(dynamics, start, y0, eps)
            hoisted = (eps, *consts)
            # args=None when there is no array to pass: diffrax 0.7.2's backsolve fails
            # on an args pytree without leaves.
            args = hoisted if jax.tree.leaves(hoisted) else None
            term = diffrax.ODETerm(
                lambda t, y, args: converted(t, y, *(hoisted if args is None else args))
            )
            adjoint = diffrax.BacksolveAdjoint()
        else:
            # `dynamics` compares equal across calls with the same vector field, so
            # diffrax's jit cache reuses the trace of repeated solves (faster compiles).
            term, args = diffrax.ODETerm(dynamics), eps
            # Fixed solves checkpoint every step (cheaper to compile than the recursive
            # scheme, and the memory of any num_steps-layer discrete flow).
            checkpoints = None if self.is_adaptive else self.num_steps
            adjoint = diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoints)
        dt0 = (end - start) / self.num_steps
        if self.is_adaptive:
            controller = diffrax.PIDController(rtol=self.rtol, atol=self.atol)
            max_steps = self.max_steps
        else:
            # (StepTo(ts) would be the same steps, but BacksolveAdjoint cannot reverse it.)
            controller, max_steps = diffrax.ConstantStepSize(), self.num_steps
        solver = _SOLVERS[self.solver]()
        sol = diffrax.diffeqsolve(
            term,
            solver,
            start,
            end,
            dt0,
            y0,
            args,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=controller,
            adjoint=adjoint,
            max_steps=max_steps,
        )
        y, log_det = (a[0] for a in sol.ys)  # the single saved time, t_end
        initial, per_step = _evals_per_step(solver)
        num_steps = jnp.asarray(sol.stats["num_steps"])
        stats = CNFStats(
            num_steps=num_steps,
            num_accepted_steps=jnp.asarray(sol.stats["num_accepted_steps"]),
            num_rejected_steps=jnp.asarray(sol.stats["num_rejected_steps"]),
            nfe=initial + per_step * num_steps,
        )
        return CNFSolution(y, log_det, stats)

    def forward_and_log_det(self, x):
        solution = self.solve(x)
        return solution.y, solution.log_det

    def inverse_and_log_det(self, y):
        solution = self.solve(y, inverse=True)
        return solution.y, solution.log_det


def cnf_stats(flow: ContinuousFlow, x: jax.Array, *, inverse: bool = False) -> CNFStats:
    """Step counts and NFE of the solve that `flow` does on `x` (e.g. to compare solvers).

    Args:
      flow: a `ContinuousFlow`.
      x: floating batch [B, D] (data for `inverse=True`, base samples otherwise).
      inverse: static bool; which direction to solve.

    Returns:
      `CNFStats(num_steps, num_accepted_steps, num_rejected_steps, nfe)`; see `CNFStats`.

    Example:
      >>> for solver in ("tsit5", "dopri8"):
      ...     flow = ContinuousFlow(vf, solver=solver, rtol=1e-7, atol=1e-7)
      ...     print(solver, int(jax.jit(cnf_stats, static_argnames="inverse")(flow, x).nfe))
    """
    if not isinstance(flow, ContinuousFlow):
        raise TypeError(
            f"cnf_stats: expected a ContinuousFlow; received {type(flow).__name__}."
        )
    return flow.solve(x, inverse=inverse).stats
