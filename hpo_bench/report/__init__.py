"""``hpo-bench report RUN_DIR``: paper-ready tables, figures and a ``summary.md`` from a run folder.

Pipeline (every step reads only the records table and what is derived from it)::

    records.parquet (or cells/*.parquet)    -> metrics.load_records
    oracle per task instance (cached in RUN_DIR/oracle/, never tuner time), lowered to the
        run's best reference-solve value where a tuner beat it (best-known optimum)
    derived rows: regret, incumbent, cost units  -> metrics.add_derived
    per cell: final incumbent, targets reached   -> metrics.cell_metrics
    per task x tuner: mean ± std, 95% CI, medians, ranks; Wilcoxon vs best   -> tables
    figures (PNG + PDF)                          -> figures
    OUT/summary.md embedding all of them

Output folder (default ``RUN_DIR/report``): ``summary.md``, ``tables/<name>.{md,tex,csv}``
(``headline``, ``results``, ``ranks``, ``wilcoxon``, ``settings``, ``oracle``; plus
``cells.csv``), ``figures/<name>.{png,pdf}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["make_report", "ReportResult", "ReportError", "TABLES", "shared_oracle_cache", "CACHE_ENV"]

from .metrics import ReportError

TABLES = ("headline", "results", "ranks", "wilcoxon", "settings", "oracle")


@dataclass
class ReportResult:
    out_dir: Path
    summary_path: Path
    tables: dict[str, list[Path]] = field(default_factory=dict)
    figures: dict[str, list[Path]] = field(default_factory=dict)
    oracle_dir: Path | None = None
    n_cells: int = 0
    n_rows: int = 0


#: Environment variable naming the folder of caches shared by run folders ("off" or empty: none).
CACHE_ENV = "HPO_BENCH_CACHE_DIR"


def shared_oracle_cache() -> Path | None:
    """The oracle cache shared by every run folder made with this code, or ``None`` when disabled.

    ``$HPO_BENCH_CACHE_DIR/oracle/<code>`` (default ``$XDG_CACHE_HOME/hpo-bench``, else
    ``~/.cache/hpo-bench``); ``HPO_BENCH_CACHE_DIR=off`` (or empty) disables it. ``<code>`` is a
    hash of the source that decides an oracle (the tasks, the library, ``oracle.py``), so an edit
    never reuses an old result; entries are also keyed like the run folder's cache (task
    parameters, seed, oracle settings and version). Reports of the same suite from new run
    folders then only compute oracles once per code version.
    """
    import hashlib
    import os

    root = os.environ.get(CACHE_ENV)
    if root is not None and root.strip().lower() in ("", "off", "none", "0"):
        return None
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "hpo-bench")
    from .. import oracle
    from ..harness import code_version

    h = hashlib.sha256(code_version()["source_sha256"].encode())
    h.update(Path(oracle.__file__).read_bytes())
    return Path(root) / "oracle" / h.hexdigest()[:16]


def _declared_tune(run: Path) -> dict[str, dict] | None:
    """Tune grids declared by the run's suite file (when it is still there, unchanged)."""
    prov = run / "provenance.json"
    if not prov.is_file():
        return None
    try:
        info = json.loads(prov.read_text())
        from ..suite import load_suite

        path = info.get("suite_path")
        if not path or not Path(path).is_file():
            return None
        suite = load_suite(path, validate=False)
        if info.get("suite_sha256") and suite.sha256 != info["suite_sha256"]:
            return None
        return dict(suite.tune.grids) if suite.tune is not None else None
    except Exception:  # provenance is informative only: never fail a report on it
        return None


