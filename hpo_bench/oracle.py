"""The oracle: a best-known optimum ``F* = min_theta outer_loss(w*(theta))`` per task instance.

Computed outside every tuner's clock (by the report, after the run) and cached on disk
next to the results, keyed by the task's constructor parameters and seed:

* at most 2 hyperparameters: a dense grid of ``F`` on the reference solve (``grid_points``
  per axis, equally spaced in theta, bounds included), then L-BFGS-B with the exact
  (reference) hypergradient from the best grid local minima, kept inside the neighbouring
  grid cells, so the result is never worse than the grid;
* more: L-BFGS-B (scipy) with the exact hypergradient from several starts (the space's
  ``init``, the centre of the bounds, and uniform random points from ``seed``).

Points where the inner problem has no minimiser (``FloatingPointError``) count as
``F = +inf``. One computation is bounded by ``max_seconds`` CPU seconds (default 60 s; a task whose
reference is a Newton solve may need seconds per evaluation): the result then says so in
``notes`` and is the best point found in that time. The report then also takes the best
reference-solve value any tuner reached on the instance (:func:`best_known`), so a cut-short
oracle never leaves a negative regret. The best evaluation seen anywhere is kept, so an optimiser stopping
abnormally cannot lose it. All in float64 on the CPU with one torch thread (small dense
factorisations are many times faster that way on a busy machine).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize

from ._threads import one_thread
from .registry import TASKS

__all__ = ["OracleResult", "compute_oracle", "oracle_for", "cached_oracle", "store_oracle", "oracle_key",
           "best_known",
           "ORACLE_VERSION", "MAX_SECONDS"]

#: Bump when the algorithm changes: cached results of other versions are recomputed.
ORACLE_VERSION = 1
GRID_POINTS = {1: 2001, 2: 151}
#: Default time budget of one oracle computation (seconds). The p = 200 per-feature ridge of the
#: paper suite needs 30-110 s on 2 busy cores; regenerate its report with ``--oracle-seconds 300``.
MAX_SECONDS = 60.0
#: Wall-clock backstop, in multiples of the CPU budget: on a machine so busy that this process
#: gets little CPU, an oracle still ends (and says so). Small instances never get near it.
WALL_BACKSTOP = 3.0


@dataclass
class OracleResult:
    """A best-known optimum of one task instance.

    Attributes:
        val_loss: ``F*``, the best validation loss at the reference inner solve.
        theta, hp: where (transformed and natural coordinates).
        init_val_loss: ``F`` at the space's ``init`` (where gradient tuners start); the
            *oracle gap* is ``init_val_loss - val_loss``.
        method: ``"grid+lbfgsb"`` or ``"lbfgsb-multistart"``.
        n_params: length of ``w`` (converts inner solves into cost units).
        transforms: one transform per entry of theta (``"log"`` or ``"none"``).
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

    @property
    def gap(self) -> float:
        """``F(init) - F*``, floored at ``1e-12 |F*|`` so targets stay defined when init is optimal."""
        return max(self.init_val_loss - self.val_loss, 1e-12 * max(abs(self.val_loss), 1e-300))


class _OutOfTime(Exception):
    """The oracle's time budget is spent (raised inside scipy's loop, caught around it)."""


class _Objective:
    """``F`` and ``dF/dtheta`` with evaluation counting, a running best and deadlines.

    ``deadline`` is on :func:`time.process_time` (CPU seconds of this process), ``wall_deadline``
    on :func:`time.perf_counter` (the backstop on a machine so busy that CPU time barely moves).
    """

    def __init__(self, task, deadline: float = math.inf, wall_deadline: float = math.inf) -> None:
        self.task = task
        self.n = 0
        self.best = math.inf
        self.best_theta: np.ndarray | None = None
        self.deadline = deadline
        self.wall_deadline = wall_deadline
        self.timed_out = False
        self.wall_timed_out = False

    def check_time(self) -> None:
        if time.process_time() > self.deadline:
            self.timed_out = True
            raise _OutOfTime
        if time.perf_counter() > self.wall_deadline:
            self.timed_out = self.wall_timed_out = True
            raise _OutOfTime

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=torch.float64)

    def _keep(self, f: float, x: np.ndarray) -> None:
        if f < self.best:
            self.best, self.best_theta = f, np.array(x, dtype=np.float64)

    def f(self, x: np.ndarray) -> float:
        self.n += 1
        try:
            with torch.no_grad():
                f = float(self.task.response(self._t(x)))
        except FloatingPointError:
            return math.inf
        f = f if math.isfinite(f) else math.inf
        self._keep(f, x)
        return f

    def fg(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.check_time()
        f = self.f(x)
        if not math.isfinite(f):
            return 1e300, np.zeros_like(np.asarray(x, dtype=np.float64))
        g = self.task.reference_hypergradient(self._t(x)).detach().cpu().numpy().astype(np.float64)
        return f, g if np.all(np.isfinite(g)) else np.zeros_like(g)


def _lbfgsb(obj: _Objective, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    try:
        minimize(obj.fg, np.clip(x0, lo, hi), jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi)),
                 # a long memory: per-feature penalties are badly conditioned (plateaus as λ_j -> ∞)
                 options={"maxiter": 3000, "maxcor": 100, "ftol": 1e-15, "gtol": 1e-11})
    except _OutOfTime:
        pass  # the best point seen is kept by the objective


