"""Running cells and suites.

:func:`run_cell` builds the task (data from the repetition seed) and the tuner, seeds the
tuner and torch with the cell's seed, runs the tuner under a
:class:`~hpo_bench.records.Recorder` and returns its rows. It never raises for a failing
tuner or task: an exception becomes a terminal row with status ``error`` (``oom`` for a
``MemoryError`` or a CUDA out-of-memory error) whose ``message`` holds the exception and
its traceback; rows recorded before it are kept.

:func:`run_suite` runs the cells of a suite on an executor (:mod:`hpo_bench.executors`);
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

Hard timeout. Every cell has a wall-clock limit (:attr:`~hpo_bench.suite.Cell.hard_timeout`
or ``timeout``). On the process pool and on Dask the cell runs in its own child process,
which is killed at the limit; the rows it had recorded are kept and a ``timeout`` row ends
the cell. On the serial executor (in-process, for debugging) ``SIGALRM`` raises
:class:`CellTimeout` in the cell at the next Python instruction.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Executor, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from . import _instances
from .executors import (ChildExit, DaskRun, SerialExecutor, imported_third_party_modules, kill_children, peak_rss_mb,
                        reset_peak_rss, run_in_child, start_fork_server, usable_cpus)
from .records import COLUMNS, Recorder
from .registry import TASKS, TUNERS
from .suite import Cell, Suite

__all__ = ["run_cell", "run_suite", "records_frame", "provenance", "code_version", "SuiteResult", "CellJob",
           "CellResult", "CellTimeout", "RunFolderError", "RunFolderIOError", "EXECUTOR_FAILURE", "RunProgress",
           "FAILED_STATUSES", "DEFAULT_THREADS", "check_run_folder"]

#: Statuses that say the cell did not run to its end (``diverged`` is a result, not a failure).
FAILED_STATUSES = ("error", "timeout", "oom")
_HOST = socket.gethostname()
_NAN = float("nan")


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message says why and what to do."""


class RunFolderIOError(OSError):
    """The run folder could not be read or written while the run went on; the message says what to do."""


#: How the message of a cell whose job the executor lost (not the cell's own failure) begins.
EXECUTOR_FAILURE = "executor failure"


def _submit(ex: Executor, job: Any) -> Future:
    """``ex.submit(job)``; an executor that refuses (its scheduler is gone) gives a failed future instead."""
    try:
        return ex.submit(job)
    except Exception as exc:  # noqa: BLE001 - recorded as the cell's executor failure
        fut: Future = Future()
        fut.set_exception(exc)
        return fut


class CellTimeout(BaseException):
    """Raised inside a cell by the serial executor's alarm at the hard timeout.

    A ``BaseException`` so that a tuner's ``except Exception`` cannot swallow it.
    """


# ------------------------------------------------------------------ one cell
def _meta(cell: Cell) -> dict[str, Any]:
    return {
        "suite": cell.suite, "cell_id": cell.cell_id, "task": cell.task.label,
        "task_params": json.dumps({"name": cell.task.name, **cell.task.params}, sort_keys=True, default=str),
        "tuner": cell.tuner.name, "tuner_label": cell.tuner.label,
        "tuner_params": json.dumps(cell.tuner.params, sort_keys=True, default=str),
        "seed": cell.seed, "budget_steps": cell.budget.steps, "budget_seconds": cell.budget.seconds,
        "cell_seed": cell.cell_seed,
    }


def _terminal_row(meta: dict[str, Any], before: list[dict[str, Any]], status: str, message: str) -> dict[str, Any]:
    """The row that ends a cell no recorder could end (it never started, or its process died)."""
    last = before[-1] if before else {}
    row = dict(meta)
    row.update(step=len(before), time_s=last.get("time_s", 0.0), measure_s=last.get("measure_s", 0.0),
               inner_steps=last.get("inner_steps", 0), grad_evals=last.get("grad_evals", 0),
               hvps=last.get("hvps", 0), inner_solves=last.get("inner_solves", 0),
               val_loss=_NAN, val_loss_ref=_NAN, test_loss=_NAN, best_val_loss=last.get("best_val_loss", _NAN),
               hypergrad_rel_error=_NAN, hypergrad_cosine=_NAN, hypergrad_norm=_NAN,
               hypergrad_error_bound=_NAN, reference_error_bound=_NAN, reference_route="", hp=[], theta=[],
               status=status, message=message)
    return row


