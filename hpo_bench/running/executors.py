"""Where cells run: executors behind one interface, :class:`concurrent.futures.Executor`.

* :class:`SerialExecutor`: in the calling process, one call at a time, at ``submit``.
  The default, for debugging: breakpoints, ``pdb`` and tracebacks work as usual.
* :class:`ProcessPool`: up to ``max_workers`` calls at a time on this machine
  (``hpo-bench run --workers N``).
* Dask (``--dask local`` or ``--dask tcp://host:port``): :func:`dask_executor` returns the
  executor of a ``distributed.Client`` (optional extra ``hpo-bench[dist]``).

The harness submits :class:`~hpo_bench.running.cell_process.CellJob` callables and gets their
:class:`~hpo_bench.running.cell_process.CellResult` back in the driver, which alone writes the run
folder. On the pool and on Dask a job runs its cell in a fresh child process started by
:func:`run_in_child`: the child can be killed at the cell's hard timeout without taking a
worker down, it frees all its memory when it ends, and its peak memory is the cell's own.

Children are forked from a *fork server* (a clean process that imported torch and the
registries once, then never ran a torch op), so a child costs a fork, not an interpreter
start, and is safe to fork even when the parent is a multi-threaded Dask worker. A child
dies with its fork server (``PR_SET_PDEATHSIG``), which dies with its parent: killing the
driver (or a Dask worker) leaves no cell running.

The fork server is the standard library's (``multiprocessing`` context ``"forkserver"`` with
``set_forkserver_preload``); only the per-child supervision below is written here.
Not pebble: its ``ProcessPool`` returns a result only when a task ends (a cell killed at its
timeout would lose the rows it had streamed here) and tells a dead worker by its exit code alone
(no peak RSS, no kernel OOM count: :func:`~hpo_bench.running.cell_process.child_death` needs both).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import wait as _mp_wait
from typing import Any, Callable, Iterable, Iterator

__all__ = ["SerialExecutor", "ProcessPool", "DaskRun", "dask_executor", "run_in_child", "ChildExit",
           "usable_cpus", "peak_rss_mb", "oom_kill_count", "reset_peak_rss", "kill_children", "start_fork_server",
           "process_context", "imported_third_party_modules"]

#: Modules the fork server imports once, so that every child starts with them loaded.
_PRELOAD = ["__main__", "hpo_bench.running._worker_init"]
_CTX: Any = None
_CTX_LOCK = threading.RLock()
_STARTED = False
PRELOAD_ENV = "HPO_BENCH_FORK_SERVER_PRELOAD"
_DAEMON_LOCK = threading.Lock()
_LIVE: set[Any] = set()  # child processes running now (for kill_children)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: honours cgroups, ``taskset``, SLURM)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------ memory
def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux ``clear_refs``); ``False`` if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _vm_hwm_mb(pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def oom_kill_count() -> int | None:
    """OOM kills the kernel has counted so far (``None`` where it does not say).

    The sum of ``/proc/vmstat``'s ``oom_kill`` (every OOM kill since boot, cgroup limits included)
    and this process's cgroup-v2 ``memory.events`` ``oom_kill``. Only a change matters: a cell
    process killed by SIGKILL is called out of memory only if this count grew while it ran.
    """
    total, found = 0, False
    paths = ["/proc/vmstat"]
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                if line.startswith("0::"):
                    paths.append(f"/sys/fs/cgroup{line.strip()[3:].rstrip('/')}/memory.events")
    for path in paths:
        try:
            with open(path) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        total += int(value)
                        found = True
        except (OSError, ValueError):
            continue
    return total if found else None


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (since the last :func:`reset_peak_rss`)."""
    hwm = _vm_hwm_mb()
    if hwm is not None:
        return hwm
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    return kb / 2**20 if sys.platform == "darwin" else kb / 1024.0


# -------------------------------------------------------------- executors
class SerialExecutor(Executor):
    """Runs each call in the calling thread when it is submitted; the future is already done."""

    capacity = 1

    def __init__(self) -> None:
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        fut: Future = Future()
        fut.set_running_or_notify_cancel()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True

    def describe(self) -> dict[str, Any]:
        return {"kind": "serial", "workers": 1}


class ProcessPool(Executor):
    """At most ``max_workers`` calls at a time on this machine.

    Each call is supervised by one thread of the pool; the cell jobs the harness submits
    start their own child process (:func:`run_in_child`) and wait for it, so ``N`` workers
    means ``N`` cell processes at a time, each killable alone. :meth:`shutdown` with
    ``cancel_futures=True`` kills the running children.
    """

    def __init__(self, max_workers: int) -> None:
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"`max_workers >= 1` must hold, but got max_workers={max_workers!r}")
        self.capacity = max_workers
        self._threads = ThreadPoolExecutor(max_workers, thread_name_prefix="hpo-bench-worker")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self._threads.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            kill_children()
        self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)

    def describe(self) -> dict[str, Any]:
        return {"kind": "process-pool", "workers": self.capacity}


