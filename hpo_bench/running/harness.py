"""Running suites: the cells of a suite on an executor, into a run folder.

:func:`run_suite` runs the cells of a suite on an executor (:mod:`hpo_bench.running.executors`);
results come back to the driver, which alone writes the run folder::

    <out>/run.json                  what the run is: suite file hash, code version, sessions (written
                                    first, atomically: a kill at any later moment leaves a resumable folder)
    <out>/cells/<cell_id>.parquet   one file per finished cell, written atomically (temporary
                                    file, fsync, rename): a cell file is complete or absent
    <out>/cells/stale/              cell files set aside by a resume (never deleted)
    <out>/records.parquet           every cell, in suite order, once all have finished
    <out>/provenance.json           versions, git, host, CPU, threads, torch settings, command
    <out>/run.log                   every session's events and every failed cell's traceback
    <out>/.lock                     names the driver writing the folder; it holds a flock on the folder
                                    itself and on this file: one driver at a time, even if .lock is deleted

Resume (``resume=True``) skips cells whose file exists, reads in full and whose configuration
hash matches, and runs the others (a damaged file is set aside to ``cells/stale/``, and
``run.log`` says so). A folder whose ``run.json`` was lost or damaged is resumed with a
manifest rebuilt from the suite; then only cell files written by the current source are kept
(unless ``force``). Leftover temporary files (``.*.tmp-*``) are removed. If the suite file
or the code changed since the run began, it refuses unless ``force=True``; then cells whose
configuration is unchanged are kept, the others run again, and ``run.json`` records what
changed.

One cell is run by :mod:`hpo_bench.running.cell_process`, the folder is kept by
:mod:`hpo_bench.running.run_folder` and ``provenance.json`` comes from
:mod:`hpo_bench.running.provenance`; their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Executor, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pyarrow as pa

from . import _instances
from .cell_process import (DEFAULT_THREADS, EXECUTOR_FAILURE, FAILED_STATUSES, THREADS_WHY, CellJob, CellResult,
                           CellTimeout, child_death, executor_failure, run_cell)
from .executors import DaskRun, SerialExecutor, imported_third_party_modules, kill_children, start_fork_server
from .provenance import code_version, provenance
from .run_folder import (RunFolderError, RunFolderIOError, RunLog, cell_file_meta, check_run_folder, lock_folder,
                         prepare_folder, records_frame, scan_cells, write_json_atomic, write_parquet_atomic)
from .suite import Cell, Suite

__all__ = ["run_cell", "run_suite", "records_frame", "provenance", "code_version", "SuiteResult", "CellJob",
           "CellResult", "CellTimeout", "RunFolderError", "RunFolderIOError", "EXECUTOR_FAILURE", "RunProgress",
           "FAILED_STATUSES", "DEFAULT_THREADS", "check_run_folder", "child_death", "check_run_options"]

_NAN = float("nan")


def _submit(ex: Executor, job: Any) -> Future:
    """``ex.submit(job)``; an executor that refuses (its scheduler is gone) gives a failed future instead."""
    try:
        return ex.submit(job)
    except Exception as exc:  # noqa: BLE001 - recorded as the cell's executor failure
        fut: Future = Future()
        fut.set_exception(exc)
        return fut


@dataclass
class RunProgress:
    """Counts a progress display shows; ``done`` and ``statuses`` are for this session."""

    total: int
    skipped: int
    done: int = 0
    running: int = 0
    statuses: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    @property
    def failed(self) -> int:
        return sum(self.statuses[s] for s in FAILED_STATUSES)

    @property
    def finished(self) -> int:
        return self.skipped + self.done

    def eta_s(self) -> float | None:
        """Seconds left at this session's throughput (``None`` before the first cell ends)."""
        if self.done == 0:
            return None
        return (time.monotonic() - self.started) / self.done * (self.total - self.finished)


@dataclass
class SuiteResult:
    out_dir: Path
    records_path: Path
    provenance_path: Path
    statuses: dict[str, str]
    frame: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    log_path: Path | None = None
    lost: list[str] = field(default_factory=list)  # cells of this session whose job the executor lost

    @property
    def failed(self) -> dict[str, str]:
        """Cells that did not run to their end (error, timeout, oom, executor failure): cell id -> status."""
        return {k: v for k, v in self.statuses.items() if v in FAILED_STATUSES}


