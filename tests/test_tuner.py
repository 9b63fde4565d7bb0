"""The gradient tuner: budgets, bounds, reproducibility, statuses, and the recorder's clock."""

from __future__ import annotations

import math
import time

import pytest
import torch

from _util import VirtualClock

from hpo_bench import TUNERS, get_task
from hpo_bench.core import records
from hpo_bench.running.harness import run_cell
from hpo_bench.core.records import VOLATILE_COLUMNS, Budget, Recorder
from hpo_bench.core.registry import UnknownNameError
from hpo_bench.running.suite import Cell, Entry
from hpo_bench.core.tuner import TunerParamError

TIME_COLS = tuple(VOLATILE_COLUMNS)  # clocks: everything else must reproduce


def run(task, budget=Budget(steps=8), **params):
    rec = Recorder(task, budget)
    rec.start()
    TUNERS.get("gradient")(**params).run(task, rec)
    return rec


@pytest.mark.parametrize("params", [
    dict(method="exact", inner="exact"),
    dict(method="cg", inner="gd", inner_steps=50),
    dict(method="neumann", inner="gd", inner_steps=50, method_opts={"iterations": 5}),
    dict(method="fixed_point", inner="adam", inner_steps=50, inner_lr=0.05),
    dict(method="identity", inner="gd", inner_steps=20, warm_start=False),
    dict(method="reverse", inner="gd", inner_steps=30, outer="sgd", outer_lr=0.5),
    dict(method="truncated", inner="gd", inner_steps=30, method_opts={"truncate": 5}, outer="rmsprop"),
    dict(method="forward", inner="gd", inner_steps=30, outer="sgd", outer_momentum=0.5),
])
def test_every_configuration_runs_within_budget(ridge_pf, params):
    rec = run(ridge_pf, Budget(steps=6), **params)
    assert len(rec.rows) == 6
    assert [r["status"] for r in rec.rows] == ["ok"] * 6
    times = [r["time_s"] for r in rec.rows]
    assert times == sorted(times)
    for key in ("inner_steps", "hvps", "grad_evals"):
        vals = [r[key] for r in rec.rows]
        assert vals == sorted(vals)
    assert all(math.isfinite(r["hypergrad_rel_error"]) for r in rec.rows)
    assert rec.rows[-1]["best_val_loss"] == min(r["val_loss"] for r in rec.rows)


def test_exact_tuner_hypergradients_are_exact_and_loss_decreases(ridge):
    rec = run(ridge, Budget(steps=25), method="exact", inner="exact", outer="adam", outer_lr=0.3)
    assert max(r["hypergrad_rel_error"] for r in rec.rows) <= 1e-8
    assert rec.rows[-1]["val_loss_ref"] < rec.rows[0]["val_loss_ref"]


def test_bounds_are_respected():
    task = get_task("ridge", n=40, p=4, lam_low=0.5, lam_high=2.0)
    rec = run(task, Budget(steps=10), method="exact", inner="exact", outer="sgd", outer_lr=1e3)
    for r in rec.rows:
        assert 0.5 - 1e-12 <= r["hp"][0] <= 2.0 + 1e-12


def test_seconds_budget_stops_the_run(ridge):
    rec = run(ridge, Budget(steps=None, seconds=0.3), method="cg", inner="gd", inner_steps=10)
    assert rec.stop_reason == "budget_seconds" and len(rec.rows) >= 1


def test_reproducible_apart_from_time(ridge_pf):
    a = run(ridge_pf, method="cg", inner="adam", inner_steps=20, inner_lr=0.05)
    b = run(ridge_pf, method="cg", inner="adam", inner_steps=20, inner_lr=0.05)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIME_COLS} for r in rows]  # noqa: E731
    assert strip(a.rows) == strip(b.rows)


def test_diverging_inner_run_is_recorded_not_raised(ridge):
    rec = run(ridge, Budget(steps=20), method="cg", inner="gd", inner_steps=200, inner_lr=50.0)
    assert rec.rows[-1]["status"] == "diverged"
    assert len(rec.rows) < 20
    assert all(r["status"] == "ok" for r in rec.rows[:-1])


