"""The recorder: one row per outer step / evaluation, timed honestly.

Only the tuner's own work is timed. :meth:`Recorder.record` pauses the clock on entry,
computes every measurement (validation and test loss, the reference solve, the
reference hypergradient and the errors against it) and resumes it on exit, so
``time_s`` is cumulative tuner time and ``measure_s`` the cumulative time spent measuring
(so a cell's ``wall_s - time_s - measure_s`` is what the harness itself cost). Costs
(``inner_steps``, ``grad_evals``, ``hvps``, ``inner_solves``) are cumulative counts the tuner
reports with :meth:`Recorder.add_cost`.

Statuses: ``ok``; ``diverged`` (non-finite parameters or losses, or validation loss
``diverge_factor`` times above the first one, detected at the step where it happens);
``timeout`` (the cell ran past its hard wall-clock limit and was stopped); ``error``
(``message``: the exception on its first line, then its traceback); ``oom`` (out of memory: a
``MemoryError``, torch's "out of memory" / "can't allocate memory" errors, or a cell process
killed by SIGKILL while the kernel counted an OOM kill; a SIGKILL without one is ``error``). A
non-``ok`` row ends the cell.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

__all__ = ["Budget", "Recorder", "COLUMNS", "VOLATILE_COLUMNS", "STATUSES", "StopRun", "rel_error", "cosine",
           "KEY_COLUMNS", "RecordsFileError", "read_records_file", "STOCHASTIC_COLUMNS", "COMPACT_MIN_HYPER",
           "VECTOR_EVERY", "vector_of", "flat_param_columns", "PARAM_PREFIXES"]

STATUSES = ("ok", "diverged", "timeout", "error", "oom")

#: Documented columns of the records table, in order (``README.md`` explains each).
COLUMNS = (
    "suite", "cell_id", "task", "task_params", "tuner", "tuner_label", "tuner_params", "seed",
    "budget_steps", "budget_seconds", "step", "time_s", "measure_s", "inner_steps", "grad_evals", "hvps", "inner_solves",
    "val_loss", "val_loss_ref", "test_loss", "best_val_loss", "hypergrad_rel_error", "hypergrad_cosine",
    "hypergrad_norm", "hypergrad_error_bound", "reference_error_bound", "reference_route", "hp", "theta", "status",
    "message", "stop_reason",
    # per-cell columns (the same on every row of a cell), filled by the harness
    "cell_seed", "torch_threads", "wall_s", "peak_rss_mb", "peak_cuda_mb", "worker",
)

#: Columns of the rows stochastic tuners record (``hpo_bench.stochastic``; absent, hence NaN in a mixed
#: table, for other tuners): ``samples`` (examples touched by every oracle call so far, both levels),
#: ``epochs`` (``samples / (n_train + n_val)``), ``inner_rel_distance`` ``||w - w*|| / ||w*||``,
#: ``v_rel_error`` (the solver's ``v`` vs ``H^{-1} grad outer`` at ``w*``; NaN for solvers without one)
#: and ``grad_norm_sq`` ``||dF/dtheta||^2`` of the reference hypergradient. The solver's outer direction is
#: the row's ``hypergrad``: ``hypergrad_rel_error`` and ``hypergrad_cosine`` compare it with the reference.
STOCHASTIC_COLUMNS = ("samples", "epochs", "inner_rel_distance", "v_rel_error", "grad_norm_sq")

#: Columns that may differ between two runs of the same suite and seed (clocks, memory,
#: where the cell ran); every other column is reproducible on CPU.
VOLATILE_COLUMNS = ("time_s", "measure_s", "wall_s", "peak_rss_mb", "peak_cuda_mb", "worker", "torch_threads")


#: Compact rows: a task with more than this many hyperparameters stores the vectors ``hp`` and ``theta``
#: (one float each per hyperparameter and row, ~81 bytes per hyperparameter per row as Python lists,
#: 2.4 GB for 10^4 hyperparameters x 3000 rows) only on the rows :data:`VECTOR_EVERY` names; other rows
#: get null (``None``) there. At or below it every row has them.
COMPACT_MIN_HYPER = 100
#: With compact rows, the rows that keep ``hp`` and ``theta``: the first row; every ``VECTOR_EVERY``-th step
#: (``step % VECTOR_EVERY == 0``); a row that is not ``ok``; and, filled in when the cell ends
#: (:meth:`Recorder.finish`), the cell's last row, its final incumbent (the row of lowest ``val_loss``, the
#: report's incumbent) and its row of lowest ``val_loss_ref`` (the point the report's oracle polishes from).
#: The recorder holds those three points until then (three vectors, not one per improving row: a descent
#: improves on almost every row). A cell killed from outside keeps the vectors of every ``VECTOR_EVERY``-th
#: row, so its best stored point is at most ``VECTOR_EVERY`` steps behind its best row.
VECTOR_EVERY = 50

#: Columns without which a parquet file is not a records table (``show`` and ``report`` need them).
KEY_COLUMNS = ("cell_id", "task", "tuner", "tuner_label", "seed", "step", "status")


#: The JSON parameter columns of the records and the prefix of their flattened columns (benchopt's
#: ``p_solver_*`` convention): ``task_params = '{"name": "ridge", "n": 30}'`` gives ``task.name``, ``task.n``.
PARAM_PREFIXES = {"task_params": "task.", "tuner_params": "tuner."}


def _flatten(d: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for k, v in d.items():
        if isinstance(v, dict) and v:
            _flatten(v, f"{prefix}{k}.", out)
        elif isinstance(v, (list, tuple, dict)):
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True)
        else:
            out[f"{prefix}{k}"] = v


def flat_param_columns(frame: Any) -> Any:
    """``frame`` with every entry of its ``task_params`` and ``tuner_params`` JSON columns also as a column.

    Keys become ``task.<key>`` and ``tuner.<key>`` (nested tables: ``tuner.sampler_kwargs.qmc_type``); scalar
    values keep their type (pandas gives a column of numbers a numeric dtype, a mixed one ``object``); lists
    stay JSON text; a key a row does not have is missing (``NaN``/``None``) there. Existing columns of those
    names are replaced, so calling it twice changes nothing. Returns a new frame; the input is not modified.
    """
    import pandas as pd

    new: dict[str, Any] = {}
    for src, prefix in PARAM_PREFIXES.items():
        if src not in frame.columns:
            continue
        parsed: dict[Any, dict[str, Any]] = {}
        for text in frame[src].unique():
            flat: dict[str, Any] = {}
            try:
                d = json.loads(text) if isinstance(text, str) else (text if isinstance(text, dict) else {})
            except ValueError:
                d = {}
            _flatten(d if isinstance(d, dict) else {}, prefix, flat)
            parsed[text] = flat
        keys = sorted({k for flat in parsed.values() for k in flat})
        for k in keys:
            new[k] = frame[src].map(lambda text, k=k: parsed[text].get(k))
    if not new:
        return frame.copy()
    rest = frame.drop(columns=[c for c in new if c in frame.columns])
    return pd.concat([rest, pd.DataFrame(new, index=frame.index)], axis=1)


class RecordsFileError(ValueError):
    """A records or cell file that cannot be read as a records table; the message says what to do."""


def read_records_file(path: Any, *, required: tuple[str, ...] = KEY_COLUMNS) -> Any:
    """Read a records table (``records.parquet`` or a ``cells/*.parquet`` file) in full, as a DataFrame.

    Every data page is decoded, so a damaged file fails here, not later.

    Raises:
        RecordsFileError: the file is not parquet, is truncated or damaged, or lacks ``required`` columns.
        OSError: the file cannot be opened (missing, no permission).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real I/O failure, not a damaged file
        raise RecordsFileError(f"{str(path)!r} is damaged or not a parquet file ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); in its run folder, run the same "
                               "`hpo-bench run` command with --resume: it sets damaged cell files aside, reruns "
                               "their cells and rewrites records.parquet") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise RecordsFileError(f"{str(path)!r} is a parquet file but not a records table written by hpo-bench: it "
                               f"lacks the columns {missing}")
    return table.to_pandas()


class StopRun(Exception):
    """Raised inside a tuner to end the cell early (the recorder has the reason)."""


@dataclass(frozen=True)
class Budget:
    """How much a tuner may spend: outer steps / evaluations and tuner seconds (either may be ``None``)."""

    steps: int | None = 50
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"budget `steps >= 1` must hold, but got steps={self.steps!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"budget `seconds > 0` must hold, but got seconds={self.seconds!r}")
        if self.steps is None and self.seconds is None:
            raise ValueError("a budget needs `steps`, `seconds` or both")


_NAN = float("nan")  # one object: rows compare equal (dict equality tries identity first) when both lack a bound


def _bound_of(stats: dict[str, Any] | None) -> float:
    """``stats["error_bound"]`` as a float, :data:`_NAN` where the method gives none (or gives NaN)."""
    b = float((stats or {}).get("error_bound", _NAN))
    return b if math.isfinite(b) or math.isinf(b) else _NAN


def vector_of(value: Any) -> list[float]:
    """A record's ``hp`` or ``theta`` as a list of floats: ``[]`` where the row has none (null on a compact
    row, :data:`COMPACT_MIN_HYPER`; an empty list on a terminal row without a point)."""
    if value is None or isinstance(value, float):  # None, or NaN where pandas filled a missing list
        return []
    return [float(v) for v in value]


def rel_error(est: torch.Tensor, ref: torch.Tensor) -> float:
    """``||est - ref|| / ||ref||`` (``||est||`` when ``ref = 0``)."""
    den = float(torch.linalg.vector_norm(ref))
    num = float(torch.linalg.vector_norm(est - ref))
    return num / den if den > 0 else num


def cosine(est: torch.Tensor, ref: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(est)) * float(torch.linalg.vector_norm(ref))
    return float(est @ ref) / den if den > 0 else float("nan")


class Recorder:
    """Collects records for one cell. Tuners call :meth:`add_cost`, :meth:`record` and
    :meth:`should_stop`; the harness builds it and reads :attr:`rows`.

    Args:
        task: the cell's task.
        budget: the cell's budget.
        meta: constant columns (suite, cell_id, task, tuner, seed, ...).
        reference: measure ``val_loss_ref`` and hypergradient errors against the task's
            reference (clock paused). Turn off for tasks whose reference is costly.
        diverge_factor: validation loss this many times above the first one is a divergence.
        on_row: called with every row as soon as it is appended (the harness streams rows
            out of a worker process with it, so a cell killed on timeout keeps its rows).

    Compact rows: with more than :data:`COMPACT_MIN_HYPER` hyperparameters, ``hp`` and ``theta`` are
    stored only on the rows :data:`VECTOR_EVERY` describes (null elsewhere); :meth:`finish` fills in
    the last row, the final incumbent and the lowest ``val_loss_ref`` row when the cell ends.
    """

    def __init__(self, task, budget: Budget, *, meta: dict[str, Any] | None = None, reference: bool = True,
                 diverge_factor: float = 1e8, on_row: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.task = task
        self.on_row = on_row
        self.budget = budget
        self.meta = dict(meta or {})
        self.reference = reference
        self.diverge_factor = diverge_factor
        self.rows: list[dict[str, Any]] = []
        self.costs = {"inner_steps": 0, "grad_evals": 0, "hvps": 0, "inner_solves": 0}
        self.best = math.inf
        self.status = "ok"
        self.stop_reason: str | None = None
        self._stop_requested = False
        self._elapsed = 0.0
        self._t0: float | None = None
        self._measure = 0.0  # seconds spent with the clock paused (measurements)
        self._pause_t0: float | None = None
        self._first_val: float | None = None
        self.compact = int(task.space.dim) > COMPACT_MIN_HYPER
        self._best_ref = math.inf
        # rows stored without vectors that finish() fills in: "last", "incumbent", "best_ref" -> (row index, theta)
        self._pending: dict[str, tuple[int, torch.Tensor]] = {}
        self._warm: Any = None  # the previous row's Reference.warm (Task.reference)

    # ----------------------------------------------------------------- clock
    def start(self) -> None:
        self._t0 = time.perf_counter()

    @property
    def time_s(self) -> float:
        """Tuner time so far (excludes every paused interval)."""
        running = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        return self._elapsed + running

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the clock for measurements the tuner does not pay for."""
        if self._t0 is None:
            yield
            return
        now = time.perf_counter()
        self._elapsed += now - self._t0
        self._t0 = None
        self._pause_t0 = now
        try:
            yield
        finally:
            self._t0 = time.perf_counter()
            self._measure += self._t0 - self._pause_t0
            self._pause_t0 = None

    @property
    def measure_s(self) -> float:
        """Seconds spent in measurements so far (the paused intervals, including one in progress)."""
        running = time.perf_counter() - self._pause_t0 if self._pause_t0 is not None else 0.0
        return self._measure + running

    # ----------------------------------------------------------------- costs
    def add_cost(self, **counts: int) -> None:
        for key, n in counts.items():
            if key not in self.costs:
                raise KeyError(f"unknown cost {key!r}; known: {sorted(self.costs)}")
            self.costs[key] += int(n)

    # ---------------------------------------------------------------- budget
    def request_stop(self, reason: str = "requested") -> None:
        self._stop_requested = True
        self.stop_reason = reason

    def should_stop(self) -> bool:
        if self._stop_requested or self.status != "ok":
            return True
        if self.budget.steps is not None and len(self.rows) >= self.budget.steps:
            self.stop_reason = "budget_steps"
            return True
        if self.budget.seconds is not None and self.time_s >= self.budget.seconds:
            self.stop_reason = "budget_seconds"
            return True
        return False

    # --------------------------------------------------------------- records
    def record(self, *, w: torch.Tensor | None, theta: torch.Tensor, hypergrad: torch.Tensor | None = None,
               val_loss: float | None = None, status: str = "ok", message: str = "",
               hypergrad_stats: dict[str, Any] | None = None, samples: int | None = None,
               epochs: float | None = None, v: torch.Tensor | None = None, **extra: Any) -> str:
        """Append one row (clock paused); returns its status (``diverged`` ends the cell).

        ``samples`` (stochastic tuners): the row gets :data:`STOCHASTIC_COLUMNS` (``v``: the solver's
        estimate of ``H^{-1} grad outer``, ``None`` where it keeps none).

        ``hypergrad_stats``: the method's :attr:`~hpo_bench.hypergrad.Hypergradient.stats`; its
        ``error_bound`` (a certified relative bound on the hypergradient's error of the linear
        solve at ``w``, e.g. ``cg``'s) fills ``hypergrad_error_bound`` (NaN where absent).
        """
        with self.paused():
            return self._record(w=w, theta=theta, hypergrad=hypergrad, val_loss=val_loss, status=status,
                                message=message, extra=extra, hypergrad_stats=hypergrad_stats,
                                stochastic=None if samples is None else (samples, epochs, v))

    def _stochastic(self, w, theta, ref, w_star, samples, epochs, v) -> dict[str, Any]:
        """:data:`STOCHASTIC_COLUMNS` at ``theta`` (NaN where the reference is off or unavailable)."""
        nan = float("nan")
        out = {"samples": int(samples), "epochs": nan if epochs is None else float(epochs),
               "inner_rel_distance": nan, "v_rel_error": nan, "grad_norm_sq": nan}
        if not self.reference or ref is None or w is None or not bool(torch.isfinite(w).all()):
            return out
        task = self.task
        out["grad_norm_sq"] = float(ref @ ref)
        w_star = task.solve(theta) if w_star is None else w_star.detach()
        out["inner_rel_distance"] = rel_error(w.detach(), w_star)
        if v is not None:
            out["v_rel_error"] = rel_error(v.detach(), task.reference_adjoint(theta))
        return out

    def _record(self, *, w, theta, hypergrad, val_loss, status, message, extra, hypergrad_stats=None,
                stochastic=None) -> str:
        task = self.task
        theta = theta.detach()
        row: dict[str, Any] = dict(self.meta)
        row.update(step=len(self.rows), time_s=self.time_s, measure_s=0.0, **self.costs)
        nan = float("nan")
        with torch.no_grad():
            finite_w = w is not None and bool(torch.isfinite(w).all())
            if val_loss is None:
                val_loss = float(task.outer_loss(w)) if finite_w else nan
            test_loss = float(task.test_loss(w)) if finite_w else nan
            task_metrics = {k: float(v) for k, v in task.extra_metrics(w, theta).items()} if finite_w else {}
        clash = sorted(set(task_metrics) & set(COLUMNS))
        if clash:
            raise ValueError(f"{type(task).__name__}.extra_metrics names must not be record columns, but got {clash}")
        row.update(task_metrics)
        val_ref = rel = cos = nan
        ref_bound = _NAN
        ref = w_star = None
        route = ""
        if self.reference and bool(torch.isfinite(theta).all()):
            try:
                if hypergrad is not None or stochastic is not None:
                    # value and gradient from ONE reference (one factorisation or one matrix-free solve),
                    # warm-started from the previous row's
                    full = task.reference(theta, warm=self._warm)
                    self._warm = full.warm
                    val_ref, ref, w_star = float(full.value), full.grad.detach(), full.w
                    ref_bound, route = _bound_of({"error_bound": full.bound}), str(full.route)
                else:  # black-box rows need the value only: one solve, no gradient
                    val_ref, route = float(task.response(theta)), "solve"
                if hypergrad is not None:
                    rel, cos = rel_error(hypergrad, ref), cosine(hypergrad, ref)
            except FloatingPointError as exc:  # e.g. raw λ made the inner problem non-convex
                message = message or f"reference unavailable: {exc}"
                ref = w_star = None
        if stochastic is not None:
            try:
                row.update(self._stochastic(w, theta, ref, w_star, *stochastic))
            except FloatingPointError as exc:
                message = message or f"reference unavailable: {exc}"
        if status == "ok":
            if not finite_w or not math.isfinite(val_loss) or (
                    hypergrad is not None and not bool(torch.isfinite(hypergrad).all())):
                status, message = "diverged", message or "non-finite parameters, loss or hypergradient"
            elif self._first_val is not None and val_loss > self.diverge_factor * max(self._first_val, 1e-300):
                status, message = "diverged", f"validation loss {val_loss:.3g} blew up (first {self._first_val:.3g})"
        if self._first_val is None and math.isfinite(val_loss):
            self._first_val = val_loss
        improved = math.isfinite(val_loss) and val_loss < self.best
        ref_improved = math.isfinite(val_ref) and val_ref < self._best_ref
        if math.isfinite(val_loss):
            self.best = min(self.best, val_loss)
        if ref_improved:
            self._best_ref = val_ref
        keep = (not self.compact or not self.rows or status != "ok" or len(self.rows) % VECTOR_EVERY == 0
                or self._last_by_budget())
        row.update(
            val_loss=val_loss, val_loss_ref=val_ref, test_loss=test_loss, best_val_loss=self.best,
            hypergrad_rel_error=rel, hypergrad_cosine=cos,
            hypergrad_norm=float(torch.linalg.vector_norm(hypergrad)) if hypergrad is not None else nan,
            hypergrad_error_bound=_bound_of(hypergrad_stats), reference_error_bound=ref_bound,
            reference_route=route,
            hp=task.space.to_natural(theta).cpu().tolist() if keep else None,
            theta=theta.cpu().tolist() if keep else None,
            status=status, message=message, stop_reason="",
        )
        if keep:  # this row has its vectors: it needs no filling in, and earlier bests it replaces none either
            self._pending.pop("last", None)
            if improved:
                self._pending.pop("incumbent", None)
            if ref_improved:
                self._pending.pop("best_ref", None)
        else:
            point = (len(self.rows), theta.clone())
            self._pending["last"] = point
            if improved:
                self._pending["incumbent"] = point
            if ref_improved:
                self._pending["best_ref"] = point
        if extra:
            row["extra"] = json.dumps(extra, sort_keys=True, default=str)
        row["measure_s"] = self.measure_s  # this row's measurements included
        self._append(row)
        if status != "ok":
            self.status = status
            self.stop_reason = status
        return status

    def _last_by_budget(self) -> bool:
        """Whether the row being recorded is the cell's last: the step budget is reached with it, the
        tuner seconds are spent (the clock is paused: ``time_s`` is final), or a stop was requested."""
        b = self.budget
        return (self._stop_requested or (b.steps is not None and len(self.rows) + 1 >= b.steps)
                or (b.seconds is not None and self.time_s >= b.seconds))

    def finish(self, *, ended: bool = True) -> list[tuple[int, dict[str, Any]]]:
        """At the cell's end: store ``hp`` and ``theta`` on the rows compact rows left null that must have them:
        the last recorded row (a tuner that stopped on its own, before its budget), the final incumbent and
        the row of lowest ``val_loss_ref`` (:data:`VECTOR_EVERY`).

        ``ended`` (the tuner returned; ``False`` when a terminal :meth:`fail` row follows): the last row's
        ``stop_reason`` becomes why the cell ended, :attr:`stop_reason` as the budget checks, a stop request
        or a non-``ok`` row set it, else ``"tuner"`` (the tuner ended on its own: grid exhausted, L-BFGS-B
        converged). Every other row keeps ``""``.

        Returns ``[(row index, {column: value, ...}), ...]``, one per row it filled, in row order (the
        harness sends each to the driver, which holds the streamed copy of the row).
        """
        points = {i: th for i, th in self._pending.values()}
        self._pending = {}
        patches: dict[int, dict[str, Any]] = {}
        for idx in sorted(points):
            theta = points[idx]
            patches[idx] = {"hp": self.task.space.to_natural(theta).cpu().tolist(), "theta": theta.cpu().tolist()}
        if ended and self.rows and not self.rows[-1].get("stop_reason"):
            patches.setdefault(len(self.rows) - 1, {})["stop_reason"] = self.stop_reason or "tuner"
        for idx, patch in patches.items():
            self.rows[idx].update(patch)
        return sorted(patches.items())

    def _append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.on_row is not None:
            self.on_row(row)

    def fail(self, status: str, message: str, theta: torch.Tensor | None = None) -> None:
        """Append a terminal row for a cell that errored or timed out (no measurements)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, but got {status!r}")
        nan = float("nan")
        row: dict[str, Any] = dict(self.meta)
        row.update(step=len(self.rows), time_s=self.time_s, measure_s=self.measure_s, **self.costs, val_loss=nan,
                   val_loss_ref=nan, test_loss=nan, best_val_loss=self.best, hypergrad_rel_error=nan,
                   hypergrad_cosine=nan, hypergrad_norm=nan, hypergrad_error_bound=_NAN, reference_error_bound=_NAN,
                   reference_route="",
                   hp=[] if theta is None else self.task.space.to_natural(theta).cpu().tolist(),
                   theta=[] if theta is None else theta.cpu().tolist(),
                   status=status, message=message, stop_reason=status)
        self._append(row)
        self.status = status
        self.stop_reason = status