def _executor_parts(executor: Any) -> tuple[Executor, int | None, Callable[[], dict[str, Any]], DaskRun | None]:
    if executor is None:
        executor = SerialExecutor()
    if isinstance(executor, DaskRun):
        return executor.executor, None, executor.describe, executor
    describe = getattr(executor, "describe", lambda: {"kind": type(executor).__name__})
    # the standard library's pools keep their size in _max_workers
    return executor, getattr(executor, "capacity", getattr(executor, "_max_workers", None)), describe, None


#: A Dask scheduler address (``tcp://host:8786``, ``host:8786``, ``[::1]:8786``).
_DASK_ADDRESS = re.compile(r"^([a-z0-9+]+://)?(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):[0-9]{1,5}$")


def check_run_options(workers: str | int | None, dask: str | None, threads: int | None, timeout: float | None,
                      resume: bool, force: bool, retry_failed: bool, *,
                      spell: Callable[[str], str] = lambda name: "--" + name.replace("_", "-")) -> int | None:
    """Check the options of a run before anything starts; return the number of local workers (or ``None``).

    ``workers`` is an integer >= 1, ``"auto"`` (one per usable CPU) or ``None`` (serial); ``dask`` is ``"local"``
    or a scheduler address. ``spell(name)`` writes an option's name in messages (the CLI's ``--workers``, the
    Python API's ```workers```).

    Raises:
        ValueError: one line naming the option, the rule and the value.
    """
    n_workers = None
    if workers is not None:
        if isinstance(workers, str) and workers.strip().lower() == "auto":
            from .executors import usable_cpus

            n_workers = usable_cpus()
        else:
            try:
                n_workers = int(workers) if not isinstance(workers, (bool, float)) else 0
            except ValueError:
                n_workers = 0
            if n_workers < 1:
                raise ValueError(f"option {spell('workers')} must be an integer >= 1 or 'auto', but got {workers!r}")
    if dask is not None:
        if dask != "local" and not _DASK_ADDRESS.match(dask):
            raise ValueError(f"option {spell('dask')} must be 'local' or a scheduler address like tcp://host:8786, "
                             f"but got {dask!r}")
        if dask != "local" and workers is not None:
            raise ValueError(f"option {spell('workers')} must be omitted with an existing Dask scheduler (its workers are "
                             f"started where it runs), but got {spell('workers')} {workers!r} with {spell('dask')} {dask!r}")
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ValueError(f"option {spell('dask')} {dask!r} needs Dask's distributed package: "
                             "pip install 'hpo-bench[dist]'") from None
    if threads is not None and threads < 1:
        raise ValueError(f"option {spell('threads')} must be an integer >= 1, but got {threads}")
    if timeout is not None:
        from .suite import check_timeout

        check_timeout(timeout, f"option {spell('timeout')}")  # the suite's `timeout` rule: one rule, one limit
    if force and not resume:
        raise ValueError(f"option {spell('force')} must come with {spell('resume')} (it accepts a changed suite file "
                         f"or code when resuming), but got {spell('force')} alone")
    if retry_failed and not resume:
        raise ValueError(f"option {spell('retry_failed')} must come with {spell('resume')} (it reruns failed cells "
                         f"of a run), but got {spell('retry_failed')} alone")
    return n_workers


def run_suite(suite: Suite, out_dir: str | Path, *, argv: list[str] | None = None,
              on_cell: Callable[[Cell, list[dict[str, Any]], int, int], None] | None = None,
              executor: Executor | DaskRun | None = None, resume: bool = False, force: bool = False,
              retry_failed: bool = False, timeout: float | None = None, threads: int | None = None,
              reporter: Any = None) -> SuiteResult:
    """Run the cells of ``suite`` into the run folder ``out_dir`` (see the module docstring).

    Args:
        executor: where cells run: ``None`` (serial, in this process), a
            :class:`~hpo_bench.running.executors.ProcessPool`, a :class:`~hpo_bench.running.executors.DaskRun`,
            or any ``concurrent.futures.Executor`` (its cells run in child processes).
        resume: continue the run in ``out_dir``: finished cells are kept.
        force: with ``resume``, accept a changed suite file or code.
        retry_failed: with ``resume``, run cells that ended with error, timeout or oom again.
        timeout: hard wall-clock seconds per cell, overriding the suite's.
        threads: torch threads per cell (default :data:`DEFAULT_THREADS`, on every executor; the
            choice and why go to ``run.log`` and ``provenance.json``).
        reporter: a progress display (:mod:`hpo_bench.running.progress`); ``on_cell(cell, rows, k, total)``
            is also called as each cell finishes.

    Raises:
        RunFolderError: ``out_dir`` cannot take this run (see the message).
    """
    argv = list(argv if argv is not None else sys.argv)
    out = Path(out_dir)
    lock = lock_folder(out)
    try:
        return _run_locked(suite, out, argv=argv, on_cell=on_cell, executor=executor, resume=resume, force=force,
                           retry_failed=retry_failed, timeout=timeout, threads=threads, reporter=reporter)
    finally:
        _instances.clear()  # validated instances no cell of this run took
        if not (out / "run.json").exists():  # refused a folder that holds no run: leave it as it was
            with contextlib.suppress(OSError):
                (out / ".lock").unlink()
        lock.close()