#: Grid evaluations timed to decide whether the grid must be thinned to fit the time budget.
_TIMED_EVALS = 7


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
    order = np.argsort(vals[tuple(idx.T)])
    return [tuple(int(i) for i in idx[j]) for j in order[:k]]


def compute_oracle(task, *, grid_points: int | None = None, starts: int = 6, seed: int = 0,
                   max_seconds: float | None = MAX_SECONDS) -> OracleResult:
    """Best-known optimum of ``task`` (see the module docstring); costs no tuner time.

    ``max_seconds`` bounds the whole computation in CPU seconds of this process (tasks whose
    reference is an inner Newton solve can take seconds per evaluation; CPU time, not wall time,
    so that other work on a busy machine does not cut an instance short): the dense grid is
    thinned to fit half of it (from the median CPU time of a few evaluations), the optimiser
    runs stop when it is spent, and ``notes`` say so. ``seconds`` in the result is wall time.
    """
    t0 = time.perf_counter()
    c0 = time.process_time()  # the budget counts this process's CPU seconds: a busy machine does not cut it short
    space = task.space
    d = space.dim
    lo_t, hi_t = space.theta_bounds(dtype=torch.float64)
    lo, hi = lo_t.numpy(), hi_t.numpy()
    obj = _Objective(task, deadline=c0 + max_seconds if max_seconds is not None else math.inf,
                     wall_deadline=t0 + WALL_BACKSTOP * max_seconds if max_seconds is not None else math.inf)
    notes: list[str] = []
    with one_thread():  # L-BFGS-B on a busy machine otherwise waits on spinning BLAS threads
        init = space.init_theta(dtype=torch.float64).numpy()
        init_val = obj.f(init)
        t_eval = max(time.process_time() - c0, 1e-6)
        if d <= 2:
            k = grid_points or GRID_POINTS[d]
            pts = _grid_points(lo, hi, k, d)
            vals_list: list[float] = []
            if max_seconds is not None and k ** d * t_eval > 0.5 * max_seconds:
                # the first evaluation pays one-off costs (allocation, dispatch caches): time a few
                # grid points and thin on their median, so a cheap task keeps its full grid (the same
                # result on every machine) however busy this one is
                times = []
                for p_ in pts[:_TIMED_EVALS]:
                    t1 = time.process_time()
                    vals_list.append(obj.f(p_))
                    times.append(time.process_time() - t1)
                t_eval = max(float(np.median(times)), 1e-9)
                if k ** d * t_eval > 0.5 * max_seconds:
                    k_fit = max(int((0.5 * max_seconds / t_eval) ** (1.0 / d)), 5)
                    if k_fit < k:
                        notes.append(f"grid thinned from {k} to {k_fit} points per axis to fit "
                                     f"max_seconds={max_seconds:g}")
                        k = k_fit
                        pts = _grid_points(lo, hi, k, d)
                        vals_list = []
            axes = [np.linspace(lo[i], hi[i], k) for i in range(d)]
            vals_list += [obj.f(p_) for p_ in pts[len(vals_list):]]
            vals = np.array(vals_list).reshape((k,) * d)
            if not np.isfinite(vals).any():
                raise FloatingPointError(f"oracle: no grid point of task {task.name!r} has an inner minimiser")
            for idx in _grid_local_minima(vals, 3):
                x0 = np.array([axes[i][j] for i, j in enumerate(idx)])
                h = np.array([(hi[i] - lo[i]) / (k - 1) for i in range(d)])
                _lbfgsb(obj, x0, np.maximum(lo, x0 - h), np.minimum(hi, x0 + h))
            method = "grid+lbfgsb"
            n_starts = 0
        else:
            k = 0
            rng = np.random.default_rng(seed)
            x0s = [init, 0.5 * (lo + hi)] + [lo + (hi - lo) * rng.random(d) for _ in range(max(starts - 2, 0))]
            for x0 in x0s[:max(starts, 1)]:
                _lbfgsb(obj, x0, lo, hi)
            method = "lbfgsb-multistart"
            n_starts = len(x0s[:max(starts, 1)])
    if obj.wall_timed_out:
        notes.append(f"the wall-clock backstop ({WALL_BACKSTOP:g} x max_seconds={max_seconds:g}) ran out on a busy "
                     "machine: the best point seen is reported (not converged)")
    elif obj.timed_out:
        notes.append(f"max_seconds={max_seconds:g} ran out: the best point seen is reported (not converged)")
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
        n_evals=obj.n, seconds=time.perf_counter() - t0, notes=notes)


