"""Provenance: what decides a run's results besides its suite, and what is needed to trust or rerun it.

:func:`code_version` fingerprints the package versions and the source that runs inside cells (a
resume compares it with the run's); :func:`provenance` adds git state, host, CPU, threads and
torch settings, which :func:`hpo_bench.running.harness.run_suite` writes to ``provenance.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.plugins import fingerprint_files
from .executors import usable_cpus
from .suite import Suite

__all__ = ["code_version", "provenance", "code_changes", "HOST"]

#: This machine's host name, as cells, locks and provenance name it.
HOST = socket.gethostname()

# Code that never runs inside a cell (display, reports, the CLI, the test kit): editing it does not
# make a run's finished cells stale. Everything else (new modules too) counts.
_RESULT_NEUTRAL = {"report", "testing", "analysis", "__pycache__", "cli.py", "api.py", "progress.py"}


def _source_roots() -> list[Path]:
    roots = [Path(__file__).resolve().parent.parent]
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
    CLI and displays, the testing kit), so uncommitted edits count too, and the files of the plug-in folders
    loaded in this process. A resume compares every key here.
    """
    h = hashlib.sha256()
    for k, root in enumerate(_source_roots()):
        files = sorted(p for p in root.rglob("*.py") if not _RESULT_NEUTRAL & set(p.relative_to(root).parts))
        for p in files:
            with contextlib.suppress(OSError):
                h.update(f"{k}/{p.relative_to(root).as_posix()}\0".encode())
                h.update(p.read_bytes())
                h.update(b"\0")
    for p in fingerprint_files():  # the loaded plug-in folders' files (hpo_bench.core.plugins)
        with contextlib.suppress(OSError):
            h.update(f"plugin/{p.as_posix()}\0".encode())
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
        root = Path(__file__).resolve().parent.parent.parent
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
            instance uses: :meth:`hpo_bench.running.suite.Suite.datasets`).
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
        "host": HOST, "platform": platform.platform(), "processor": platform.processor(), "cpu_model": _cpu_model(),
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
                    n_cells=len(suite.cells()), datasets=suite.datasets(), plugins=list(suite.plugins))
        dev = torch.device(suite.device)
        if dev.type == "cuda" and torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name(dev)
    return info



def code_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two :func:`code_version` results, one phrase per changed key."""
    names = {"hpo_bench": "hpo-bench version", "source_sha256": "hpo-bench source", "torch": "torch version",
             "numpy": "numpy version", "python": "Python version"}
    out = []
    for key, name in names.items():
        a, b = old.get(key), new.get(key)
        if a != b:
            short = (lambda v: str(v)[:12]) if key == "source_sha256" else str
            out.append(f"{name} changed ({short(a)} -> {short(b)})")
    return out
