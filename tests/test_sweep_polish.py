"""The scaling sweep's oracle is the best point anyone found: after the cells run, it is polished from every
cell's incumbent (as ``hpo-bench report`` does), so no tuner ends below F* and time-to-target is judged against
the polished value."""

from __future__ import annotations

import math

import pandas as pd

from hpo_bench.analysis.oracle import RECORD_RTOL
from hpo_bench.analysis.sweep import TunerConfig, scaling


def test_a_weak_oracle_is_polished_from_the_cells_incumbents(tmp_path):
    # an oracle cut to 3 evaluations (L-BFGS-B has barely started at p = 4); the exact gradient tuner goes lower
    cfgs = [TunerConfig("gradient-exact", "gradient", {"method": "exact", "inner": "exact", "outer": "lbfgs"})]
    res = scaling([4], cfgs, tmp_path, target=1e-2, seconds=20.0, steps=40, seeds=[0], oracle_seconds=60.0,
                  oracle_evals=3)
    frame = pd.read_parquet(tmp_path / "run" / "records.parquet")
    best = float(pd.to_numeric(frame["val_loss_ref"], errors="coerce").min())
    row = res.table.iloc[0]
    base = res.info["oracles"]["p4/seed0"]
    assert row["oracle_method"].endswith("+polish")
    assert row["oracle_val_loss"] <= best + RECORD_RTOL * max(1.0, abs(best))  # never above a tuner's point
    assert base["val_loss"] == row["oracle_val_loss"] and base["polished"] >= 1
    assert not any("below the oracle" in n for n in res.info["notes"])
    assert math.isfinite(row["final_gap"]) and row["final_gap"] >= -RECORD_RTOL * max(1.0, abs(best))
    assert list((tmp_path / "oracles" / "polish").glob("*.json"))  # cached apart from the run-independent oracle
