"""The tune step: choose each tuner's own knobs on separate tuning seeds, then run the clean repetitions.

A suite declares it (schema in :mod:`hpo_bench.running.suite`)::

    [tune]
    seeds = [100, 101]            # tuning seeds, none of them in `seeds`
    scope = "task"                # or "suite"
    budget = { steps = 30 }       # optional

    [[tuner]]
    name = "gradient"
    params = { method = "cg" }
    tune = { outer_lr = [0.05, 0.2, 0.5] }

:func:`tune_suite` then

1. runs every task x tuned tuner x knob combination x tuning seed through the harness into
   a run folder of its own (``RUN_DIR/tune/`` in the end; labels ``<label>.tune<k>``, ``k``
   the combination's index);
2. scores a combination on a task by the mean over tuning seeds of the final incumbent's F
   (the validation loss at the reference inner solve of the λ the tuner would return; see
   :mod:`hpo_bench.report.metrics`); a cell that did not end ``ok`` scores ``+inf``;
3. picks the lowest score per task (``scope = "task"``) or the lowest mean rank over the
   tuner's tasks (``"suite"``); ties go to the combination declared first;
4. writes every score and the choice to ``choices.json`` there and returns the suite with
   each tuned entry's params completed by its choice (scope ``task``: one entry per task,
   same label, so cell ids and derived seeds are those of an untuned run).

Tuning seeds build different data (the task seed) than the evaluation seeds, so no choice
sees the repetitions it is judged on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..report.metrics import add_incumbent
from ..running.suite import Entry, Suite

__all__ = ["tuning_suite", "score_combinations", "choose", "apply_choices", "tune_suite", "read_choices",
           "CHOICES_FILE"]

CHOICES_FILE = "choices.json"


def _combo_label(label: str, k: int) -> str:
    return f"{label}.tune{k}"


def tuning_suite(suite: Suite) -> Suite | None:
    """The cells of the tune step as a suite (``None`` if no tuner declares a grid)."""
    spec = suite.tune
    if spec is None or not spec.grids:
        return None
    entries: list[Entry] = []
    for e in suite.tuners:
        for k, combo in enumerate(spec.combos(e.label)):
            entries.append(dataclasses.replace(e, label=_combo_label(e.label, k), params={**e.params, **combo},
                                               budget=spec.budget or e.budget))
    return dataclasses.replace(suite, name=f"{suite.name}-tune", seeds=list(spec.seeds), tuners=entries, tune=None)


def score_combinations(frame: pd.DataFrame, suite: Suite) -> pd.DataFrame:
    """One row per tuner label x task x combination: per-seed final F, statuses and the score."""
    spec = suite.tune
    df = add_incumbent(frame.sort_values(["cell_id", "step"], kind="stable"))
    last = df.groupby("cell_id", sort=False).tail(1)
    rows = []
    for e in suite.tuners:
        for k, combo in enumerate(spec.combos(e.label) if spec else []):
            mine = last[last["tuner_label"] == _combo_label(e.label, k)]
            for task, g in mine.groupby("task", sort=False):
                per_seed = {}
                for _, r in g.iterrows():
                    f = float(r["incumbent_objective"])
                    per_seed[int(r["seed"])] = f if r["status"] == "ok" and math.isfinite(f) else math.inf
                score = float(np.mean(list(per_seed.values()))) if per_seed else math.inf
                rows.append({"tuner_label": e.label, "tuner": e.name, "task": task, "combo": k,
                             "params": combo, "per_seed": per_seed, "score": score,
                             "statuses": sorted(set(g["status"].astype(str))),
                             "time_s": float(g["time_s"].mean())})
    return pd.DataFrame(rows)


def choose(scores: pd.DataFrame, suite: Suite) -> dict[str, Any]:
    """The choice per tuner label: ``{"scope", "by_task": {task: {"combo", "params", "score"}}}``."""
    spec = suite.tune
    out: dict[str, Any] = {}
    for label in spec.grids:
        mine = scores[scores["tuner_label"] == label]
        if mine.empty:
            continue
        by_task: dict[str, Any] = {}
        if spec.scope == "task":
            for task, g in mine.groupby("task", sort=False):
                best = g.sort_values(["score", "combo"], kind="stable").iloc[0]
                by_task[task] = {"combo": int(best["combo"]), "params": best["params"], "score": best["score"]}
        else:
            ranks = mine.assign(rank=mine.groupby("task")["score"].rank(method="average"))
            mean_rank = ranks.groupby("combo")["rank"].mean().sort_index(kind="stable")
            k = int(mean_rank.idxmin())
            params = mine[mine["combo"] == k].iloc[0]["params"]
            for task, g in mine.groupby("task", sort=False):
                by_task[task] = {"combo": k, "params": params, "score": float(g[g["combo"] == k]["score"].iloc[0]),
                                 "mean_rank": float(mean_rank[k])}
        out[label] = {"scope": spec.scope, "by_task": by_task}
    return out


def apply_choices(suite: Suite, choices: dict[str, Any]) -> Suite:
    """The suite to run: tuned entries get their chosen knobs (and no pending tune step)."""
    tuners: list[Entry] = []
    for e in suite.tuners:
        ch = choices.get(e.label)
        if ch is None:
            tuners.append(e)
            continue
        by_task = ch["by_task"]
        if ch["scope"] == "suite":
            params = next(iter(by_task.values()))["params"]
            tuners.append(dataclasses.replace(e, params={**e.params, **params}))
        else:
            for task, c in by_task.items():
                tuners.append(dataclasses.replace(e, params={**e.params, **c["params"]}, only_tasks=(task,)))
    return dataclasses.replace(suite, tuners=tuners, tune=None)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return _json_safe(float(obj))
    return obj


def tune_suite(suite: Suite, tune_dir: str | Path, *, argv: list[str] | None = None,
               **run_options: Any) -> tuple[Suite, dict[str, Any]]:
    """Run the tune step into the run folder ``tune_dir`` and return ``(suite to run, choices document)``.

    ``run_options`` go to :func:`hpo_bench.running.harness.run_suite` (e.g. ``executor``, ``threads``).
    ``hpo-bench tune`` tunes into a sibling folder and moves it to ``RUN_DIR/tune`` once the
    clean run has finished (a run folder must be empty when its run starts).
    """
    from ..running.harness import run_suite

    ts = tuning_suite(suite)
    if ts is None:
        return suite, {}
    tdir = Path(tune_dir)
    res = run_suite(ts, tdir, argv=argv, **run_options)
    scores = score_combinations(res.frame, suite)
    choices = choose(scores, suite)
    spec = suite.tune
    doc = {
        "suite": suite.name, "scope": spec.scope, "seeds": list(spec.seeds),
        "budget": None if spec.budget is None else {"steps": spec.budget.steps, "seconds": spec.budget.seconds},
        "score": "mean over tuning seeds of the final incumbent's validation loss at the reference inner solve "
                 "(+inf for a cell not ending ok); lowest wins, ties to the first declared combination",
        "tuners": [{"label": label, "name": next(e.name for e in suite.tuners if e.label == label),
                    "grid": grid, "choice": choices.get(label),
                    "scores": scores[scores["tuner_label"] == label].drop(columns=["tuner_label"]).to_dict("records")}
                   for label, grid in spec.grids.items()],
    }
    tmp = tdir / f".{CHOICES_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(_json_safe(doc), indent=1, default=str))
    os.replace(tmp, tdir / CHOICES_FILE)
    return apply_choices(suite, choices), doc


def read_choices(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN_DIR/tune/choices.json`` if the run had a tune step."""
    path = Path(run_dir) / "tune" / CHOICES_FILE
    return json.loads(path.read_text()) if path.is_file() else None
