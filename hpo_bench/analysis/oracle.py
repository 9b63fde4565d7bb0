"""The oracle: a best-known optimum ``F* = min_theta outer_loss(w*(theta))`` per task instance.

Computed outside every tuner's clock (by the report, after the run) and cached on disk
next to the results, keyed by the task's constructor parameters, its seed and the oracle's
count budget. Every budget is a *count* (starts, evaluations), never seconds, so the same
instance gives the same ``F*``, bitwise, on every machine and under any load:

* at most 2 hyperparameters: a dense grid of ``F`` on the reference solve (``grid_points``
  per axis, equally spaced in theta, bounds included; thinned to fit half of ``max_evals``),
  then L-BFGS-B with the exact (reference) hypergradient from the best grid local minima,
  kept inside the neighbouring grid cells, and one run over the whole box from the best
  point found, so the result is never worse than the grid;
* more: L-BFGS-B (scipy) with the exact hypergradient from :func:`default_starts` starts
  (``min(max(8, 2 m), 32)`` for ``m`` hyperparameters: the space's ``init``, the centre of the
  bounds, then uniform random points from ``seed``), each with an equal share of what is left
  of ``max_evals``;
* then (:func:`polish_oracle`, run by the report) the same L-BFGS-B from every tuner's best
  point of the run's records, at most ``polish_evals`` evaluations each: ``F*`` is then never
  above a point a tuner reached (up to the records' rounding).

Points where the inner problem has no minimiser (the task raises ``FloatingPointError``) are
infeasible. The grid counts them as ``F = +inf``; inside L-BFGS-B they are *projected*: the
segment from the last feasible point to the infeasible one is bisected to its last feasible
point ``x_b``, and the optimiser sees ``F(x_b)`` plus a penalty growing with the distance to
``x_b`` (gradient pointing back to it), never a flat value with a zero gradient (that stalled
L-BFGS-B, issue 12 item 3). The best evaluation seen anywhere is kept, so an optimiser
stopping abnormally cannot lose it.

A wall-clock backstop (``max_seconds``, default :data:`BACKSTOP_SECONDS`) only guards against a
runaway: if it fires, the result has ``complete = False`` and says so in ``notes``, and the
report flags it loudly (it then depends on the machine). Every result records how it was
found: ``method``, ``starts``, ``n_evals``, ``max_evals``, ``winner`` (which start won), and the
ground truth it stood on: ``reference_routes`` (how the task computed its references, e.g.
``"dense"`` or ``"cg"``) and ``reference_bound`` (the largest certified error bound of a gradient used).

One evaluation of ``F`` and ``dF/dtheta`` is ONE :meth:`~hpo_bench.core.task.Task.reference` call (the
value and the gradient share one factorisation or one matrix-free solve), started from the previous
evaluation's warm state (``Reference.warm``: the last point evaluated, usually the nearest one along
L-BFGS-B's path); grid points need values only and cost one :meth:`~hpo_bench.core.task.Task.response`.
The sequence of evaluations is fixed by the counts, so the warm starts are too: the result stays the
same on every machine.
All in float64 on the CPU with one torch thread (small dense factorisations are many times
faster that way on a busy machine).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.optimize import minimize

from ..core._threads import one_thread
from ..core.registry import TASKS

__all__ = ["OracleResult", "compute_oracle", "polish_oracle", "oracle_for", "polished_oracle_for", "cached_oracle",
           "store_oracle", "oracle_key", "best_known", "default_starts", "default_budget", "ORACLE_VERSION",
           "SHIPPED_DIR", "shipped_oracle", "verify_oracle",
           "MAX_EVALS", "POLISH_EVALS", "TASK_BUDGETS", "BACKSTOP_SECONDS", "MAX_SECONDS", "RECORD_RTOL"]

#: Bump when the algorithm changes: cached results of other versions are recomputed.
ORACLE_VERSION = 3
GRID_POINTS = {1: 2001, 2: 151}
#: Default evaluation budget of one oracle computation (grid points and optimiser evaluations; one
#: evaluation is a reference solve and, in the optimiser, its hypergradient). The 2-D grid (151²)
#: fits in half of it.
MAX_EVALS = 50_000
#: Default evaluation budget of the polish from one tuner's best point (:func:`polish_oracle`).
POLISH_EVALS = 500
#: Count budgets of tasks whose evaluation is expensive (``weight_decay_mlp``: each evaluation is a
#: continuation solve of the network from its anchor, 1-40 CPU seconds at the quick suite's size):
#: L-BFGS-B from the init and the centre only, a few evaluations each; the polish from the tuners'
#: incumbents then does most of the work. A task may also declare ``oracle_budget = {"max_evals": ...,
#: "polish_evals": ..., "starts": ...}``; the CLI overrides the evaluation counts.
TASK_BUDGETS: dict[str, dict[str, int]] = {"weight_decay_mlp": {"max_evals": 20, "polish_evals": 4, "starts": 2}}
#: Wall-clock backstop of one computation (seconds): a safety against a runaway, never a budget.
BACKSTOP_SECONDS = 1800.0
#: Former name of the backstop (the budget was CPU seconds before version 2).
MAX_SECONDS = BACKSTOP_SECONDS
#: A record is below ``F*`` "beyond rounding" when ``F* - val_loss_ref > RECORD_RTOL * max(1, |F*|)``
#: (the records' ``val_loss_ref`` match a recomputation to about 1e-12).
RECORD_RTOL = 1e-9
#: Halvings of the segment from the last feasible point when projecting an infeasible one.
_BISECTIONS = 12
#: A restarted L-BFGS-B run (:func:`_lbfgsb`) goes on while each restart lowers F by more than this, relative.
RESTART_RTOL = 1e-12


def default_starts(n_hyper: int) -> int:
    """L-BFGS-B starts for ``n_hyper`` > 2 hyperparameters: ``min(max(8, 2 n_hyper), 32)``."""
    return min(max(8, 2 * int(n_hyper)), 32)


def default_budget(task_name: str, task: Any = None) -> dict[str, Any]:
    """``{"max_evals", "polish_evals", "starts"}`` for a task: :data:`TASK_BUDGETS`, the task's own
    ``oracle_budget`` attribute, else :data:`MAX_EVALS` / :data:`POLISH_EVALS` / :func:`default_starts`
    (``starts`` ``None``)."""
    out: dict[str, Any] = {"max_evals": MAX_EVALS, "polish_evals": POLISH_EVALS, "starts": None}
    out.update(TASK_BUDGETS.get(task_name, {}))
    if task is not None and isinstance(getattr(task, "oracle_budget", None), dict):
        out.update(task.oracle_budget)
    cls = TASKS.get(task_name) if task is None and task_name in TASKS.names() else None
    if cls is not None and isinstance(getattr(cls, "oracle_budget", None), dict):
        out.update(cls.oracle_budget)
    return out


@dataclass
class OracleResult:
    """A best-known optimum of one task instance.

    Attributes:
        val_loss: ``F*``, the best validation loss at the reference inner solve.
        theta, hp: where (transformed and natural coordinates).
        init_val_loss: ``F`` at the space's ``init`` (where gradient tuners start); the
            *oracle gap* is ``init_val_loss - val_loss``.
        method: ``"grid+lbfgsb"`` or ``"lbfgsb-multistart"`` (``+polish`` after
            :func:`polish_oracle`, ``+records`` when a record replaced ``F*``).
        n_params: length of ``w`` (converts inner solves into cost units).
        transforms: one transform per entry of theta (``"log"`` or ``"none"``).
        starts: L-BFGS-B starts of the computation (0 for the grid method), polished
            incumbents excluded (``polished``).
        n_evals, max_evals: evaluations spent and the count budget (the same on every machine).
        winner: which start found ``F*`` (``"grid cell ..."``, ``"start 3 of 8 (random)"``,
            ``"polished from cell X's incumbent (step k)"``).
        complete: ``False`` when the wall-clock backstop cut the computation short (then it
            depends on the machine, and ``notes`` say so).
        source: ``"oracle"``, or ``"tuner record: cell ..., step ..."`` when a record was below
            the oracle beyond rounding (an oracle failure, :func:`best_known`).
        seconds: wall time of the computation (informative only).
        reference_routes: the routes of the references the optimiser used (``Reference.route``:
            ``"dense"``, ``"cg"``, ...), sorted; empty for entries computed before the field existed.
        reference_bound: the largest finite error bound (``Reference.bound``, on ``||dF/dtheta - true||``)
            of those references; ``None`` where none carried one (dense factorisations).
        stationarity: how far ``theta`` is from a stationary point of ``F`` in the box: the largest entry
            of the projected gradient ``|P(dF/dtheta)|`` at ``theta`` (entries at a bound that point out of
            the box count 0), from the reference gradient evaluated there; the measure L-BFGS-B's ``pgtol``
            uses. ``None`` where ``theta`` was reached without a gradient (a grid point never polished, an
            entry written before the field existed, a record that beat the oracle).
        best_bound: the reference's certified bound on ``||dF/dtheta - true||`` at ``theta`` (``None``
            as for ``stationarity``, or where the route carries none).
    """

    task: str
    params: dict[str, Any]
    seed: int
    val_loss: float
    theta: list[float]
    hp: list[float]
    init_val_loss: float
    method: str
    n_params: int
    n_hyper: int
    transforms: list[str]
    grid_points: int
    starts: int
    n_evals: int
    seconds: float
    key: str = ""
    version: int = ORACLE_VERSION
    notes: list[str] = field(default_factory=list)
    max_evals: int = 0
    winner: str = ""
    complete: bool = True
    backstop_s: float | None = None
    polished: int = 0
    source: str = "oracle"
    reference_routes: list[str] = field(default_factory=list)
    reference_bound: float | None = None
    stationarity: float | None = None
    best_bound: float | None = None

    @property
    def gap(self) -> float:
        """``F(init) - F*``, floored at ``1e-12 |F*|`` so targets stay defined when init is optimal."""
        return max(self.init_val_loss - self.val_loss, 1e-12 * max(abs(self.val_loss), 1e-300))

    @property
    def failed(self) -> bool:
        """A tuner's record beat the oracle beyond rounding (``source`` names it)."""
        return self.source != "oracle"


