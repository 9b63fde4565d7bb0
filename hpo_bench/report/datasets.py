"""Which data each task instance of a run used, and the instance labels every table and figure prints.

An instance whose dataset is a *synthetic* registry entry (a stand-in such as ``cadata-like``, or the
``text-like`` generator) is shown everywhere as ``"<task label> (synthetic stand-in: <dataset>)"``:
tables (markdown, LaTeX, CSV, HTML), figure panel titles, ``report.html``, ``summary.md``,
``hpo-bench show`` and ``hpo-bench plot``. Instances on real data (downloaded and cached, or bundled
with scikit-learn) and on a task's own generator (``dataset = "synthetic"``) keep their label.

What an instance used is read from the run folder, never by building a task: the dataset name in the
records' ``task_params``, and what ``provenance.json`` recorded about it (``datasets``, written by the
harness from :meth:`hpo_bench.running.suite.Suite.datasets`); the data registry answers for runs written before
provenance held it. The registry import is plain Python (no torch, no scipy), so ``hpo-bench plot`` stays light.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["STAND_IN", "marked_label", "is_marked", "panel_title", "run_datasets", "mark_instances", "data_lines"]

#: The words every table and figure prints beside an instance on synthetic data.
STAND_IN = "synthetic stand-in"
_MARK = f" ({STAND_IN}: "


def marked_label(label: str, dataset: str) -> str:
    """``"ridge-cadata (synthetic stand-in: cadata-like)"``: the label of an instance on a synthetic dataset."""
    return f"{label}{_MARK}{dataset})"


def is_marked(label: str) -> bool:
    """Whether ``label`` already carries the stand-in mark (marking is idempotent)."""
    return _MARK in str(label)


def panel_title(label: str) -> str:
    """A figure panel's title: a marked label on two lines (the mark below the label), so it fits a panel."""
    text = str(label)
    return text.replace(_MARK, "\n(" + _MARK[2:], 1) if is_marked(text) else text


def run_datasets(run_dir: str | Path) -> list[dict[str, Any]]:
    """The ``datasets`` entries of ``run_dir/provenance.json`` (``[]`` when absent or unreadable)."""
    try:
        info = json.loads((Path(run_dir) / "provenance.json").read_text())
    except (OSError, ValueError):
        return []
    rows = info.get("datasets") if isinstance(info, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _dataset_of(task_params: Any) -> str | None:
    try:
        params = json.loads(task_params) if isinstance(task_params, str) else dict(task_params)
    except (TypeError, ValueError):
        return None
    name = params.get("dataset") if isinstance(params, dict) else None
    return name if isinstance(name, str) and name != "synthetic" else None


def _is_synthetic(name: str, recorded: Mapping[str, Mapping[str, Any]]) -> bool:
    info = recorded.get(name)
    if info is not None and "dataset_kind" in info:
        return info["dataset_kind"] == STAND_IN
    from ..data import UnknownDatasetError, get  # the registry only: no torch, no scipy

    try:
        return bool(get(name).synthetic)
    except UnknownDatasetError:
        return False


def mark_instances(df: pd.DataFrame, datasets: Iterable[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """``df`` (a records or cells table) with the ``task`` of every instance on a synthetic dataset marked
    (:func:`marked_label`) and the suite's label kept in ``task_label`` (what suite files, tune choices,
    ``--tasks`` and ``--oracle-evals`` name). ``datasets``: a run's :func:`run_datasets` entries."""
    if "task" not in df.columns or "task_params" not in df.columns:
        return df
    recorded = {str(r.get("dataset")): r for r in (datasets or [])}
    out = df.copy()
    if "task_label" not in out.columns:
        out["task_label"] = out["task"]
    pairs = pd.MultiIndex.from_arrays([out["task_label"].astype(str).to_numpy(),
                                       out["task_params"].astype(str).to_numpy()])
    codes, uniq = pd.factorize(pairs)
    names = []
    for label, params in uniq:
        ds = _dataset_of(params)
        names.append(marked_label(label, ds) if ds is not None and not is_marked(label)
                     and _is_synthetic(ds, recorded) else label)
    if names != [label for label, _ in uniq]:
        out["task"] = pd.Series(names, dtype=object).to_numpy()[codes]
    return out


def data_lines(cells: pd.DataFrame, datasets: Iterable[Mapping[str, Any]] | None = None) -> list[str]:
    """One markdown line per task instance on a registered dataset: which data it used (real and cached,
    bundled, or a synthetic stand-in, and for a ``fallback`` which dataset was asked for)."""
    recorded = {str(r.get("task")): r for r in (datasets or [])}
    lines, seen = [], set()
    label_col = "task_label" if "task_label" in cells.columns else "task"
    for task, label, params in zip(cells["task"], cells[label_col], cells["task_params"]):
        ds = _dataset_of(params)
        if ds is None or (task, ds) in seen:
            continue
        seen.add((task, ds))
        info = recorded.get(str(label), {})
        if info.get("dataset") not in (None, ds):
            info = {}
        kind = info.get("dataset_kind")
        if kind is None:
            from ..data import UnknownDatasetError, get

            try:
                entry = get(ds)
                kind, stand_for = entry.kind, entry.stand_in_for
            except UnknownDatasetError:
                kind, stand_for = "unregistered", None
        else:
            stand_for = info.get("dataset_stand_in_for")
        if kind == STAND_IN:
            what = f"`{ds}`, a {STAND_IN}" + (f" for `{stand_for}` (same shape and sparsity, generated data)"
                                               if stand_for else " (generated data)")
            if info.get("substituted"):
                what += (f"; `{info['requested']}` was asked for but is not in the data cache (`fallback = "
                         f"\"{info['fallback']}\"`)")
        elif kind == "download":
            verified = info.get("dataset_verified")
            what = f"`{ds}`, real data from the data cache" + (
                ", checksum verified" if verified else ", checksum not verified" if verified is False else "")
        elif kind == "bundled":
            what = f"`{ds}`, real data bundled with scikit-learn"
        else:
            what = f"`{ds}` ({kind})"
        lines.append(f"- {task}: {what}")
    return lines
