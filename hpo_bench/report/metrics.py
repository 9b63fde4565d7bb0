"""Derived metrics of a records table: regret against the oracle, incumbents, time- and cost-to-target.

Definitions (every figure and table of the report uses these):

* ``objective`` F of a row: the validation loss at the *reference* inner solve of the row's
  λ (column ``val_loss_ref``), or the row's own ``val_loss`` where the run had no reference.
  An inexact inner solve therefore cannot score below the oracle.
* ``regret`` of a row: ``val_loss_ref - F*``, F(λ) - F* (NaN where the row has no reference):
  ``>= 0`` up to the oracle's accuracy, since F* is the best known value of F. A negative
  regret beyond that is an *oracle failure*, reported as such, never clipped.
  ``val_loss_gap_own_w``: ``val_loss - F*``, the validation loss of the tuner's *own* w minus
  F*. It is not a regret: an unconverged inner w (early stopping) can beat w*(λ) on the
  validation split, so it can be negative.
* The *incumbent* at a row: the row with the lowest ``val_loss`` so far, i.e. the λ the tuner
  would return if stopped there (it only knows its own validation losses).
  ``incumbent_regret = F(incumbent) - F*`` is what curves, targets and final values use.
* *Validation–test gap* of a cell: ``test_loss - val_loss`` of its final incumbent, both at the
  tuner's own w of that row (the model the tuner would return). The cell is flagged
  ``overfit`` when, from its first recorded point (first row with a finite ``val_loss``) to its
  final incumbent, the validation loss fell while the test loss rose: the tuner fitted the
  validation split at the test split's expense (see :func:`overfits`).
* Oracle gap: ``F(init) - F*`` (see :class:`hpo_bench.analysis.oracle.OracleResult`). A cell reaches the
  target ``x%`` at the first row with ``incumbent_regret <= x/100 * gap``;
  time-to-target is that row's ``time_s`` (tuner seconds), cost-to-target its ``cost_units``.
  A cell that never gets there is *not reached* (NaN and ``reached = False``, never a number).
* ``cost_units = grad_evals + hvps + n_params * inner_solves``: inner gradient evaluations and
  Hessian-vector products count one each; a reference inner solve counts ``n_params`` (what
  conjugate gradients needs to solve a ``p x p`` system exactly). The raw counts stay in the
  records.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ..analysis.oracle import OracleResult
# hpo_bench.analysis.oracle and hpo_bench.core.records import torch: they are imported inside the functions that need them, so
# `hpo-bench plot` (load_records with columns, add_incumbent, add_derived) runs without torch

__all__ = ["TARGETS", "target_label", "load_records", "objective", "add_incumbent", "overfits", "oracles_for_records",
           "OracleProgress",
           "with_records", "add_derived", "cell_metrics", "ReportError"]

#: Fractions of the oracle gap that define the two targets.
TARGETS = (0.01, 0.001)


class ReportError(ValueError):
    """A run folder the report cannot read (one line, names the path)."""


def target_label(frac: float) -> str:
    return f"{frac * 100:g}%"


def target_key(frac: float) -> str:
    return f"{frac * 100:g}pct".replace(".", "_")


#: The columns :func:`load_records` always reads (what every table, figure and oracle step needs).
RECORD_COLUMNS = ("cell_id", "task", "task_params", "tuner", "tuner_label", "seed", "step", "time_s", "val_loss",
                  "val_loss_ref", "test_loss", "hp", "status")


def _read_columns(path: Path, columns: Sequence[str]) -> pd.DataFrame | None:
    """Only ``columns`` (those the file has, plus :data:`RECORD_COLUMNS`) of a records file, read with pyarrow
    directly; ``None`` when the file does not read that way (then the full reader gives the error message)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
        have = set(f.schema_arrow.names)
        want = list(dict.fromkeys([*RECORD_COLUMNS, *columns]))
        return f.read(columns=[c for c in want if c in have]).to_pandas()
    except (OSError, ValueError, pa.ArrowException):
        return None


