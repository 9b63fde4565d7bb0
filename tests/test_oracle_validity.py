"""The oracle is the best known point, the same on every machine, and says how it was found (issue 12, 3-4).

Each test reproduces a finding of the audit (small and fast versions; the audit's own size is
the slow-marked one) or a guarantee of the fix: count budgets (bitwise the same F* under any
load), starts that scale with the dimension, infeasible points projected rather than a flat
1e300, the polish from every tuner's best point, and oracle failures reported loudly.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hpo_bench import get_task
from hpo_bench.core._threads import one_thread
from hpo_bench.analysis import oracle as oracle_mod
from hpo_bench.analysis.oracle import compute_oracle, default_starts, oracle_for


@pytest.fixture(autouse=True)
def one_thread_here():  # many small dense solves: one thread is much faster on a busy 2-core machine
    with one_thread():
        yield


def _kkt_violation(task, theta: list[float]) -> float:
    """Largest projected-gradient entry of F at ``theta`` on the box (0 at a KKT point)."""
    th = torch.tensor(theta, dtype=torch.float64)
    g = task.reference_hypergradient(th).numpy()
    lo, hi = [x.numpy() for x in task.space.theta_bounds(dtype=torch.float64)]
    x = th.numpy()
    proj = np.clip(x - g, lo, hi) - x
    return float(np.abs(proj).max())


# ----------------------------------------------------------------------------- item 3: best known point
def test_seed_toy_per_weight_raw_lambda_reaches_the_interpolating_optimum():
    """Audit: seed_toy, per-weight raw λ: F = 0 is reachable at λ ≈ (0.643, -0.201) (two weights
    interpolate two validation points) but the old oracle returned 0.6046 (0.8186 on a 41-point grid):
    its L-BFGS-B polish stopped at once next to a near-singular inner Hessian (F ~ 1e45 a step away)."""
    task = get_task("seed_toy", per_weight=True)
    orc = compute_oracle(task, grid_points=41)
    assert orc.val_loss < 1e-12, orc
    assert orc.theta == pytest.approx([0.643, -0.201], abs=1e-3)
    assert float(task.response(torch.tensor(orc.theta, dtype=torch.float64))) == pytest.approx(orc.val_loss,
                                                                                               abs=1e-15)
    assert orc.winner and orc.complete


def test_infeasible_points_are_projected_not_a_flat_value_with_zero_gradient():
    """Where the inner problem has no minimiser the optimiser sees F at the last feasible point of the
    segment plus a penalty rising with the distance, with a gradient pointing back: never 1e300, g = 0."""
    task = get_task("seed_toy", per_weight=True)
    obj = oracle_mod._Objective(task)
    feasible, infeasible = np.array([1.0, 0.5]), np.array([-3.0, -3.0])
    with pytest.raises(FloatingPointError):
        task.response(torch.tensor(infeasible, dtype=torch.float64))
    f0, _ = obj.fg(feasible)
    f1, g1 = obj.fg(infeasible)
    assert math.isfinite(f1) and f1 < 1e300 and f1 > f0
    assert float(g1 @ (infeasible - feasible)) > 0  # downhill leads back to the feasible set
    # continuous across the boundary: a point just outside is close to F just inside
    f_near, _ = obj.fg(feasible + 0.999999 * (infeasible - feasible))
    assert math.isfinite(f_near) and f_near < f1


def test_starts_scale_with_the_dimension_and_are_recorded():
    assert [default_starts(m) for m in (3, 4, 10, 16, 50, 200)] == [8, 8, 20, 32, 32, 32]
    task = get_task("ridge_per_feature", n=40, p=5, seed=0)
    orc = compute_oracle(task)
    assert orc.starts == 10 and orc.method == "lbfgsb-multistart" and orc.max_evals == oracle_mod.MAX_EVALS
    assert orc.winner.startswith("start ") and " of 10 (" in orc.winner
    assert _kkt_violation(task, orc.theta) < 1e-6


def test_per_feature_ridge_more_starts_find_a_lower_point_than_six():
    """Audit, small version: on ridge_per_feature the old 6 starts stop in a worse local minimum; the
    dimension rule (here 24 starts for 12 hyperparameters) finds a lower one, a KKT point of the box."""
    task = get_task("ridge_per_feature", n=36, p=12, seed=0)
    six = compute_oracle(task, starts=6)
    orc = compute_oracle(task)
    assert orc.starts == default_starts(12) == 24
    assert orc.val_loss < six.val_loss - 1e-3 * orc.gap, (orc.val_loss, six.val_loss, orc.gap)
    assert _kkt_violation(task, orc.theta) < 1e-6


@pytest.mark.slow
def test_per_feature_ridge_p50_audit_instance():
    """The audit's instance (p = 50, n = 200, seed 0): a 32-start search found a point 3.6e-3 below the
    old oracle's F* (0.26% of the gap, above the 0.1% target); the default oracle now finds it (about 20 s).
    ``OLD`` is what ``compute_oracle(task, max_seconds=None)`` returned at commit 76665da (6 starts, L-BFGS-B
    on F itself); here even 6 starts on asinh(F/s) get there, and 32 are the rule."""
    old = 0.921988312470848
    task = get_task("ridge_per_feature", n=200, p=50, seed=0)
    orc = compute_oracle(task)
    assert orc.starts == 32 and orc.complete
    assert old - orc.val_loss > 3.5e-3 and (old - orc.val_loss) / orc.gap > 1e-3
    assert _kkt_violation(task, orc.theta) < 1e-5


# ----------------------------------------------------------------------------- item 3: the same everywhere
def test_the_same_oracle_under_cpu_load_and_other_backstops_is_bitwise_the_same(tmp_path):
    """Budgets are counts: a second computation, with another process burning a core and another
    wall-clock backstop, follows the same path and gives the same F*, bitwise."""
    params = {"name": "ridge_per_feature", "n": 60, "p": 6, "rho": 0.6}
    quiet = oracle_for(params, 3, tmp_path / "a", max_seconds=1e4)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = oracle_for(params, 3, tmp_path / "b", max_seconds=300.0)
    finally:
        burner.kill()
        burner.wait()
    for field in ("val_loss", "theta", "n_evals", "winner", "starts", "max_evals", "key"):
        assert getattr(loaded, field) == getattr(quiet, field), field
    assert quiet.complete and loaded.complete


# ----------------------------------------------------------------------------- item 3: polish from the tuners
def test_polish_from_a_tuner_incumbent_is_never_above_it_and_names_it():
    task = get_task("ridge_per_feature", n=60, p=6, rho=0.6, seed=3)
    weak = compute_oracle(task, max_evals=12)  # a deliberately starved oracle
    full = compute_oracle(task)
    assert weak.val_loss > full.val_loss + 1e-6
    start = [float(v) for v in full.theta]
    start[0] += 0.3  # a tuner's point near the optimum, but not on it
    f_start = float(task.response(torch.tensor(start, dtype=torch.float64)))
    assert f_start < weak.val_loss
    res = oracle_mod.polish_oracle(task, weak, [("cell c7's incumbent (step 4)", start)])
    assert res.val_loss <= f_start and res.val_loss == pytest.approx(full.val_loss, abs=1e-9)
    assert res.winner == "polished from cell c7's incumbent (step 4)" and res.polished == 1
    assert res.method.endswith("+polish") and res.n_evals > weak.n_evals
    assert weak.winner != res.winner and weak.polished == 0  # the input is unchanged


def test_the_report_polishes_from_every_cells_best_point(tmp_path):
    from hpo_bench.report.metrics import oracles_for_records

    task = get_task("ridge_per_feature", n=60, p=6, rho=0.6, seed=3)
    full = compute_oracle(task)
    near = [v + 0.2 for v in full.theta]
    far = [v - 0.5 for v in full.theta]
    params = json.dumps({"name": "ridge_per_feature", "n": 60, "p": 6, "rho": 0.6})
    f = lambda th: float(task.response(torch.tensor(th, dtype=torch.float64)))  # noqa: E731
    df = pd.DataFrame([
        {"cell_id": "a", "task": "rpf", "task_params": params, "seed": 3, "step": 0, "val_loss_ref": f(far),
         "theta": far},
        {"cell_id": "a", "task": "rpf", "task_params": params, "seed": 3, "step": 1, "val_loss_ref": f(near),
         "theta": near},
        {"cell_id": "b", "task": "rpf", "task_params": params, "seed": 3, "step": 0, "val_loss_ref": f(far),
         "theta": far},
    ])
    events = []
    res = oracles_for_records(df, tmp_path, max_evals=12, on_oracle=events.append)[(params, 3)]
    assert res.polished == 2  # one start per cell: a's step 1 and b's step 0
    assert res.winner.startswith("polished from cell ") and res.val_loss <= f(near)
    assert "the polish of 2 incumbents" in events[0].line()
    again = oracles_for_records(df, tmp_path, max_evals=12)[(params, 3)]  # cached in the run folder
    assert again.val_loss == res.val_loss and again.winner == res.winner
    assert list((tmp_path / "polish").glob("*.json"))


# ----------------------------------------------------------------------------- item 4: failures are loud
def test_a_record_below_the_oracle_is_an_oracle_failure_with_its_source():
    from hpo_bench.analysis.oracle import RECORD_RTOL, best_known

    task = get_task("ridge", n=40, p=5, seed=0)
    orc = compute_oracle(task)
    assert orc.source == "oracle" and not orc.failed
    rounding = best_known(orc, orc.val_loss * (1 - 0.1 * RECORD_RTOL), orc.theta, orc.hp, what="cell c (step 1)")
    assert rounding is orc  # within rounding: the oracle stands
    worse = best_known(orc, orc.val_loss - 0.01, [0.0], [1.0], what="cell c (step 1)")
    assert worse.failed and worse.source == "tuner record: cell c (step 1)" and worse.val_loss == orc.val_loss - 0.01
    assert "oracle failure" in worse.notes[-1]


TINY_SUITE = """
name = "tiny"
seeds = [0]
[budget]
steps = 4
[[task]]
name = "ridge"
params = { n = 30, p = 4 }
[[tuner]]
name = "random"
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from hpo_bench.running.harness import run_suite
    from hpo_bench.running.suite import load_suite

    root = tmp_path_factory.mktemp("tiny")
    (root / "suite.toml").write_text(TINY_SUITE)
    run_suite(load_suite(str(root / "suite.toml")), root / "run")
    return root / "run"