class _OutOfBudget(Exception):
    """The evaluation budget of one optimiser run is spent, or the backstop fired."""


class _Objective:
    """``F`` and ``dF/dtheta`` with evaluation counting, a running best, projection of infeasible
    points and an evaluation cap (``stop_at``) plus the wall-clock backstop (``wall_deadline``)."""

    def __init__(self, task, wall_deadline: float = math.inf) -> None:
        self.task = task
        self.n = 0
        self.best = math.inf
        self.best_theta: np.ndarray | None = None
        self.best_origin = ""
        self.origin = ""
        self.stop_at = math.inf
        self.wall_deadline = wall_deadline
        self.wall_timed_out = False
        self.capped = 0  # L-BFGS-B runs stopped on their evaluation cap
        self.anchor: tuple[np.ndarray, float, np.ndarray] | None = None
        self.warm: Any = None  # the last reference's warm-start state (Task.reference)
        self.routes: set[str] = set()  # routes of the references used (Reference.route)
        self.max_bound = math.nan  # the largest finite error bound of a reference gradient used
        self.lo: np.ndarray | None = None  # the box (for the projected gradient at the best point)
        self.hi: np.ndarray | None = None
        self.best_stationarity: float | None = None  # projected-gradient max-norm at best_theta
        self.best_bound: float | None = None  # the reference's gradient bound at best_theta

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=torch.float64)

    def _spend(self) -> None:
        if self.n >= self.stop_at:
            raise _OutOfBudget
        if time.perf_counter() > self.wall_deadline:
            self.wall_timed_out = True
            raise _OutOfBudget

    def _seen(self, x: np.ndarray, f: float) -> float:
        f = f if math.isfinite(f) else math.inf
        if f < self.best:
            self.best, self.best_theta, self.best_origin = f, np.array(x, dtype=np.float64), self.origin
            self.best_stationarity = self.best_bound = None  # set by _value_and_grad where it has a gradient
        return f

    def _projected_grad_norm(self, x: np.ndarray, g: np.ndarray) -> float:
        """``max_i |P(g)_i|``: entries at a bound whose descent direction leaves the box count 0."""
        pg = np.array(g, dtype=np.float64)
        if self.lo is not None and self.hi is not None:
            pg[(x <= self.lo) & (pg > 0)] = 0.0
            pg[(x >= self.hi) & (pg < 0)] = 0.0
        return float(np.max(np.abs(pg))) if pg.size else 0.0

    def f(self, x: np.ndarray) -> float:
        """``F(x)`` (``+inf`` where infeasible); one evaluation: one reference solve, no gradient
        (:meth:`Task.response`; the grid needs values only)."""
        self.n += 1
        try:
            with torch.no_grad():
                f = float(self.task.response(self._t(x)))
        except FloatingPointError:
            return math.inf
        return self._seen(x, f)

    def _value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray | None]:
        """``(F(x), dF/dtheta)`` from ONE :meth:`Task.reference` call (one factorisation or one
        matrix-free solve for both), started from the previous evaluation's warm state; one
        evaluation. ``(+inf, None)`` where infeasible, a ``None`` gradient where it is not finite."""
        self.n += 1
        try:
            ref = self.task.reference(self._t(x), warm=self.warm)
        except FloatingPointError:
            return math.inf, None
        self.warm = ref.warm
        self.routes.add(str(ref.route))
        if math.isfinite(ref.bound) and not ref.bound <= self.max_bound:
            self.max_bound = float(ref.bound)
        before = self.best
        f = self._seen(x, float(ref.value))
        if not math.isfinite(f):
            return f, None
        g = ref.grad.detach().cpu().numpy().astype(np.float64)
        ok = bool(np.all(np.isfinite(g)))
        if ok and (f < before or (f == self.best and self.best_stationarity is None
                                  and self.best_theta is not None and np.array_equal(x, self.best_theta))):
            self.best_stationarity = self._projected_grad_norm(x, g)
            self.best_bound = float(ref.bound) if math.isfinite(ref.bound) else None
        return f, (g if ok else None)

    def fg(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.array(x, dtype=np.float64)
        self._spend()
        f, g = self._value_and_grad(x)
        if g is not None:
            self.anchor = (x, f, g)
            return f, g
        return self._projected(x)

    def _projected(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Infeasible ``x``: ``F(x_b) + c (|g_b·u| + 1) r + c r²`` with ``x_b`` the last feasible point of
        the segment from the anchor, ``r = |x - x_b|``, ``u`` its direction, ``c = max(1, |F(x_b)|)``:
        continuous at ``x_b``, above ``F(x_b)`` and rising away from the feasible set."""
        if self.anchor is None:  # no feasible point yet in this run: nothing to project onto
            return 1e300, np.zeros_like(x)
        xa, fa, ga = self.anchor
        lo_t, hi_t = 0.0, 1.0  # xa + t (x - xa): feasible at lo_t, infeasible at hi_t
        xb, fb, gb = xa, fa, ga
        for _ in range(_BISECTIONS):
            self._spend()
            mid = 0.5 * (lo_t + hi_t)
            xm = xa + mid * (x - xa)
            fm, gm = self._value_and_grad(xm)
            if gm is None:
                hi_t = mid
            else:
                lo_t, xb, fb, gb = mid, xm, fm, gm
        d = x - xb
        r = float(np.linalg.norm(d))
        if r == 0.0:
            return fb, gb
        u = d / r
        c = max(1.0, abs(fb))
        slope = c * (abs(float(gb @ u)) + 1.0)
        return fb + slope * r + c * r * r, slope * u + 2.0 * c * d


def _lbfgsb(obj: _Objective, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, evals: float, origin: str) -> None:
    """One bounded L-BFGS-B run from ``x0`` of at most ``evals`` evaluations (the best point is kept).

    L-BFGS-B also stops when one iteration's relative reduction of its objective falls below ``ftol``, or
    when a line search fails; on badly conditioned problems (per-feature penalties on sparse data) that
    happens far from a stationary point: one run at p = 3000 stopped after 329 evaluations with a
    projected gradient of 1.5e-4, against 2e-4 for the whole gradient. So a run that stops for any reason
    but its projected-gradient test is restarted from its best point with a fresh memory, while each
    restart lowers ``F`` by more than :data:`RESTART_RTOL` relative and the evaluations last.
    """
    if evals < 1:
        return
    obj.stop_at = obj.n + evals
    obj.origin = origin
    obj.anchor = None
    x0 = np.clip(np.asarray(x0, dtype=np.float64), lo, hi)
    scale: list[float] = []
    run_best: list[Any] = [math.inf, x0]

    def phi(x: np.ndarray) -> tuple[float, np.ndarray]:
        # L-BFGS-B on asinh(F / s), a monotone map of F (same minimisers; F itself is what is kept):
        # near a singular inner Hessian F can reach 1e45 a step away from F ~ 1 (seed_toy, per-weight
        # raw λ), and a line search on F itself then stops at once ("relative reduction of F")
        f, g = obj.fg(x)
        if f < run_best[0]:
            run_best[0], run_best[1] = f, np.array(x, dtype=np.float64)
        if not scale:
            scale.append(max(1e-3 * abs(f), 1e-12) if abs(f) < 1e300 else 1.0)
        s = scale[0]
        return math.asinh(f / s), g / math.hypot(s, f)

    try:
        x = x0
        while True:
            before = run_best[0]
            res = minimize(phi, x, jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi)),
                           # a long memory: per-feature penalties are badly conditioned (plateaus as λ_j -> ∞)
                           options={"maxiter": 100_000, "maxfun": 10**9, "maxcor": 100, "ftol": 1e-15,
                                    "gtol": 1e-11})
            if "PROJECTED GRADIENT" in str(res.message).upper() or not math.isfinite(run_best[0]):
                break  # converged, or no feasible point to restart from
            if math.isfinite(before) and not before - run_best[0] > RESTART_RTOL * max(abs(before), 1e-300):
                break  # the restart found nothing lower: a stationary point to the precision of F
            x = run_best[1]
    except _OutOfBudget:
        obj.capped += 1  # the best point seen is kept by the objective
    finally:
        obj.stop_at = math.inf


def _grid_points(lo: np.ndarray, hi: np.ndarray, k: int, d: int) -> np.ndarray:
    """The ``k**d`` points of the grid, bounds included, in C order (``(k**d, d)``)."""
    axes = [np.linspace(lo[i], hi[i], k) for i in range(d)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def _grid_local_minima(vals: np.ndarray, k: int) -> list[tuple[int, ...]]:
    """Indices of the ``k`` lowest discrete local minima of a 1-D or 2-D grid of values."""
    padded = np.pad(vals, 1, constant_values=np.inf)
    core = tuple(slice(1, -1) for _ in vals.shape)
    is_min = np.isfinite(vals)
    for axis in range(vals.ndim):
        for shift in (-1, 1):
            is_min &= vals <= np.roll(padded, shift, axis=axis)[core]
    idx = np.argwhere(is_min)
    order = np.argsort(vals[tuple(idx.T)], kind="stable")
    return [tuple(int(i) for i in idx[j]) for j in order[:k]]


def _check_count(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"oracle: `{name} >= {low}` must hold (an integer), but got ({name}={value!r})")


def _backstop_note(max_seconds: float) -> str:
    return (f"INCOMPLETE: the wall-clock backstop (max_seconds={max_seconds:g}) fired before the count budget "
            "was spent: the best point seen is reported, and it depends on this machine's speed")


def compute_oracle(task, *, grid_points: int | None = None, starts: int | None = None, seed: int = 0,
                   max_evals: int | None = None, max_seconds: float | None = None) -> OracleResult:
    """Best-known optimum of ``task`` (see the module docstring); costs no tuner time.

    Args:
        grid_points: per axis, for at most 2 hyperparameters (default :data:`GRID_POINTS`).
        starts: L-BFGS-B starts for more (default :func:`default_starts`).
        seed: of the random starts.
        max_evals: the count budget (default :func:`default_budget`): grid points plus optimiser
            evaluations (each bisection step of a projection counts as one).
        max_seconds: the wall-clock backstop (default :data:`BACKSTOP_SECONDS`; ``math.inf``: none),
            a safety against a runaway: if it fires, ``complete`` is ``False`` and ``notes`` say so.

    Returns:
        The same result, bitwise, for the same task, settings and code, whatever the machine's load
        (unless the backstop fired). ``seconds`` is wall time, informative only.
    """
    t0 = time.perf_counter()
    space = task.space
    d = space.dim
    budget = default_budget(task.name, task)
    max_evals = budget["max_evals"] if max_evals is None else max_evals
    _check_count("max_evals", max_evals, 1)
    backstop = BACKSTOP_SECONDS if max_seconds is None else float(max_seconds)
    lo_t, hi_t = space.theta_bounds(dtype=torch.float64)
    lo, hi = lo_t.numpy(), hi_t.numpy()
    obj = _Objective(task, wall_deadline=t0 + backstop)
    obj.lo, obj.hi = lo, hi
    notes: list[str] = []
    with one_thread():  # L-BFGS-B on a busy machine otherwise waits on spinning BLAS threads
        init = space.init_theta(dtype=torch.float64).numpy()
        obj.origin = "init"
        init_val = obj.f(init)
        if d <= 2:
            k = grid_points or GRID_POINTS[d]
            _check_count("grid_points", k, 2)
            k_full = k
            while k > 5 and k ** d > max_evals // 2:
                k -= 1
            if k < k_full:
                notes.append(f"grid thinned from {k_full} to {k} points per axis to fit max_evals={max_evals}")
            pts = _grid_points(lo, hi, k, d)
            axes = [np.linspace(lo[i], hi[i], k) for i in range(d)]
            vals_list: list[float] = []
            for i, p_ in enumerate(pts):
                if time.perf_counter() > obj.wall_deadline:
                    obj.wall_timed_out = True
                    break
                obj.origin = "grid point " + str(tuple(int(j) for j in np.unravel_index(i, (k,) * d)))
                vals_list.append(obj.f(p_))
            vals_list += [math.inf] * (len(pts) - len(vals_list))
            vals = np.array(vals_list).reshape((k,) * d)
            if not np.isfinite(vals).any() and not obj.wall_timed_out:
                raise FloatingPointError(f"oracle: no grid point of task {task.name!r} has an inner minimiser")
            minima = _grid_local_minima(vals, 3)
            h = np.array([(hi[i] - lo[i]) / (k - 1) for i in range(d)])
            runs = len(minima) + 1
            for r, idx in enumerate(minima):
                x0 = np.array([axes[i][j] for i, j in enumerate(idx)])
                _lbfgsb(obj, x0, np.maximum(lo, x0 - h), np.minimum(hi, x0 + h), (max_evals - obj.n) // (runs - r),
                        f"polish of grid cell {idx}")
            if obj.best_theta is not None:
                _lbfgsb(obj, obj.best_theta, lo, hi, max_evals - obj.n, "whole-box L-BFGS-B from the best grid polish")
            method = "grid+lbfgsb"
            n_starts = 0
        else:
            k = 0
            starts = budget["starts"] if starts is None else starts
            n_starts = default_starts(d) if starts is None else starts
            _check_count("starts", n_starts, 1)
            rng = np.random.default_rng(seed)
            x0s = [(init, "init"), (0.5 * (lo + hi), "centre of the bounds")]
            x0s += [(lo + (hi - lo) * rng.random(d), "random") for _ in range(max(n_starts - 2, 0))]
            x0s = x0s[:n_starts]
            for i, (x0, what) in enumerate(x0s):
                _lbfgsb(obj, x0, lo, hi, (max_evals - obj.n) // (n_starts - i), f"start {i + 1} of {n_starts} ({what})")
            method = "lbfgsb-multistart"
    complete = not obj.wall_timed_out
    if not complete:
        notes.append(_backstop_note(backstop))
    elif obj.capped:
        notes.append(f"{obj.capped} L-BFGS-B run(s) stopped on their share of max_evals={max_evals} before "
                     "converging (a count: the same on every machine)")
    if obj.best_theta is None:
        raise FloatingPointError(f"oracle: no evaluated point of task {task.name!r} has an inner minimiser")
    if not math.isfinite(init_val):
        notes.append("the space's init has no inner minimiser: the gap is floored, so both targets equal F*")
        init_val = obj.best  # degenerate: no gap; targets then equal F*
    theta = torch.as_tensor(obj.best_theta, dtype=torch.float64)
    return OracleResult(
        task=task.name, params=dict(task.params), seed=task.seed, val_loss=float(obj.best),
        theta=[float(v) for v in obj.best_theta], hp=[float(v) for v in space.to_natural(theta)],
        init_val_loss=float(init_val), method=method, n_params=int(task.n_params), n_hyper=d,
        transforms=[b.transform for b in space.blocks for _ in range(b.size)], grid_points=k, starts=n_starts,
        n_evals=obj.n, seconds=time.perf_counter() - t0, notes=notes, max_evals=int(max_evals),
        winner=obj.best_origin, complete=complete, backstop_s=backstop, reference_routes=sorted(obj.routes),
        reference_bound=obj.max_bound if math.isfinite(obj.max_bound) else None,
        stationarity=obj.best_stationarity, best_bound=obj.best_bound)


def polish_oracle(task, oracle: OracleResult, starts: Sequence[tuple[str, Sequence[float]]], *,
                  polish_evals: int | None = None, max_seconds: float | None = None) -> OracleResult:
    """``oracle`` improved by L-BFGS-B (the oracle's own local optimiser, whole box) from each of ``starts``.

    Args:
        task: the instance ``oracle`` was computed on (float64).
        starts: ``(label, theta)`` pairs, e.g. ``("cell c3's incumbent (step 7)", theta)``: each is
            evaluated, then polished with at most ``polish_evals`` evaluations (default
            :func:`default_budget`).
        max_seconds: the wall-clock backstop of the whole polish (default :data:`BACKSTOP_SECONDS`).

    Returns:
        A copy with ``val_loss <= min(oracle.val_loss, F(start))`` for every start (when complete),
        ``winner`` naming the start that found it, ``polished`` and ``n_evals`` counting the work.
        ``oracle`` itself is unchanged; with no starts it is returned as is.
    """
    if not starts:
        return oracle
    t0 = time.perf_counter()
    polish_evals = default_budget(task.name, task)["polish_evals"] if polish_evals is None else polish_evals
    _check_count("polish_evals", polish_evals, 1)
    backstop = BACKSTOP_SECONDS if max_seconds is None else float(max_seconds)
    space = task.space
    lo_t, hi_t = space.theta_bounds(dtype=torch.float64)
    lo, hi = lo_t.numpy(), hi_t.numpy()
    obj = _Objective(task, wall_deadline=t0 + backstop)
    obj.lo, obj.hi = lo, hi
    obj.best, obj.best_theta, obj.best_origin = oracle.val_loss, np.array(oracle.theta, dtype=np.float64), oracle.winner
    obj.best_stationarity, obj.best_bound = oracle.stationarity, oracle.best_bound
    with one_thread():
        for label, theta in starts:
            if time.perf_counter() > obj.wall_deadline:
                obj.wall_timed_out = True
                break
            _lbfgsb(obj, np.asarray(theta, dtype=np.float64), lo, hi, polish_evals, f"polished from {label}")
    notes = list(oracle.notes)
    if obj.wall_timed_out:
        notes.append(_backstop_note(backstop) + " (in the polish from the tuners' incumbents)")
    elif obj.capped:
        notes.append(f"{obj.capped} of {len(starts)} polish run(s) stopped on polish_evals={polish_evals} before "
                     "converging")
    th = torch.as_tensor(obj.best_theta, dtype=torch.float64)
    method = oracle.method if oracle.method.endswith("+polish") else oracle.method + "+polish"
    bounds = [b for b in (oracle.reference_bound, obj.max_bound) if b is not None and math.isfinite(b)]
    return OracleResult(**{
        **asdict(oracle), "val_loss": float(obj.best), "theta": [float(v) for v in obj.best_theta],
        "hp": [float(v) for v in space.to_natural(th)], "method": method, "n_evals": oracle.n_evals + obj.n,
        "seconds": oracle.seconds + time.perf_counter() - t0, "notes": notes, "winner": obj.best_origin,
        "complete": oracle.complete and not obj.wall_timed_out, "polished": oracle.polished + len(starts),
        "reference_routes": sorted(set(oracle.reference_routes) | obj.routes),
        "reference_bound": max(bounds) if bounds else None, "stationarity": obj.best_stationarity,
        "best_bound": obj.best_bound})


def oracle_key(task_params: dict[str, Any], seed: int, *, grid_points: int | None = None, starts: int | None = None,
               max_evals: int | None = None, **_ignored: Any) -> str:
    """Cache key: the task's name and constructor parameters, its seed and the oracle's count settings
    (the wall-clock backstop is not part of it: it never changes a complete result). ``max_evals=None``
    is the task's default (:func:`default_budget`), so both spellings share an entry."""
    if max_evals is None:
        max_evals = default_budget(str(task_params.get("name", "")))["max_evals"]
    settings = {"task": task_params, "seed": int(seed), "version": ORACLE_VERSION, "grid_points": grid_points,
                "starts": starts, "max_evals": max_evals}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _polish_key(base_key: str, starts: Sequence[tuple[str, Sequence[float]]], polish_evals: int | None) -> str:
    text = json.dumps({"base": base_key, "polish_evals": polish_evals,
                       "starts": [[str(lab), [float(v).hex() for v in th]] for lab, th in starts]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_path(cache_dir: str | Path | None, name: str, seed: int, key: str) -> Path | None:
    return Path(cache_dir) / f"{name}-seed{seed}-{key}.json" if cache_dir is not None else None


def _read(path: Path | None, key: str, max_seconds: float | None) -> OracleResult | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("key") != key or data.get("version") != ORACLE_VERSION:
            return None
        res = OracleResult(**data)
    except (ValueError, TypeError):
        return None  # unreadable cache entry: recompute
    want = BACKSTOP_SECONDS if max_seconds is None else float(max_seconds)
    if not res.complete and (res.backstop_s is None or want > res.backstop_s):
        return None  # cut short by a smaller backstop than asked for now: try again
    return res


def _split(task_params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    params = dict(task_params)
    return params.pop("name"), params


def cached_oracle(task_params: dict[str, Any], seed: int, cache_dir: str | Path | None, *,
                  grid_points: int | None = None, starts: int | None = None, max_evals: int | None = None,
                  max_seconds: float | None = None) -> OracleResult | None:
    """The cached oracle of ``task_params`` at ``seed`` in ``cache_dir``, or ``None`` (nothing computed).

    An entry counts when its key and :data:`ORACLE_VERSION` match, and, if the backstop cut it
    short, when ``max_seconds`` is no larger than the backstop it ran under; an unreadable one is ignored.
    """
    name, params = _split(task_params)
    max_evals = default_budget(name)["max_evals"] if max_evals is None else max_evals
    key = oracle_key({"name": name, **params}, seed, grid_points=grid_points, starts=starts, max_evals=max_evals)
    return _read(_cache_path(cache_dir, name, seed, key), key, max_seconds)


def store_oracle(res: OracleResult, cache_dir: str | Path) -> Path:
    """Write ``res`` into ``cache_dir`` (atomically, under the name :func:`cached_oracle` reads)."""
    path = _cache_path(cache_dir, res.task, res.seed, res.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(res), indent=1))
    os.replace(tmp, path)
    return path


#: Oracles shipped with the package for the task instances of the named suites (quick, seed, ...):
#: entries of the same format and key as a cache folder, written by ``scripts/ship_oracles.py``
#: from a run folder's ``oracle/`` (the command and the run are in ``SHIPPED_DIR/README.md``). They
#: spare a first report on a new machine the minutes of a cold oracle; each is re-checked against
#: the current code before use (:func:`verify_oracle`), and a failed check means a fresh computation.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "oracles"

#: Relative agreement :func:`verify_oracle` asks of F at a shipped oracle's points: far above the
#: rounding of a reference solve (~1e-13 relative; the MLP's path ~1e-11) and far below the report's
#: smallest target (0.1% of the oracle gap).
VERIFY_RTOL = 1e-8


def shipped_oracle(task_params: dict[str, Any], seed: int, *, max_evals: int | None = None,
                   shipped_dir: str | Path | None = None) -> OracleResult | None:
    """The shipped oracle of ``task_params`` at ``seed`` with the default settings (grid points and
    starts) and ``max_evals``, or ``None``. Not yet verified: see :func:`verify_oracle`."""
    return cached_oracle(task_params, seed, SHIPPED_DIR if shipped_dir is None else shipped_dir,
                         max_evals=max_evals)


def verify_oracle(res: OracleResult, task: Any = None) -> str | None:
    """``None`` when the current code gives ``res``'s two values back, else why not.

    Recomputes F at the space's ``init`` and at ``res.theta`` (two reference solves) and asks each
    to match ``res.init_val_loss`` / ``res.val_loss`` to :data:`VERIFY_RTOL`. A changed task (data,
    split, model) or reference solver changes these values, so a stale entry is caught; what a check
    cannot see is a *better* point that new oracle code would find: the report's polish from the
    cells' incumbents and :func:`best_known` (an oracle failure, said loudly) cover that.
    """
    task = _build(res.task, dict(res.params), res.seed) if task is None else task
    init = task.space.init_theta(dtype=torch.float64)
    for what, theta, want in (("F(init)", init, res.init_val_loss),
                              ("F*", torch.tensor(res.theta, dtype=torch.float64), res.val_loss)):
        try:
            with torch.no_grad():
                got = float(task.response(theta))
        except FloatingPointError as exc:
            return f"{what}: no reference now ({exc})"
        if not (math.isfinite(got) and abs(got - want) <= VERIFY_RTOL * max(abs(want), 1e-12)):
            return f"{what} is {got!r} with this code, {want!r} when shipped"
    return None


def _build(name: str, params: dict[str, Any], seed: int):
    return TASKS.get(name)(**params, seed=int(seed), dtype="float64", device="cpu")


def oracle_for(task_params: dict[str, Any], seed: int, cache_dir: str | Path | None = None, *,
               grid_points: int | None = None, starts: int | None = None, max_evals: int | None = None,
               max_seconds: float | None = None, task: Any = None) -> OracleResult:
    """The oracle of the task ``task_params`` (``{"name": ..., **constructor params}``) at ``seed``.

    Read from ``cache_dir/<name>-seed<seed>-<key>.json`` when present and current (see
    :func:`cached_oracle`); otherwise computed (float64, CPU, :func:`compute_oracle`) and written there atomically.
    ``task``: the instance to compute on, if already built (float64, CPU, these parameters and seed),
    so that the caller's next step (the polish) reuses it; ``None`` builds one when needed.
    """
    hit = cached_oracle(task_params, seed, cache_dir, grid_points=grid_points, starts=starts, max_evals=max_evals,
                        max_seconds=max_seconds)
    if hit is not None:
        return hit
    name, params = _split(task_params)
    max_evals = default_budget(name)["max_evals"] if max_evals is None else max_evals
    key = oracle_key({"name": name, **params}, seed, grid_points=grid_points, starts=starts, max_evals=max_evals)
    res = compute_oracle(_build(name, params, seed) if task is None else task, grid_points=grid_points,
                         starts=starts, seed=int(seed), max_evals=max_evals, max_seconds=max_seconds)
    res.params = params
    res.key = key
    if cache_dir is not None:
        store_oracle(res, cache_dir)
    return res


def polished_oracle_for(task_params: dict[str, Any], seed: int, oracle: OracleResult,
                        starts: Sequence[tuple[str, Sequence[float]]], cache_dir: str | Path | None = None, *,
                        polish_evals: int | None = None, max_seconds: float | None = None,
                        task: Any = None) -> OracleResult:
    """:func:`polish_oracle` of ``oracle`` from ``starts``, cached in ``cache_dir`` under a key of the
    oracle's key, the starts (labels and exact theta) and ``polish_evals`` (in ``cache_dir/polish/``:
    these depend on the run's records, so they never go to a cache shared by run folders).
    ``task``: the instance to evaluate on, if already built (its solver caches are reused)."""
    if not starts:
        return oracle
    name, params = _split(task_params)
    polish_evals = default_budget(name)["polish_evals"] if polish_evals is None else polish_evals
    key = _polish_key(oracle.key, starts, polish_evals)
    path = _cache_path(Path(cache_dir) / "polish" if cache_dir is not None else None, name, seed, key)
    hit = _read(path, key, max_seconds)
    if hit is not None:
        return hit
    res = polish_oracle(_build(name, params, seed) if task is None else task, oracle, starts,
                        polish_evals=polish_evals, max_seconds=max_seconds)
    res.key = key
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(asdict(res), indent=1))
        os.replace(tmp, path)
    return res


def best_known(oracle: OracleResult, val: float, theta: list[float], hp: list[float], *,
               what: str = "a tuner") -> OracleResult:
    """``oracle``, or a copy at ``(val, theta, hp)`` if that point is lower beyond rounding (an oracle failure).

    "Beyond rounding": ``oracle.val_loss - val > RECORD_RTOL * max(1, |oracle.val_loss|)``. The copy
    has ``source = "tuner record: <what>"`` (so :attr:`OracleResult.failed` is true), ``method``
    ending in ``+records`` and a note starting with ``what``: the report then says so loudly.
    Used by the report with the lowest ``val_loss_ref`` of the run's records of the instance:
    the computation (cached, run-independent) stays as it is on disk.
    """
    if not (math.isfinite(val) and oracle.val_loss - val > RECORD_RTOL * max(1.0, abs(oracle.val_loss))):
        return oracle
    better = OracleResult(**{**asdict(oracle), "val_loss": float(val), "theta": list(theta), "hp": list(hp),
                             "method": f"{oracle.method}+records", "source": f"tuner record: {what}",
                             "stationarity": None, "best_bound": None})
    better.notes = list(oracle.notes) + [f"{what} reached F = {val:.10g}, below the computed {oracle.val_loss:.10g}"
                                         " (an oracle failure)"]
    return better