def _oracle_rows(cells, oracles) -> list[tuple[str, Any]]:
    """``(task label, oracle)`` per task instance, in the suite's task order, then by seed."""
    seen: dict[tuple[str, int], str] = {}
    for r in cells.sort_values(["task_order", "seed"], kind="stable").itertuples():
        seen.setdefault((str(r.task_params), int(r.seed)), r.task)
    return [(label, oracles[key]) for key, label in seen.items()]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def make_report(run_dir: str | Path, out_dir: str | Path | None = None, *, jobs: int = 1,
                oracle_seconds: float | None = None,
                progress: Callable[[str], None] | None = None,
                shared_cache: str | Path | None = None) -> ReportResult:
    """Build the report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``).

    Args:
        run_dir: a folder written by ``hpo-bench run`` / ``hpo-bench tune``.
        out_dir: where to write; created if needed.
        jobs: processes for the oracle computations not yet cached.
        oracle_seconds: time budget of one oracle computation (default
            :data:`hpo_bench.oracle.MAX_SECONDS`); a result cut short says so in the oracle table.
        progress: called with one line of text per step as it ends: each oracle (task instance,
            seconds, cached or computed, see :class:`~hpo_bench.report.metrics.OracleProgress`),
            the tables, each figure.
        shared_cache: an oracle cache shared by run folders, read when the run folder's has no
            entry and written with every oracle computed (the CLI passes
            :func:`shared_oracle_cache`); ``None``: the run folder's cache only.

    Raises:
        ReportError: ``run_dir`` is not a readable run folder.
    """
    from ..tune import read_choices
    from .figures import make_figures
    from .metrics import add_derived, cell_metrics, load_records, oracles_for_records, with_records
    from .summary_doc import write_summary
    from .tables import (group_summary, headline_table, oracle_table, rank_table, results_table, settings_table,
                         wilcoxon_display, wilcoxon_table)

    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run / "report"
    records = load_records(run)
    oracle_dir = run / "oracle"
    from ..oracle import MAX_SECONDS

    say = progress if progress is not None else (lambda line: None)
    oracles = with_records(oracles_for_records(records, oracle_dir, jobs=jobs,
                                               max_seconds=MAX_SECONDS if oracle_seconds is None else oracle_seconds,
                                               on_oracle=lambda ev: say(ev.line()), shared_dir=shared_cache),
                           records)
    t_tables = time.perf_counter()
    rows = add_derived(records, oracles)
    cells = cell_metrics(rows, oracles)
    summary = group_summary(cells, rows)
    wil = wilcoxon_table(summary, cells)
    choices = read_choices(run)
    tables = {
        "headline": headline_table(summary, cells),
        "results": results_table(summary, cells, wil),
        "ranks": rank_table(summary),
        "wilcoxon": wilcoxon_display(wil),
        "settings": settings_table(cells, choices, None if choices else _declared_tune(run)),
        "oracle": oracle_table(_oracle_rows(cells, oracles)),
    }
    tdir = out / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for name, table in tables.items():
        paths = []
        for ext, text in (("md", table.markdown()), ("tex", table.latex()), ("csv", table.csv())):
            p = tdir / f"{name}.{ext}"
            _write_atomic(p, text)
            paths.append(p)
        written[name] = paths
    cells_csv = tdir / "cells.csv"
    _write_atomic(cells_csv, cells.assign(final_hp=cells["final_hp"].map(json.dumps),
                                          oracle_hp=cells["oracle_hp"].map(json.dumps),
                                          transforms=cells["transforms"].map(json.dumps))
                  .to_csv(index=False, float_format="%.10g"))
    written["cells"] = [cells_csv]
    say(f"tables: {len(written)} written in {time.perf_counter() - t_tables:.3g} s")
    figs = make_figures(rows, cells, out / "figures",
                        on_figure=lambda name, s: say(f"figure {name}: drawn and saved in {s:.3g} s"))
    prov_path = run / "provenance.json"
    prov: dict[str, Any] = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    summary_path = write_summary(out, run, tables, figs, cells, prov, choices)
    return ReportResult(out, summary_path, written, figs, oracle_dir, n_cells=len(cells), n_rows=len(rows))