def _copy_run(src, dst, lower_by: float = 0.0):
    """A copy of a run folder's records, one record's ``val_loss_ref`` lowered (as a task whose reference
    is not a function of λ, or a stale oracle, would leave it)."""
    dst.mkdir(parents=True)
    (dst / "cells").mkdir()
    df = pd.read_parquet(src / "records.parquet")
    if lower_by:
        i = int(pd.to_numeric(df["val_loss_ref"]).idxmin())
        df.loc[i, "val_loss_ref"] = float(df.loc[i, "val_loss_ref"]) - lower_by
    df.to_parquet(dst / "records.parquet")
    (dst / "run.log").write_text("")
    return dst


def test_report_says_loudly_when_a_tuner_beats_the_oracle(tiny_run, tmp_path):
    from hpo_bench.report import make_report

    run = _copy_run(tiny_run, tmp_path / "run", lower_by=0.05)
    lines: list[str] = []
    res = make_report(run, progress=lines.append)
    oracle_md = (res.summary_path.parent / "tables" / "oracle.md").read_text()
    assert "ORACLE FAILURE on ridge seed 0" in oracle_md and "tuner record: cell " in oracle_md
    csv = pd.read_csv(res.summary_path.parent / "tables" / "oracle.csv")
    assert csv["source"].str.startswith("tuner record: cell ").all()
    summary = res.summary_path.read_text()
    head = summary[:summary.index("## ")] if "## " in summary else summary
    assert "Oracle warnings" in head and "ORACLE FAILURE on ridge seed 0" in head
    log = (run / "run.log").read_text()
    assert "report: ORACLE FAILURE on ridge seed 0" in log
    assert any(ln.startswith("WARNING: ORACLE FAILURE") for ln in lines)


