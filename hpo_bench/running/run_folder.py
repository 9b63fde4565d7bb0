"""The run folder: atomic writes, the driver's lock, finished cells, damage checks and the run log.

A cell file or a JSON file is written to a temporary file, fsynced and renamed: it is complete or
absent. :func:`lock_folder` holds the folder for one driver; :func:`prepare_folder` decides whether
a folder may take a run (new, resumed, rebuilt); :func:`scan_cells` sorts the finished cell files
into kept and set aside. The layout is described in :mod:`hpo_bench.running.harness`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.records import COLUMNS
from .cell_process import FAILED_STATUSES
from .provenance import HOST, code_changes, code_version
from .suite import Cell, Suite

__all__ = ["RunFolderError", "RunFolderIOError", "records_frame", "write_parquet_atomic", "write_json_atomic",
           "cell_file_meta", "RunLog", "prepare_folder", "lock_folder", "check_run_folder", "scan_cells"]


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the message says why and what to do."""


class RunFolderIOError(OSError):
    """The run folder could not be read or written while the run went on; the message says what to do."""



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


def write_parquet_atomic(df: pd.DataFrame, path: Path, metadata: dict[str, Any] | None = None) -> None:
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


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
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


def cell_file_meta(path: Path) -> dict[str, Any] | None:
    """The harness's metadata of a cell file (``None`` if unreadable or foreign)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(b"hpo_bench")
        return json.loads(raw) if raw else None
    except (OSError, ValueError, pa.ArrowException):
        return None



class RunLog:
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


def prepare_folder(out: Path, suite: Suite, code: dict[str, Any], *, resume: bool, force: bool,
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
    changes += code_changes(old_code, code)
    if changes and not force:
        raise RunFolderError(f"cannot resume {str(out)!r}: {'; '.join(changes)}; its {n_done} finished cells may not "
                             "match a rerun. Pass --force to resume anyway (cells whose configuration is unchanged "
                             "are kept, the others run again) or choose another --out")
    session.update(resumed=True, forced_changes=changes)
    manifest.update(suite=suite.name, suite_path=suite.path, suite_sha256=suite.sha256, code=code)
    manifest.setdefault("sessions", []).append(session)
    return manifest, changes


def lock_folder(out: Path) -> Any:
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
    fh.write(f"pid {os.getpid()} on {HOST}")
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
    prepare_folder(Path(out), suite, code_version(), resume=resume, force=force, argv=[])


def scan_cells(cells_dir: Path, cells: list[Cell], *, retry_failed: bool,
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
        meta = cell_file_meta(path)
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