def test_measurements_are_not_timed(ridge, monkeypatch):
    """The clock stops inside record(): a slow reference adds nothing to time_s."""
    clock = VirtualClock()  # a 1000 s "sleep" on the recorder's clock, at no real cost
    monkeypatch.setattr(records, "time", clock)

    class SlowReference(type(ridge)):
        def reference(self, theta, warm=None):  # what the recorder calls for a row's reference
            clock.sleep(1000.0)
            return super().reference(theta, warm)

    slow = SlowReference(n=60, p=6, rho=0.6, seed=3)
    rec = run(slow, Budget(steps=3), method="exact", inner="exact")
    # three 1000 s sleeps happened inside record(); not even one of them may reach the tuner's clock
    assert rec.rows[-1]["time_s"] < 1000.0 and rec.rows[-1]["measure_s"] >= 3000.0


@pytest.mark.parametrize("params, fragment", [
    (dict(method="magic"), "unknown hypergradient method 'magic'; known hypergradient methods: cg, exact"),
    (dict(inner="lbfgs"), "parameter `inner` must be one of"),
    (dict(outer="nadam"), "parameter `outer` must be one of ['sgd', 'adam', 'rmsprop', 'lbfgs'], but got 'nadam'"),
    (dict(inner_steps=0), "parameter `inner_steps` must be an integer >= 1"),
    (dict(outer_lr=-1.0), "parameter `outer_lr` must be > 0"),
    (dict(method="reverse", inner="adam"), "'gd' for the unrolled method 'reverse'"),
    (dict(method="cg", method_opts={"tolerance": 1}), "options of 'cg'"),
])
def test_bad_tuner_params(params, fragment):
    with pytest.raises((TunerParamError, UnknownNameError)) as exc:
        TUNERS.get("gradient")(**params)
    assert fragment in str(exc.value)


def test_run_cell_turns_exceptions_into_error_rows():
    cell = Cell("t", Entry("ridge", "r", {"p": -3}), Entry("gradient", "g", {}), 0, Budget(steps=2))
    rows = run_cell(cell)
    assert len(rows) == 1 and rows[0]["status"] == "error"
    assert "parameter `p`" in rows[0]["message"] and "Traceback" in rows[0]["message"]



class _ExplodesAfterTwo(TUNERS.get("gradient")):
    """Records two steps, then raises: the finished rows must survive."""

    name = "test_explodes_after_two"

    def run(self, task, recorder, *, seed=0):
        theta = task.space.init_theta()
        for _ in range(2):
            recorder.record(w=task.solve(theta), theta=theta)
        raise RuntimeError("boom in the middle")


def test_failing_tuner_keeps_finished_rows(monkeypatch):
    # registered only for this test, so registry-wide conformance checks never see it
    monkeypatch.setitem(TUNERS._items, "test_explodes_after_two", _ExplodesAfterTwo)
    cell = Cell("t", Entry("ridge", "r", {"n": 40, "p": 4}), Entry("test_explodes_after_two", "x", {}), 0,
                Budget(steps=10))
    rows = run_cell(cell)
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert "boom in the middle" in rows[-1]["message"]
    assert [r["stop_reason"] for r in rows] == ["", "", "error"]  # not its last good row's reason


# ------------------------------------------------------------------ outer = "lbfgs" (scipy L-BFGS-B)
def test_lbfgs_reaches_the_oracle_on_a_small_per_feature_ridge(ridge_pf):
    from hpo_bench.analysis.oracle import compute_oracle

    orc = compute_oracle(ridge_pf, starts=4)
    rec = run(ridge_pf, Budget(steps=300), method="cg", inner="exact", outer="lbfgs")
    assert all(r["status"] == "ok" for r in rec.rows)
    best = min(r["val_loss_ref"] for r in rec.rows)
    assert best - orc.val_loss <= 1e-6 * orc.gap
    # it got there long before the budget: L-BFGS-B converged and said so
    assert len(rec.rows) < 300 and rec.stop_reason.startswith("lbfgs converged: ")
    # with an exact inner solve the tuner's own F is the reference F, and CG's hypergradient the reference one
    assert all(abs(r["val_loss"] - r["val_loss_ref"]) <= 1e-12 * abs(r["val_loss_ref"]) for r in rec.rows)
    assert max(r["hypergrad_rel_error"] for r in rec.rows) <= 1e-6


