"""``hpo-bench report RUN_DIR``: paper-ready tables, figures and a ``summary.md`` from a run folder.

Pipeline (every step reads only the records table and what is derived from it)::

    records.parquet (or cells/*.parquet)    -> metrics.load_records
    oracle per task instance (count budgets, cached in RUN_DIR/oracle/, never tuner time),
        polished from every cell's best point; a record still below it is an oracle failure,
        reported loudly (oracle table, summary.md, run.log), and then the best-known optimum
    derived rows: regret, incumbent, cost units  -> metrics.add_derived
    per cell: final incumbent, targets reached   -> metrics.cell_metrics
    per task x tuner: mean ± std, 95% CI, medians, ranks; Wilcoxon vs best   -> tables
    figures (PNG + PDF)                          -> figures
    OUT/summary.md embedding all of them

Output folder (default ``RUN_DIR/report``): ``summary.md``, ``report.html`` (interactive, offline),
``tables/<name>.{md,tex,csv}``
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
    html_path: Path | None = None
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
    from ..analysis import oracle
    from ..running.provenance import code_version

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
        from ..running.suite import load_suite

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


def _oracle_alarms(oracles, records) -> list[str]:
    """One line per oracle failure (a tuner's record beat the computed F*) or incomplete oracle."""
    labels: dict[tuple[str, int], str] = {}
    for p, s, t in zip(records["task_params"], records["seed"], records["task"]):
        labels.setdefault((str(p), int(s)), str(t))
    lines = []
    for key, o in oracles.items():
        where = f"{labels.get(key, o.task)} seed {o.seed}"
        if o.failed:
            lines.append(f"ORACLE FAILURE on {where}: {o.notes[-1]}; F* is now that record ({o.source})")
        if not o.complete:
            lines.append(f"INCOMPLETE ORACLE on {where}: the wall-clock backstop fired, so F* depends on this "
                         "machine (raise --oracle-seconds or lower --oracle-evals)")
    return lines


def _log_to_run(run: Path, lines: list[str]) -> None:
    """Append ``lines`` to the run folder's ``run.log`` (best effort: a read-only folder keeps its log)."""
    if not lines:
        return
    from datetime import datetime

    stamp = datetime.now().isoformat(sep=" ", timespec="seconds")
    try:
        with open(run / "run.log", "a", encoding="utf-8") as fh:
            fh.writelines(f"{stamp} report: {line}\n" for line in lines)
    except OSError:
        pass


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def make_report(run_dir: str | Path, out_dir: str | Path | None = None, *, jobs: int = 1,
                oracle_seconds: float | None = None,
                progress: Callable[[str], None] | None = None,
                shared_cache: str | Path | None = None,
                oracle_evals: int | dict[str, int] | None = None,
                oracle_polish_evals: int | dict[str, int] | None = None, html: bool = True,
                label_prefix: str = "tab:", table_env: str | None = None) -> ReportResult:
    """Build the report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``).

    Args:
        run_dir: a folder written by ``hpo-bench run`` / ``hpo-bench tune``.
        out_dir: where to write; created if needed.
        jobs: processes for the oracle computations not yet cached.
        oracle_seconds: the wall-clock *backstop* of one oracle computation (default
            :data:`hpo_bench.analysis.oracle.BACKSTOP_SECONDS`), a safety against a runaway: an oracle it cuts
            short is marked incomplete, loudly (oracle table, summary.md, ``run.log``).
        oracle_evals: the oracle's count budget (evaluations per instance): an int, or
            ``{task name or label: n, "*": default}``; default :func:`hpo_bench.analysis.oracle.default_budget`.
            Counts, never seconds, so ``F*`` is the same on every machine.
        oracle_polish_evals: evaluations of the polish from each cell's best point (same forms).
        progress: called with one line of text per step as it ends: each oracle (task instance,
            seconds, cached or computed, see :class:`~hpo_bench.report.metrics.OracleProgress`),
            the tables, each figure.
        shared_cache: an oracle cache shared by run folders, read when the run folder's has no
            entry and written with every oracle computed (the CLI passes
            :func:`shared_oracle_cache`); ``None``: the run folder's cache only.
        html: also write ``report.html`` beside ``summary.md`` (:mod:`hpo_bench.report.html`).
        label_prefix: the LaTeX tables' ``\\label`` prefix (``tab:`` gives ``tab:results``); two
            reports in one paper need two prefixes.
        table_env: ``"table"`` or ``"table*"`` for every LaTeX table (default: each table's own).

    Raises:
        ReportError: ``run_dir`` is not a readable run folder.
    """
    from ..analysis.tune import read_choices
    from .figures import make_figures
    from .metrics import add_derived, cell_metrics, load_records, oracles_for_records, with_records
    from .summary_doc import write_summary
    from .tables import (group_summary, headline_table, oracle_table, rank_table, results_table, settings_table,
                         wilcoxon_display, wilcoxon_table)

    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run / "report"
    records = load_records(run)
    oracle_dir = run / "oracle"
    say = progress if progress is not None else (lambda line: None)
    oracles = with_records(oracles_for_records(records, oracle_dir, jobs=jobs, max_evals=oracle_evals,
                                               polish_evals=oracle_polish_evals, max_seconds=oracle_seconds,
                                               on_oracle=lambda ev: say(ev.line()), shared_dir=shared_cache),
                           records)
    from .plot import save_report_oracles

    try:  # for `hpo-bench plot`: the F* this report uses (a read-only run folder only loses the shortcut)
        save_report_oracles(oracle_dir, oracles, records)
    except OSError:
        pass
    alarms = _oracle_alarms(oracles, records)
    for line in alarms:
        say("WARNING: " + line)
    _log_to_run(run, alarms)
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
        tex = table.latex(label_prefix=label_prefix, env=table_env)
        for ext, text in (("md", table.markdown()), ("tex", tex), ("csv", table.csv())):
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
    if alarms:  # loudly: right under the title, not only in the oracle section
        text = summary_path.read_text().split("\n")
        at = next((i + 1 for i, t in enumerate(text) if t.startswith("# ")), 0)
        block = ["", "> **Oracle warnings** (F\\* is not a computed, complete best-known optimum here):"]
        block += [f"> - {line}" for line in alarms] + [""]
        _write_atomic(summary_path, "\n".join(text[:at] + block + text[at:]))
    html_path = None
    if html:
        from .html import write_html

        t_html = time.perf_counter()
        html_path = write_html(out / "report.html", rows, tables,
                               title=f"hpo-bench report: suite {prov.get('suite', run.name)}")
        say(f"report.html: written in {time.perf_counter() - t_html:.3g} s")
        text = summary_path.read_text().split("\n")
        at = next((i + 1 for i, t in enumerate(text) if t.startswith("# ")), 0)
        _write_atomic(summary_path, "\n".join(text[:at] + ["", "Interactive version (pick task, tuners, metric and "
                                                           "x-axis; sortable tables; works offline): "
                                                           "[report.html](report.html)"] + text[at:]))
    return ReportResult(out, summary_path, written, figs, oracle_dir, html_path, n_cells=len(cells),
                        n_rows=len(rows))
