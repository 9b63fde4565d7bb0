"""The console summary of `hpo-bench run` / `show`: each cell's incumbent, labelled as such."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from rich.console import Console

from hpo_bench.analysis.summary import SUMMARY_TITLE, incumbent_rows, summarize, summary_frame


def _records() -> pd.DataFrame:
    """Two cells of a black-box tuner whose last trial is worse than its best (the incumbent)."""
    rows = []
    for seed, vals in ((0, [0.9, 0.2, 0.7]), (1, [0.5, 0.4, 0.8])):
        for step, v in enumerate(vals):
            rows.append({"cell_id": f"t__qmc__seed{seed}", "task": "t", "tuner": "qmc", "tuner_label": "qmc",
                         "seed": seed, "step": step, "val_loss": v, "val_loss_ref": v + 0.01, "test_loss": v + 0.1,
                         "best_val_loss": min(vals[:step + 1]), "hypergrad_rel_error": np.nan,
                         "time_s": 0.1 * (step + 1), "hvps": 0, "hp": np.array([10.0 ** step]), "status": "ok"})
    return pd.DataFrame(rows)


def test_summary_shows_the_incumbent_not_the_last_row():
    s = summary_frame(_records())
    (r,) = s.itertuples()
    # incumbents: seed 0 -> step 1 (0.2), seed 1 -> step 1 (0.4); the last rows are 0.7 and 0.8
    assert math.isclose(r.val_loss, 0.3, rel_tol=1e-12)
    assert math.isclose(r.val_loss_ref, 0.31, rel_tol=1e-12)
    assert math.isclose(r.test_loss, 0.4, rel_tol=1e-12)
    assert r.incumbent_hp == "10"  # λ of seed 0's incumbent (step 1), not of its last row (100)
    assert math.isclose(r.time_s, 0.3, rel_tol=1e-12) and r.steps == 3  # costs are the cells' totals


def test_incumbent_rows_without_a_finite_validation_loss():
    df = _records()
    df.loc[df["seed"] == 1, "val_loss"] = np.nan
    inc = incumbent_rows(df).set_index("seed")
    assert math.isnan(inc.loc[1, "inc_val_loss"]) and inc.loc[1, "inc_hp"] == []
    assert inc.loc[0, "inc_val_loss"] == 0.2 and inc.loc[0, "inc_step"] == 1


def test_summary_header_says_incumbent():
    buf = io.StringIO()
    Console(file=buf, width=400).print(summarize(_records()))
    text = buf.getvalue()
    assert "Incumbent" in SUMMARY_TITLE and SUMMARY_TITLE.split(";")[0] in text
    assert "incumbent val loss" in text and "incumbent λ" in text and "tuner s" in text


def _overfitting_records() -> pd.DataFrame:
    """Seed 0 lowers its validation loss while its test loss rises (flagged); seed 1 improves both."""
    rows = []
    for seed, vals, tests in ((0, [1.0, 0.2, 0.6], [1.0, 3.0, 1.5]), (1, [1.0, 0.5, 0.8], [1.2, 0.9, 1.0])):
        for step, (v, t) in enumerate(zip(vals, tests)):
            rows.append({"cell_id": f"t__pw__seed{seed}", "task": "t", "tuner": "pw", "tuner_label": "pw",
                         "seed": seed, "step": step, "val_loss": v, "val_loss_ref": v, "test_loss": t,
                         "hypergrad_rel_error": np.nan, "time_s": 0.1, "hvps": 0, "hp": np.array([1.0]),
                         "status": "ok"})
    return pd.DataFrame(rows)


def test_summary_shows_the_validation_test_gap_and_flags_overfitting():
    """Issue 12 item 6: the test-side cost of each incumbent beside its validation gain."""
    inc = incumbent_rows(_overfitting_records()).set_index("seed")
    assert inc.loc[0, "overfit"] and not inc.loc[1, "overfit"]  # seed 0: val 1.0 -> 0.2, test 1.0 -> 3.0
    assert (inc.loc[0, "first_val_loss"], inc.loc[0, "first_test_loss"]) == (1.0, 1.0)
    (r,) = summary_frame(_overfitting_records()).itertuples()
    assert math.isclose(r.val_test_gap, ((3.0 - 0.2) + (0.9 - 0.5)) / 2, rel_tol=1e-12)
    assert r.overfit_seeds == 1
    buf = io.StringIO()
    Console(file=buf, width=400).print(summarize(_overfitting_records()))
    text = buf.getvalue()
    assert "val–test gap" in text and "1.6 (test↑ 1/2)" in text


def test_a_cell_whose_first_point_is_not_finite_starts_at_its_first_finite_one():
    df = _overfitting_records()
    df.loc[(df["seed"] == 0) & (df["step"] == 0), "val_loss"] = np.nan  # first finite point: step 1 (val 0.2)
    inc = incumbent_rows(df).set_index("seed")
    assert inc.loc[0, "first_val_loss"] == 0.2 and not inc.loc[0, "overfit"]  # the incumbent is that point


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_waits_for_finished_cells_and_ignores_start_up():
    """A suite of 82 cells, 0.1 s each after 5 s of start-up: the old first ETA read 405 s."""
    from hpo_bench.running.harness import RunProgress
    from hpo_bench.running.progress import MIN_FINISHED, EtaEstimator

    clock = _Clock()
    eta = EtaEstimator(clock=clock)
    progress = RunProgress(total=82, skipped=0)
    clock.t = 5.0  # start-up: nothing finished yet
    assert eta.eta_s(progress) is None
    for k in range(1, MIN_FINISHED + 1):
        eta.finished()
        progress.done = k
        if k < MIN_FINISHED:
            assert eta.eta_s(progress) is None, k
            clock.t += 0.1
    true_left = (82 - MIN_FINISHED) * 0.1
    assert abs(eta.eta_s(progress) - true_left) <= 1e-9 * true_left
    progress.done = 82
    assert eta.eta_s(progress) == 0.0


def test_plain_progress_lines_show_no_eta_before_enough_cells(monkeypatch):
    from types import SimpleNamespace

    from hpo_bench.running.harness import RunProgress
    from hpo_bench.running.progress import MIN_FINISHED, EtaEstimator, PlainReporter

    clock = _Clock()
    buf = io.StringIO()
    rep = PlainReporter(buf, EtaEstimator(clock=clock))
    progress = RunProgress(total=40, skipped=0)
    result = SimpleNamespace(rows=[{"best_val_loss": 0.5}], status="ok", info={"wall_s": 0.1})
    for k in range(1, MIN_FINISHED + 1):
        clock.t = 10.0 + k
        progress.done = k
        rep.cell_finished(progress, SimpleNamespace(cell_id=f"c{k}"), result)
    lines = buf.getvalue().splitlines()
    assert all(ln.endswith("ETA -:--:--") for ln in lines[:MIN_FINISHED - 1])
    # 1 s per cell since the first finished: 35 cells left -> 35 s
    assert lines[-1].endswith("ETA 0:00:35"), lines[-1]
