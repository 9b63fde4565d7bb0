"""A compact console summary of a records table (the full report is ``hpo-bench report``).

The summary shows each cell's *incumbent*: the row with the lowest validation loss seen so
far at the cell's end, i.e. the λ the tuner would return (as
:func:`hpo_bench.report.metrics.add_incumbent` defines it; the same row the report's "final"
values use). A black-box tuner's last trial is rarely its best, so its last row would
misstate what it found. Costs (tuner seconds, HVPs) are the cell's totals, from its last row.

Beside the validation gain it shows the test-side cost: the *validation–test gap* (the
incumbent's test minus validation loss, both at the tuner's own w) and ``test↑ k/n``, the
seeds whose validation loss fell while the test loss rose from the cell's first recorded point
to its incumbent (:func:`hpo_bench.report.metrics.overfits`, as the report flags them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.table import Table

from ..report.metrics import add_incumbent, overfits

__all__ = ["final_rows", "incumbent_rows", "summary_frame", "summarize", "time_breakdown", "SUMMARY_TITLE"]

#: The console table's title: says which row of each cell it shows.
SUMMARY_TITLE = ("Incumbent of each cell (its lowest validation loss seen, and that λ; mean over seeds); "
                 "val–test gap: its test minus validation loss (test↑ k/n: k seeds whose validation loss fell "
                 "while the test loss rose since the first point); tuner s and HVPs: cell totals; hypergradient "
                 "error: median over all steps")


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last record of every cell (it holds the cell's totals: time, HVPs, status)."""
    return df.sort_values(["cell_id", "step"]).groupby("cell_id", sort=False).tail(1)


def incumbent_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the cell's last record with the incumbent's values beside it.

    Columns ``inc_val_loss``, ``inc_val_loss_ref``, ``inc_test_loss``, ``inc_hp`` and
    ``inc_step`` are those of the row with the lowest finite ``val_loss`` of the cell (NaN and
    an empty λ where the cell has none); ``first_val_loss`` and ``first_test_loss`` those of
    its first row with a finite ``val_loss``; ``overfit`` says whether the validation loss fell
    while the test loss rose between the two. Every other column is the last record's.
    """
    rows = add_incumbent(df.sort_values(["cell_id", "step"], kind="stable"))
    last = rows.groupby("cell_id", sort=False).tail(1).copy()
    inc = last["incumbent_row"].to_numpy()
    has = inc >= 0
    safe = np.where(has, inc, 0)
    for col, src in (("inc_val_loss", "val_loss"), ("inc_val_loss_ref", "val_loss_ref"),
                     ("inc_test_loss", "test_loss"), ("inc_step", "step")):
        vals = pd.to_numeric(rows[src], errors="coerce").to_numpy(dtype=float)[safe]
        last[col] = np.where(has, vals, np.nan)
    first = last["first_row"].to_numpy()
    has_first = first >= 0
    safe_first = np.where(has_first, first, 0)
    for col, src in (("first_val_loss", "val_loss"), ("first_test_loss", "test_loss")):
        vals = pd.to_numeric(rows[src], errors="coerce").to_numpy(dtype=float)[safe_first]
        last[col] = np.where(has_first, vals, np.nan)
    last["overfit"] = [overfits(*v) for v in zip(last["first_val_loss"], last["first_test_loss"],
                                                  last["inc_val_loss"], last["inc_test_loss"])]
    from ..core.records import vector_of  # torch: imported where needed, like the report's readers

    hps = rows["hp"].to_numpy()
    last["inc_hp"] = [vector_of(hps[i]) if ok else [] for i, ok in zip(safe, has)]
    return last


def _hp_text(values) -> str:
    vals = np.asarray(list(values), dtype=float)
    if vals.size == 0:
        return "-"
    if vals.size <= 2:
        return ", ".join(f"{v:.4g}" for v in vals)
    pos = vals[vals > 0]
    gm = float(np.exp(np.mean(np.log(pos)))) if pos.size == vals.size else float("nan")
    return f"{vals.size} values, geo-mean {gm:.3g}"


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per task x tuner label: means over seeds of each cell's incumbent (and its totals).

    ``val_loss``, ``val_loss_ref``, ``test_loss`` and ``incumbent_hp`` are the incumbent's
    (see the module docstring); ``val_test_gap`` is the mean of the incumbents' ``test_loss -
    val_loss`` and ``overfit_seeds`` the number of cells :func:`incumbent_rows` flags;
    ``steps``, ``time_s`` (tuner seconds) and ``hvps`` are the cells' totals; ``status`` counts
    the cells' final statuses.
    """
    fin = incumbent_rows(df)
    med_err = df.groupby(["task", "tuner_label"])["hypergrad_rel_error"].median()
    out = []
    for (task, tuner), g in fin.groupby(["task", "tuner_label"], sort=True):
        g = g.sort_values("seed", kind="stable")
        out.append({
            "task": task, "tuner": tuner, "seeds": g["seed"].nunique(),
            "steps": float(g["step"].mean() + 1),
            "val_loss": float(g["inc_val_loss"].mean()), "val_loss_ref": float(g["inc_val_loss_ref"].mean()),
            "test_loss": float(g["inc_test_loss"].mean()),
            "val_test_gap": float((g["inc_test_loss"] - g["inc_val_loss"]).mean()),
            "overfit_seeds": int(g["overfit"].sum()),
            "hypergrad_rel_error_median": float(med_err.get((task, tuner), np.nan)),
            "time_s": float(g["time_s"].mean()), "hvps": float(g["hvps"].mean()),
            "incumbent_hp": _hp_text(g.iloc[0]["inc_hp"]),
            "status": ", ".join(f"{k}:{v}" for k, v in g["status"].value_counts().items()),
        })
    return pd.DataFrame(out)


