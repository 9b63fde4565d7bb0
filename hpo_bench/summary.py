"""A compact console summary of a records table (the full report is ``hpo-bench report``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.table import Table

__all__ = ["final_rows", "summary_frame", "summarize", "time_breakdown"]


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last record of every cell."""
    return df.sort_values(["cell_id", "step"]).groupby("cell_id", sort=False).tail(1)


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
    """One row per task x tuner label: means over seeds of the final records."""
    fin = final_rows(df)
    med_err = df.groupby(["task", "tuner_label"])["hypergrad_rel_error"].median()
    out = []
    for (task, tuner), g in fin.groupby(["task", "tuner_label"], sort=True):
        out.append({
            "task": task, "tuner": tuner, "seeds": g["seed"].nunique(),
            "steps": float(g["step"].mean() + 1),
            "val_loss": float(g["val_loss"].mean()), "val_loss_ref": float(g["val_loss_ref"].mean()),
            "best_val_loss": float(g["best_val_loss"].mean()), "test_loss": float(g["test_loss"].mean()),
            "hypergrad_rel_error_median": float(med_err.get((task, tuner), np.nan)),
            "time_s": float(g["time_s"].mean()), "hvps": float(g["hvps"].mean()),
            "final_hp": _hp_text(g.iloc[0]["hp"]),
            "status": ", ".join(f"{k}:{v}" for k, v in g["status"].value_counts().items()),
        })
    return pd.DataFrame(out)


def summarize(df: pd.DataFrame) -> Table:
    s = summary_frame(df)
    table = Table(title="Final records (mean over seeds; hypergradient error: median over all steps)",
                  title_justify="left")
    cols = [("task", "task"), ("tuner", "tuner"), ("seeds", "seeds"), ("steps", "steps"),
            ("val_loss", "val loss"), ("val_loss_ref", "val at w*(λ)"), ("test_loss", "test loss"),
            ("hypergrad_rel_error_median", "hypergrad err"), ("time_s", "time s"), ("hvps", "HVPs"),
            ("final_hp", "final λ (1st seed)"), ("status", "status")]
    for _, title in cols:
        table.add_column(title)
    for _, r in s.iterrows():
        cells = []
        for key, _ in cols:
            v = r[key]
            if isinstance(v, float):
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