def _describe(exc: BaseException) -> str:
    """First line: the exception; then its traceback (innermost frames, where the cause is)."""
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-12)}"


#: What torch's allocators say when an allocation fails (CUDA: "out of memory"; CPU's
#: DefaultCPUAllocator: "can't allocate memory: you tried to allocate N bytes").
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


def _is_oom(exc: BaseException) -> bool:
    cuda_oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if cuda_oom is not None and isinstance(exc, cuda_oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in text for m in _OOM_MESSAGES)


@contextlib.contextmanager
def _alarm(seconds: float | None):
    """Raise :class:`CellTimeout` after ``seconds`` (main thread of a Unix process only).

    Yields a list that holds the message once the alarm fired. The alarm repeats every
    50 ms until the block ends: an exception raised inside a finalizer is ignored by
    Python, so one raise alone could be lost; and a block that still ends normally after
    the alarm fired is over time all the same (the caller checks the list).
    """
    fired: list[str] = []
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield fired
        return

    def _fire(signum, frame):
        if not fired:
            fired.append(f"cell exceeded its hard timeout of {seconds:g} s (serial executor: stopped in-process)")
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        raise CellTimeout(fired[0])

    old = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _seed_everything(seed: int) -> None:
    # torch.manual_seed's CPU and CUDA parts; the wrapper itself costs ~2 ms on its first call in a
    # fresh cell process
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def run_cell(cell: Cell, *, on_row: Callable[[dict[str, Any]], None] | None = None,
             extra_meta: dict[str, Any] | None = None, alarm: float | None = None,
             on_patch: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run one cell; always returns rows (the last has the cell's final status).

    Args:
        cell: the cell.
        on_row: called with each row as soon as it is recorded.
        extra_meta: constant columns added to every row (e.g. ``torch_threads``, ``worker``).
        alarm: stop the cell with status ``timeout`` after this many wall-clock seconds
            (``SIGALRM``; only in the main thread).
        on_patch: called with ``(row index, columns)`` when the recorder fills in columns of a row
            already passed to ``on_row`` (compact rows: the last row's ``hp`` and ``theta``,
            :meth:`hpo_bench.records.Recorder.finish`).
    """
    meta = _meta(cell)
    meta.update(extra_meta or {})
    recorder: Recorder | None = None
    fired: list[str] = []
    try:
        with _alarm(alarm) as fired:
            # suite validation's instance where it was built in this process and is still fresh (_instances)
            task = _instances.take(_instances.instance_key(cell.task.name, cell.task.params, cell.seed, cell.dtype,
                                                           cell.device))
            if task is None:
                task = TASKS.get(cell.task.name)(**cell.task.params, seed=cell.seed, dtype=cell.dtype,
                                                 device=cell.device)
            tuner = TUNERS.get(cell.tuner.name)(**cell.tuner.params)
            recorder = Recorder(task, cell.budget, meta=meta, reference=cell.reference, on_row=on_row)
            _seed_everything(cell.cell_seed)
            recorder.start()
            tuner.run(task, recorder, seed=cell.cell_seed)
        _finish_rows(recorder, on_patch)
        if not fired:
            return recorder.rows
        status, message = "timeout", fired[0]  # the alarm's exception was swallowed, yet the cell ran over time
    except CellTimeout as exc:
        status, message = "timeout", str(exc)
    except MemoryError as exc:
        status, message = "oom", _describe(exc)
    except Exception as exc:  # a failing cell is recorded, never fatal to the suite
        status, message = ("oom" if _is_oom(exc) else "error"), _describe(exc)
    if fired and status != "timeout":  # the alarm's exception became another one on its way out
        status, message = "timeout", f"{fired[0]}; then {message}"
    if recorder is None:
        row = _terminal_row(meta, [], status, message)
        if on_row is not None:
            on_row(row)
        return [row]
    _finish_rows(recorder, on_patch)
    recorder.fail(status, message)
    return recorder.rows


def _finish_rows(recorder: Recorder, on_patch: Callable[[int, dict[str, Any]], None] | None) -> None:
    patch = recorder.finish()
    if patch is not None and on_patch is not None:
        on_patch(*patch)


@dataclass
class CellResult:
    """What a job sends back to the driver: the cell's rows, its final status, and how it ran
    (``info``: ``torch_threads``, ``wall_s``, ``peak_rss_mb``, ``peak_cuda_mb``, ``worker``,
    ``code``: the worker's source fingerprint; ``output``: what a cell process printed)."""

    cell_id: str
    rows: list[dict[str, Any]]
    status: str
    info: dict[str, Any] = field(default_factory=dict)


def _finish(rows: list[dict[str, Any]], info: dict[str, Any]) -> list[dict[str, Any]]:
    for row in rows:
        row.update(wall_s=info.get("wall_s", _NAN), peak_rss_mb=info.get("peak_rss_mb", _NAN),
                   peak_cuda_mb=info.get("peak_cuda_mb", _NAN))
    return rows


def _cuda_device(device: str) -> torch.device | None:
    dev = torch.device(device)
    return dev if dev.type == "cuda" and torch.cuda.is_available() else None


_WARM = False


def warm_up() -> None:
    """Do once per process the lazy first-use work a cell would otherwise pay inside its timed region.

    ``torch.optim`` imports ``torch._dynamo`` on first use (seconds), and the first seeding, the
    first optimizer step, the first autograd pass and the first LAPACK calls of a process each
    cost about a millisecond. The fork server runs this once, so every cell process starts
    warm: without it, whichever tuner comes first in a process would carry these costs in
    ``time_s`` (and the harness in ``wall_s``).
    """
    global _WARM
    if not _WARM:
        _WARM = True
        with contextlib.suppress(Exception):
            import torch._dynamo  # noqa: F401
        with contextlib.suppress(Exception):
            torch.manual_seed(0)
            x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
            for opt in (torch.optim.SGD([x], lr=0.1), torch.optim.Adam([x], lr=0.1),
                        torch.optim.RMSprop([x], lr=0.1)):
                (g,) = torch.autograd.grad((x * x).sum(), x, create_graph=True)
                x.grad = g.detach() + 1.0
                opt.step()
                opt.zero_grad(set_to_none=True)
            a = torch.eye(2, dtype=torch.float64) * 2.0
            chol = torch.linalg.cholesky(a)
            torch.cholesky_solve(a, chol)
            torch.linalg.cholesky_ex(a)
            torch.linalg.eigh(a)
            torch.linalg.solve(a, a[0])


def _execute(cell: Cell, threads: int, *, on_row=None, alarm: float | None = None, on_patch=None) -> CellResult:
    """Run a cell in this process with ``threads`` torch threads, measuring wall time and peak memory."""
    warm_up()
    t0 = time.perf_counter()
    worker = f"{_HOST}:{os.getpid()}"
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    reset_peak_rss()
    cuda = _cuda_device(cell.device)
    if cuda is not None:
        torch.cuda.reset_peak_memory_stats(cuda)
    try:
        rows = run_cell(cell, on_row=on_row, extra_meta={"torch_threads": threads, "worker": worker}, alarm=alarm,
                        on_patch=on_patch)
    finally:
        torch.set_num_threads(previous)
    info = {"torch_threads": threads, "wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated(cuda) / 2**20 if cuda is not None else _NAN,
            "worker": worker, "code": code_version()["source_sha256"]}
    return CellResult(cell.cell_id, _finish(rows, info), str(rows[-1]["status"]), info)


_OUTPUT_LIMIT = 20_000  # characters of a cell's stdout/stderr kept for run.log (the end)


def _cell_child(send: Callable[[Any], None], cell: Cell, threads: int) -> None:
    """Body of a cell's child process: stream rows, then the summary.

    The child's stdout and stderr (warnings, prints, C libraries) go to a temporary file
    and come back with the summary for ``run.log``, so nothing is printed over the
    driver's progress display. A failure of the harness itself is sent as ``crash``.
    """
    with tempfile.TemporaryFile() as captured:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(captured.fileno(), 1)
        os.dup2(captured.fileno(), 2)
        try:
            result = _execute(cell, threads, on_row=lambda row: send(("row", row)),
                              on_patch=lambda i, cols: send(("patch", (i, cols))))
            summary = {**result.info, "status": result.status}
        except BaseException as exc:  # noqa: BLE001 - reported to the driver, then this process ends
            summary = {"crash": _describe(exc)}
        sys.stdout.flush()
        sys.stderr.flush()
        captured.seek(0)
        output = captured.read().decode("utf-8", errors="replace")
    summary["output"] = output[-_OUTPUT_LIMIT:]
    send(("crash" if "crash" in summary else "end", summary))


def child_death(ex: ChildExit, timeout: float) -> tuple[str, str]:
    """Status and message of a cell whose process ended without its summary."""
    if ex.timed_out:
        return "timeout", (f"cell exceeded its hard timeout of {timeout:g} s; its process was killed after "
                           f"{ex.seconds:.2f} s")
    if ex.exitcode == -signal.SIGKILL:
        if ex.oom_kills:  # the kernel counted an OOM kill while this cell ran
            return "oom", ("the cell's process was killed by SIGKILL, not by hpo-bench, while the kernel's "
                           f"out-of-memory killer killed {ex.oom_kills} process(es): out of memory")
        why = ("the kernel counted no OOM kill meanwhile, so not out of memory" if ex.oom_kills == 0 else
               "this system does not count OOM kills, so it may also have been the kernel's out-of-memory killer")
        return "error", f"the cell's process was killed by SIGKILL from outside hpo-bench ({why})"
    how = f"signal {ex.signal_name}" if ex.signal_name else f"exit code {ex.exitcode}"
    return "error", f"the cell's process died ({how}) before it finished"


#: Torch threads per cell unless ``threads`` (``--threads``) says otherwise, on every executor.
#: Measured on the quick suite (2 usable CPUs shared with other work, serial, each cell's wall
#: time at 1 and at 2 torch threads, twice): 2 threads made 76 and then all 82 cells slower, and
#: the cells' total wall time 14.9x (6.4 -> 94.5 s) and 6.6x (11.1 -> 73.7 s) longer: these cells
#: are small, and a second OpenMP thread mostly spin-waits.
DEFAULT_THREADS = 1
THREADS_WHY = ("default: small cells run fastest on one torch thread (quick suite, 2 CPUs: 2 threads per cell "
               "made the cells 6.6-14.9x slower); pass --threads N for large cells")


@dataclass(frozen=True)
class CellJob:
    """The picklable unit an executor runs: one cell, its hard timeout and torch threads.

    Calling it runs the cell and returns a :class:`CellResult`; it never raises for the
    cell's failures. With ``isolate`` the cell runs in a child process that is killed at
    the timeout; without it, in this process (``SIGALRM`` timeout).
    """

    cell: Cell
    timeout: float
    threads: int | None = None  # None: DEFAULT_THREADS
    isolate: bool = True
    preload: tuple[str, ...] = ()  # modules for the fork server where the job runs (see start_fork_server)

    def __call__(self) -> CellResult:
        threads = self.threads or DEFAULT_THREADS
        if not self.isolate:
            return _execute(self.cell, threads, alarm=self.timeout)
        start_fork_server(self.preload)  # no-op once this process's fork server runs
        rows: list[dict[str, Any]] = []
        end: dict[str, Any] = {}
        crash: dict[str, Any] = {}

        def on_message(msg: tuple[str, Any]) -> None:
            kind, payload = msg
            if kind == "patch":  # columns the recorder filled in on a row it had already streamed
                rows[payload[0]].update(payload[1])
                return
            {"row": rows.append, "end": end.update, "crash": crash.update}[kind](payload)

        ex = run_in_child(_cell_child, (self.cell, threads), timeout=self.timeout, on_message=on_message)
        if end:
            return CellResult(self.cell.cell_id, _finish(rows, end), str(end["status"]),
                              {k: v for k, v in end.items() if k != "status"})
        worker = rows[0]["worker"] if rows else f"{_HOST}:{ex.pid}"
        if crash:
            status, message = "error", crash["crash"]
        else:
            status, message = child_death(ex, self.timeout)
        meta = {**_meta(self.cell), "torch_threads": threads, "worker": worker}
        rows.append(_terminal_row(meta, rows, status, message))
        info = {"torch_threads": threads, "wall_s": ex.seconds,
                "peak_rss_mb": ex.peak_rss_mb if ex.peak_rss_mb is not None else _NAN, "peak_cuda_mb": _NAN,
                "worker": worker, "code": None, "output": crash.get("output", "")}
        return CellResult(self.cell.cell_id, _finish(rows, info), status, info)


# -------------------------------------------------------------- records
def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with the documented columns first, in order."""
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(df: pd.DataFrame, path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Write parquet to a temporary file, fsync it, rename it over ``path``: complete or absent."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"hpo_bench": json.dumps(metadata, default=str).encode()})
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full, file-size limit, folder gone: leave no half file behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _write_json_atomic(data: dict[str, Any], path: Path) -> None:
    """Write JSON to a temporary file, fsync it, rename it over ``path``: complete or absent."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=2, default=str))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _cell_file_meta(path: Path) -> dict[str, Any] | None:
    """The harness's metadata of a cell file (``None`` if unreadable or foreign)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(b"hpo_bench")
        return json.loads(raw) if raw else None
    except (OSError, ValueError, pa.ArrowException):
        return None


# ----------------------------------------------------------- provenance
# Code that never runs inside a cell (display, reports, the CLI, the test kit): editing it does not
# make a run's finished cells stale. Everything else (new modules too) counts.
_RESULT_NEUTRAL = {"report", "testing", "__pycache__", "cli.py", "progress.py", "summary.py", "check.py",
                   "notebook.py", "oracle.py"}


def _source_roots() -> list[Path]:
    roots = [Path(__file__).resolve().parent]
    for sub in ("hpo_bench.tasks", "hpo_bench.baselines"):
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(sub)
            for loc in (spec.submodule_search_locations or []) if spec else []:
                if Path(loc).resolve() not in roots:
                    roots.append(Path(loc).resolve())
    return roots


def code_version() -> dict[str, Any]:
    """What decides results besides the suite: package versions and a SHA-256 of the source.

    ``source_sha256`` covers every ``.py`` file of ``hpo_bench`` (with ``hpo_bench.tasks``
    and ``hpo_bench.baselines``) except code that never runs inside a cell (reports, the
    CLI and displays, the testing kit), so uncommitted edits count too. A resume compares
    every key here.
    """
    h = hashlib.sha256()
    for k, root in enumerate(_source_roots()):
        files = sorted(p for p in root.rglob("*.py") if not _RESULT_NEUTRAL & set(p.relative_to(root).parts))
        for p in files:
            with contextlib.suppress(OSError):
                h.update(f"{k}/{p.relative_to(root).as_posix()}\0".encode())
                h.update(p.read_bytes())
                h.update(b"\0")
    return {"hpo_bench": _pkg_version("hpo-bench"), "source_sha256": h.hexdigest(), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def provenance(suite: Suite | None = None, argv: list[str] | None = None, *, executor: dict[str, Any] | None = None,
               threads: int | None = None) -> dict[str, Any]:
    """Versions, git state, host, CPU, threads and torch settings: what is needed to trust or rerun a result.

    Args:
        suite: the suite being run (file, hash, seeds, dtype, device, and under ``datasets`` which data each task
            instance uses: :meth:`hpo_bench.suite.Suite.datasets`).
        argv: the full command line (default ``sys.argv``).
        executor: the executor's description (kind, workers, Dask scheduler and workers).
        threads: torch threads per cell (``None``: each Dask worker decides: its CPUs / its threads).
    """
    pkgs = {name: _pkg_version(name) for name in ("hpo-bench", "torch", "numpy", "pandas", "pyarrow", "optuna",
                                                  "scikit-learn", "scipy", "seaborn", "dask", "distributed")}
    command = list(argv if argv is not None else sys.argv)
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    info: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command, "command_line": shlex.join(command), "cwd": os.getcwd(),
        "python": sys.version.split()[0], "packages": pkgs, "code": code_version(),
        "git_commit": commit, "git_dirty": bool(dirty) if dirty is not None else None,
        "host": _HOST, "platform": platform.platform(), "processor": platform.processor(), "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(),
        "torch_threads": threads, "driver_torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "torch_default_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "torch_deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic, "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_available": torch.cuda.is_available(), "device_name": _cpu_model(),
        "executor": executor,
    }
    if suite is not None:
        info.update(suite=suite.name, suite_path=suite.path, suite_sha256=suite.sha256, suite_seed=suite.seed,
                    dtype=suite.dtype, device=suite.device, seeds=suite.seeds, timeout=suite.timeout,
                    n_cells=len(suite.cells()), datasets=suite.datasets())
        dev = torch.device(suite.device)
        if dev.type == "cuda" and torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name(dev)
    return info


# ------------------------------------------------------------ run folder
class _RunLog:
    """``run.log``: one timestamped line per event (appended across sessions), flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        stamp = datetime.now().isoformat(sep=" ", timespec="seconds")
        with self._lock:
            for k, line in enumerate(text.rstrip("\n").splitlines() or [""]):
                self._fh.write(f"{stamp} {line}\n" if k == 0 else f"    {line}\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _code_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    names = {"hpo_bench": "hpo-bench version", "source_sha256": "hpo-bench source", "torch": "torch version",
             "numpy": "numpy version", "python": "Python version"}
    out = []
    for key, name in names.items():
        a, b = old.get(key), new.get(key)
        if a != b:
            short = (lambda v: str(v)[:12]) if key == "source_sha256" else str
            out.append(f"{name} changed ({short(a)} -> {short(b)})")
    return out


#: What a run folder may hold besides run.json: if run.json is missing or damaged and the folder
#: holds nothing else, it is a run whose manifest was lost (rebuilt by --resume).
_RUN_ENTRIES = {"run.json", "run.log", ".lock", "cells", "provenance.json", "records.parquet", "report", "tune"}


def _is_run_entry(path: Path) -> bool:
    return path.name in _RUN_ENTRIES or (path.name.startswith(".") and ".tmp-" in path.name)


def _check_out_path(out: Path) -> None:
    """Refuse an ``out`` that is a file, or lies under one (mkdir would fail with a cryptic errno)."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"run folder {str(out)!r} exists and is not a folder; choose another --out")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunFolderError(f"run folder {str(out)!r} lies under {str(parent)!r}, which is a file, not a "
                                     "folder; choose another --out")
            return


def _prepare_folder(out: Path, suite: Suite, code: dict[str, Any], *, resume: bool, force: bool,
                    argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Check that ``out`` may receive this run; return the manifest to write and the accepted changes.

    A folder whose ``run.json`` is missing or damaged but that holds only run-folder entries (a
    driver killed while it started, a lost file) is resumable: with ``resume`` the manifest is
    rebuilt from the suite (``sessions[-1]["rebuilt"]`` says why), and only cell files that verify
    against the suite and the current code are kept.
    """
    manifest_path = out / "run.json"
    _check_out_path(out)
    session = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": shlex.join(argv)}
    fresh = {"format": 1, "suite": suite.name, "suite_path": suite.path, "suite_sha256": suite.sha256,
             "code": code, "created": session["started"], "sessions": [session]}
    entries = list(out.iterdir()) if out.is_dir() else []
    lost = None
    if not manifest_path.is_file():
        if not any(p.name not in ("run.log", ".lock") and not (p.name.startswith(".") and ".tmp-" in p.name)
                   for p in entries):
            return fresh, []  # new, empty, or left by a driver killed before it wrote anything
        if not all(_is_run_entry(p) for p in entries):
            raise RunFolderError(f"run folder {str(out)!r} is not empty and holds no hpo-bench run (no run.json); "
                                 "choose a new or empty folder")
        lost = "run.json is missing"
    else:
        try:
            manifest = json.loads(manifest_path.read_text())
            old_sha, old_code = manifest["suite_sha256"], manifest["code"]
            if not isinstance(old_code, dict) or not isinstance(manifest.get("sessions", []), list):
                raise TypeError("`code` must be a table and `sessions` a list")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if not all(_is_run_entry(p) for p in entries):
                raise RunFolderError(f"run folder {str(out)!r}: run.json is unreadable ({exc}); choose a new "
                                     "folder") from None
            lost = f"run.json is unreadable ({type(exc).__name__}: {exc})"
    if lost is not None:
        if not resume:
            raise RunFolderError(f"run folder {str(out)!r} holds an hpo-bench run but {lost}; pass --resume to "
                                 "rebuild it from the suite (cell files that verify are kept), or choose another "
                                 "--out")
        session.update(resumed=True, forced_changes=[], rebuilt=lost)
        return fresh, []
    n_done = len(list((out / "cells").glob("*.parquet"))) if (out / "cells").is_dir() else 0
    if not resume:
        raise RunFolderError(f"run folder {str(out)!r} already holds a run of suite {manifest.get('suite')!r} "
                             f"({n_done} cells finished); pass --resume to continue it, or choose another --out")
    changes = []
    if old_sha != suite.sha256:
        changes.append(f"the suite file changed ({suite.path}: sha256 {str(old_sha)[:12]} -> {suite.sha256[:12]})")
    changes += _code_changes(old_code, code)
    if changes and not force:
        raise RunFolderError(f"cannot resume {str(out)!r}: {'; '.join(changes)}; its {n_done} finished cells may not "
                             "match a rerun. Pass --force to resume anyway (cells whose configuration is unchanged "
                             "are kept, the others run again) or choose another --out")
    session.update(resumed=True, forced_changes=changes)
    manifest.update(suite=suite.name, suite_path=suite.path, suite_sha256=suite.sha256, code=code)
    manifest.setdefault("sessions", []).append(session)
    return manifest, changes


def _lock_folder(out: Path) -> Any:
    """Hold the run folder for this session, so that two drivers never write one run folder.

    Two advisory ``flock`` locks, which the kernel releases when the process ends, even by
    SIGKILL: on the folder itself (so deleting ``.lock`` cannot let a second driver in) and on
    ``<out>/.lock``, which names the holder.
    """
    import fcntl

    _check_out_path(out)
    out.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held = True
    except BlockingIOError:
        held = False
    except OSError:  # a file system without flock on folders: the .lock file alone then
        held = True
    fh = open(out / ".lock", "a+")
    if held:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = False
    if not held:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        os.close(dir_fd)
        raise RunFolderError(f"run folder {str(out)!r} is being written by another hpo-bench run ({holder}); "
                             "wait for it to end or choose another --out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {_HOST}")
    fh.flush()
    return _FolderLock(fh, dir_fd)


@dataclass
class _FolderLock:
    fh: Any
    dir_fd: int

    def close(self) -> None:
        self.fh.close()
        with contextlib.suppress(OSError):
            os.close(self.dir_fd)


def check_run_folder(out: str | Path, suite: Suite, *, resume: bool = False, force: bool = False) -> None:
    """Raise :class:`RunFolderError` if ``run_suite(suite, out, resume=..., force=...)`` would refuse ``out``."""
    _prepare_folder(Path(out), suite, code_version(), resume=resume, force=force, argv=[])


def _scan_cells(cells_dir: Path, cells: list[Cell], *, retry_failed: bool,
                code_sha: str | None = None) -> tuple[dict[str, Path], list[tuple]]:
    """Finished cells to keep, and cell files to set aside (with the reason).

    A kept file matches its cell's configuration hash and reads in full; with ``code_sha`` (a
    rebuilt manifest) it was also written by that source.
    """
    wanted = {c.cell_id: c for c in cells}
    keep: dict[str, Path] = {}
    aside: list[tuple[Path, str]] = []
    for tmp in cells_dir.glob(".*.tmp-*"):  # a write that was interrupted: never a finished cell
        with contextlib.suppress(OSError):
            tmp.unlink()
    for path in sorted(cells_dir.glob("*.parquet")):
        meta = _cell_file_meta(path)
        cell = wanted.get(path.stem)
        damage = None if meta is None or cell is None else _damage(path)
        if meta is None:
            aside.append((path, "unreadable or not written by this harness"))
        elif cell is None:
            aside.append((path, "no longer in the suite"))
        elif meta.get("config_hash") != cell.config_hash():
            aside.append((path, "its configuration changed"))
        elif damage is not None:
            aside.append((path, f"damaged ({damage}); its cell runs again"))
        elif code_sha is not None and meta.get("code") not in (None, code_sha):
            aside.append((path, f"written by other hpo-bench source ({str(meta.get('code'))[:12]}) and run.json, "
                                "which would say whether that was accepted, was lost; its cell runs again"))
        elif retry_failed and meta.get("status") in FAILED_STATUSES:
            aside.append((path, f"retrying a cell that ended with {meta.get('status')}"))
        else:
            keep[path.stem] = path
    return keep, aside


def _damage(path: Path) -> str | None:
    """Why the parquet file at ``path`` cannot be read in full (``None``: it reads).

    A file whose footer is intact but whose data pages are damaged passes a schema read; only
    decoding every page finds it.
    """
    try:
        pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


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


def run_suite(suite: Suite, out_dir: str | Path, *, argv: list[str] | None = None,
              on_cell: Callable[[Cell, list[dict[str, Any]], int, int], None] | None = None,
              executor: Executor | DaskRun | None = None, resume: bool = False, force: bool = False,
              retry_failed: bool = False, timeout: float | None = None, threads: int | None = None,
              reporter: Any = None) -> SuiteResult:
    """Run the cells of ``suite`` into the run folder ``out_dir`` (see the module docstring).

    Args:
        executor: where cells run: ``None`` (serial, in this process), a
            :class:`~hpo_bench.executors.ProcessPool`, a :class:`~hpo_bench.executors.DaskRun`,
            or any ``concurrent.futures.Executor`` (its cells run in child processes).
        resume: continue the run in ``out_dir``: finished cells are kept.
        force: with ``resume``, accept a changed suite file or code.
        retry_failed: with ``resume``, run cells that ended with error, timeout or oom again.
        timeout: hard wall-clock seconds per cell, overriding the suite's.
        threads: torch threads per cell (default :data:`DEFAULT_THREADS`, on every executor; the
            choice and why go to ``run.log`` and ``provenance.json``).
        reporter: a progress display (:mod:`hpo_bench.progress`); ``on_cell(cell, rows, k, total)``
            is also called as each cell finishes.

    Raises:
        RunFolderError: ``out_dir`` cannot take this run (see the message).
    """
    argv = list(argv if argv is not None else sys.argv)
    out = Path(out_dir)
    lock = _lock_folder(out)
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
    manifest, changes = _prepare_folder(out, suite, code, resume=resume, force=force, argv=argv)
    # run.json first: a driver killed at any later moment leaves a folder that --resume accepts
    _write_json_atomic(manifest, out / "run.json")
    for tmp in out.glob(".*.tmp-*"):  # left by a session killed while it wrote (we hold the lock)
        with contextlib.suppress(OSError):
            tmp.unlink()
    rebuilt = manifest["sessions"][-1].get("rebuilt")
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    finished, aside = _scan_cells(cells_dir, cells, retry_failed=retry_failed,
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
    log = _RunLog(out / "run.log")
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
    _write_json_atomic(prov, prov_path)
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
    statuses = {cid: str((_cell_file_meta(p) or {}).get("status", "?")) for cid, p in finished.items()}
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
            message = f"{EXECUTOR_FAILURE}: {_describe(exc)}"
            rows = [_terminal_row(_meta(cell), [], "error", message)]
            result = CellResult(cell.cell_id, _finish(rows, {}), "error", {"worker": None})
            lost.append(cell.cell_id)
        df = records_frame(result.rows)
        meta = {"cell_id": cell.cell_id, "config_hash": cell.config_hash(), "status": result.status,
                "code": result.info.get("code"), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write_atomic(df, cells_dir / f"{cell.cell_id}.parquet", meta)
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
        _write_atomic(frame, rec_path)
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
    _write_json_atomic(prov, prov_path)
    log.write(f"session end: {progress.done} cells run, {progress.skipped} kept; statuses "
              f"{dict(Counter(statuses.values()))}; records {rec_path}")
    log.close()
    if reporter is not None:
        reporter.close(progress)
    return SuiteResult(out, rec_path, prov_path, statuses, frame, skipped=sorted(finished), log_path=log.path,
                       lost=lost)

