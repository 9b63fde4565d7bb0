"""Running one cell, in this process or in a child process: its timeouts and its statuses.

:func:`run_cell` builds the task (data from the repetition seed) and the tuner, seeds the
tuner and torch with the cell's seed, runs the tuner under a
:class:`~hpo_bench.core.records.Recorder` and returns its rows. It never raises for a failing
tuner or task: an exception becomes a terminal row with status ``error`` (``oom`` for a
``MemoryError`` or a CUDA out-of-memory error) whose ``message`` holds the exception and
its traceback; rows recorded before it are kept.

Hard timeout. Every cell has a wall-clock limit (:attr:`~hpo_bench.running.suite.Cell.hard_timeout`
or ``timeout``). On the process pool and on Dask the cell runs in its own child process,
which is killed at the limit; the rows it had recorded are kept and a ``timeout`` row ends
the cell. On the serial executor (in-process, for debugging) ``SIGALRM`` raises
:class:`CellTimeout` in the cell at the next Python instruction.

:class:`CellJob` is the picklable unit an executor runs; :class:`CellResult` is what it sends back.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from . import _instances
from ..core.records import Recorder
from ..core.registry import TASKS, TUNERS
from .executors import ChildExit, peak_rss_mb, reset_peak_rss, run_in_child, start_fork_server
from ..core.plugins import load_folders
from .provenance import HOST, code_version
from .suite import Cell

__all__ = ["run_cell", "CellJob", "CellResult", "CellTimeout", "child_death", "warm_up", "executor_failure",
           "FAILED_STATUSES", "EXECUTOR_FAILURE", "DEFAULT_THREADS", "THREADS_WHY"]

#: Statuses that say the cell did not run to its end (``diverged`` is a result, not a failure).
FAILED_STATUSES = ("error", "timeout", "oom")
_NAN = float("nan")

#: How the message of a cell whose job the executor lost (not the cell's own failure) begins.
EXECUTOR_FAILURE = "executor failure"


class CellTimeout(BaseException):
    """Raised inside a cell by the serial executor's alarm at the hard timeout.

    A ``BaseException`` so that a tuner's ``except Exception`` cannot swallow it.
    """


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
               status=status, message=message, stop_reason=status)
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
            already passed to ``on_row`` (compact rows: ``hp`` and ``theta`` of the last row, the final
            incumbent and the best ``val_loss_ref`` row, :meth:`hpo_bench.core.records.Recorder.finish`).
    """
    meta = _meta(cell)
    meta.update(extra_meta or {})
    recorder: Recorder | None = None
    fired: list[str] = []
    try:
        with _alarm(alarm) as fired:
            if cell.plugins:  # the suite's plug-in folders, in this (possibly fresh) process too
                load_folders(cell.plugins)
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
        if not fired:
            _finish_rows(recorder, on_patch)
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
    _finish_rows(recorder, on_patch, ended=False)
    recorder.fail(status, message)
    return recorder.rows


def _finish_rows(recorder: Recorder, on_patch: Callable[[int, dict[str, Any]], None] | None, *,
                 ended: bool = True) -> None:
    for patch in recorder.finish(ended=ended):
        if on_patch is not None:
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
    worker = f"{HOST}:{os.getpid()}"
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
        worker = rows[0]["worker"] if rows else f"{HOST}:{ex.pid}"
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



def executor_failure(cell: Cell, exc: BaseException) -> CellResult:
    """The result of a cell whose job the executor lost (call it while ``exc`` is being handled)."""
    message = f"{EXECUTOR_FAILURE}: {_describe(exc)}"
    rows = [_terminal_row(_meta(cell), [], "error", message)]
    return CellResult(cell.cell_id, _finish(rows, {}), "error", {"worker": None})
