"""Resume: a run killed with SIGKILL and resumed gives the records of an uninterrupted run; finished cells are
never lost or silently mixed with a changed suite or code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from _runs import TINY, assert_same_records, invoke, one_error_line, write_suite

from hpo_bench.running.executors import ProcessPool
from hpo_bench.running.harness import run_suite
from hpo_bench.running.suite import load_suite

psutil = pytest.importorskip("psutil", reason="comes with the `dist` extra")

# 12 cells of about 0.1-0.3 s each: long enough to kill the run half-way
KILLABLE = '''
name = "killable"
seeds = [0, 1, 2]
[budget]
steps = 8
[[task]]
name = "ridge"
label = "ridge"
params = { n = 200, p = 20 }
[[task]]
name = "seed_toy"
label = "toy"
params = { transform = "log" }
[[tuner]]
name = "gradient"
label = "reverse"
params = { method = "reverse", inner = "gd", inner_steps = 100 }
[[tuner]]
name = "gradient"
label = "cg"
params = { method = "cg", inner = "gd", inner_steps = 100 }
'''


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")}


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_records(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "killable.toml", KILLABLE)
    out = tmp_path / "run"
    cells = out / "cells"
    proc = subprocess.Popen([sys.executable, "-m", "hpo_bench.cli", "run", str(path), "--out", str(out),
                             "--workers", "2", "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while len(list(cells.glob("*.parquet"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no cell finished in time"
            time.sleep(0.02)
        family = psutil.Process(proc.pid).children(recursive=True)  # fork server, cell processes
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = _mtimes(cells)
    assert 3 <= len(finished) < 12 and not (out / "records.parquet").exists()
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, f"processes outlived the killed driver: {alive}"  # no cell keeps running

    code, stdout, _ = invoke(monkeypatch, capsys, "run", path, "--out", out, "--workers", "2", "--threads", "1",
                             "--resume")
    assert code == 0 and f"{len(finished)} already finished" in stdout, (stdout, _)
    after = _mtimes(cells)
    assert len(after) == 12 and {k: after[k] for k in finished} == finished  # finished cells untouched
    assert not list(cells.glob(".*"))  # no temporary file survives

    with ProcessPool(2) as pool:
        ref = run_suite(load_suite(str(path)), tmp_path / "uninterrupted", executor=pool, argv=["test"], threads=1)
    resumed = pd.read_parquet(out / "records.parquet")
    assert_same_records(ref.frame, resumed)
    manifest = json.loads((out / "run.json").read_text())
    assert len(manifest["sessions"]) == 2 and manifest["sessions"][1]["resumed"]
    assert (out / "run.log").read_text().count("session start") == 2


def test_a_finished_run_is_kept_and_rerun_only_with_resume(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "tiny.toml")
    out = tmp_path / "run"
    assert invoke(monkeypatch, capsys, "run", path, "--out", out, "-q")[0] == 0
    before = _mtimes(out / "cells")
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out)
    assert code == 2 and "already holds a run of suite 'tiny' (8 cells finished); pass --resume" in one_error_line(err)
    (out / "cells" / ".ridge__cg__seed0.parquet.tmp-1-2").write_bytes(b"half a file")  # an interrupted write
    code, stdout, _ = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume")
    assert code == 0 and "8 already finished" in stdout and "8 cells kept from before" in " ".join(stdout.split())
    assert _mtimes(out / "cells") == before and not list((out / "cells").glob(".*"))
    assert "0 cells run, 8 kept" in (out / "run.log").read_text()


def test_changed_suite_is_refused_then_forced_rerunning_only_changed_cells(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "tiny.toml")
    out = tmp_path / "run"
    assert invoke(monkeypatch, capsys, "run", path, "--out", out, "-q")[0] == 0
    before = _mtimes(out / "cells")
    path.write_text(TINY.replace('params = { method = "cg", inner = "gd", inner_steps = 20 }',
                                 'params = { method = "cg", inner = "gd", inner_steps = 20 }\nbudget = { steps = 4 }'))
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume")
    line = one_error_line(err)
    assert code == 2 and "cannot resume" in line and "the suite file changed" in line and "--force" in line
    assert _mtimes(out / "cells") == before  # refusing touched nothing

    code, _, _ = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "--force", "-q")
    assert code == 0
    after = _mtimes(out / "cells")
    changed = {k for k in before if "__cg__" in k}
    assert {k: after[k] for k in before if k not in changed} == {k: v for k, v in before.items() if k not in changed}
    assert all(after[k] != before[k] for k in changed)
    assert sorted(p.name.split(".")[0] for p in (out / "cells" / "stale").iterdir()) == sorted(
        k.split(".")[0] for k in changed)  # the old results are set aside, not deleted
    df = pd.read_parquet(out / "records.parquet")
    assert df.groupby("tuner_label")["step"].max().to_dict() == {"cg": 3, "exact": 2}
    assert "resumed with --force although the suite file changed" in (out / "run.log").read_text()


def test_changed_code_is_refused_without_force(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "tiny.toml")
    out = tmp_path / "run"
    assert invoke(monkeypatch, capsys, "run", path, "--out", out, "-q")[0] == 0
    manifest = json.loads((out / "run.json").read_text())
    manifest["code"]["source_sha256"] = "0" * 64  # as if the run had started on other code
    (out / "run.json").write_text(json.dumps(manifest))
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume")
    assert code == 2 and "hpo-bench source changed (000000000000 -> " in one_error_line(err)
    code, stdout, _ = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "--force")
    assert code == 0 and "8 already finished" in stdout  # same cell configurations: kept
    assert json.loads((out / "run.json").read_text())["sessions"][-1]["forced_changes"]


def test_retry_failed_reruns_timed_out_cells(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "tiny.toml")
    out = tmp_path / "run"
    code, stdout, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "--timeout", "0.001", "-q")
    assert code == 3 and "8 cells not ok" in stdout  # failed cells: exit 3, one line that says how to recover
    assert "8 of 8 cells did not finish (8 timeout)" in one_error_line(err) and "--resume --retry-failed" in err
    # every cell ends timed out (a cell may record a row or two first: the in-process alarm re-fires every
    # 50 ms when its first exception is swallowed, e.g. raised inside a gc callback)
    first = pd.read_parquet(out / "records.parquet")
    assert set(first.groupby("cell_id")["status"].last()) == {"timeout"}
    code, stdout, _ = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "-q", "--allow-failures")
    assert code == 0 and "8 cells not ok" in stdout  # a timeout is a finished result, kept by --resume
    code, stdout, _ = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume", "--retry-failed", "-q")
    assert code == 0 and "not ok" not in stdout
    assert set(pd.read_parquet(out / "records.parquet")["status"]) == {"ok"}
    assert len(list((out / "cells" / "stale").iterdir())) == 8


def test_a_folder_that_is_not_a_run_is_refused(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "tiny.toml")
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for extra in ((), ("--resume",)):
        code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, *extra)
        assert code == 2 and "is not empty and holds no hpo-bench run" in one_error_line(err)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_two_drivers_never_write_one_folder(monkeypatch, capsys, tmp_path):
    import fcntl

    path = write_suite(tmp_path / "tiny.toml")
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # as if another driver were running in this folder
        held.write("pid 4242 on elsewhere")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "--resume")
        assert code == 2 and "is being written by another hpo-bench run (pid 4242 on elsewhere)" in one_error_line(err)
    assert invoke(monkeypatch, capsys, "run", path, "--out", out, "-q")[0] == 0  # released: the folder is usable