def test_lbfgs_records_one_row_per_function_evaluation(ridge_pf, monkeypatch):
    import scipy.optimize

    calls = {"fun": 0}
    real = scipy.optimize.minimize

    def counting_minimize(fun, x0, *args, **kw):
        def counted(x):
            calls["fun"] += 1
            return fun(x)
        return real(counted, x0, *args, **kw)

    monkeypatch.setattr(scipy.optimize, "minimize", counting_minimize)
    rec = run(ridge_pf, Budget(steps=12), method="exact", inner="exact", outer="lbfgs")
    assert len(rec.rows) == 12 == calls["fun"]
    assert [r["step"] for r in rec.rows] == list(range(12))
    # every evaluation is one inner solve and one hypergradient (p HVPs for the dense method)
    assert [r["inner_solves"] for r in rec.rows] == list(range(1, 13))
    assert [r["hvps"] for r in rec.rows] == [6 * k for k in range(1, 13)]
    # each row's validation loss is F at its own theta (what the line search saw)
    for r in rec.rows[::4]:
        theta = torch.tensor(r["theta"], dtype=torch.float64)
        assert r["val_loss"] == pytest.approx(float(ridge_pf.response(theta)), rel=1e-12)


def test_lbfgs_respects_the_step_budget_and_bounds():
    task = get_task("ridge_per_feature", n=40, p=4, lam_low=0.5, lam_high=2.0)
    rec = run(task, Budget(steps=7), method="cg", inner="exact", outer="lbfgs")
    assert len(rec.rows) == 7 and rec.stop_reason == "budget_steps"
    for r in rec.rows:
        assert all(0.5 - 1e-12 <= v <= 2.0 + 1e-12 for v in r["hp"])


def test_lbfgs_respects_the_seconds_budget(ridge_pf):
    class SlowSolve(type(ridge_pf)):
        def solve(self, theta):
            time.sleep(0.1)  # tuner time: the solve is the tuner's own work
            return super().solve(theta)

    slow = SlowSolve(n=60, p=6, rho=0.6, seed=3)
    rec = run(slow, Budget(steps=None, seconds=0.35), method="cg", inner="exact", outer="lbfgs")
    assert rec.stop_reason == "budget_seconds"
    assert 1 <= len(rec.rows) <= 4  # stopped right after the evaluation that spent the budget
    assert rec.rows[-1]["time_s"] >= 0.35 > rec.rows[-2]["time_s"] if len(rec.rows) > 1 else True


def test_lbfgs_stops_cleanly_on_divergence(ridge):
    rec = run(ridge, Budget(steps=30), method="cg", inner="gd", inner_steps=200, inner_lr=50.0, outer="lbfgs")
    assert rec.rows[-1]["status"] == "diverged" and rec.stop_reason == "diverged"
    assert len(rec.rows) < 30
    assert all(r["status"] == "ok" for r in rec.rows[:-1])


def test_lbfgs_with_an_inexact_warm_inner_solve_and_float32():
    task = get_task("ridge_per_feature", n=60, p=6, rho=0.6, seed=3, dtype="float32")
    rec = run(task, Budget(steps=15), method="cg", inner="gd", inner_steps=50, outer="lbfgs")
    assert rec.rows and all(r["status"] == "ok" for r in rec.rows)
    assert rec.stop_reason in ("budget_steps",) or rec.stop_reason.startswith("lbfgs converged: ")
    assert rec.rows[-1]["best_val_loss"] < rec.rows[0]["val_loss"]
    assert [r["inner_steps"] for r in rec.rows] == [50 * k for k in range(1, len(rec.rows) + 1)]


@pytest.mark.parametrize("params, fragment", [
    (dict(outer="lbfgs", outer_lr=0.5), "parameter `outer_lr` must be left at its default (0.1) with "
                                        "outer='lbfgs' (L-BFGS-B chooses its steps by line search), but got 0.5"),
    (dict(outer="lbfgs", outer_momentum=0.9), "parameter `outer_momentum` must be 0 with outer='lbfgs'"),
    (dict(outer="LBFGS"), "parameter `outer` must be one of ['sgd', 'adam', 'rmsprop', 'lbfgs'], but got 'LBFGS'"),
])
def test_bad_lbfgs_params(params, fragment):
    with pytest.raises(TunerParamError) as exc:
        TUNERS.get("gradient")(**params)
    assert fragment in str(exc.value)


