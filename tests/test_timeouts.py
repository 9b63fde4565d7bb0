"""Hard per-cell timeouts and statuses (ok, diverged, timeout, error, oom): the suite always continues."""

from __future__ import annotations

import math
import os
import signal

import pytest
from _runs import invoke, one_error_line, write_suite

from hpo_bench import TUNERS
from hpo_bench.running.executors import ChildExit, ProcessPool, run_in_child
from hpo_bench.running.harness import child_death, run_suite
from hpo_bench.core.records import Budget
from hpo_bench.running.suite import Cell, Entry, Suite, load_suite

# `slow` never ends by itself (a million steps of 500 inner steps each): only its 1.5 s timeout stops it.
SLOW = '''
name = "slow"
seeds = [0]
[budget]
steps = 3
[[task]]
name = "seed_toy"
label = "toy"
params = { transform = "log" }
[[tuner]]
name = "gradient"
label = "fast"
params = { method = "exact", inner = "exact" }
[[tuner]]
name = "gradient"
label = "slow"
params = { method = "cg", inner = "gd", inner_steps = 500 }
budget = { steps = 1000000 }
timeout = 1.5
'''


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_pool_kills_a_cell_at_its_timeout_keeps_its_rows_and_continues(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "slow.toml", SLOW)))
    with ProcessPool(2) as pool:
        res = run_suite(suite, tmp_path / "run", executor=pool, argv=["test"])
    assert res.statuses == {"toy__fast__seed0": "ok", "toy__slow__seed0": "timeout"}
    slow = res.frame[res.frame["cell_id"] == "toy__slow__seed0"]
    assert list(slow["status"])[-1] == "timeout" and set(list(slow["status"])[:-1]) <= {"ok"}
    assert "hard timeout of 1.5 s" in slow["message"].iloc[-1] and "killed" in slow["message"].iloc[-1]
    assert list(slow["step"]) == list(range(len(slow)))  # rows streamed before the kill are kept, in order
    # stopped: its process is gone, and it did not run anywhere near its million steps
    pid = int(slow["worker"].iloc[-1].rsplit(":", 1)[1])
    assert _gone(pid)
    assert slow["wall_s"].iloc[-1] < 60 and len(slow) < 1_000_000
    assert math.isfinite(slow["peak_rss_mb"].iloc[-1])
    fast = res.frame[res.frame["cell_id"] == "toy__fast__seed0"]
    assert list(fast["status"]) == ["ok"] * 3


def test_serial_executor_stops_a_cell_in_process(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "slow.toml", SLOW)))
    res = run_suite(suite, tmp_path / "run", argv=["test"])
    assert res.statuses["toy__slow__seed0"] == "timeout" and res.statuses["toy__fast__seed0"] == "ok"
    last = res.frame[res.frame["cell_id"] == "toy__slow__seed0"].iloc[-1]
    assert "hard timeout of 1.5 s" in last["message"] and last["wall_s"] < 60


def test_diverged_error_and_oom_cells_are_recorded_and_the_suite_continues(tmp_path):
    # built by hand: load_suite would reject the bad and the huge task up front
    suite = Suite(name="statuses", path="-", description="", seeds=[0], budget=Budget(steps=5), tasks=[
        Entry("seed_toy", "negative", {"lam0": -50.0}),  # raw λ < 0: the inner problem is not convex
        Entry("ridge", "bad", {"p": -3}),
        Entry("ridge", "huge", {"n": 10**12}),  # numpy refuses to allocate hundreds of TiB: MemoryError
        Entry("seed_toy", "fine", {"transform": "log"}),
    ], tuners=[
        Entry("gradient", "blowup", {"method": "identity", "inner": "gd", "inner_steps": 50, "inner_lr": 0.5,
                                     "outer": "sgd", "outer_lr": 10.0}, only_tasks=("negative", "bad", "huge")),
        Entry("gradient", "exact", {"method": "exact", "inner": "exact"}, only_tasks=("fine",)),
    ])
    with ProcessPool(2) as pool:
        res = run_suite(suite, tmp_path / "run", executor=pool, argv=["test"])
    assert res.statuses == {"negative__blowup__seed0": "diverged", "bad__blowup__seed0": "error",
                            "huge__blowup__seed0": "oom", "fine__exact__seed0": "ok"}
    df = res.frame.set_index("cell_id")
    diverged = res.frame[res.frame["cell_id"] == "negative__blowup__seed0"]
    assert len(diverged) < 5  # detected at the step it happened, not at the end of the budget
    error = df.loc["bad__blowup__seed0"]
    assert error["message"].startswith("TaskParamError: task 'ridge': parameter `p`")
    assert "Traceback (most recent call last)" in error["message"]
    assert df.loc["huge__blowup__seed0", "message"].startswith("MemoryError")
    assert len(list((tmp_path / "run" / "cells").glob("*.parquet"))) == 4


class _ExplodesAfterTwo(TUNERS.get("gradient")):
    """Records two steps, then raises."""

    name = "test_explodes_after_two_run"

    def run(self, task, recorder, *, seed=0):
        theta = task.space.init_theta()
        for _ in range(2):
            recorder.record(w=task.solve(theta), theta=theta)
        raise RuntimeError("boom in the middle")


