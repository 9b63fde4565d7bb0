"""The harness at scale (issue 14): compact rows, one reference per oracle evaluation and per record,
tasks built once, and dense methods refused on large tasks at suite validation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

from hpo_bench.core import records
from hpo_bench.running.harness import records_frame, run_cell
from hpo_bench.core.records import Budget, vector_of
from hpo_bench.running.suite import Cell, Entry

#: More hyperparameters than records.COMPACT_MIN_HYPER (100): compact rows apply.
BIG = {"n": 130, "p": 110, "rho": 0.3}
GRADIENT = {"method": "cg", "inner": "exact", "outer": "adam", "outer_lr": 0.3}


def _cell(tuner: str, params: dict, steps: int, task: dict | None = None, seed: int = 0) -> Cell:
    return Cell("scale", Entry("ridge_per_feature", "rpf", dict(BIG if task is None else task)),
                Entry(tuner, tuner, params), seed, Budget(steps=steps))


def _expected_keep(rows: list[dict], every: int) -> list[bool]:
    """The documented rule (records.VECTOR_EVERY), recomputed from the rows' own values: the first row, every
    ``every``-th step, rows not ``ok``, the last row, the final incumbent and the lowest ``val_loss_ref``."""
    def first_min(col: str) -> int:
        vals = [r[col] if math.isfinite(r[col]) else math.inf for r in rows]
        return vals.index(min(vals))

    special = {0, len(rows) - 1, first_min("val_loss"), first_min("val_loss_ref")}
    return [i in special or r["status"] != "ok" or r["step"] % every == 0 for i, r in enumerate(rows)]


# ----------------------------------------------------------------------------- compact rows
@pytest.mark.parametrize("tuner, params", [("random", {}), ("gradient", GRADIENT)])
def test_compact_rows_keep_vectors_on_first_last_incumbent_and_every_kth_row(monkeypatch, tuner, params):
    monkeypatch.setattr(records, "VECTOR_EVERY", 5)
    streamed, patches = [], []
    rows = run_cell(_cell(tuner, params, 17), on_row=lambda r: streamed.append(copy.deepcopy(r)),
                    on_patch=lambda i, cols: patches.append((i, cols)))
    assert [r["status"] for r in rows] == ["ok"] * 17
    keep = _expected_keep(rows, 5)
    assert not all(keep), "the test needs rows that drop their vectors"
    for r, k in zip(rows, keep):
        if k:
            assert len(r["hp"]) == len(r["theta"]) == BIG["p"], r["step"]
            np.testing.assert_allclose(np.log(r["hp"]), r["theta"], rtol=1e-12)
        else:
            assert r["hp"] is None and r["theta"] is None, r["step"]
    # the incumbent and best-reference rows got their vectors at the cell's end: the driver's streamed copy
    # matches once the patches are applied, and the stored points are the points those rows measured
    for i, cols in patches:
        streamed[i].update(cols)
    assert streamed == rows and [i for i, _ in patches] == sorted({i for i, _ in patches})
    from hpo_bench import get_task

    task = get_task("ridge_per_feature", **BIG, seed=0)
    for i in {int(np.argmin([r["val_loss"] for r in rows])), int(np.argmin([r["val_loss_ref"] for r in rows]))}:
        theta = torch.tensor(rows[i]["theta"], dtype=torch.float64)
        assert float(task.response(theta)) == pytest.approx(rows[i]["val_loss_ref"], rel=1e-10)


def test_small_tasks_keep_every_vector():
    rows = run_cell(_cell("random", {}, 6, task={"n": 40, "p": 8}))
    assert all(len(r["hp"]) == 8 and len(r["theta"]) == 8 for r in rows)


class _StopsEarly:
    """Records a row at the init, ``n - 1`` rows at the largest penalties (worse here), then returns
    before the budget."""

    def __init__(self, n: int) -> None:
        self.n = n

    def run(self, task, recorder, *, seed: int = 0) -> None:
        init = task.space.init_theta(dtype=task.dtype)
        _, high = task.space.theta_bounds(dtype=task.dtype)
        for i in range(self.n):
            th = init if i == 0 else high
            recorder.record(w=task.solve(th), theta=th)


def test_a_tuner_that_stops_early_gets_its_last_row_filled_in_and_streamed(monkeypatch):
    from hpo_bench.core.registry import TUNERS

    monkeypatch.setattr(records, "VECTOR_EVERY", 100)
    monkeypatch.setattr(TUNERS, "get", lambda name: (lambda **kw: _StopsEarly(4)))
    streamed, patches = [], []
    rows = run_cell(_cell("stops_early", {}, 50), on_row=lambda r: streamed.append(copy.deepcopy(r)),
                    on_patch=lambda i, cols: patches.append((i, cols)))
    assert len(rows) == 4 and [r["theta"] is None for r in streamed] == [False, True, True, True]
    assert [i for i, _ in patches] == [3]
    for i, cols in patches:  # what CellJob does with a "patch" message
        streamed[i].update(cols)
    assert len(rows[-1]["theta"]) == BIG["p"] and streamed == rows


def test_readers_cope_with_null_vectors(tmp_path, monkeypatch):
    from hpo_bench.analysis.oracle import OracleResult
    from hpo_bench.core.records import read_records_file
    from hpo_bench.report.metrics import add_derived, cell_metrics, with_records
    from hpo_bench.report.plot import _thin_lambda_lists
    from hpo_bench.analysis.summary import incumbent_rows, summary_frame

    monkeypatch.setattr(records, "VECTOR_EVERY", 6)
    rows = run_cell(_cell("random", {}, 9)) + run_cell(_cell("gradient", GRADIENT, 9))
    for r in rows:
        r["cell_id"] = f"{r['tuner']}-cell"
    path = tmp_path / "records.parquet"
    records_frame(rows).to_parquet(path, index=False)
    df = read_records_file(path)
    assert df["theta"].isna().any() and not df["theta"].isna().all()
    df = df.sort_values(["cell_id", "step"], kind="stable").reset_index(drop=True)
    key = (str(df["task_params"].iloc[0]), 0)
    best = df.loc[pd.to_numeric(df["val_loss_ref"]).idxmin()]
    orc = OracleResult(task="ridge_per_feature", params=BIG, seed=0, val_loss=float(best["val_loss_ref"]) - 1e-3,
                       theta=vector_of(best["theta"]), hp=vector_of(best["hp"]), init_val_loss=2.0,
                       method="test", n_params=BIG["p"], n_hyper=BIG["p"], transforms=["log"] * BIG["p"],
                       grid_points=0, starts=0, n_evals=0, seconds=0.0)
    oracles = with_records({key: orc}, df)
    cells = cell_metrics(add_derived(df, oracles), oracles)
    assert all(len(hp) == BIG["p"] for hp in cells["final_hp"])
    assert all(len(hp) == BIG["p"] for hp in incumbent_rows(df)["inc_hp"])
    assert len(summary_frame(df)) == 2
    thin = _thin_lambda_lists(df)
    assert all(isinstance(v, list) for v in thin["theta"])
    from hpo_bench.report import metrics

    starts = metrics._incumbent_starts(df)
    assert [len(th) for _, th in starts[key]] == [BIG["p"], BIG["p"]]


# ------------------------------------------------------ one reference per evaluation and per row
def _counting(task):
    """Count the task's Cholesky factorisations, and chain Task.reference's warm states through tokens:
    ``warms`` gets the ``warm`` each call received; each call returns ``("token", k)`` as its own."""
    import dataclasses

    factor, reference = task._factor, task.reference
    calls: dict[str, list] = {"factor": [], "warms": []}

    def counted_factor(theta):
        calls["factor"].append(1)
        return factor(theta)

    def traced_reference(theta, warm=None):
        calls["warms"].append(warm)
        ref = reference(theta, warm)
        k = len(calls["warms"])
        return dataclasses.replace(ref, warm=("token", k), bound=1e-12 * k)

    task._factor, task.reference = counted_factor, traced_reference
    return calls


def test_an_oracle_evaluation_is_one_factorisation_warm_started_from_the_previous_one():
    from hpo_bench import get_task
    from hpo_bench.analysis.oracle import compute_oracle

    task = get_task("ridge_per_feature", n=40, p=5, seed=1)
    calls = _counting(task)
    res = compute_oracle(task, max_evals=30, starts=2)
    # F(init) is one response, every optimiser evaluation one reference: one factorisation each
    # (value and hypergradient separately took two)
    assert res.n_evals == 30 and len(calls["factor"]) == res.n_evals
    n = len(calls["warms"])
    assert n == res.n_evals - 1 and calls["warms"] == [None] + [("token", k) for k in range(1, n)]
    assert res.reference_routes == ["dense"] and res.reference_bound == pytest.approx(1e-12 * n, rel=1e-12)
    plain_task = get_task("ridge_per_feature", n=40, p=5, seed=1)
    bounds, reference = [], plain_task.reference

    def noted(theta, warm=None):
        ref = reference(theta, warm)
        bounds.append(ref.bound)
        return ref

    plain_task.reference = noted
    plain = compute_oracle(plain_task, max_evals=30, starts=2)
    finite = [b for b in bounds if math.isfinite(b)]
    assert plain.reference_routes == ["dense"] and plain.reference_bound == (max(finite) if finite else None)
    assert plain.val_loss == pytest.approx(res.val_loss, rel=1e-12, abs=0.0)


def test_a_record_is_one_reference_warm_started_from_the_previous_row():
    from hpo_bench import get_task
    from hpo_bench.core.records import Recorder

    task = get_task("ridge_per_feature", n=40, p=5, seed=1)
    calls = _counting(task)
    rec = Recorder(task, Budget(steps=10), meta={})
    rec.start()
    init = task.space.init_theta(dtype=torch.float64)
    for k in range(4):
        th = init + 0.3 * k
        w = task.solve(th)
        before = len(calls["factor"])
        rec.record(w=w, theta=th, hypergrad=torch.zeros_like(th))
        assert len(calls["factor"]) - before == 1  # value and gradient took two factorisations before
        assert rec.rows[-1]["val_loss_ref"] == pytest.approx(float(task.response(th)), rel=1e-12)
    assert calls["warms"] == [None, ("token", 1), ("token", 2), ("token", 3)]
    assert [r["reference_route"] for r in rec.rows] == ["dense"] * 4
    assert [r["reference_error_bound"] for r in rec.rows] == pytest.approx([1e-12 * k for k in range(1, 5)])
    before = len(calls["factor"])
    rec.record(w=task.solve(init), theta=init)  # a black-box row: the value only
    assert len(calls["factor"]) - before == 2 and len(calls["warms"]) == 4  # task.solve above, then one response
    assert rec.rows[-1]["reference_route"] == "solve" and math.isnan(rec.rows[-1]["reference_error_bound"])


# ------------------------------------------------------------------ dense methods refuse large p
def _suite(tmp_path, tuner_tables: str, task: str = 'name = "ridge_per_feature"\nparams = { n = 30, p = 12 }'):
    path = tmp_path / "s.toml"
    path.write_text(f'seeds = [0]\n[budget]\nsteps = 2\n[[task]]\nlabel = "big"\n{task}\n{tuner_tables}')
    return path


@pytest.mark.parametrize("tuner, shape, size", [
    ('name = "gradient"\nparams = { method = "exact", inner = "exact" }', "p x p", "n_params = 12 > 10"),
    ('name = "gradient"\nparams = { method = "forward", inner = "gd" }', "p x m",
     "n_params x n_hyper = 12 x 12 = 144 entries > 10^2"),
    ('name = "seed_notebook"\nparams = { method = "exact", epochs = 1 }', "p x p", "n_params = 12 > 10"),
])
def test_suite_validation_refuses_a_dense_method_above_the_limit(tmp_path, monkeypatch, tuner, shape, size):
    from hpo_bench.running import suite as suite_mod
    from hpo_bench.running.suite import SuiteError, load_suite

    monkeypatch.setattr(suite_mod, "DENSE_MAX_PARAMS", 10)
    with pytest.raises(SuiteError) as err:
        load_suite(str(_suite(tmp_path, f"[[tuner]]\nlabel = \"dense\"\n{tuner}")))
    msg = str(err.value)
    assert "\n" not in msg and "tuner 'dense'" in msg and "task 'big' (ridge_per_feature)" in msg
    assert f"a dense {shape} matrix" in msg and size in msg and "DENSE_MAX_PARAMS" in msg, msg


def test_matrix_free_and_small_dense_needs_pass_validation(tmp_path, monkeypatch):
    from hpo_bench.running import suite as suite_mod
    from hpo_bench.running.suite import SuiteError, load_suite

    monkeypatch.setattr(suite_mod, "DENSE_MAX_PARAMS", 10)
    tables = ('[[tuner]]\nlabel = "cg"\nname = "gradient"\nparams = { method = "cg" }\n'
              '[[tuner]]\nlabel = "fwd"\nname = "gradient"\nparams = { method = "forward", inner = "gd" }\n')
    load_suite(str(_suite(tmp_path, tables, task='name = "ridge"\nparams = { n = 30, p = 12 }')))  # p x 1 = 12
    eig = '[[tuner]]\nlabel = "eig"\nname = "grid_eig"\n'
    with pytest.raises(SuiteError, match=r"tuner 'eig' \(grid_eig\) cannot run task 'big'.*p x p"):
        load_suite(str(_suite(tmp_path, eig, task='name = "ridge"\nparams = { n = 30, p = 12 }')))
    monkeypatch.setattr(suite_mod, "DENSE_MAX_PARAMS", 12)
    load_suite(str(_suite(tmp_path, eig, task='name = "ridge"\nparams = { n = 30, p = 12 }')))


# ------------------------------------------------------------------------------ tasks built once
def test_a_serial_run_and_its_oracle_build_each_task_instance_once_per_step(tmp_path, monkeypatch):
    """Suite validation's instance serves the first cell of that instance (serial executor); the report's
    oracle computes and polishes on one instance. Other cells build their own (a used instance holds the
    previous cell's caches)."""
    from hpo_bench.running import _instances
    from hpo_bench.running.harness import run_suite
    from hpo_bench.report.metrics import load_records, oracles_for_records
    from hpo_bench.running.suite import load_suite
    from hpo_bench.tasks._quadratic import QuadraticTask

    builds: list[int] = []
    setup = QuadraticTask._setup

    def counted(self, *args, **kwargs):
        builds.append(self.seed)
        return setup(self, *args, **kwargs)

    monkeypatch.setattr(QuadraticTask, "_setup", counted)
    _instances.clear()  # earlier tests in this process may have filled the pool of validated instances
    path = tmp_path / "s.toml"
    path.write_text('seeds = [0, 1]\n[budget]\nsteps = 3\n[[task]]\nname = "ridge"\nparams = { n = 30, p = 4 }\n'
                    '[[tuner]]\nname = "random"\n[[tuner]]\nname = "gradient"\nparams = { method = "cg" }\n')
    suite = load_suite(str(path))
    assert builds == [0]  # validation: the first seed
    run_suite(suite, tmp_path / "run")
    # 4 cells (2 tuners x 2 seeds): the first seed-0 cell took validation's instance (3 builds, not 5)
    assert sorted(builds) == [0, 0, 1, 1] and not _instances._FRESH
    builds.clear()
    df = load_records(tmp_path / "run")
    oracles_for_records(df, tmp_path / "oracle", max_evals=60, use_shipped=False)
    assert sorted(builds) == [0, 1]  # one build per instance for the oracle and its polish (was 2 each)


def test_an_isolated_run_streams_the_recorder_patch_and_drops_the_validated_instances(tmp_path):
    """Cells in their own processes: the last row's vectors, filled in when the tuner stopped, reach the
    records (a patch message after the row itself), and the driver holds no validated instance."""
    from hpo_bench.running import _instances
    from hpo_bench.running.executors import ProcessPool
    from hpo_bench.running.harness import run_suite
    from hpo_bench.core.records import read_records_file
    from hpo_bench.running.suite import load_suite

    # grid search stops after its grid (10 points, before its 50-step budget): its last row gets its vectors
    # by a patch, and at least 6 of its rows (not first, last, incumbent or best reference) keep nulls
    points = 10
    path = tmp_path / "s.toml"
    path.write_text(f'seeds = [0]\n[budget]\nsteps = 50\n[[task]]\nname = "ridge_per_feature"\n'
                    f'params = {{ n = {BIG["n"]}, p = {BIG["p"]}, rho = {BIG["rho"]} }}\n'
                    f'[[tuner]]\nname = "grid"\nparams = {{ points = {points} }}\n')
    suite = load_suite(str(path))
    assert len(_instances._FRESH) == 1
    with ProcessPool(1) as pool:
        res = run_suite(suite, tmp_path / "run", executor=pool)
    assert not res.failed and not _instances._FRESH
    df = read_records_file(tmp_path / "run" / "records.parquet")
    assert len(df) == points and df["theta"].isna().any()
    assert len(df["theta"].iloc[-1]) == BIG["p"]
