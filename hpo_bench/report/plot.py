"""One comparison figure from one or more run folders: ``hpo-bench plot`` and :func:`plot`.

Typical use::

    from hpo_bench.report.plot import plot, plot_records

    df = plot_records(["results/paper"], metric="regret")     # records + derived columns
    plot(df, metric="regret", x="time", tuners=["exact", "cg-gd100", "tpe"],
         rename={"cg-gd100": "CG"}, width="icml:column", out="regret.pdf")

What is drawn: one panel per task; per tuner the median over seeds of the metric (a step
function of the x-axis: the value of the last record at or before x), with an interquartile
band (25th-75th percentile). A point is drawn only where every seed of the tuner has a record,
so each curve is a median over a fixed set of seeds. Colours, markers and dashes come from
:mod:`hpo_bench.report.style` and depend only on the tuner's label (before any ``rename``). The
y-range fits the curves and bands, never the target lines (drawn only where they fall inside).

Metrics (:data:`METRICS`): ``regret``, ``validation``, ``test_loss`` and ``test_accuracy`` are
taken at the *incumbent* (the row with the lowest validation loss so far: what the tuner would
return if stopped there); ``hypergrad_error``, ``grad_norm_sq`` and ``inner_distance`` are
properties of each iterate and are drawn as recorded. Any other numeric column of the records
(e.g. a task's extra metric such as ``clean_precision``) can be named too, and is drawn at the
incumbent. x-axes (:data:`XAXES`): ``time`` (tuner seconds), ``cost`` (cost units), ``samples``,
``epochs``, ``step``.

Only ``regret`` needs the oracle's ``F*`` (and ``cost`` when cells ran reference inner solves, for
the number of parameters): :func:`plot_records` reads it from the run folder's ``oracle/`` cache
(and the shared cache), computing only what is missing; every other metric is drawn from the
records table alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .datasets import STAND_IN, is_marked, panel_title
from .metrics import TARGETS, ReportError, add_incumbent, target_label
from .style import Look, StyleError, look_for, parse_width, rc_for, STYLES

__all__ = ["plot", "plot_records", "export_for_redraw", "save_report_oracles", "load_report_oracles", "REPORT_ORACLES", "curves", "PlotError", "METRICS", "XAXES", "Metric", "resolve_metric",
           "resolve_x", "tuner_looks", "FORMATS", "method_of"]

#: Output formats of :func:`plot` (by the suffix of ``out``).
FORMATS = (".pdf", ".png", ".svg")
N_GRID = 100


class PlotError(ReportError):
    """A metric, axis, name or output :func:`plot` cannot draw (one line; lists what is available)."""


@dataclass(frozen=True)
class Metric:
    """A plottable quantity.

    Attributes:
        name: the name users give (``--metric``).
        column: the records column it reads.
        label: the y-axis label.
        scale: ``"log"``, ``"linear"`` or ``"auto"`` (log when positive and spanning over a decade).
        incumbent: taken at the incumbent row (else at each row as recorded).
        monotone: a running minimum over the cell (the incumbent's regret never rises).
        oracle: needs ``F*`` (:func:`plot_records` with the oracle).
    """

    name: str
    column: str
    label: str
    scale: str = "auto"
    incumbent: bool = True
    monotone: bool = False
    oracle: bool = False


#: The named metrics (see the module docstring).
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("regret", "incumbent_regret", "regret F(λ) − F*", "log", incumbent=False, monotone=True, oracle=True),
    Metric("validation", "val_loss", "validation loss (incumbent)"),
    Metric("test_loss", "test_loss", "test loss (incumbent)"),
    Metric("test_accuracy", "test_accuracy", "test accuracy (incumbent)", "linear"),
    Metric("hypergrad_error", "hypergrad_rel_error", "hypergradient rel. error", "log", incumbent=False),
    Metric("grad_norm_sq", "grad_norm_sq", "‖∇F‖²", "log", incumbent=False),
    Metric("inner_distance", "inner_rel_distance", "‖w − w*‖ / ‖w*‖", "log", incumbent=False),
)}
_METRIC_ALIASES = {"val": "validation", "val_loss": "validation", "test": "test_loss", "accuracy": "test_accuracy",
                   "test_acc": "test_accuracy", "hypergrad_rel_error": "hypergrad_error",
                   "inner_rel_distance": "inner_distance", "grad_norm": "grad_norm_sq"}

#: x-axis name -> (records column, axis label, log scale).
XAXES: dict[str, tuple[str, str, bool]] = {
    "time": ("time_s", "tuner time (s)", True),
    "cost": ("cost_units", "cost units", True),
    "samples": ("samples", "samples", True),
    "epochs": ("epochs", "epochs", False),
    "step": ("step", "outer step", False),
}

#: Columns that are not metrics even when numeric (bookkeeping, ids, parameters).
_NOT_METRICS = {"seed", "step", "cell_seed", "budget_steps", "budget_seconds", "torch_threads", "task_order",
                "tuner_label_order", "incumbent_row", "first_row", "n_params", "peak_rss_mb", "peak_cuda_mb",
                "worker", "wall_s", "measure_s", "time_s", "inner_steps", "grad_evals", "hvps", "inner_solves",
                "cost_units", "samples", "epochs"}


def _numeric_columns(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if c not in _NOT_METRICS and not c.startswith("incumbent_")
                  and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]))


def _lookup(name: str, df: pd.DataFrame | None) -> Metric:
    key = _METRIC_ALIASES.get(name, name)
    if key in METRICS:
        return METRICS[key]
    if df is not None and key in df.columns and key in _numeric_columns(df):
        return Metric(key, key, key.replace("_", " ") + " (incumbent)")
    extra = f"; numeric record columns: {_numeric_columns(df)}" if df is not None else ""
    raise PlotError(f"metric must be one of {sorted(METRICS)} or a numeric record column, but got {name!r}" + extra)


def resolve_metric(name: str, df: pd.DataFrame | None = None) -> Metric:
    """The :class:`Metric` called ``name`` (an alias, or any numeric records column of ``df``).

    Raises:
        PlotError: unknown, or its column is not in ``df`` (the message lists what is there).
    """
    m = _lookup(name, df)
    if df is not None:
        need = "incumbent_regret" if m.oracle else m.column
        if need not in df.columns and not (m.oracle and "oracle_val_loss" in df.columns):
            if m.oracle:
                raise PlotError(f"metric {m.name!r} needs the oracle's F*: load the records with "
                                "hpo_bench.report.plot.plot_records(run_dirs, metric='regret') (it adds column "
                                "'incumbent_regret')")
            available = [k for k, v in METRICS.items() if v.oracle or v.column in df.columns]
            raise PlotError(f"metric {m.name!r} needs the record column {m.column!r}, which these runs did not record;"
                            f" available metrics: {available}; numeric record columns: {_numeric_columns(df)}")
        values = pd.to_numeric(df[m.column] if not m.oracle else df.get("incumbent_regret", df["oracle_val_loss"]),
                               errors="coerce")
        if not np.isfinite(values.to_numpy(dtype=float)).any():
            raise PlotError(f"metric {m.name!r}: column {m.column!r} has no finite value in these records "
                            "(e.g. black-box tuners record no hypergradient error)")
    return m


def resolve_x(name: str, df: pd.DataFrame | None = None) -> tuple[str, str, bool]:
    """``(column, label, log)`` of the x-axis ``name``.

    Raises:
        PlotError: unknown, or its column is not in ``df``.
    """
    if name not in XAXES:
        raise PlotError(f"x must be one of {list(XAXES)}, but got {name!r}")
    col, label, log = XAXES[name]
    if df is not None and col not in df.columns:
        have = [k for k, (c, _, _) in XAXES.items() if c in df.columns or k == "cost"]
        why = " (needs the oracle: load with plot_records)" if col == "cost_units" else ""
        raise PlotError(f"x-axis {name!r} needs the record column {col!r}{why}, which these runs did not record; "
                        f"available x-axes: {have}")
    return col, label, log


# --------------------------------------------------------------------------- loading
def _merge_runs(run_dirs: Sequence[str | Path], columns: Sequence[str] | None = None
                ) -> tuple[pd.DataFrame, list[tuple[Path, pd.DataFrame]]]:
    from .metrics import load_records

    if not run_dirs:
        raise PlotError("give at least one run folder")
    parts = []
    for i, run in enumerate(run_dirs):
        df = load_records(run, columns=columns)
        df["run"] = str(run)
        parts.append((Path(run), df))
    if len(parts) == 1:
        return parts[0][1], parts
    seen: set[str] = set()
    frames = []
    for run, df in parts:  # the same cell in two runs (a suite run twice) stays two cells
        if set(df["cell_id"].astype(str)) & seen:
            df = df.assign(cell_id=run.name + "/" + df["cell_id"].astype(str))
        seen |= set(df["cell_id"].astype(str))
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    for col in ("task", "tuner_label"):  # the order of first appearance across the runs
        order = {v: i for i, v in enumerate(pd.unique(df[col]))}
        df[f"{col}_order"] = df[col].map(order)
    return df.sort_values(["cell_id", "step"], kind="stable").reset_index(drop=True), parts


#: Where a report leaves the oracles it used, inside the run folder's ``oracle/`` (see :func:`save_report_oracles`).
REPORT_ORACLES = "report/used.json"


def _fingerprint(df: pd.DataFrame) -> str:
    """A hash of which cells a records table holds and how many rows each (not of clocks)."""
    import hashlib

    g = df.groupby("cell_id", sort=True)["step"].agg(["size", "max"])
    text = ";".join(f"{c}:{n}:{m}" for c, (n, m) in zip(g.index.astype(str), g.to_numpy().tolist()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_report_oracles(oracle_dir: str | Path, oracles: Mapping[tuple[str, int], Any], records: pd.DataFrame) -> Path:
    """Write the best-known optima a report used (after the polish and any record that beat them) to
    ``oracle_dir/report/used.json``, keyed to the records they were made for.

    :func:`plot_records` reads them back, so ``hpo-bench plot`` draws the report's ``F*`` without
    building a task; a run folder copied with ``records.parquet`` and this file is enough to redraw it.
    """
    import dataclasses
    import json

    # `gap` (a property) too: plot_records reads F*, the gap and n_params back without importing the oracle (torch)
    out = {"records": _fingerprint(records),
           "oracles": [{"task_params": k[0], "seed": int(k[1]), **dataclasses.asdict(o), "gap": o.gap}
                       for k, o in oracles.items()]}
    p = Path(oracle_dir) / REPORT_ORACLES
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(out, indent=1, allow_nan=True))
    tmp.replace(p)
    return p


def _read_used(oracle_dir: str | Path, records: pd.DataFrame) -> dict[tuple[str, int], dict] | None:
    """The entries of ``oracle_dir/report/used.json`` by task instance, if made for exactly these records and
    covering each of their instances; else ``None``."""
    import json

    try:
        info = json.loads((Path(oracle_dir) / REPORT_ORACLES).read_text())
        if info.get("records") != _fingerprint(records):
            return None
        got = {(str(o["task_params"]), int(o["seed"])): o for o in info["oracles"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    from .metrics import _instances

    return got if set(_instances(records)[1]) <= set(got) else None


def load_report_oracles(oracle_dir: str | Path, records: pd.DataFrame) -> dict[tuple[str, int], Any] | None:
    """The oracles :func:`save_report_oracles` wrote for exactly these records, else ``None``
    (missing, unreadable, or made for other records: a resumed or changed run)."""
    used = _read_used(oracle_dir, records)
    if used is None:
        return None
    from ..analysis.oracle import OracleResult

    fields = set(OracleResult.__dataclass_fields__)
    try:
        return {k: OracleResult(**{f: v for f, v in o.items() if f in fields}) for k, o in used.items()}
    except TypeError:
        return None


@dataclass(frozen=True)
class _Optimum:
    """What :func:`~hpo_bench.report.metrics.add_derived` reads of an oracle, as a report saved it."""

    val_loss: float
    gap: float
    n_params: int


def _report_optima(oracle_dir: str | Path, records: pd.DataFrame) -> dict[tuple[str, int], _Optimum] | None:
    """``F*``, the gap and ``n_params`` per task instance from the report's ``used.json`` (no oracle code, so no
    torch), or ``None`` where :func:`load_report_oracles` must read it (a file written without ``gap``)."""
    used = _read_used(oracle_dir, records)
    try:
        return None if used is None else {k: _Optimum(float(o["val_loss"]), float(o["gap"]), int(o["n_params"]))
                                          for k, o in used.items()}
    except (KeyError, TypeError, ValueError):
        return None


def export_for_redraw(run_dir: str | Path, dest: str | Path, *, compact: bool = False) -> list[Path]:
    """Copy what redraws a reported run into ``dest``: its records (every column, zstd-compressed
    parquet) and the oracles its report used (``oracle/report/used.json``); returns the files.

    ``hpo-bench plot DEST ...`` then draws every metric, ``regret`` included, without building a task.

    ``compact``: the per-row λ lists (``hp``, ``theta``: one float per hyperparameter and row, most of
    the bytes when there are hundreds of hyperparameters) are kept only on each cell's first row, its
    final incumbent (lowest ``val_loss``) and its best point (lowest ``val_loss_ref``), and are empty
    elsewhere. Every column and row stays, and so does every figure of the report; what is lost is
    the λ path of the other rows.

    Raises:
        ReportError: ``run_dir`` is not a run folder, or it was not reported since its records last changed.
    """
    from .metrics import load_records

    from ..core.records import read_records_file

    run, out = Path(run_dir), Path(dest)
    loaded = load_records(run)  # checks the folder; the copy keeps the file's own row order (the suite's order)
    df = read_records_file(run / "records.parquet", required=()) if (run / "records.parquet").is_file() \
        else loaded.drop(columns=["task_order", "tuner_label_order"])
    if load_report_oracles(run / "oracle", loaded) is None:
        raise ReportError(f"{str(run)!r} has no oracle/{REPORT_ORACLES} for its current records: run "
                          f"`hpo-bench report {run}` first")
    if compact:
        df = _thin_lambda_lists(df)
    (out / "oracle" / "report").mkdir(parents=True, exist_ok=True)
    records = out / "records.parquet"
    df.to_parquet(records, index=False, compression="zstd", compression_level=19)
    used = out / "oracle" / REPORT_ORACLES
    used.write_bytes((run / "oracle" / REPORT_ORACLES).read_bytes())
    return [records, used]


def _thin_lambda_lists(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``hp``/``theta`` emptied except on each cell's first row, final incumbent and best point."""
    from ..core.records import vector_of  # torch: not at module level (hpo-bench plot runs without it)

    keep = np.zeros(len(df), dtype=bool)
    pos = pd.Series(np.arange(len(df)), index=df.index)
    for _, g in df.groupby("cell_id", sort=False):
        keep[pos[g.index[0]]] = True
        for col in ("val_loss", "val_loss_ref"):
            v = pd.to_numeric(g[col], errors="coerce")
            if v.notna().any():
                keep[pos[v.idxmin()]] = True
    out = df.copy()
    for col in ("hp", "theta"):
        if col in out:
            out[col] = [vector_of(v) if k else [] for v, k in zip(out[col], keep)]
    return out