@dataclass
class DaskRun:
    """A Dask executor with the client (and the local cluster) it belongs to."""

    executor: Executor
    client: Any
    cluster: Any = None

    @property
    def capacity(self) -> int | None:
        """Worker threads now (cells running at once); ``None`` while no worker is connected."""
        try:
            n = sum(w.get("nthreads", 0) for w in self.client.scheduler_info()["workers"].values())
        except Exception:  # noqa: BLE001 - a scheduler that is going away has no capacity
            return None
        return n or None

    def describe(self) -> dict[str, Any]:
        info = self.client.scheduler_info()
        workers = [{"address": a, "host": w.get("host"), "nthreads": w.get("nthreads"),
                    "memory_limit": w.get("memory_limit")} for a, w in sorted(info.get("workers", {}).items())]
        return {"kind": "dask", "scheduler": self.client.scheduler.address,
                "local_cluster": self.cluster is not None, "workers": workers}

    def close(self) -> None:
        """Close the client (and the local cluster) without a word on stderr.

        A local cluster's workers first kill the cell processes they still run (a run stopped by
        Ctrl-C), so they end at once instead of being killed by their nannies seconds later; the
        workers' and this process's Dask loggers are quietened for the teardown, whose warnings
        (cancelled tasks, closed comms) would follow the driver's own last line.
        """
        import logging

        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.client.run(_quiet_worker, wait=True)
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


class _SyncCancelRaceFilter:
    """Drop the one log record of a known race in ``distributed.utils.sync`` (distributed <= 2026.8 at least).

    ``sync`` runs a coroutine on the client's loop thread and waits for it in the calling thread. A
    KeyboardInterrupt there (Ctrl-C, or the CLI's SIGTERM/SIGHUP handler) schedules a ``cancel`` callback
    that reads the coroutine's future; when the signal comes before the loop thread has created that
    future, ``cancel`` raises ``NameError`` and tornado logs it, traceback and all, on the
    ``tornado.application`` logger, after or before the driver's own last line. The interrupt itself is
    unaffected (it propagates, and the client is closed right after), so only the record is noise. The
    filter matches that record alone: an error logged from a callback whose exception is a ``NameError``
    raised in ``distributed/utils.py``'s ``cancel``. Every other record passes.
    """

    def filter(self, record: Any) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, NameError):
            return True
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code if tb is not None else None
        return not (code is not None and code.co_name == "cancel"
                    and code.co_filename.replace(os.sep, "/").endswith("distributed/utils.py"))


_SYNC_CANCEL_FILTER = _SyncCancelRaceFilter()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT in this process while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _quiet_worker() -> None:
    """On a Dask worker that is about to close: no more log lines, and no cell process left running."""
    import logging

    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    kill_children()


def dask_executor(address: str, *, n_workers: int | None = None, processes: bool = True) -> DaskRun:
    """Connect to a Dask scheduler (``"tcp://host:port"``) or start a local cluster (``"local"``).

    A local cluster has ``n_workers`` single-threaded workers (default: the usable CPUs)
    on 127.0.0.1. Raises ``ImportError`` if ``distributed`` is not installed and
    ``OSError`` if the scheduler cannot be reached.
    """
    import logging

    from distributed import Client, LocalCluster

    # for the life of the process: the race can fire until the interpreter exits (adding it twice is a no-op)
    logging.getLogger("tornado.application").addFilter(_SYNC_CANCEL_FILTER)
    cluster = None
    if address == "local":
        # The worker processes start with SIGINT ignored (they inherit it): Ctrl-C is the driver's, which stops
        # the run and closes the cluster; workers interrupted too printed tracebacks after the driver's line.
        with _sigint_ignored(), warnings.catch_warnings():
            # the scheduler's HTTP server moves to a free port when 8787 is taken (another cluster): not news
            warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
            cluster = LocalCluster(n_workers=n_workers or usable_cpus(), threads_per_worker=1, processes=processes,
                                   protocol="tcp", host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(address, timeout="10s")
    # pure=False: two cells with equal arguments are still two runs (never deduplicated)
    return DaskRun(client.get_executor(pure=False), client, cluster)


# ---------------------------------------------------------------- children
def _context():
    global _CTX
    with _CTX_LOCK:
        if _CTX is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)  # only effective before the fork server starts
            _CTX = ctx
    return _CTX