def test_report_of_an_honest_run_has_no_oracle_warning_and_names_the_source(tiny_run, tmp_path):
    from hpo_bench.report import make_report

    run = _copy_run(tiny_run, tmp_path / "run")
    res = make_report(run)
    csv = pd.read_csv(res.summary_path.parent / "tables" / "oracle.csv")
    assert (csv["source"] == "oracle").all() and csv["complete"].all() and (csv["polished"] == 1).all()
    assert "ORACLE" not in (res.summary_path.parent / "tables" / "oracle.md").read_text()
    assert "Oracle warnings" not in res.summary_path.read_text() and (run / "run.log").read_text() == ""


def test_report_marks_an_oracle_cut_by_the_backstop_as_incomplete(tiny_run, tmp_path):
    from hpo_bench.report import make_report

    run = _copy_run(tiny_run, tmp_path / "run")
    res = make_report(run, oracle_seconds=1e-9)
    md = (res.summary_path.parent / "tables" / "oracle.md").read_text()
    assert "INCOMPLETE ORACLE on ridge seed 0" in md
    assert "INCOMPLETE ORACLE on ridge seed 0" in res.summary_path.read_text().split("## ")[0]
    assert "report: INCOMPLETE ORACLE on ridge seed 0" in (run / "run.log").read_text()


def test_cli_oracle_evals_errors_are_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    from hpo_bench import cli

    run = _copy_run(tiny_run, tmp_path / "run")
    for bad in ("0", "ridge=x", "=5"):
        monkeypatch.setattr(sys, "argv", ["hpo-bench", "report", str(run), "--oracle-evals", bad, "--quiet"])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("hpo-bench: error: --oracle-evals")
        assert repr(bad) in err[0]


def test_count_budgets_per_task_name_or_label(tiny_run, tmp_path):
    """``--oracle-evals 300 --oracle-evals ridge=400``: the task's own entry wins over the default."""
    from hpo_bench.report.metrics import load_records, oracles_for_records

    records = load_records(tiny_run)
    for spec, want in (({"*": 300, "ridge": 400}, 400), ({"*": 300}, 300), (250, 250), (None, oracle_mod.MAX_EVALS)):
        res = oracles_for_records(records, tmp_path / str(want), max_evals=spec, polish=False)
        assert {o.max_evals for o in res.values()} == {want}, spec