def plot_records(run_dirs: str | Path | Sequence[str | Path], *, metric: str = "regret", x: str = "time",
                 jobs: int = 1, shared_cache: str | Path | Callable[[], str | Path | None] | None = None,
                 progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The records of one or more run folders, merged, with what :func:`plot` needs for ``metric`` and ``x``.

    Runs are concatenated (a cell id present in two runs is prefixed by its run folder's name);
    tasks and tuners keep their order of first appearance. The oracle (for ``regret``, and
    for ``cost`` when cells ran reference inner solves) is the one the run's last report used
    (``oracle/report/used.json``, when it was made for these records); otherwise it is read
    from each run's ``oracle/`` cache, then from ``shared_cache``, and only missing entries are
    computed (``jobs`` processes, default budgets), exactly as ``hpo-bench report`` does.
    ``shared_cache`` may be a function returning the folder, called only if an oracle is looked up
    there (:func:`hpo_bench.report.shared_oracle_cache` hashes the oracle's code, which imports torch).

    Only the columns ``metric`` and ``x`` need are read (:func:`_columns_for`); a name these
    columns cannot resolve is looked up again in the full records, so an error lists every column.

    Raises:
        ReportError: a folder is not a readable run folder.
        PlotError: unknown ``metric`` or ``x``.
    """
    runs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    resolve_x(x)
    kw = dict(metric=metric, x=x, jobs=jobs, shared_cache=shared_cache, progress=progress)
    try:
        return _plot_records(runs, columns=_columns_for(metric, x), **kw)
    except PlotError:
        return _plot_records(runs, columns=None, **kw)


#: Record columns :func:`plot_records` reads besides the metric's and the x-axis' (what the incumbent, the
#: oracle's keys, the cost units, the tuner looks and the data labels need).
_PLOT_COLUMNS = ("tuner_params", "grad_evals", "hvps", "inner_solves")


def _columns_for(metric: str, x: str) -> list[str]:
    key = _METRIC_ALIASES.get(metric, metric)
    cols = [*_PLOT_COLUMNS, XAXES[x][0], key]
    if key in METRICS:
        cols.append(METRICS[key].column)
    return cols


def _plot_records(runs: list, *, metric: str, x: str, jobs: int, shared_cache: Any,
                  progress: Callable[[str], None] | None, columns: Sequence[str] | None) -> pd.DataFrame:
    df, parts = _merge_runs(runs, columns)
    m = _lookup(metric, df)
    if not m.oracle:
        resolve_metric(metric, df)
    if x != "cost":
        resolve_x(x, df)
    solves = pd.to_numeric(df.get("inner_solves", pd.Series(0, index=df.index)), errors="coerce").fillna(0)
    need_oracle = m.oracle or (x == "cost" and bool((solves > 0).any()))
    if need_oracle:
        say = progress if progress is not None else (lambda line: None)
        oracles: dict = {}
        for run, part in parts:
            # the report's F*, as it used them: read without the oracle's code (torch) where the file has the gaps
            got = _report_optima(run / "oracle", part) or load_report_oracles(run / "oracle", part)
            if got is None:
                from .metrics import load_records, oracles_for_records, with_records

                full = part if columns is None else load_records(run)  # the polish reads every cell's best theta
                if callable(shared_cache):
                    shared_cache = shared_cache()
                got = with_records(oracles_for_records(full, run / "oracle", jobs=jobs, shared_dir=shared_cache,
                                                       on_oracle=lambda ev: say(ev.line())), full)
            oracles.update(got)
        from .metrics import add_derived

        df = add_derived(df, oracles)
    else:
        df = add_incumbent(df)
        counts = {c: pd.to_numeric(df[c], errors="coerce").fillna(0) if c in df.columns else 0
                  for c in ("grad_evals", "hvps")}
        df["cost_units"] = counts["grad_evals"] + counts["hvps"]  # no reference solves: n_params not needed
    return df


# --------------------------------------------------------------------------- aggregation
def method_of(tuner_params: Any) -> str | None:
    """The hypergradient ``method`` of a gradient tuner's params (JSON text or dict), else ``None``."""
    import json

    try:
        d = json.loads(tuner_params) if isinstance(tuner_params, str) else dict(tuner_params or {})
    except (ValueError, TypeError):
        return None
    m = d.get("method")
    return str(m) if m is not None else None


def tuner_looks(df: pd.DataFrame, labels: Sequence[str] | None = None) -> dict[str, Look]:
    """The :class:`~hpo_bench.report.style.Look` of every tuner label of ``df`` (or of ``labels``)."""
    first = df.drop_duplicates("tuner_label")
    tuners = dict(zip(first["tuner_label"], first["tuner"]))
    methods = dict(zip(first["tuner_label"], first["tuner_params"].map(method_of))) \
        if "tuner_params" in first else {}
    labs = list(labels) if labels is not None else list(first["tuner_label"])
    return {lab: look_for(lab, tuners.get(lab), methods.get(lab)) for lab in labs}


def _values(df: pd.DataFrame, m: Metric) -> np.ndarray:
    """The metric per row: at the incumbent row (``df`` from :func:`add_incumbent`), or as recorded."""
    if m.oracle:
        f_star = 1e-12 * np.maximum(df["oracle_val_loss"].abs().to_numpy(dtype=float), 1e-300)
        return np.maximum(df["incumbent_regret"].to_numpy(dtype=float), f_star)  # a log axis cannot show 0
    col = pd.to_numeric(df[m.column], errors="coerce").to_numpy(dtype=float)
    if not m.incumbent:
        return col
    inc = df["incumbent_row"].to_numpy()  # positions: add_incumbent's frame has a RangeIndex
    return np.where(inc >= 0, col[np.clip(inc, 0, None)], np.nan)


def _grid(xs: np.ndarray, log: bool, n: int) -> np.ndarray | None:
    ok = xs[np.isfinite(xs) & ((xs > 0) if log else np.ones_like(xs, dtype=bool))]
    if ok.size == 0:
        return None
    lo, hi = float(ok.min()), float(ok.max())
    if log:
        return np.geomspace(lo, hi if hi > lo else lo * 1.01, n)
    if hi <= lo:
        hi = lo + 1.0
    if np.all(np.equal(np.mod(ok, 1), 0)) and hi - lo + 1 <= n:  # integer axis (steps): every value
        return np.arange(lo, hi + 1.0)
    return np.linspace(lo, hi, n)


def curves(df: pd.DataFrame, *, metric: str = "regret", x: str = "time", tasks: Sequence[str] | None = None,
           tuners: Sequence[str] | None = None, n_grid: int = N_GRID) -> pd.DataFrame:
    """The aggregated curves :func:`plot` draws, as a tidy table.

    Columns ``task, tuner_label, x, median, q1, q3, seeds``: per task and tuner, the median and
    quartiles over seeds of the step-function value of the metric at each grid point (log-spaced
    for ``time``/``cost``/``samples``), kept only where every seed has a record.
    """
    m = resolve_metric(metric, df)
    xcol, _, log = resolve_x(x, df)
    mask = np.ones(len(df), dtype=bool)
    if tasks is not None:
        mask &= df["task"].isin(list(tasks)).to_numpy()
    if tuners is not None:
        mask &= df["tuner_label"].isin(list(tuners)).to_numpy()
    if not m.incumbent or ("incumbent_row" in df.columns and isinstance(df.index, pd.RangeIndex)
                           and df.index.start == 0 and df.index.step == 1):
        d = df[mask].assign(_y=_values(df, m)[mask])  # incumbent_row holds positions in df: valid as they are
    else:  # whole cells are kept or dropped, so incumbents are recomputed on the selection
        d = add_incumbent(df[mask].sort_values(["cell_id", "step"], kind="stable").reset_index(drop=True))
        d = d.assign(_y=_values(d, m))
    # integer codes and one sort by (cell, x): grouping the records table itself (arrow strings, every
    # column copied per group) dominated the report's time
    t_code, t_names = pd.factorize(d["task"].to_numpy(dtype=object))
    l_code, l_names = pd.factorize(d["tuner_label"].to_numpy(dtype=object))
    c_code, _ = pd.factorize(d["cell_id"].to_numpy(dtype=object))
    x_all = pd.to_numeric(d[xcol], errors="coerce").to_numpy(dtype=float)
    y_all = d["_y"].to_numpy(dtype=float)
    order = np.lexsort((x_all, c_code))  # stable: rows of equal x keep their step order
    cc, xs_sorted, ys_sorted = c_code[order], x_all[order], y_all[order]
    bounds = np.flatnonzero(np.r_[True, cc[1:] != cc[:-1], True]) if len(cc) else np.array([0])
    span = {int(cc[a]): (a, b) for a, b in zip(bounds[:-1], bounds[1:])}
    out = []
    for ti, task in enumerate(t_names):
        in_task = t_code == ti
        grid = _grid(x_all[in_task], log, n_grid)
        if grid is None:
            continue
        for li in pd.unique(l_code[in_task]):
            per_cell = []
            for ci in pd.unique(c_code[in_task & (l_code == li)]):
                a, b = span[int(ci)]
                xs, ys = xs_sorted[a:b], ys_sorted[a:b]
                ok = np.isfinite(xs) & np.isfinite(ys)
                if not ok.any():
                    continue
                xs, ys = xs[ok], ys[ok]
                if m.monotone:
                    ys = np.minimum.accumulate(ys)
                idx = np.searchsorted(xs, grid, side="right") - 1
                per_cell.append(np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan))
            if not per_cell:
                continue
            mat = np.vstack(per_cell)
            full = np.isfinite(mat).all(axis=0)  # every seed has a record at this x
            if not full.any():
                continue
            sub = mat[:, full]
            q1, med, q3 = np.quantile(sub, [0.25, 0.5, 0.75], axis=0)
            k = int(full.sum())
            out.append(([task] * k, [l_names[li]] * k, grid[full], med, q1, q3, np.full(k, sub.shape[0])))
    cols = ["task", "tuner_label", "x", "median", "q1", "q3", "seeds"]
    if not out:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame({c: np.concatenate([np.asarray(o[i], dtype=object if i < 2 else None) for o in out])
                         for i, c in enumerate(cols)})


# --------------------------------------------------------------------------- selection
def _select(df: pd.DataFrame, tasks: Sequence[str] | None, tuners: Sequence[str] | None,
            rename: Mapping[str, str] | None, order: Sequence[str] | None) -> tuple[list[str], list[str], dict]:
    """``(tasks, tuner labels in legend order, display names)``; names checked against ``df``."""
    all_tasks = list(pd.unique(df.sort_values("task_order", kind="stable")["task"])) if "task_order" in df \
        else list(pd.unique(df["task"]))
    all_tuners = list(pd.unique(df.sort_values("tuner_label_order", kind="stable")["tuner_label"])) \
        if "tuner_label_order" in df else list(pd.unique(df["tuner_label"]))
    # a task on a synthetic stand-in is shown marked ("ridge-cadata (synthetic stand-in: cadata-like)"); its suite
    # label names it too, and a rename keeps the mark (report.datasets)
    alias: dict[str, str] = {}
    if "task_label" in df:
        pairs = df[["task_label", "task"]].drop_duplicates()
        for lab, g in pairs.groupby("task_label", sort=False):
            if len(g) == 1 and g["task"].iloc[0] != lab:
                alias[str(lab)] = str(g["task"].iloc[0])
    rename = {alias.get(k, k): v for k, v in (rename or {}).items()}
    rename = {k: (v if is_marked(v) or not is_marked(k) else v + k[k.index(" (" + STAND_IN):])
              for k, v in rename.items()}
    back = {v: k for k, v in rename.items()}
    known = set(all_tasks) | set(all_tuners)
    bad = [k for k in rename if k not in known]
    if bad:
        raise PlotError(f"rename: {bad} name no task or tuner of these runs; tasks: {all_tasks}; tuners: {all_tuners}")

    def pick(names: Sequence[str] | None, pool: list[str], what: str) -> list[str]:
        if names is None:
            return list(pool)
        out = []
        for n in names:
            n = back.get(n, n)
            n = alias.get(n, n) if n not in pool else n
            if n not in pool:
                raise PlotError(f"{what} {n!r} is not in these runs; known: {pool}")
            if n not in out:
                out.append(n)
        return out

    sel_tasks = pick(tasks, all_tasks, "task")
    sel_tuners = pick(tuners, all_tuners, "tuner")
    if order is not None:
        first = [t for t in pick(order, all_tuners + all_tasks, "order: name") if t in sel_tuners]
        tfirst = [t for t in pick(order, all_tuners + all_tasks, "order: name") if t in sel_tasks]
        sel_tuners = first + [t for t in sel_tuners if t not in first]
        sel_tasks = tfirst + [t for t in sel_tasks if t not in tfirst]
    names = {n: rename.get(n, n) for n in known}
    return sel_tasks, sel_tuners, names


# --------------------------------------------------------------------------- drawing
def _apply_scale(ax, scale: str, lo: float, hi: float) -> None:
    if scale == "log" or (scale == "auto" and lo > 0 and hi > 10 * lo):
        ax.set_yscale("log")


def _fit_ylim(ax, values: np.ndarray, log: bool) -> None:
    """The y-range of the drawn curves and bands, with a small margin (never the target lines)."""
    v = values[np.isfinite(values)]
    if log:
        v = v[v > 0]
    if v.size == 0:
        return
    lo, hi = float(v.min()), float(v.max())
    if log:
        pad = max(math.log10(hi / lo) * 0.05, 0.02) if hi > lo else 0.3
        ax.set_ylim(lo / 10 ** pad, hi * 10 ** pad)
    else:
        pad = (hi - lo) * 0.05 if hi > lo else max(abs(hi) * 0.05, 1e-12)
        ax.set_ylim(lo - pad, hi + pad)


def draw_panel(ax, agg: pd.DataFrame, labels: Sequence[str], looks: Mapping[str, Look], *, scale: str,
               names: Mapping[str, str] | None = None, markevery: int = 6, band: bool = True,
               hlines: Sequence[tuple[float, str, str]] = ()) -> list[str]:
    """Draw the median lines and interquartile bands of ``agg`` (a :func:`curves` table of one
    task) on ``ax``; returns the labels drawn. ``hlines``: ``(y, linestyle, label)`` reference lines,
    drawn without widening the y-range."""
    shown = []
    names = names or {}
    allv = []
    for i, lab in enumerate(labels):
        a = agg[agg["tuner_label"] == lab]
        if a.empty:
            continue
        lk = looks[lab]
        xs, med = a["x"].to_numpy(dtype=float), a["median"].to_numpy(dtype=float)
        line, = ax.plot(xs, med, color=lk.color, marker=lk.marker, markevery=(i % max(markevery, 1),
                                                                              max(markevery, 1)),
                        label=names.get(lab, lab), markeredgewidth=0)
        if lk.dashes:
            line.set_dashes(lk.dashes)
        if band:
            ax.fill_between(xs, a["q1"].to_numpy(dtype=float), a["q3"].to_numpy(dtype=float), color=lk.color,
                            alpha=0.15, linewidth=0)
            allv += [a["q1"].to_numpy(dtype=float), a["q3"].to_numpy(dtype=float)]
        allv.append(med)
        shown.append(lab)
    values = np.concatenate(allv) if allv else np.array([])
    fin = values[np.isfinite(values)]
    if fin.size:
        _apply_scale(ax, scale, float(fin.min()), float(fin.max()))
    log = ax.get_yscale() == "log"
    _fit_ylim(ax, values, log)
    lo, hi = ax.get_ylim()
    for y, ls, _ in hlines:
        if lo <= y <= hi:
            ax.axhline(y, color="0.4", linestyle=ls, linewidth=0.8)
    ax.set_ylim(lo, hi)
    return shown


def _layout(n: int, width: float, aspect: float, n_legend: int, legend_cols: int, font_pt: float,
            title_lines: int = 1):
    import matplotlib.pyplot as plt

    ncols = min(n, 3 if width >= 5 else (2 if width >= 3.2 and n > 1 else 1))
    ncols = max(ncols, 1)
    nrows = math.ceil(max(n, 1) / ncols)
    panel_w = width / ncols
    panel_h = panel_w * aspect
    line_in = font_pt * 1.5 / 72
    legend_rows = math.ceil(max(n_legend, 1) / legend_cols)
    extra = line_in * (title_lines - 1)  # two-line panel titles (instances on synthetic stand-ins)
    top_in = line_in * 1.4 + extra
    bottom_in = line_in * 2.6 + line_in * legend_rows
    left_in, right_in = line_in * 4.0, line_in * 0.6
    height = panel_h * nrows + top_in + bottom_in + (line_in * 1.5 + extra) * (nrows - 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=left_in / width, right=1 - right_in / width, top=1 - top_in / height,
                        bottom=bottom_in / height, wspace=(line_in * 5.5) / panel_w,
                        hspace=(line_in * 3.0 + extra) / panel_h)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot(records_df: pd.DataFrame, *, metric: str = "regret", x: str = "time", tasks: Sequence[str] | None = None,
         tuners: Sequence[str] | None = None, rename: Mapping[str, str] | None = None,
         order: Sequence[str] | None = None, style: str = "paper", width: str | float | None = None,
         out: str | Path | None = None, targets: bool = True, band: bool = True):
    """Draw one comparison figure of ``records_df`` (see the module docstring); save it to ``out``.

    Args:
        records_df: a records table with derived columns, from :func:`plot_records` (or any
            records table when ``metric`` needs no oracle).
        metric: a name of :data:`METRICS` or a numeric record column.
        x: a name of :data:`XAXES`.
        tasks: the tasks to draw, in panel order (default: all, in the suite's order).
        tuners: the tuner labels to draw (default: all).
        rename: display names, ``{label: name}``, for tuners and tasks; a tuner's look stays
            that of its label.
        order: names (labels or display names) that come first in the legend and the panel order.
        style: ``"paper"`` or ``"slides"`` (:data:`hpo_bench.report.style.STYLES`), applied over
            matplotlib's defaults (the caller's rc settings do not change the figure).
        width: inches or a template width (:func:`hpo_bench.report.style.parse_width`).
        out: ``.pdf``, ``.png`` or ``.svg`` path (no creation date in PDF/SVG: reruns give the same
            bytes); ``None``: only return the figure.
        targets: for ``regret``, draw the 1% and 0.1% oracle-gap lines where they fall inside the range.
        band: draw the interquartile bands.

    Returns:
        The matplotlib ``Figure`` (closed when ``out`` is given).

    Raises:
        PlotError: an unknown metric, axis, task, tuner, style or format, or a metric these records lack.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogLocator, NullFormatter

    try:
        rc = rc_for(style)
        inches = parse_width(width, style)
    except StyleError as exc:
        raise PlotError(str(exc)) from None
    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise PlotError(f"out must end in one of {list(FORMATS)}, but got {str(out)!r}")
    m = resolve_metric(metric, records_df)
    _, xlabel, _ = resolve_x(x, records_df)
    sel_tasks, sel_tuners, names = _select(records_df, tasks, tuners, rename, order)
    agg = curves(records_df, metric=metric, x=x, tasks=sel_tasks, tuners=sel_tuners)
    looks = tuner_looks(records_df, sel_tuners)
    spec = STYLES[style]
    with plt.rc_context():
        # matplotlib's defaults + the style, whatever the caller's rc: the same figure from any caller
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(rc)
        cols = 4 if inches >= 5 else 2
        fig, axes = _layout(len(sel_tasks), inches, spec["aspect"], len(sel_tuners) + (2 if m.oracle else 0), cols,
                            rc["font.size"], max((panel_title(names.get(t, t)).count("\n") + 1 for t in sel_tasks),
                                                 default=1))
        shown: list[str] = []
        for ax, task in zip(axes, sel_tasks):
            a = agg[agg["task"] == task]
            hl = []
            if m.oracle and targets:
                gaps = records_df.loc[records_df["task"] == task, "oracle_gap"].to_numpy(dtype=float)
                if gaps.size:
                    hl = [(float(np.median(f * gaps)), ls, f"{target_label(f)} of gap")
                          for f, ls in zip(TARGETS, (":", "-."))]
            got = draw_panel(ax, a, sel_tuners, looks, scale=m.scale, names=names, markevery=spec["markevery"],
                             band=band, hlines=hl)
            if not got:
                ax.text(0.5, 0.5, f"no {m.name} recorded", ha="center", va="center", transform=ax.transAxes)
            shown += [t for t in got if t not in shown]
            if XAXES[x][2]:
                ax.set_xscale("log")
            for axis in (ax.xaxis, ax.yaxis):  # labels on the decades only: minor labels collide
                if axis.get_scale() == "log":
                    axis.set_major_locator(LogLocator(base=10, numticks=6))
                    axis.set_minor_formatter(NullFormatter())
            ax.set_title(panel_title(names.get(task, task)))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(m.label)
        handles = []
        for lab in [t for t in sel_tuners if t in shown]:
            lk = looks[lab]
            h = Line2D([], [], color=lk.color, marker=lk.marker, label=names.get(lab, lab), markeredgewidth=0)
            if lk.dashes:
                h.set_dashes(lk.dashes)
            handles.append(h)
        if m.oracle and targets:
            handles += [Line2D([], [], color="0.4", linestyle=ls, linewidth=0.8, label=f"{target_label(f)} of gap")
                        for f, ls in zip(TARGETS, (":", "-."))]
        if handles:
            fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0),
                       ncol=min(len(handles), cols), frameon=False, handlelength=3.0)
        if out is not None:
            p = Path(out)
            p.parent.mkdir(parents=True, exist_ok=True)
            meta = {".pdf": {"CreationDate": None}, ".svg": {"Date": None}, ".png": {}}[p.suffix.lower()]
            fig.savefig(p, metadata=meta)
            plt.close(fig)
    return fig


def parse_rename(items: Sequence[str] | None) -> dict[str, str]:
    """``["cg-gd100=CG", ...]`` -> ``{"cg-gd100": "CG"}``.

    Raises:
        PlotError: an item is not ``old=new`` with both sides non-empty.
    """
    out: dict[str, str] = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise PlotError(f"rename must look like old=new with both names non-empty, but got {item!r}")
        out[old.strip()] = new.strip()
    return out


_LIST_RE = re.compile(r"\s*,\s*")


def parse_list(text: str | None, what: str) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]`` (``None`` stays ``None``).

    Raises:
        PlotError: an empty item.
    """
    if text is None:
        return None
    items = _LIST_RE.split(text.strip())
    if not items or any(not t for t in items):
        raise PlotError(f"{what} must be a comma-separated list of names, but got {text!r}")
    return items