def process_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context for any pool of worker processes (cells, oracles): the fork server.

    Never plain ``fork`` from a process that may have run torch: a forked child inherits an
    OpenMP thread team without its threads, and its first parallel op waits forever (seen with
    two or more torch threads). The fork server is a fresh single-threaded process that sets one
    torch thread before it imports and warms up torch (:mod:`hpo_bench.running._worker_init`).
    """
    return _context()


def start_fork_server(preload: Iterable[str] = ()) -> None:
    """Start this process's fork server now (seconds: it imports torch), unless it runs already.

    ``preload``: more modules for the fork server to import once (see
    :func:`imported_third_party_modules`); a module that fails to import is skipped. Only
    the first call (the one that starts the server) counts.
    """
    global _STARTED
    with _CTX_LOCK:
        if _STARTED:
            return
        _STARTED = True
    _context()
    from multiprocessing import forkserver

    # read by hpo_bench.running._worker_init in the fork server, which inherits this environment; set only
    # while the server starts, so that later subprocesses (a user's, a test's) do not inherit the list
    before = os.environ.get(PRELOAD_ENV)
    os.environ[PRELOAD_ENV] = ",".join(preload)
    try:
        forkserver.ensure_running()
    finally:
        if before is None:
            os.environ.pop(PRELOAD_ENV, None)
        else:
            os.environ[PRELOAD_ENV] = before


#: Top-level packages never imported into the fork server: they start threads or event loops, or
#: only make sense in the driver.
_NEVER_PRELOAD = {"distributed", "dask", "tornado", "zmq", "IPython", "ipykernel", "jupyter_client", "pytest",
                  "_pytest", "pluggy"}


def imported_third_party_modules() -> list[str]:
    """Installed packages (and their public subpackages, two levels) this process has imported.

    The driver imports what the suite's tasks and tuners import lazily (it builds every task
    once to validate the suite: ``sklearn.datasets`` for the diabetes data, for instance).
    Preloading them in the fork server saves every cell process those imports (seconds).
    """
    import sysconfig

    roots = tuple({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    names = set()
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        parts = name.split(".")[:2]
        if (path and path.startswith(roots) and parts[0] not in _NEVER_PRELOAD
                and not any(p.startswith("_") for p in parts)):
            names.add(".".join(parts))
    return sorted(names)


@contextlib.contextmanager
def _allow_children() -> Iterator[None]:
    """Let a daemonic process (a Dask worker, by default) start a child.

    ``multiprocessing`` forbids daemonic processes to have children because it could not
    reap them when the daemon is terminated. Ours are reaped by :func:`run_in_child`
    (kill + join) and die with the fork server, hence with this process; so the flag is
    lifted for the start only.
    """
    cfg = multiprocessing.current_process()._config  # noqa: SLF001 - see the docstring
    if not cfg.get("daemon"):
        yield
        return
    with _DAEMON_LOCK:
        cfg["daemon"] = False
        try:
            yield
        finally:
            cfg["daemon"] = True


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent (the fork server) exits."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_entry(conn, target: Callable[..., None], args: tuple) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    try:
        target(conn.send, *args)
    finally:
        conn.close()


@dataclass
class ChildExit:
    """How a child ended: ``exitcode`` (negative: killed by that signal), whether it was
    killed at its timeout, its lifetime in seconds, its pid, (when killed) its peak RSS, and
    ``oom_kills``: how many OOM kills the kernel counted while it ran (``None``: unknown)."""

    exitcode: int | None
    timed_out: bool
    seconds: float
    pid: int | None = None
    peak_rss_mb: float | None = None
    oom_kills: int | None = None

    @property
    def signal_name(self) -> str | None:
        if self.exitcode is None or self.exitcode >= 0:
            return None
        try:
            return signal.Signals(-self.exitcode).name
        except ValueError:
            return f"signal {-self.exitcode}"


def run_in_child(target: Callable[..., None], args: tuple = (), *, timeout: float | None = None,
                 on_message: Callable[[Any], None] | None = None) -> ChildExit:
    """Run ``target(send, *args)`` in a fresh child process and wait for it.

    Every object the child passes to ``send`` (picklable) reaches ``on_message`` in this
    process, in order, while the child runs. After ``timeout`` seconds the child is
    killed (SIGKILL: the overshoot is the time to notice, milliseconds) and whatever it
    had sent is still delivered. Never raises for the child's failures: read the result.
    """
    start_fork_server()
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_entry, args=(send, target, args), daemon=True, name="hpo-bench-cell")
    ooms_before = oom_kill_count()
    with _allow_children():
        proc.start()  # the first start also starts the fork server: not the child's time
    t0 = time.monotonic()
    send.close()
    _LIVE.add(proc)
    deliver = on_message or (lambda _msg: None)
    timed_out = False
    peak = None
    is_open = True

    def drain() -> None:
        nonlocal is_open
        while is_open and recv.poll(0):
            try:
                deliver(recv.recv())
            except (EOFError, OSError):
                is_open = False

    try:
        deadline = None if timeout is None else t0 + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                peak = _vm_hwm_mb(proc.pid)
                proc.kill()
                timed_out = True
                break
            ready = _mp_wait([recv, proc.sentinel] if is_open else [proc.sentinel], timeout=remaining)
            if is_open and recv in ready:
                try:
                    deliver(recv.recv())
                except (EOFError, OSError):
                    is_open = False
            elif proc.sentinel in ready:
                break
        proc.join()
        drain()  # rows sent just before the end (or the kill) are still in the pipe
    finally:
        if proc.exitcode is None:
            proc.kill()
            proc.join()
        _LIVE.discard(proc)
        recv.close()
    ooms_after = oom_kill_count()
    ooms = None if ooms_before is None or ooms_after is None else ooms_after - ooms_before
    return ChildExit(exitcode=proc.exitcode, timed_out=timed_out, seconds=time.monotonic() - t0, pid=proc.pid,
                     peak_rss_mb=peak, oom_kills=ooms)


def kill_children() -> None:
    """Kill every child started by :func:`run_in_child` that is still running."""
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.kill()
