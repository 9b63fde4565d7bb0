"""Running cells and suites.

``run_cell`` builds the task (data from the seed) and the tuner, runs the tuner under a
:class:`~hpo_bench.records.Recorder` and returns its rows; it never raises for a failing
tuner or task: an exception becomes a terminal ``error`` row with the message and the
traceback. ``run_suite`` runs every cell serially, writes each finished cell atomically
(``cells/<cell_id>.parquet``: temporary file, then rename) so nothing finished is lost,
and finally concatenates them into ``records.parquet`` next to ``provenance.json``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from .records import COLUMNS, Recorder
from .registry import TASKS, TUNERS
from .suite import Cell, Suite

__all__ = ["run_cell", "run_suite", "records_frame", "provenance", "SuiteResult"]


def _meta(cell: Cell) -> dict[str, Any]:
    return {
        "suite": cell.suite, "cell_id": cell.cell_id, "task": cell.task.label,
        "task_params": json.dumps({"name": cell.task.name, **cell.task.params}, sort_keys=True, default=str),
        "tuner": cell.tuner.name, "tuner_label": cell.tuner.label,
        "tuner_params": json.dumps(cell.tuner.params, sort_keys=True, default=str),
        "seed": cell.seed, "budget_steps": cell.budget.steps, "budget_seconds": cell.budget.seconds,
    }


def run_cell(cell: Cell) -> list[dict[str, Any]]:
    """Run one cell; always returns rows (the last has the cell's final status)."""
    meta = _meta(cell)
    task = None
    recorder: Recorder | None = None
    try:
        task = TASKS.get(cell.task.name)(**cell.task.params, seed=cell.seed, dtype=cell.dtype, device=cell.device)
        tuner = TUNERS.get(cell.tuner.name)(**cell.tuner.params)
        recorder = Recorder(task, cell.budget, meta=meta, reference=cell.reference)
        torch.manual_seed(cell.seed)
        recorder.start()
        tuner.run(task, recorder, seed=cell.seed)
    except Exception as exc:  # a failing cell is recorded, never fatal to the suite
        message = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
        if recorder is None:
            row = dict(meta)
            nan = float("nan")
            row.update(step=0, time_s=0.0, inner_steps=0, grad_evals=0, hvps=0, inner_solves=0, val_loss=nan,
                       val_loss_ref=nan, test_loss=nan, best_val_loss=nan, hypergrad_rel_error=nan,
                       hypergrad_cosine=nan, hypergrad_norm=nan, hp=[], theta=[], status="error", message=message)
            return [row]
        recorder.fail("error", message)
    return recorder.rows


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with the documented columns first, in order."""
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra]


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _git(*args: str) -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(suite: Suite | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Versions, git state, host and torch settings: what is needed to trust or rerun a result."""
    pkgs = {}
    for name in ("hpo-bench", "torch", "numpy", "pandas", "pyarrow", "optuna", "scikit-learn", "scipy", "seaborn"):
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            pkgs[name] = None
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain")
    info: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": argv if argv is not None else sys.argv,
        "python": sys.version.split()[0], "packages": pkgs,
        "git_commit": commit, "git_dirty": bool(dirty) if dirty is not None else None,
        "host": socket.gethostname(), "platform": platform.platform(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch_deterministic": torch.are_deterministic_algorithms_enabled(),
        "cuda_available": torch.cuda.is_available(),
    }
    if suite is not None:
        info.update(suite=suite.name, suite_path=suite.path, suite_sha256=suite.sha256, dtype=suite.dtype,
                    device=suite.device, seeds=suite.seeds, n_cells=len(suite.cells()))
        if suite.device.startswith("cuda") and torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name(torch.device(suite.device))
            info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return info


@dataclass
class SuiteResult:
    out_dir: Path
    records_path: Path
    provenance_path: Path
    statuses: dict[str, str]
    frame: pd.DataFrame


def run_suite(suite: Suite, out_dir: str | Path, *, argv: list[str] | None = None,
              on_cell: Callable[[Cell, list[dict[str, Any]], int, int], None] | None = None) -> SuiteResult:
    """Run every cell serially; finished cells are on disk as soon as they finish."""
    out = Path(out_dir)
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    prov_path = out / "provenance.json"
    prov_path.write_text(json.dumps(provenance(suite, argv), indent=2, default=str))
    cells = suite.cells()
    statuses: dict[str, str] = {}
    frames = []
    for k, cell in enumerate(cells):
        rows = run_cell(cell)
        df = records_frame(rows)
        _write_atomic(df, cells_dir / f"{cell.cell_id}.parquet")
        statuses[cell.cell_id] = str(rows[-1]["status"])
        frames.append(df)
        if on_cell is not None:
            on_cell(cell, rows, k + 1, len(cells))
    frame = pd.concat(frames, ignore_index=True)
    rec_path = out / "records.parquet"
    _write_atomic(frame, rec_path)
    return SuiteResult(out, rec_path, prov_path, statuses, frame)
