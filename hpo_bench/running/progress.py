"""Progress displays for ``hpo-bench run``: what the harness reports while a suite runs.

:func:`make_reporter` picks one: a live ``rich`` bar on a terminal (cells done/total,
running, failed, diverged, elapsed, ETA; one short line above the bar per failed cell),
plain lines elsewhere (one per finished cell: CI logs, ``nohup``, SLURM output files), or
nothing with ``--quiet``. Tracebacks never go to the display: they are in the records
(``message``) and in the run folder's ``run.log``.

A reporter has five methods, each given the harness's
:class:`~hpo_bench.running.harness.RunProgress`: ``start``, ``cell_started``, ``cell_finished``,
``tick`` (about twice a second) and ``close``.

The ETA (:class:`EtaEstimator`) is blank until :data:`MIN_FINISHED` cells of this session have
finished, then extrapolates the throughput measured *since the first cell finished*: the time
before it (process start-up, fork server, imports) is not per-cell cost, and dividing it over
one cell made the first ETA of an 80 s suite read 20 minutes.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

__all__ = ["make_reporter", "RichReporter", "PlainReporter", "QuietReporter", "format_eta", "EtaEstimator",
           "MIN_FINISHED"]

#: Cells of a session that must have finished before an ETA is shown.
MIN_FINISHED = 5


class EtaEstimator:
    """Seconds left, from the throughput of finished cells only.

    Call :meth:`finished` when a cell of this session ends. :meth:`eta_s` is ``None`` until
    ``min(MIN_FINISHED, cells to run)`` cells (at least 2) have finished; then it is
    ``remaining * (now - t_first) / (finished - 1)``, where ``t_first`` is when the first cell
    finished (start-up time before it is excluded; the interval grows while nothing finishes, so
    a stall lengthens the estimate instead of freezing it).
    """

    def __init__(self, clock=time.monotonic, min_finished: int = MIN_FINISHED) -> None:
        self.clock = clock
        self.min_finished = min_finished
        self.t_first: float | None = None
        self.n = 0

    def finished(self) -> None:
        if self.t_first is None:
            self.t_first = self.clock()
        self.n += 1

    def eta_s(self, progress) -> float | None:
        remaining = progress.total - progress.finished
        if remaining <= 0:
            return 0.0
        to_run = progress.total - progress.skipped
        need = max(2, min(self.min_finished, to_run))
        if self.n < need or self.t_first is None:
            return None
        return remaining * max(self.clock() - self.t_first, 0.0) / (self.n - 1)


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    return str(timedelta(seconds=int(round(seconds))))


def _first_line(text: Any, limit: int = 160) -> str:
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _value(row: dict[str, Any]) -> str:
    v = row.get("best_val_loss")
    return f"best val {v:.4g}" if isinstance(v, float) and math.isfinite(v) else "no val"


class QuietReporter:
    """Shows nothing (``--quiet``)."""

    def start(self, progress, **info: Any) -> None:
        pass

    def cell_started(self, progress, cell) -> None:
        pass

    def cell_finished(self, progress, cell, result) -> None:
        pass

    def tick(self, progress) -> None:
        pass

    def close(self, progress) -> None:
        pass


class PlainReporter(QuietReporter):
    """One line per finished cell, for logs that are not terminals."""

    def __init__(self, stream: IO[str], eta: EtaEstimator | None = None) -> None:
        self.stream = stream
        self.eta = eta or EtaEstimator()

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, progress, *, suite, out, log_path, **info: Any) -> None:
        kept = f", {progress.skipped} already finished" if progress.skipped else ""
        self._say(f"suite {suite.name}: {progress.total} cells{kept} -> {out} (log: {log_path})")

    def cell_finished(self, progress, cell, result) -> None:
        self.eta.finished()
        last = result.rows[-1]
        note = f" - {_first_line(last.get('message'))}" if result.status != "ok" else ""
        self._say(f"[{progress.finished}/{progress.total}] {cell.cell_id}: {result.status}, {len(result.rows)} rows, "
                  f"{_value(last)}, {result.info.get('wall_s', float('nan')):.2f} s{note} | running "
                  f"{progress.running}, failed {progress.failed}, ETA {format_eta(self.eta.eta_s(progress))}")


class RichReporter(QuietReporter):
    """A live progress bar; failed cells get one line above it."""

    def __init__(self, console: Console, eta: EtaEstimator | None = None) -> None:
        self.console = console
        self.eta = eta or EtaEstimator()
        self._bar = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("running {task.fields[running]}  [red]failed {task.fields[failed]}[/red]  "
                       "[yellow]diverged {task.fields[diverged]}[/yellow]"),
            TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
            console=console, transient=False, refresh_per_second=4,
        )
        self._task = None
        self._last_tick = 0.0

    def _fields(self, progress) -> dict[str, Any]:
        return {"running": progress.running, "failed": progress.failed,
                "diverged": progress.statuses.get("diverged", 0), "eta": format_eta(self.eta.eta_s(progress))}

    def start(self, progress, *, suite, out, log_path, **info: Any) -> None:
        kept = f", {progress.skipped} already finished" if progress.skipped else ""
        self.console.print(f"suite [bold]{escape(suite.name)}[/bold]: {progress.total} cells{kept} -> "
                           f"{escape(str(out))} (log: {escape(str(log_path))})")
        self._bar.start()
        self._task = self._bar.add_task(escape(suite.name), total=progress.total, completed=progress.finished,
                                        **self._fields(progress))

    def cell_started(self, progress, cell) -> None:
        self._bar.update(self._task, **self._fields(progress))

    def cell_finished(self, progress, cell, result) -> None:
        self.eta.finished()
        if result.status not in ("ok", "diverged"):
            where = "traceback" if result.status in ("error", "oom") else "details"
            self._bar.console.print(f"[red]{result.status}[/red] {escape(cell.cell_id)}: "
                                    f"{escape(_first_line(result.rows[-1].get('message')))} ({where} in run.log)",
                                    highlight=False)
        self._bar.update(self._task, completed=progress.finished, **self._fields(progress))

    def tick(self, progress) -> None:
        now = time.monotonic()
        if now - self._last_tick >= 0.5:
            self._last_tick = now
            self._bar.update(self._task, **self._fields(progress))

    def close(self, progress) -> None:
        if self._task is not None:
            self._bar.update(self._task, completed=progress.finished, **self._fields(progress))
        self._bar.stop()


def make_reporter(console: Console, *, quiet: bool = False):
    """``QuietReporter`` with ``quiet``; ``RichReporter`` on a terminal; else ``PlainReporter``."""
    if quiet:
        return QuietReporter()
    if console.is_terminal:
        return RichReporter(console)
    return PlainReporter(console.file)
