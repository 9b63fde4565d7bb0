"""CLI input that is an I/O problem (folders, damaged or foreign files, devices): one line, exit 2 or 1.

One table, every case: each row builds its input in a fresh folder, runs the console entry point and
expects exactly one ``hpo-bench: error: ...`` line on stderr (never a traceback), the exit status
(2: bad input, 1: an I/O failure) and a fragment that says what is wrong or what to do. Cases that
need a process of their own (a file-size limit) run the CLI in a subprocess.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pandas as pd
import pytest
from _runs import TINY, invoke, one_error_line, write_suite

from hpo_bench.running import cell_process, harness
from hpo_bench.running.suite import load_suite


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run folder, and the suite file (copied, never written, by the cases)."""
    root = tmp_path_factory.mktemp("finished")
    path = write_suite(root / "tiny.toml")
    res = harness.run_suite(load_suite(str(path)), root / "run", argv=["test"], threads=1)
    return path, res.out_dir


def _run_folder_with(tmp_path, finished, content: bytes | None, name="records.parquet"):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / name).write_bytes(content)
    return run


def _truncated(finished) -> bytes:
    data = (finished[1] / "records.parquet").read_bytes()
    return data[: len(data) // 2]


def _foreign(tmp_path) -> bytes:
    p = tmp_path / "foreign.parquet"
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(p)
    return p.read_bytes()


def _a_file(tmp_path):
    p = tmp_path / "a_file"
    p.write_text("not a folder")
    return p


# id -> (build(tmp_path, finished) -> CLI args, exit status, fragment of the one line)
CASES = {
    "run --out under a regular file": (
        lambda t, f: ["run", f[0], "--out", _a_file(t) / "sub", "-q"], 2, "which is a file, not a folder"),
    "run --out is a regular file": (
        lambda t, f: ["run", f[0], "--out", _a_file(t), "-q"], 2, "exists and is not a folder"),
    "run --out where mkdir is refused (root too: /proc)": (
        lambda t, f: ["run", f[0], "--out", "/proc/hpo-bench-test/run", "-q"], 1, "cannot write the run folder"),
    "show on a garbage records.parquet": (
        lambda t, f: ["show", _run_folder_with(t, f, b"garbage" * 100)], 2, "is damaged or not a parquet file"),
    "show on a truncated records.parquet": (
        lambda t, f: ["show", _run_folder_with(t, f, _truncated(f))], 2, "is damaged or not a parquet file"),
    "show on a foreign parquet": (
        lambda t, f: ["show", _run_folder_with(t, f, _foreign(t))], 2, "not a records table written by hpo-bench"),
    "report on a garbage records.parquet": (
        lambda t, f: ["report", _run_folder_with(t, f, b"garbage" * 100)], 2, "is damaged or not a parquet file"),
    "report on a truncated records.parquet": (
        lambda t, f: ["report", _run_folder_with(t, f, _truncated(f))], 2, "--resume"),
    "report on a foreign parquet": (
        lambda t, f: ["report", _run_folder_with(t, f, _foreign(t))], 2, "lacks the record columns"),
    "check --param bogus=1": (
        lambda t, f: ["check", "--task", "ridge", "--param", "bogus=1"], 2,
        "keys must be parameters of the task (dataset, n, p"),
    "check --param =5": (
        lambda t, f: ["check", "--task", "ridge", "--param", "=5"], 2, "with a non-empty key, but got '=5'"),
    "sweep frontier --out <existing file>": (
        lambda t, f: ["sweep", "frontier", "--task", "ridge", "--out", _a_file(t)], 2,
        "option --out must be a folder"),
    "sweep scaling --out <existing file>": (
        lambda t, f: ["sweep", "scaling", "--out", _a_file(t)], 2, "option --out must be a folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_io_bad_input_is_one_line(case, finished, monkeypatch, capsys, tmp_path):
    build, status, fragment = CASES[case]
    code, _, err = invoke(monkeypatch, capsys, *build(tmp_path, finished))
    line = one_error_line(err)
    assert code == status and fragment in line, (code, line)


def test_check_device_cuda_without_cuda_is_one_line(monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = invoke(monkeypatch, capsys, "check", "--task", "ridge", "--device", "cuda")
    assert code == 2 and "--device must be a device this machine has, but got 'cuda'" in one_error_line(err)


# ---------------------------------------------------------------- mid-run I/O failures
def _limited(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.parametrize("where", ["first cell file", "records.parquet"])
def test_file_size_limit_mid_run_is_one_line_then_resume_finishes(where, finished, monkeypatch, capsys, tmp_path):
    """A full disk / the file-size limit: exit 1 with one line; finished cells are kept; --resume finishes."""
    path, ref = finished
    cell_size = max(p.stat().st_size for p in (ref / "cells").glob("*.parquet"))
    records_size = (ref / "records.parquet").stat().st_size
    assert cell_size < records_size
    # the limit stops the first cell file, or only the final concatenation (every cell file fits)
    limit = cell_size // 2 if where == "first cell file" else (cell_size + records_size) // 2
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hpo_bench.cli", "run", str(path), "--out", str(out), "-q",
                           "--threads", "1"], preexec_fn=_limited(limit), capture_output=True, text=True, timeout=300)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and "File too large" in line and "--resume" in line, proc.stderr
    kept = len(list((out / "cells").glob("*.parquet")))
    assert kept == (0 if where == "first cell file" else 8)
    assert not list(out.glob(".*.tmp-*")) and not list((out / "cells").glob(".*"))  # no half file left
    assert "session stopped (OSError" in (out / "run.log").read_text()
    # --force: an edit to the tree between the two processes (a shared checkout) must not make this test flaky
    proc = subprocess.run([sys.executable, "-m", "hpo_bench.cli", "run", str(path), "--out", str(out), "-q",
                           "--threads", "1", "--resume", "--force"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{kept} already finished" in (out / "run.log").read_text()
    assert len(pd.read_parquet(out / "records.parquet")) == len(pd.read_parquet(ref / "records.parquet"))


def _sabotage_after_first_cell(monkeypatch, how):
    """Make cells/ unwritable once the first cell has run (serial executor: in this process)."""
    real = cell_process.run_cell
    calls = []

    def run_cell(cell, **kw):
        calls.append(cell.cell_id)
        if len(calls) == 2:
            how()
        return real(cell, **kw)

    monkeypatch.setattr(cell_process, "run_cell", run_cell)


def test_cells_folder_replaced_by_a_file_mid_run_is_one_line(monkeypatch, capsys, tmp_path):
    """What root sees for 'cells/ made read-only' (chmod does not stop root): writes into cells/ fail."""
    path = write_suite(tmp_path / "tiny.toml", TINY)
    out = tmp_path / "run"

    def how():
        os.replace(out / "cells", out / "cells.moved")
        (out / "cells").write_text("in the way")

    _sabotage_after_first_cell(monkeypatch, how)
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "-q")
    line = one_error_line(err)
    assert code == 1 and "cannot write the run folder" in line and "--resume" in line
    assert "session stopped" in (out / "run.log").read_text()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the case above stands in")
def test_cells_folder_made_read_only_mid_run_is_one_line(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "tiny.toml", TINY)
    out = tmp_path / "run"
    _sabotage_after_first_cell(monkeypatch, lambda: os.chmod(out / "cells", 0o555))
    try:
        code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", out, "-q")
    finally:
        os.chmod(out / "cells", 0o755)
    line = one_error_line(err)
    assert code == 1 and "Permission denied" in line and "--resume" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; /proc stands in above")
def test_read_only_out_is_one_line(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "tiny.toml", TINY)
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", ro / "run", "-q")
    finally:
        ro.chmod(0o755)
    assert code == 1 and "Permission denied" in one_error_line(err)
