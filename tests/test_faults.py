"""Injected faults: every one is survived (no hang, no crash loop, no lost cell, a truthful status and exit code).

Forked cells with several torch threads, damaged cell files, a lost or truncated run.json, a driver killed while
it starts, a deleted lock file, leftover temporary files, a user's kill -9 of a cell, torch's allocation failure,
SIGHUP, and an executor that loses its jobs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import CancelledError, Future

import pandas as pd
import pyarrow.parquet as pq
import pytest
from _runs import TINY, assert_same_records, invoke, one_error_line, write_suite

from hpo_bench import TUNERS
from hpo_bench.running import cell_process, harness, provenance, run_folder
from hpo_bench.running.executors import ProcessPool, SerialExecutor
from hpo_bench.running.harness import run_suite
from hpo_bench.running.suite import load_suite

psutil = pytest.importorskip("psutil", reason="comes with the `dist` extra")

ONE_RANDOM = '''
name = "one"
seeds = [0, 1]
[budget]
steps = 5
[[task]]
name = "ridge"
params = { n = 40, p = 4 }
[[tuner]]
name = "random"
'''

# a cell that runs until its timeout (or until it is killed)
ENDLESS = '''
name = "endless"
seeds = [0]
[budget]
steps = 1000000
[[task]]
name = "seed_toy"
label = "toy"
params = { transform = "log" }
[[tuner]]
name = "gradient"
label = "slow"
params = { method = "cg", inner = "gd", inner_steps = 500 }
timeout = 60
'''


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "hpo_bench.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, **kw)


@pytest.fixture(scope="module", autouse=True)
def _frozen_code_version():
    """The source fingerprint as at the start of this module, for every in-process run of it.

    A resume compares it with the run's: an edit to the tree while these tests run (another
    checkout's work) must not turn every kept cell into a changed-code refusal.
    """
    frozen = provenance.code_version()
    with pytest.MonkeyPatch.context() as mp:
        for module in (provenance, harness, run_folder, cell_process):  # every module that looks the name up
            mp.setattr(module, "code_version", lambda: json.loads(json.dumps(frozen)))
        yield


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    path = write_suite(root / "tiny.toml", TINY)
    return path, run_suite(load_suite(str(path)), root / "ref", argv=["test"], threads=1)


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------ threads and fork
@pytest.mark.parametrize("workers", ["1", "2"])
def test_forked_cells_with_two_torch_threads_do_not_hang(workers, tmp_path):
    """Issue 11.1: with OMP_NUM_THREADS unset, a 2-thread cell forked from the fork server hung until its timeout."""
    path = write_suite(tmp_path / "one.toml", ONE_RANDOM)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = _cli("run", path, "--out", tmp_path / "run", "--workers", workers, "--threads", "2", "--timeout", "30",
                "-q", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(tmp_path / "run" / "records.parquet")
    assert (df["status"] == "ok").all() and len(df) == 2 * 5
    assert (df["torch_threads"] == 2).all()
    assert (df.groupby("cell_id")["wall_s"].first() < 25).all()  # not stopped by the 30 s timeout


def test_thread_default_and_why_are_recorded(tmp_path, monkeypatch, capsys):
    path = write_suite(tmp_path / "one.toml", ONE_RANDOM)
    assert invoke(monkeypatch, capsys, "run", path, "--out", tmp_path / "run", "-q")[0] == 0
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["torch_threads"] == harness.DEFAULT_THREADS == 1
    assert "one torch thread" in prov["torch_threads_choice"]
    assert "torch threads per cell 1 (default: small cells run fastest" in (tmp_path / "run" / "run.log").read_text()
    assert invoke(monkeypatch, capsys, "run", path, "--out", tmp_path / "run2", "-q", "--threads", "2")[0] == 0
    assert "torch threads per cell 2 (set by --threads)" in (tmp_path / "run2" / "run.log").read_text()


# ------------------------------------------------------------------ damaged cell files
def _damage_pages(path):
    """Overwrite the first data page header; the footer (schema, metadata) stays intact."""
    data = bytearray(path.read_bytes())
    data[4:68] = b"\xff" * 64
    path.write_bytes(bytes(data))
    pq.read_schema(path)  # still opens: only a full read finds the damage
    with pytest.raises(Exception):
        pq.read_table(path)


def test_a_damaged_cell_file_is_set_aside_and_its_cell_rerun(tiny_run, monkeypatch, capsys, tmp_path):
    path, ref = tiny_run
    out = _copy_run(ref.out_dir, tmp_path / "run")
    victim = out / "cells" / "ridge__cg__seed1.parquet"
    _damage_pages(victim)
    (out / "records.parquet").unlink()
    # report on the damaged folder: one line, not a crash
    code, _, err = invoke(monkeypatch, capsys, "report", out)
    assert code == 2 and "ridge__cg__seed1.parquet' is damaged" in one_error_line(err) and "--resume" in err
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "-q", "--threads", "1")
    assert code == 0, err
    log = (out / "run.log").read_text()
    assert "set aside ridge__cg__seed1.parquet -> cells/stale/ (damaged (" in log and "7 already finished" in log
    assert len(list((out / "cells" / "stale").iterdir())) == 1
    assert_same_records(ref.frame, pd.read_parquet(out / "records.parquet"))


# ------------------------------------------------------------------ run.json lost, truncated; killed at start-up
@pytest.mark.parametrize("damage", ["lost", "truncated", "not a table"])
def test_a_lost_or_damaged_run_json_is_rebuilt_by_resume(damage, tiny_run, monkeypatch, capsys, tmp_path):
    path, ref = tiny_run
    out = _copy_run(ref.out_dir, tmp_path / "run")
    manifest = out / "run.json"
    if damage == "lost":
        manifest.unlink()
    elif damage == "truncated":
        manifest.write_text(manifest.read_text()[:40])
    else:
        manifest.write_text("[1, 2]")
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "-q")
    assert code == 2 and "holds an hpo-bench run but run.json is" in one_error_line(err) and "--resume" in err
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "-q", "--threads", "1")
    assert code == 0, err
    log = (out / "run.log").read_text()
    assert "rebuilt run.json from the suite" in log and "8 already finished" in log
    assert json.loads(manifest.read_text())["sessions"][-1]["rebuilt"]
    assert_same_records(ref.frame, pd.read_parquet(out / "records.parquet"))


def test_without_run_json_cells_of_other_code_run_again(tiny_run, monkeypatch, capsys, tmp_path):
    path, ref = tiny_run
    out = _copy_run(ref.out_dir, tmp_path / "run")
    (out / "run.json").unlink()
    cell = out / "cells" / "toy__exact__seed0.parquet"
    table = pq.read_table(cell)
    meta = json.loads(table.schema.metadata[b"hpo_bench"])
    meta["code"] = "0" * 64
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"hpo_bench": json.dumps(meta).encode()}),
                   cell)
    assert invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "-q", "--threads", "1")[0] == 0
    log = (out / "run.log").read_text()
    assert "set aside toy__exact__seed0.parquet" in log and "written by other hpo-bench source" in log
    assert "7 already finished" in log


def test_a_driver_killed_while_it_starts_leaves_a_resumable_folder(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "tiny.toml", TINY)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hpo_bench.cli", "run", str(path), "--out", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lock").exists():  # the earliest moment: the folder exists, nothing else yet
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    # and the state of a kill between the lock and run.json's rename: a temporary file besides the lock
    (out / ".run.json.tmp-4242").write_text('{"format": 1, "su')
    # --force: an edit to the tree between the two processes (a shared checkout) must not make this test flaky
    proc = _cli("run", path, "--out", out, "--resume", "--force", "-q", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_parquet(out / "records.parquet")) == 8 * 3
    assert not list(out.glob(".*.tmp-*"))


def test_leftover_temporary_files_are_cleaned(tiny_run, monkeypatch, capsys, tmp_path):
    path, ref = tiny_run
    out = _copy_run(ref.out_dir, tmp_path / "run")
    for name in (".records.parquet.tmp-1-2", ".provenance.json.tmp-3", ".run.json.tmp-4"):
        (out / name).write_bytes(b"half a file")
    assert invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "-q")[0] == 0
    assert not list(out.glob(".*.tmp-*"))


# ------------------------------------------------------------------ the lock
def test_deleting_the_lock_file_does_not_let_a_second_driver_in(tiny_run, monkeypatch, capsys, tmp_path):
    path, ref = tiny_run
    out = _copy_run(ref.out_dir, tmp_path / "run")
    held = run_folder.lock_folder(out)  # as a running driver holds it
    try:
        (out / ".lock").unlink()
        code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume")
        assert code == 2 and "is being written by another hpo-bench run" in one_error_line(err)
    finally:
        held.close()
    assert invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "-q")[0] == 0  # released with it


# ------------------------------------------------------------------ how a cell died
def test_a_users_kill_9_of_a_cell_is_not_oom(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "endless.toml", ENDLESS)))
    me = psutil.Process()
    killed = []

    def kill_the_cell():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            try:  # a process may end between the listing and the questions (an oracle pool's worker, say)
                cells = [p for p in me.children(recursive=True) if p.ppid() != me.pid]  # children of the fork server
                if cells and time.time() - cells[0].create_time() > 0.5:
                    cells[0].kill()
                    killed.append(cells[0].pid)
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_cell, daemon=True)
    killer.start()
    with ProcessPool(1) as pool:
        res = run_suite(suite, tmp_path / "run", executor=pool, argv=["test"], threads=1)
    killer.join()
    assert killed
    last = res.frame.iloc[-1]
    assert last["status"] == "error" and "killed by SIGKILL from outside hpo-bench" in last["message"]
    assert res.failed == {"toy__slow__seed0": "error"}


class _AllocFails(TUNERS.get("gradient")):
    """Records one step, then asks torch for more memory than any machine has."""

    name = "test_alloc_fails"

    def run(self, task, recorder, *, seed=0):
        import torch

        theta = task.space.init_theta()
        recorder.record(w=task.solve(theta), theta=theta)
        torch.empty(2**50, dtype=torch.float64)  # DefaultCPUAllocator: can't allocate memory


def test_torchs_cannot_allocate_memory_is_oom(monkeypatch, tmp_path):
    monkeypatch.setitem(TUNERS._items, "test_alloc_fails", _AllocFails)
    path = write_suite(tmp_path / "s.toml", 'seeds = [0]\n[budget]\nsteps = 3\n[[task]]\nname = "seed_toy"\n'
                                             '[[tuner]]\nname = "test_alloc_fails"\n')
    res = run_suite(load_suite(str(path)), tmp_path / "run", argv=["test"])
    assert list(res.frame["status"]) == ["ok", "oom"]
    assert "can't allocate memory" in res.frame["message"].iloc[-1]


# ------------------------------------------------------------------ signals
def test_sighup_leaves_a_session_stopped_line(tmp_path):
    path = write_suite(tmp_path / "endless.toml", ENDLESS)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hpo_bench.cli", "run", str(path), "--out", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while "start toy__slow__seed0" not in ((out / "run.log").read_text() if (out / "run.log").exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "session stopped (KeyboardInterrupt)" in (out / "run.log").read_text()
    assert "stopped by SIGHUP" in err and "Traceback" not in err


# ------------------------------------------------------------------ the executor loses jobs
class _SchedulerGoneAfterTwo(SerialExecutor):
    """Runs two jobs, then every job is cancelled, as when the Dask scheduler is killed mid-run."""

    def __init__(self, max_workers=1):
        super().__init__()
        self.n = 0

    def submit(self, fn, /, *args, **kwargs):
        self.n += 1
        if self.n <= 2:
            return super().submit(fn, *args, **kwargs)
        if self.n % 2:
            raise RuntimeError("Client is closed")  # refused at submission
        fut = Future()
        fut.set_exception(CancelledError())
        return fut


def test_an_executor_failure_exits_3_and_says_retry_failed_recovers(tiny_run, monkeypatch, capsys, tmp_path):
    path, ref = tiny_run
    out = tmp_path / "run"
    import hpo_bench.running.executors as executors

    monkeypatch.setattr(executors, "ProcessPool", _SchedulerGoneAfterTwo)
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "--workers", "1", "-q")
    line = one_error_line(err)
    assert code == 3 and "6 of 8 cells did not finish (6 error)" in line
    assert "6 of them lost to an executor failure" in line and "--resume --retry-failed" in line
    df = pd.read_parquet(out / "records.parquet")
    assert df.groupby("cell_id")["message"].last().dropna().str.startswith("executor failure: ").sum() == 6
    monkeypatch.undo()
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "--retry-failed", "-q",
                          "--threads", "1")
    assert code == 0, err
    assert_same_records(ref.frame, pd.read_parquet(out / "records.parquet"))


def _signal_state(pid: int) -> str:
    """The signal masks of a process (/proc/PID/status), for a failure message."""
    try:
        lines = open(f"/proc/{pid}/status").read().splitlines()
    except OSError as exc:
        return f"unreadable ({exc})"
    return ", ".join(x.replace("\t", " ") for x in lines if x.startswith(("Sig", "Threads", "State")))


def test_ctrl_c_under_dask_local_is_one_clean_line(tmp_path):
    """The terminal's Ctrl-C reaches the whole process group: the Dask workers used to print two tracebacks."""
    pytest.importorskip("distributed", reason="the Dask executor needs the `dist` extra")
    path = write_suite(tmp_path / "endless.toml", ENDLESS)
    out = tmp_path / "run"
    # The driver stands for a foreground run in a terminal. A test process started as a background job of a
    # shell without job control (`cmd &` in a script) has SIGINT and SIGQUIT ignored (POSIX), and a child
    # inherits an ignored signal across exec: the driver would rightly ignore the Ctrl-C. So the child
    # starts from Python's own SIGINT handler, which exec resets to the default.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "hpo_bench.cli", "run", str(path), "--out", str(out), "--dask",
                                 "local", "--workers", "1", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, before)
    try:
        deadline = time.monotonic() + 180
        log = out / "run.log"
        while "start toy__slow__seed0" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)  # the cells run on the workers now
        state = _signal_state(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    why = (f"{err}\ndriver before the SIGINT: {state}\ntest process: SIGINT handler {signal.getsignal(signal.SIGINT)}, "
           f"blocked {sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))}\nrun.log:\n{log.read_text()[-2000:]}")
    assert proc.returncode == 128 + signal.SIGINT, why
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpo-bench: stopped by SIGINT"), err


TUNE_WITH_A_FAILING_TUNER = '''
name = "tunefail"
seeds = [0]
[budget]
steps = 3
[tune]
seeds = [100]
[[task]]
name = "seed_toy"
label = "toy"
params = { transform = "log" }
[[tuner]]
name = "gradient"
label = "gd"
params = { method = "exact", inner = "exact" }
tune = { outer_lr = [0.01, 0.5] }
[[tuner]]
name = "test_alloc_fails"
label = "fails"
'''


@pytest.mark.parametrize("allow", [False, True])
def test_tune_exits_3_when_a_clean_cell_fails(allow, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(TUNERS._items, "test_alloc_fails", _AllocFails)
    path = write_suite(tmp_path / "t.toml", TUNE_WITH_A_FAILING_TUNER)
    code, _, err = invoke(monkeypatch, capsys, "tune", path, "--out", tmp_path / "run", "-q",
                          *(["--allow-failures"] if allow else []))
    if allow:
        assert code == 0 and "Traceback" not in err
    else:
        assert code == 3 and "1 of 2 cells did not finish (1 oom)" in one_error_line(err)
    assert (tmp_path / "run" / "tune" / "choices.json").is_file()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killing_the_dask_scheduler_mid_run_exits_3_and_retry_failed_recovers(tiny_run, tmp_path):
    """Issue 11.7, end to end: the scheduler dies after two cells; the run says so (exit 3) and a resume recovers."""
    pytest.importorskip("distributed", reason="the Dask executor needs the `dist` extra")
    path, ref = tiny_run
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--no-dashboard"], **quiet)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--no-dashboard"], **quiet)
    out = tmp_path / "run"
    try:
        run = subprocess.Popen([sys.executable, "-m", "hpo_bench.cli", "run", str(path), "--out", str(out), "--dask",
                                address, "--threads", "1", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        deadline = time.monotonic() + 180
        while len(list((out / "cells").glob("*.parquet"))) < 2:
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.02)
        sched.kill()
        _, err = run.communicate(timeout=180)
    finally:
        for p in (sched, worker):
            p.kill()
            p.wait()
    assert run.returncode == 3, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("hpo-bench: error: ") and "lost to an executor failure" in line
    assert "--resume --retry-failed" in line and "Traceback" not in err
    kept = len(list((out / "cells").glob("*.parquet")))
    assert kept == 8  # every cell is recorded, the lost ones as executor failures
    proc = _cli("run", path, "--out", out, "--resume", "--retry-failed", "--force", "--threads", "1", "-q",
                timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_same_records(ref.frame, pd.read_parquet(out / "records.parquet"))