def load_records(run_dir: str | Path, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``records.parquet`` of a run folder, or its finished ``cells/*.parquet`` (partial runs).

    ``columns``: read only these columns (those present) besides :data:`RECORD_COLUMNS`, from
    ``records.parquet`` (``hpo-bench plot``: a few columns of a large table, and no torch import); a
    partial run and a file that pyarrow cannot read that way are read in full (the full reader checks
    every page and says what is wrong)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"run folder {str(run)!r} does not exist")
    path = run / "records.parquet"
    df = _read_columns(path, columns) if columns is not None and path.is_file() else None
    if df is not None:
        return _prepare_records(df, path)
    from ..core.records import RecordsFileError, read_records_file

    try:  # a damaged, truncated or foreign file is one line (ReportError), not a traceback
        if path.is_file():
            df = read_records_file(path, required=())
        else:
            parts = sorted((run / "cells").glob("*.parquet")) if (run / "cells").is_dir() else []
            if not parts:
                raise ReportError(f"{str(run)!r} has no records.parquet and no cells/*.parquet: is it a run folder "
                                  "written by `hpo-bench run`?")
            df = pd.concat([read_records_file(p, required=()) for p in parts], ignore_index=True)
    except RecordsFileError as exc:
        raise ReportError(str(exc)) from None
    return _prepare_records(df, path)


def _prepare_records(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Check the key columns, mark instances on synthetic stand-ins (:func:`~hpo_bench.report.datasets.mark_instances`:
    ``task`` is what tables and figures print, ``task_label`` the suite's label), add the suite's order of tasks
    and tuners, sort by cell and step."""
    missing = sorted(set(RECORD_COLUMNS) - set(df.columns))
    if missing:
        raise ReportError(f"{str(path)!r} lacks the record columns {missing}")
    if df.empty:
        raise ReportError(f"{str(path)!r} has no records")
    from .datasets import mark_instances, run_datasets

    df = mark_instances(df, run_datasets(path.parent))
    # the suite's order (tasks, then tuners, as the harness wrote them) orders tables and legends
    for col in ("task", "tuner_label"):
        order = {v: i for i, v in enumerate(pd.unique(df[col]))}
        df[f"{col}_order"] = df[col].map(order)
    return df.sort_values(["cell_id", "step"], kind="stable").reset_index(drop=True)


def objective(df: pd.DataFrame) -> pd.Series:
    """F per row: ``val_loss_ref`` where finite, else ``val_loss``."""
    ref = pd.to_numeric(df["val_loss_ref"], errors="coerce")
    own = pd.to_numeric(df["val_loss"], errors="coerce")
    return ref.where(np.isfinite(ref), own)


def add_incumbent(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``objective`` and ``incumbent_objective`` (F at the lowest ``val_loss`` so far in the cell).

    Also ``incumbent_row`` (the position of that row, -1 before any finite ``val_loss``) and
    ``first_row`` (the position of the cell's first row with a finite ``val_loss``, its first
    recorded point; -1 where it has none), the same on every row of a cell.
    ``df`` must be sorted by cell and step (as :func:`load_records` returns it).
    """
    df = df.reset_index(drop=True)  # incumbent_row holds positions
    df["objective"] = objective(df)
    val = pd.to_numeric(df["val_loss"], errors="coerce").to_numpy(dtype=float)
    obj = df["objective"].to_numpy(dtype=float)
    inc = np.full(len(df), np.nan)
    inc_row = np.full(len(df), -1, dtype=np.int64)
    cells = df["cell_id"].to_numpy()
    best, cur, cur_row = math.inf, math.nan, -1
    for i in range(len(df)):
        if i == 0 or cells[i] != cells[i - 1]:
            best, cur, cur_row = math.inf, math.nan, -1
        v = val[i]
        if math.isfinite(v) and v < best:
            best, cur, cur_row = v, obj[i], i
        inc[i] = cur
        inc_row[i] = cur_row
    df["incumbent_objective"] = inc
    df["incumbent_row"] = inc_row
    finite = pd.Series(np.where(np.isfinite(val), np.arange(len(df)), len(df)), index=df.index)
    first = finite.groupby(df["cell_id"], sort=False).transform("min").to_numpy()
    df["first_row"] = np.where(first < len(df), first, -1)
    return df


def overfits(first_val: float, first_test: float, val: float, test: float) -> bool:
    """Whether moving from a cell's first recorded point to its incumbent fitted the validation
    split at the test split's expense: the validation loss fell (``val < first_val``) while the
    test loss rose (``test > first_test``). ``False`` where any of the four is not finite."""
    vals = (first_val, first_test, val, test)
    return all(math.isfinite(float(v)) for v in vals) and val < first_val and test > first_test


def _task_key(task_params: str, seed: int) -> tuple[str, int]:
    return str(task_params), int(seed)


def _instances(df: pd.DataFrame) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """``(codes, keys)``: each row's task instance as an index into ``keys`` (:func:`_task_key` of each
    ``task_params`` x ``seed``, in order of first appearance)."""
    pair = pd.MultiIndex.from_arrays([df["task_params"].astype(str).to_numpy(), df["seed"].to_numpy()])
    codes, uniq = pd.factorize(pair)
    return codes, [_task_key(p, s) for p, s in uniq]


@dataclass(frozen=True)
class OracleProgress:
    """One oracle ready, as :func:`oracles_for_records` reports it.

    Attributes:
        label: the task's label in the records (the suite's ``label``, else its name).
        seed: the task instance's seed.
        cached: read from a cache (``True``) or computed now.
        where: ``"run"`` (the run folder's cache), ``"shared"`` (the shared cache), ``"shipped"`` (shipped
            with the package and verified, :data:`hpo_bench.analysis.oracle.SHIPPED_DIR`) or ``"computed"``.
        seconds: what this call spent on it (reading, or building the task and computing).
        result: the oracle.
        done, total: oracles ready so far, and in all.
    """

    label: str
    seed: int
    cached: bool
    seconds: float
    result: OracleResult
    done: int
    total: int
    where: str = "computed"

    def line(self) -> str:
        """One line for a console: ``oracle 3/14 ridge-synth seed 0: computed in 0.2 s``."""
        shared = ", shared cache" if self.where == "shared" else ""
        how = (f"shipped oracle, verified and polished in {self.seconds:.3g} s (computed in "
               f"{self.result.seconds:.3g} s when shipped)" if self.where == "shipped"
               else f"cached (computed in {self.result.seconds:.3g} s before{shared})" if self.cached
               else f"computed in {self.seconds:.3g} s")
        r = self.result
        evals = f", {r.n_evals} evaluations (budget {r.max_evals}" + (f", then the polish of {r.polished} incumbents)"
                                                                     if r.polished else ")")
        cut = "; " + "; ".join(r.notes) if r.notes else ""  # e.g. "grid thinned ...", "INCOMPLETE: ..."
        return f"oracle {self.done}/{self.total} {self.label} seed {self.seed}: {how}{evals}{cut}"


def _incumbent_starts(df: pd.DataFrame) -> dict[tuple[str, int], list[tuple[str, list[float]]]]:
    """Per task instance, every cell's best point (lowest finite ``val_loss_ref``, its ``theta``), in
    ``cell_id`` order, duplicates dropped: the starts :func:`hpo_bench.analysis.oracle.polish_oracle` polishes."""
    if "val_loss_ref" not in df.columns or "theta" not in df.columns:
        return {}
    ref = pd.to_numeric(df["val_loss_ref"], errors="coerce")
    from ..core.records import vector_of

    usable = np.isfinite(ref).to_numpy() & np.array([len(vector_of(v)) > 0 for v in df["theta"]], dtype=bool)
    ok = df[usable].assign(_ref=ref[usable])
    out: dict[tuple[str, int], list[tuple[str, list[float]]]] = {}
    for cell_id, g in sorted(ok.groupby("cell_id", sort=False), key=lambda kv: str(kv[0])):
        # compact rows keep theta on the lowest val_loss_ref row of a finished cell; of a cell killed from
        # outside, the lowest row that kept it (records.VECTOR_EVERY)
        r = g.loc[g["_ref"].idxmin()]
        theta = vector_of(r["theta"])
        starts = out.setdefault(_task_key(r["task_params"], r["seed"]), [])
        if theta and all(theta != th for _, th in starts):
            starts.append((f"cell {cell_id}'s incumbent (step {int(r['step'])})", theta))
    return out


def _oracle_job(args: tuple[dict[str, Any], int, str, OracleResult | None, dict[str, Any],
                            list[tuple[str, list[float]]]]) -> tuple[OracleResult, OracleResult, float]:
    """``(base, polished, seconds, where)``: the instance's oracle (``base`` if given; else the shipped
    one where :func:`~hpo_bench.analysis.oracle.verify_oracle` passes, ``where = "shipped"``; else cached or
    computed in ``cache``) and its polish from the cells' incumbents (cached in ``cache`` too)."""
    from ..analysis.oracle import _build, _split, cached_oracle, oracle_for, polished_oracle_for, store_oracle, verify_oracle

    params, seed, cache, base, budget, starts, shipped = args
    t0 = time.perf_counter()
    where = task = None
    # one build per instance: the shipped oracle's check, the computation and the polish share it
    if base is None and shipped is not None:
        task = _build(shipped.task, dict(shipped.params), shipped.seed)
        if verify_oracle(shipped, task) is None:
            base, where = shipped, "shipped"
            store_oracle(base, cache)
    if base is None:
        opts = {"max_evals": budget["max_evals"], "max_seconds": budget["max_seconds"]}
        if task is None and cached_oracle(params, seed, cache, **opts) is None:
            task = _build(*_split(params), seed)
        base = oracle_for(params, seed, cache, task=task, **opts)
    res = polished_oracle_for(params, seed, base, starts, cache, polish_evals=budget["polish_evals"],
                              max_seconds=budget["max_seconds"], task=task)
    return base, res, time.perf_counter() - t0, where


def _expected_cost(df: pd.DataFrame) -> dict[tuple[str, int], float]:
    """Per task instance, the run's measurement seconds per record: the reference solve and
    hypergradient it times are what one oracle evaluation costs (0 when not recorded)."""
    if "measure_s" not in df.columns:
        return {}
    last = df.groupby("cell_id", sort=False).agg(task_params=("task_params", "first"), seed=("seed", "first"),
                                                 measure_s=("measure_s", "last"), rows=("step", "size"))
    per_row = pd.to_numeric(last["measure_s"], errors="coerce").fillna(0.0) / last["rows"].clip(lower=1)
    return {_task_key(p, s): float(c) for p, s, c in zip(last["task_params"], last["seed"], per_row)}


def _budget_for(spec: int | Mapping[str, int] | None, name: str, label: str) -> int | None:
    """A count from ``spec``: an int for every task, or ``{task name or label: n, "*": default}``."""
    if spec is None or isinstance(spec, int):
        return spec
    for k in (label, name, "*"):
        if k in spec:
            return int(spec[k])
    return None


def oracles_for_records(df: pd.DataFrame, cache_dir: str | Path, *, jobs: int = 1,
                        max_evals: int | Mapping[str, int] | None = None,
                        polish_evals: int | Mapping[str, int] | None = None,
                        max_seconds: float | None = None, polish: bool = True,
                        on_oracle: Callable[[OracleProgress], None] | None = None,
                        shared_dir: str | Path | None = None,
                        use_shipped: bool = True) -> dict[tuple[str, int], OracleResult]:
    """The oracle of every task instance (``task_params`` x ``seed``) in ``df``, cached in ``cache_dir``.

    Budgets are counts (:func:`hpo_bench.analysis.oracle.compute_oracle`): ``max_evals`` and ``polish_evals``
    are an int for every instance or a mapping ``{task name or label: n, "*": default}`` (missing:
    :func:`hpo_bench.analysis.oracle.default_budget`); ``max_seconds`` is the wall-clock backstop only.
    With ``polish``, each oracle is then polished from every cell's best point in ``df``
    (:func:`hpo_bench.analysis.oracle.polish_oracle`, cached in ``cache_dir``), so ``F*`` is never above a
    point a tuner reached.

    Cached oracles are read first: from ``cache_dir``, else from ``shared_dir`` (a cache
    shared by run folders, see :func:`hpo_bench.report.shared_oracle_cache`; a hit is copied
    into ``cache_dir`` so the run folder stays self-contained), else, with ``use_shipped``, from the
    oracles shipped with the package (:func:`hpo_bench.analysis.oracle.shipped_oracle`) once
    :func:`hpo_bench.analysis.oracle.verify_oracle` has recomputed their two values with this code. The
    others are computed, written to both, in ``jobs`` processes when
    ``jobs > 1``, the most expensive first (by the run's measurement time per record, so the
    long ones do not start last). ``on_oracle`` is called once per instance, as each is ready.
    The results do not depend on ``jobs``, on the order or on the machine's load.
    """
    from ..analysis.oracle import cached_oracle, default_budget, shipped_oracle, store_oracle

    keys = sorted({_task_key(p, s) for p, s in zip(df["task_params"], df["seed"])})
    labels: dict[tuple[str, int], str] = {}
    for p, s, t in zip(df["task_params"], df["seed"], df["task"]):
        labels.setdefault(_task_key(p, s), str(t))
    names: dict[tuple[str, int], str] = {}  # the suite's labels (what `--oracle-evals LABEL=N` names)
    for p, s, t in zip(df["task_params"], df["seed"], df["task_label"] if "task_label" in df else df["task"]):
        names.setdefault(_task_key(p, s), str(t))
    starts = _incumbent_starts(df) if polish else {}
    out: dict[tuple[str, int], OracleResult] = {}
    total = len(keys)

    def budget(key: tuple[str, int]) -> dict[str, Any]:
        name = str(json.loads(key[0]).get("name", ""))
        dflt = default_budget(name)
        me, pe = _budget_for(max_evals, name, names[key]), _budget_for(polish_evals, name, names[key])
        return {"max_evals": dflt["max_evals"] if me is None else me,
                "polish_evals": dflt["polish_evals"] if pe is None else pe, "max_seconds": max_seconds}

    def ready(key: tuple[str, int], base: OracleResult, res: OracleResult, where: str, seconds: float) -> None:
        out[key] = res
        if where == "computed" and shared_dir is not None and base.complete:
            _store_quietly(base, shared_dir)
        if on_oracle is not None:
            on_oracle(OracleProgress(labels[key], key[1], where != "computed", seconds, res, len(out), total, where))

    todo: list[tuple[str, int]] = []
    bases: dict[tuple[str, int], tuple[OracleResult | None, str, float]] = {}
    for key in keys:
        t0 = time.perf_counter()
        b = budget(key)
        hit = cached_oracle(json.loads(key[0]), key[1], cache_dir, max_evals=b["max_evals"], max_seconds=max_seconds)
        where = "run"
        if hit is None and shared_dir is not None:
            hit = cached_oracle(json.loads(key[0]), key[1], shared_dir, max_evals=b["max_evals"],
                                max_seconds=max_seconds)
            where = "shared"
            if hit is not None:
                store_oracle(hit, cache_dir)
        bases[key] = (hit, where if hit is not None else "computed", time.perf_counter() - t0)
        todo.append(key)
    cost = _expected_cost(df)
    todo.sort(key=lambda k: (bases[k][0] is not None, -cost.get(k, 0.0)))
    args = {k: (json.loads(k[0]), k[1], str(cache_dir), bases[k][0], budget(k), starts.get(k, []),
                None if bases[k][0] is not None or not use_shipped
                else shipped_oracle(json.loads(k[0]), k[1], max_evals=budget(k)["max_evals"])) for k in todo}
    if jobs > 1 and sum(bases[k][0] is None or bool(starts.get(k)) for k in todo) > 1:
        from ..running.executors import process_context  # never plain fork: see process_context

        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=process_context()) as pool:
            futures = {pool.submit(_oracle_job, args[k]): k for k in todo}
            for fut in as_completed(futures):
                k = futures[fut]
                base, res, seconds, where = fut.result()
                ready(k, base, res, where or bases[k][1], bases[k][2] + seconds)
    else:
        for k in todo:
            base, res, seconds, where = _oracle_job(args[k])
            ready(k, base, res, where or bases[k][1], bases[k][2] + seconds)
    return {k: out[k] for k in keys}


def _store_quietly(res: OracleResult, shared_dir: str | Path) -> None:
    """Best effort: an unwritable shared cache costs a recomputation later, never a report."""
    from ..analysis.oracle import store_oracle

    try:
        store_oracle(res, shared_dir)
    except OSError:
        pass


def with_records(oracles: dict[tuple[str, int], OracleResult], df: pd.DataFrame) -> dict[tuple[str, int],
                                                                                       OracleResult]:
    """Best-known optima: each oracle, or the run's best reference-solve value if lower beyond rounding.

    That is an *oracle failure* (:func:`hpo_bench.analysis.oracle.best_known`): the result's ``source`` names
    the cell and step, and the report says so loudly (oracle table, summary, ``run.log``)."""
    from ..analysis.oracle import best_known
    from ..core.records import vector_of

    out = dict(oracles)
    ref = pd.to_numeric(df["val_loss_ref"], errors="coerce")
    ok = df[np.isfinite(ref)].assign(_ref=ref[np.isfinite(ref)])
    for (params, seed), g in ok.groupby(["task_params", "seed"], sort=False):
        key = _task_key(params, seed)
        if key in out:
            r = g.loc[g["_ref"].idxmin()]
            out[key] = best_known(out[key], float(r["_ref"]), vector_of(r["theta"]), vector_of(r["hp"]),
                                  what=f"cell {r['cell_id']} (step {int(r['step'])})")
    return out


def add_derived(df: pd.DataFrame, oracles: dict[tuple[str, int], OracleResult]) -> pd.DataFrame:
    """Per-row oracle columns, regrets, the incumbent and ``cost_units`` (see the module docstring)."""
    df = add_incumbent(df)
    codes, keys = _instances(df)  # one lookup per task instance, not per row
    df["oracle_val_loss"] = np.array([oracles[k].val_loss for k in keys], dtype=float)[codes]
    df["oracle_gap"] = np.array([oracles[k].gap for k in keys], dtype=float)[codes]
    df["n_params"] = np.array([oracles[k].n_params for k in keys], dtype=np.int64)[codes]
    f_star = df["oracle_val_loss"]
    df["regret"] = pd.to_numeric(df["val_loss_ref"], errors="coerce") - f_star
    df["val_loss_gap_own_w"] = pd.to_numeric(df["val_loss"], errors="coerce") - f_star
    df["incumbent_regret"] = df["incumbent_objective"] - f_star
    counts = {c: pd.to_numeric(df[c], errors="coerce").fillna(0) if c in df.columns else 0
              for c in ("grad_evals", "hvps", "inner_solves")}
    df["cost_units"] = counts["grad_evals"] + counts["hvps"] + df["n_params"] * counts["inner_solves"]
    return df


def _first_reached(regret: np.ndarray, threshold: float) -> int:
    hit = np.flatnonzero(np.isfinite(regret) & (regret <= threshold))
    return int(hit[0]) if hit.size else -1


def _losses(row: pd.Series | None) -> tuple[float, float]:
    """``(val_loss, test_loss)`` of a record row (NaN for none or a non-number)."""
    if row is None:
        return math.nan, math.nan
    return tuple(float(pd.to_numeric(pd.Series([row[c]]), errors="coerce").iloc[0]) for c in ("val_loss", "test_loss"))


def cell_metrics(df: pd.DataFrame, oracles: dict[tuple[str, int], OracleResult]) -> pd.DataFrame:
    """One row per cell: the final incumbent, its losses and regret, costs, targets reached.

    ``first_val_loss`` / ``first_test_loss``: the cell's first recorded point;
    ``final_val_test_gap``: the incumbent's test minus validation loss (both at its own w);
    ``overfit``: :func:`overfits` from the first point to the final incumbent;
    ``no_ref_rows``: rows recorded at a λ where the task has no reference (message
    ``"reference unavailable: ..."``; their F(λ) and hypergradient errors are NaN).

    ``tuner_s`` is the tuner's clock at the cell's end (what time-to-target counts);
    ``wall_s`` the cell's wall clock (``tuner_s`` + measurements + harness; NaN for runs
    recorded without it). ``df`` comes from :func:`add_derived`.
    """
    from ..core.records import vector_of

    rows = []
    for cell_id, g in df.groupby("cell_id", sort=False):
        first, last = g.iloc[0], g.iloc[-1]
        orc = oracles[_task_key(first["task_params"], first["seed"])]
        inc = int(last["incumbent_row"])
        has_inc = inc >= 0
        irow = df.loc[inc] if has_inc else None
        regret = g["incumbent_regret"].to_numpy(dtype=float)
        fi = int(first["first_row"])
        first_val, first_test = _losses(df.loc[fi] if fi >= 0 else None)
        final_val, final_test = _losses(irow)
        err = pd.to_numeric(g["hypergrad_rel_error"], errors="coerce") if "hypergrad_rel_error" in g else None
        msg = g["message"].astype(str) if "message" in g else pd.Series("", index=g.index)
        row: dict[str, Any] = {
            "cell_id": cell_id, "task": first["task"], "task_label": first.get("task_label", first["task"]),
            "task_params": first["task_params"],
            "tuner": first["tuner"], "tuner_label": first["tuner_label"],
            "tuner_params": first.get("tuner_params", "{}"), "seed": int(first["seed"]),
            "status": str(last["status"]), "rows": len(g),
            # rows at a λ where the task has no reference (e.g. a fold of the MLP's branch): NaN F(λ)
            "no_ref_rows": int(msg.str.startswith("reference unavailable").sum()),
            "final_val_loss": float(irow["val_loss"]) if has_inc else math.nan,
            "final_objective": float(irow["objective"]) if has_inc else math.nan,
            "final_test_loss": float(irow["test_loss"]) if has_inc else math.nan,
            "final_regret": float(last["incumbent_regret"]) if has_inc else math.nan,
            "first_val_loss": first_val, "first_test_loss": first_test,
            # test minus validation loss of the incumbent, both at the tuner's own w (module docstring)
            "final_val_test_gap": final_test - final_val,
            "overfit": overfits(first_val, first_test, final_val, final_test),
            "final_hp": vector_of(irow["hp"]) if has_inc else [],
            "oracle_val_loss": orc.val_loss, "oracle_gap": orc.gap, "oracle_hp": list(orc.hp),
            "transforms": list(orc.transforms),
            # tuner_s: the tuner's own clock (measurements paused); wall_s: the cell's wall clock
            # (task build, tuner, measurements, harness), absent in runs older than the column
            "tuner_s": float(last["time_s"]),
            "wall_s": float(pd.to_numeric(last.get("wall_s", math.nan), errors="coerce")),
            "cost_units": float(last["cost_units"]),
            "hypergrad_rel_error_median": float(np.nanmedian(err)) if err is not None and err.notna().any()
            else math.nan,
        }
        for frac in TARGETS:
            k = _first_reached(regret, frac * orc.gap)
            key = target_key(frac)
            row[f"reached_{key}"] = k >= 0
            row[f"time_to_{key}"] = float(g["time_s"].iloc[k]) if k >= 0 else math.nan
            row[f"cost_to_{key}"] = float(g["cost_units"].iloc[k]) if k >= 0 else math.nan
        row["task_order"] = int(first.get("task_order", 0))
        row["tuner_label_order"] = int(first.get("tuner_label_order", 0))
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(["task_order", "tuner_label_order", "seed"], kind="stable").reset_index(drop=True)