@pytest.mark.parametrize("name, params, tags", [
    ("gradient", {}, set()),
    ("gradient", {"inner": "adam_per_example"}, {"per-example"}),
    ("gradient", {"method": "cg", "method_opts": {"precond": "jacobi"}}, {"hessian-diagonal"}),
    ("gradient", {"method": "cg", "method_opts": {"precond": "auto"}}, set()),
    ("gradient", {"inner": "adam_per_example", "method": "cg", "method_opts": {"precond": "jacobi"}},
     {"per-example", "hessian-diagonal"}),
    ("gradient", {"inner": 3, "method": "nope"}, set()),  # bad params need nothing: the constructor refuses them
    ("seed_notebook", {}, {"per-example"}),
    ("grid_eig", {}, {"quadratic", "gram-matrix", "scalar-hyperparameter"}),
    ("tpe", {}, set()),
])
def test_required_tags_follow_the_params(name, params, tags):
    assert TUNERS.get(name).required_tags(params) == frozenset(tags)


def test_required_tags_match_what_the_tasks_declare():
    """The tasks that can run a tuner's requirement carry the tag; the ones that cannot, do not."""
    assert "per-example" in get_task("ridge", n=20, p=3).tags
    assert "per-example" not in get_task("kernel_ridge", dataset="synthetic", n=20, p=3, n_val=10, n_test=10).tags
    assert "scalar-hyperparameter" in get_task("ridge", n=20, p=3).tags
    assert "scalar-hyperparameter" not in get_task("ridge_per_feature", n=20, p=3).tags
    assert "scalar-hyperparameter" not in get_task("seed_toy", per_weight=True).tags
    assert "scalar-hyperparameter" in get_task("seed_toy").tags


# ------------------------------------------------------------------ stop_reason on the cell's last row
def _finished(rec):
    rec.finish()
    return [r["stop_reason"] for r in rec.rows]


def test_last_row_says_the_step_budget_ended_the_cell(ridge):
    reasons = _finished(run(ridge, Budget(steps=5), method="exact", inner="exact"))
    assert reasons == [""] * 4 + ["budget_steps"]


class _OverrunsAfterRow(TUNERS.get("gradient")):
    """Records one row, then works past the seconds budget before checking it (a step's tail)."""

    name = "test_overruns_after_row"
    clock = None

    def run(self, task, recorder, *, seed=0):
        theta = task.space.init_theta()
        while not recorder.should_stop():
            recorder.record(w=task.solve(theta), theta=theta)
            self.clock.sleep(100.0)  # the optimiser step that follows the row, on the tuner's clock


def test_last_row_says_time_ran_out_when_its_own_time_is_under_the_budget(ridge, monkeypatch):
    """The case inference from the last row's ``time_s`` gets wrong: the row was recorded at 0 s of a
    50 s budget, the tuner's next step took it past 50 s. The stored reason says budget_seconds."""
    from hpo_bench.analysis.sweep import _stop_reason

    clock = VirtualClock()
    monkeypatch.setattr(records, "time", clock)
    monkeypatch.setattr(_OverrunsAfterRow, "clock", clock)
    budget = Budget(steps=None, seconds=50.0)
    rec = Recorder(ridge, budget)
    rec.start()
    _OverrunsAfterRow().run(ridge, rec)
    assert _finished(rec) == ["budget_seconds"]
    last = rec.rows[-1]
    assert last["time_s"] < 50.0
    assert _stop_reason(last, budget) == "budget_seconds"
    assert _stop_reason({**last, "stop_reason": None}, budget) == "tuner"  # what old records infer


def test_last_row_says_the_tuner_ended_on_its_own_or_why_it_stopped(ridge_pf):
    class _TwoRows(TUNERS.get("gradient")):
        def run(self, task, recorder, *, seed=0):
            theta = task.space.init_theta()
            for _ in range(2):
                recorder.record(w=task.solve(theta), theta=theta)

    rec = Recorder(ridge_pf, Budget(steps=10))
    rec.start()
    _TwoRows().run(ridge_pf, rec)
    assert _finished(rec) == ["", "tuner"]
    rec = run(ridge_pf, Budget(steps=300), method="cg", inner="exact", outer="lbfgs")
    reasons = _finished(rec)
    assert reasons[-1].startswith("lbfgs converged: ") and set(reasons[:-1]) == {""}


def test_a_failed_cell_ends_on_its_status(ridge):
    rec = run(ridge, Budget(steps=20), method="cg", inner="gd", inner_steps=200, inner_lr=50.0)
    reasons = _finished(rec)
    assert reasons[-1] == "diverged" and all(r == "" for r in reasons[:-1])
    cell = Cell("t", Entry("ridge", "r", {"p": -3}), Entry("gradient", "g", {}), 0, Budget(steps=2))
    assert [r["stop_reason"] for r in run_cell(cell)] == ["error"]