def test_error_traceback_goes_to_records_and_log_not_to_the_display(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(TUNERS._items, "test_explodes_after_two_run", _ExplodesAfterTwo)
    path = write_suite(tmp_path / "s.toml", '''
seeds = [0]
[budget]
steps = 4
[[task]]
name = "seed_toy"
[[tuner]]
name = "test_explodes_after_two_run"
label = "boom"
[[tuner]]
name = "gradient"
label = "fine"
params = { method = "exact", inner = "exact" }
''')
    out = tmp_path / "run"
    code, stdout, stderr = invoke(monkeypatch, capsys, "run", path, "--out", out)  # serial: in this process
    assert code == 3  # a cell failed: the suite went on, then the run says so in its exit status
    assert "1 of 2 cells did not finish (1 error)" in one_error_line(stderr)
    assert "Traceback" not in stdout + stderr
    assert "seed_toy__boom__seed0: error" in stdout and "boom in the middle" in stdout  # one line, no traceback
    assert "1 cells not ok" in stdout and "seed_toy__boom__seed0=error" in stdout
    import pandas as pd

    df = pd.read_parquet(out / "records.parquet")
    boom = df[df["cell_id"] == "seed_toy__boom__seed0"]
    assert list(boom["status"]) == ["ok", "ok", "error"]
    assert "Traceback" in boom["message"].iloc[-1] and "boom in the middle" in boom["message"].iloc[-1]
    log = (out / "run.log").read_text()
    assert "Traceback" in log and "RuntimeError: boom in the middle" in log
    assert set(df[df["cell_id"] == "seed_toy__fine__seed0"]["status"]) == {"ok"}


def _send_then_die(send, sig):
    send(("row", 1))
    os.kill(os.getpid(), sig)


def _send_then_raise(send):
    send(("row", 1))
    raise SystemExit(3)


def test_run_in_child_delivers_messages_and_reports_how_the_child_ended():
    got = []
    ex = run_in_child(_send_then_die, (signal.SIGKILL,), timeout=60, on_message=got.append)
    assert got == [("row", 1)] and ex.exitcode == -signal.SIGKILL and not ex.timed_out
    # a SIGKILL hpo-bench did not send, while the kernel counted no OOM kill: a user's kill -9, not oom
    if ex.oom_kills == 0:
        status, message = child_death(ex, 60)
        assert status == "error" and "SIGKILL from outside hpo-bench" in message and "not out of memory" in message
    ex = run_in_child(_send_then_die, (signal.SIGSEGV,), timeout=60)
    status, message = child_death(ex, 60)
    assert status == "error" and "SIGSEGV" in message
    got.clear()
    ex = run_in_child(_send_then_raise, timeout=60, on_message=got.append)
    assert got == [("row", 1)] and ex.exitcode == 3
    assert child_death(ex, 60) == ("error", "the cell's process died (exit code 3) before it finished")


def test_child_death_statuses():
    assert child_death(ChildExit(exitcode=-9, timed_out=True, seconds=2.01), 2)[0] == "timeout"
    # SIGKILL not sent by hpo-bench: oom only if the kernel's OOM killer struck meanwhile (it used to be oom always:
    # a user's kill -9 was recorded as out of memory)
    assert child_death(ChildExit(exitcode=-9, timed_out=False, seconds=1.0, oom_kills=1), 2)[0] == "oom"
    assert child_death(ChildExit(exitcode=-9, timed_out=False, seconds=1.0, oom_kills=0), 2)[0] == "error"
    assert child_death(ChildExit(exitcode=-9, timed_out=False, seconds=1.0, oom_kills=None), 2)[0] == "error"
    assert child_death(ChildExit(exitcode=1, timed_out=False, seconds=1.0), 2)[0] == "error"


@pytest.mark.parametrize("status", ["ok", "diverged", "timeout", "error", "oom"])
def test_every_status_is_documented(status):
    from hpo_bench.core import records

    assert status in records.STATUSES and f"``{status}``" in records.__doc__


class _Noisy(TUNERS.get("gradient")):
    """Prints and warns, as third-party code does."""

    name = "test_noisy"

    def run(self, task, recorder, *, seed=0):
        import warnings

        print("hello from the tuner")
        warnings.warn("a warning from the tuner", UserWarning, stacklevel=1)
        super().run(task, recorder, seed=seed)


def _noisy_cell(send, cell, threads):
    from hpo_bench.running import cell_process

    TUNERS.add("test_noisy", _Noisy)  # in the child only: the parent's registry stays clean
    cell_process._cell_child(send, cell, threads)


def test_a_cells_output_goes_to_the_log_not_the_display(capfd):
    cell = Cell("t", Entry("seed_toy", "toy", {"transform": "log"}), Entry("test_noisy", "noisy", {}), 0,
                Budget(steps=2))
    got = []
    ex = run_in_child(_noisy_cell, (cell, 1), timeout=60, on_message=got.append)
    assert ex.exitcode == 0
    kinds = [k for k, _ in got]
    assert kinds == ["row", "row", "patch", "end"]  # the patch: the last row's stop_reason
    assert got[2][1] == (1, {"stop_reason": "budget_steps"})
    output = got[-1][1]["output"]
    assert "hello from the tuner" in output and "a warning from the tuner" in output
    seen = capfd.readouterr()
    assert "from the tuner" not in seen.out + seen.err