def oracle_key(task_params: dict[str, Any], seed: int, *, grid_points: int | None = None, starts: int = 6,
               max_seconds: float | None = MAX_SECONDS) -> str:
    """Cache key: the task's name and constructor parameters, its seed and the oracle's settings."""
    settings = {"task": task_params, "seed": int(seed), "version": ORACLE_VERSION, "grid_points": grid_points,
                "starts": starts, "max_seconds": max_seconds}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_path(cache_dir: str | Path | None, name: str, seed: int, key: str) -> Path | None:
    return Path(cache_dir) / f"{name}-seed{seed}-{key}.json" if cache_dir is not None else None


def cached_oracle(task_params: dict[str, Any], seed: int, cache_dir: str | Path | None, *,
                  grid_points: int | None = None, starts: int = 6,
                  max_seconds: float | None = MAX_SECONDS) -> OracleResult | None:
    """The cached oracle of ``task_params`` at ``seed`` in ``cache_dir``, or ``None`` (nothing computed).

    An entry counts when its key and :data:`ORACLE_VERSION` match; an unreadable one is ignored.
    """
    params = dict(task_params)
    name = params.pop("name")
    key = oracle_key({"name": name, **params}, seed, grid_points=grid_points, starts=starts, max_seconds=max_seconds)
    path = _cache_path(cache_dir, name, seed, key)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("key") == key and data.get("version") == ORACLE_VERSION:
            return OracleResult(**data)
    except (ValueError, TypeError):
        pass  # unreadable cache entry: recompute
    return None


def store_oracle(res: OracleResult, cache_dir: str | Path) -> Path:
    """Write ``res`` into ``cache_dir`` (atomically, under the name :func:`cached_oracle` reads)."""
    path = _cache_path(cache_dir, res.task, res.seed, res.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(res), indent=1))
    os.replace(tmp, path)
    return path


def oracle_for(task_params: dict[str, Any], seed: int, cache_dir: str | Path | None = None, *,
               grid_points: int | None = None, starts: int = 6,
               max_seconds: float | None = MAX_SECONDS) -> OracleResult:
    """The oracle of the task ``task_params`` (``{"name": ..., **constructor params}``) at ``seed``.

    Read from ``cache_dir/<name>-seed<seed>-<key>.json`` when present and current (see
    :func:`cached_oracle`); otherwise computed (float64, CPU) and written there atomically.
    """
    hit = cached_oracle(task_params, seed, cache_dir, grid_points=grid_points, starts=starts, max_seconds=max_seconds)
    if hit is not None:
        return hit
    params = dict(task_params)
    name = params.pop("name")
    key = oracle_key({"name": name, **params}, seed, grid_points=grid_points, starts=starts, max_seconds=max_seconds)
    path = _cache_path(cache_dir, name, seed, key)
    task = TASKS.get(name)(**params, seed=int(seed), dtype="float64", device="cpu")
    res = compute_oracle(task, grid_points=grid_points, starts=starts, seed=int(seed), max_seconds=max_seconds)
    res.params = params
    res.key = key
    if path is not None:
        store_oracle(res, cache_dir)
    return res


def best_known(oracle: OracleResult, val: float, theta: list[float], hp: list[float], *,
               what: str = "a tuner") -> OracleResult:
    """``oracle``, or a copy at ``(val, theta, hp)`` if that point is better (the best-known optimum).

    Used by the report with the lowest ``val_loss_ref`` of the run's records of the instance:
    the computation (cached, run-independent) stays as it is on disk.
    """
    if not (math.isfinite(val) and val < oracle.val_loss):
        return oracle
    better = OracleResult(**{**asdict(oracle), "val_loss": float(val), "theta": list(theta), "hp": list(hp),
                             "method": f"{oracle.method}+records"})
    better.notes = list(oracle.notes) + [f"{what} reached F = {val:.10g}, below the computed {oracle.val_loss:.10g}"]
    return better