def _run_locked(suite: Suite, out: Path, *, argv: list[str], on_cell, executor, resume: bool, force: bool,
                retry_failed: bool, timeout: float | None, threads: int | None, reporter: Any) -> SuiteResult:
    code = code_version()
    cells = suite.cells()
    manifest, changes = prepare_folder(out, suite, code, resume=resume, force=force, argv=argv)
    # run.json first: a driver killed at any later moment leaves a folder that --resume accepts
    write_json_atomic(manifest, out / "run.json")
    for tmp in out.glob(".*.tmp-*"):  # left by a session killed while it wrote (we hold the lock)
        with contextlib.suppress(OSError):
            tmp.unlink()
    rebuilt = manifest["sessions"][-1].get("rebuilt")
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    finished, aside = scan_cells(cells_dir, cells, retry_failed=retry_failed,
                                  code_sha=code["source_sha256"] if rebuilt and not force else None)
    if aside:
        stale_dir = cells_dir / "stale"
        stale_dir.mkdir(exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        for path, _reason in aside:
            os.replace(path, stale_dir / f"{path.stem}.{stamp}.parquet")
    todo = [c for c in cells if c.cell_id not in finished]

    ex, capacity, describe, dask = _executor_parts(executor)
    isolate = not isinstance(ex, SerialExecutor)
    if isolate:  # cells build their own instances in their processes: drop suite validation's
        _instances.clear()
    threads_why = "set by --threads" if threads is not None else THREADS_WHY
    if threads is None:
        threads = DEFAULT_THREADS
    log = RunLog(out / "run.log")
    prov_path = out / "provenance.json"
    prov = provenance(suite, argv, executor=describe(), threads=threads)
    prov["torch_threads_choice"] = threads_why
    prov.update(resumed=bool(manifest["sessions"][-1].get("resumed")), forced_changes=changes,
                cells_kept=len(finished), cells_set_aside=[f"{p.stem}: {why}" for p, why in aside],
                timeout_override=timeout)
    if prov_path.is_file():
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(prov_path.read_text())
            prov["previous_sessions"] = old.pop("previous_sessions", []) + [old]
    write_json_atomic(prov, prov_path)
    log.write(f"session start: {prov['command_line']}")
    if rebuilt:
        log.write(f"{rebuilt}: rebuilt run.json from the suite; cell files that verify against the suite "
                  f"{'' if force else 'and the current code '}are kept, the others run again")
    log.write(f"suite {suite.name} ({suite.path}, sha256 {suite.sha256[:12]}): {len(cells)} cells, "
              f"{len(finished)} already finished, {len(todo)} to run; executor {prov['executor']}; "
              f"torch threads per cell {threads} ({threads_why})")
    for note in suite.data_notes():  # a task's `fallback`: its dataset is not cached, its stand-in runs
        log.write(note)
    for change in changes:
        log.write(f"resumed with --force although {change}")
    for path, why in aside:
        log.write(f"set aside {path.name} -> cells/stale/ ({why})")

    progress = RunProgress(total=len(cells), skipped=len(finished))
    statuses = {cid: str((cell_file_meta(p) or {}).get("status", "?")) for cid, p in finished.items()}
    mismatched: list[str] = []
    lost: list[str] = []
    if reporter is not None:
        reporter.start(progress, suite=suite, out=out, log_path=log.path)

    # Cell processes fork from a server that has imported what this driver imported while it
    # validated the suite (a task's lazy `import sklearn.datasets`, say), once, not once per cell.
    preload = tuple(imported_third_party_modules()) if isolate else ()
    if isolate and dask is None:
        start_fork_server(preload)

    def job_for(cell: Cell) -> CellJob:
        return CellJob(cell, float(timeout if timeout is not None else cell.hard_timeout), threads, isolate, preload)

    def finish(cell: Cell, fut: Future) -> None:
        try:
            result: CellResult = fut.result()
        except Exception as exc:  # the executor lost the job (a Dask worker died for good, the scheduler went)
            result = executor_failure(cell, exc)
            lost.append(cell.cell_id)
        df = records_frame(result.rows)
        meta = {"cell_id": cell.cell_id, "config_hash": cell.config_hash(), "status": result.status,
                "code": result.info.get("code"), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_parquet_atomic(df, cells_dir / f"{cell.cell_id}.parquet", meta)
        statuses[cell.cell_id] = result.status
        progress.done += 1
        progress.statuses[result.status] += 1
        info = result.info
        log.write(f"finished {cell.cell_id}: {result.status} after {len(result.rows)} rows, "
                  f"wall {info.get('wall_s', _NAN):.2f} s, peak RSS {info.get('peak_rss_mb', _NAN):.0f} MiB, "
                  f"worker {info.get('worker')}")
        if result.status in FAILED_STATUSES:
            log.write(f"{cell.cell_id} {result.status}: {result.rows[-1].get('message', '')}")
        if info.get("output"):
            log.write(f"{cell.cell_id} printed:\n{info['output']}")
        if info.get("code") and info["code"] != code["source_sha256"]:
            mismatched.append(cell.cell_id)
            log.write(f"warning: {cell.cell_id} ran on a worker whose hpo-bench source differs from the driver's "
                      f"({str(info['code'])[:12]} vs {code['source_sha256'][:12]})")
        if reporter is not None:
            reporter.cell_finished(progress, cell, result)
        if on_cell is not None:
            on_cell(cell, result.rows, progress.finished, progress.total)

    pending = list(todo)
    in_flight: dict[Future, Cell] = {}
    try:
        while pending or in_flight:
            while pending and (capacity is None or len(in_flight) < capacity):
                cell = pending.pop(0)
                log.write(f"start {cell.cell_id} (cell_seed {cell.cell_seed})")
                progress.running = len(in_flight) + 1 if dask is None else min(len(in_flight) + 1,
                                                                               dask.capacity or 1)
                if reporter is not None:
                    reporter.cell_started(progress, cell)
                in_flight[_submit(ex, job_for(cell))] = cell
            done, _ = wait_futures(list(in_flight), timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in [f for f in in_flight if f in done]:  # in submission order
                finish(in_flight.pop(fut), fut)
            slots = len(in_flight) if dask is None else min(len(in_flight), dask.capacity or len(in_flight))
            progress.running = slots
            if reporter is not None:
                reporter.tick(progress)
    except BaseException as exc:
        for fut in in_flight:
            fut.cancel()
        with contextlib.suppress(Exception):
            ex.shutdown(wait=False, cancel_futures=True)
        kill_children()
        why = type(exc).__name__ + (f": {exc}" if isinstance(exc, OSError) else "")
        with contextlib.suppress(Exception):  # the log itself may be what cannot be written
            log.write(f"session stopped ({why}): {progress.finished} of {progress.total} cells finished are in "
                      "cells/; continue with --resume")
        with contextlib.suppress(Exception):
            log.close()
        if reporter is not None:
            reporter.close(progress)
        raise

    frames = []
    for c in cells:
        path = cells_dir / f"{c.cell_id}.parquet"
        try:
            frames.append(pd.read_parquet(path))
        except (OSError, ValueError, pa.ArrowException) as exc:  # damaged after it was kept or written
            log.write(f"session stopped: cannot read {path}: {type(exc).__name__}: {exc}; continue with --resume")
            log.close()
            raise RunFolderIOError(f"cell file {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); run the "
                                   "same command with --resume: it sets damaged cell files aside and reruns their "
                                   "cells") from None
    frame = pd.concat(frames, ignore_index=True) if frames else records_frame([])
    rec_path = out / "records.parquet"
    try:
        write_parquet_atomic(frame, rec_path)
    except OSError as exc:  # every cell is in cells/: a resume only writes records.parquet again
        with contextlib.suppress(Exception):
            log.write(f"session stopped (OSError: {exc}) writing {rec_path}: all {len(cells)} cells finished are in "
                      "cells/; continue with --resume")
            log.close()
        if reporter is not None:
            reporter.close(progress)
        raise
    prov.update(finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                statuses=dict(Counter(statuses.values())), code_mismatch_cells=mismatched)
    if dask is not None:
        with contextlib.suppress(Exception):
            prov["executor"] = dask.describe()
    write_json_atomic(prov, prov_path)
    log.write(f"session end: {progress.done} cells run, {progress.skipped} kept; statuses "
              f"{dict(Counter(statuses.values()))}; records {rec_path}")
    log.close()
    if reporter is not None:
        reporter.close(progress)
    return SuiteResult(out, rec_path, prov_path, statuses, frame, skipped=sorted(finished), log_path=log.path,
                       lost=lost)