def summarize(df: pd.DataFrame) -> Table:
    """The console table of :func:`summary_frame` (its title says it shows incumbents; instances on synthetic
    stand-ins say so: :func:`hpo_bench.report.datasets.mark_instances`)."""
    from ..report.datasets import mark_instances

    s = summary_frame(mark_instances(df))
    table = Table(title=SUMMARY_TITLE, title_justify="left")
    cols = [("task", "task"), ("tuner", "tuner"), ("seeds", "seeds"), ("steps", "steps"),
            ("val_loss", "incumbent val loss"), ("val_loss_ref", "its val at w*(λ)"), ("test_loss", "its test loss"),
            ("val_test_gap", "val–test gap"),
            ("hypergrad_rel_error_median", "hypergrad err"), ("time_s", "tuner s"), ("hvps", "HVPs"),
            ("incumbent_hp", "incumbent λ (1st seed)"), ("status", "status")]
    for _, title in cols:
        table.add_column(title)
    for _, r in s.iterrows():
        cells = []
        for key, _ in cols:
            v = r[key]
            if key == "val_test_gap":
                flag = f" (test↑ {r['overfit_seeds']}/{r['seeds']})" if r["overfit_seeds"] else ""
                cells.append(f"{v:.4g}{flag}")
            elif isinstance(v, float):
                cells.append(f"{v:.4g}" if key not in ("steps", "hvps", "seeds") else f"{v:.0f}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    return table


def time_breakdown(df: pd.DataFrame) -> dict[str, float]:
    """Where the cells' wall time went, summed over cells (each cell's last row holds its totals).

    ``tuner_s``: the tuners' own clocks; ``measure_s``: the recorder's measurements (losses, the
    reference solve and hypergradient), taken with the tuner's clock paused; ``harness_s``: the
    rest of each cell's ``wall_s`` (task build, seeding, bookkeeping). Cells without timing
    columns (killed before their first row) are skipped.
    """
    fin = final_rows(df)
    fin = fin[np.isfinite(fin["wall_s"]) & np.isfinite(fin["time_s"]) & np.isfinite(fin["measure_s"])]
    wall, tuner, measure = float(fin["wall_s"].sum()), float(fin["time_s"].sum()), float(fin["measure_s"].sum())
    harness = wall - tuner - measure
    return {"cells": int(len(fin)), "wall_s": wall, "tuner_s": tuner, "measure_s": measure, "harness_s": harness,
            "harness_share": harness / wall if wall > 0 else float("nan")}
