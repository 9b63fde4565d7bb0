"""hpo-bench sweep: the accuracy-cost frontier (errors, HVP counts, peak memory) and the scaling sweep
(oracle, time-to-target by TargetRecorder's rule), end to end through the CLI, and bad input."""

from __future__ import annotations

import json
import math
import tomllib

import numpy as np
import pandas as pd
import pytest
import torch

import hpo_bench
from _runs import invoke
from hpo_bench import get_task
from hpo_bench.core.records import Budget
from hpo_bench.core.registry import TUNERS
from hpo_bench.analysis.oracle import compute_oracle
from hpo_bench.analysis.sweep import (FIT_COLUMNS, default_tuner_configs, FRONTIER_COLUMNS, SCALING_COLUMNS, SweepError, TunerConfig, default_grids,
                             fit_exponents, frontier, load_tuner_file, one_two_five, oracle_options,
                             parse_tuner_option, peak_memory, scaling, scaling_suite, select_tuners, suite_toml,
                             target_trace)
from hpo_bench.running.suite import Suite, SuiteError, load_suite
from hpo_bench.running.target import time_to_target

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ridge20():
    return get_task("ridge_per_feature", n=100, p=20, rho=0.5, seed=1)


RIDGE20 = dict(n=100, p=20, rho=0.5)  # the task of ``ridge20`` (seed 1)


def _frontier(out, **kw):
    """The frontier on ``ridge20``'s task, run by the harness into ``out``."""
    return frontier("ridge_per_feature", out, params=RIDGE20, seed=1, **kw)


@pytest.fixture(scope="module")
def frontier20(tmp_path_factory):
    grids = {"cg": [1, 2, 5, 10, 20, 50], "neumann": [1, 5, 20, 100, 500], "fixed_point": [1, 10, 100],
             "reverse": [10, 50, 200], "truncated": [5, 50], "forward": [5, 50]}
    out = tmp_path_factory.mktemp("frontier")
    return _frontier(out, grids=grids, repeats=1, truncated_steps=200, stop_when_converged=False, workers=2), out


@pytest.fixture(scope="module")
def table20(frontier20):
    res, _ = frontier20
    return res.table, res.info




# ------------------------------------------------------------------------------------ peak memory
def test_peak_memory_counts_live_and_transient_bytes():
    """Predictable cases: ten live 8000-byte tensors; a 1 MB temporary freed before a small result."""
    out, peak, how = peak_memory(lambda: [torch.empty(1000, dtype=torch.float64) for _ in range(10)], CPU)
    assert how == "profiler.cpu_memory" and len(out) == 10
    assert peak == 10 * 8000

    def transient():
        big = torch.ones(125_000, dtype=torch.float64)  # 1 MB, freed on return
        return big[:10].clone()

    _, peak, _ = peak_memory(transient, CPU)
    assert 1_000_000 <= peak <= 1_000_000 + 1024
    _, peak, _ = peak_memory(lambda: None, CPU)
    assert peak == 0


# ------------------------------------------------------------------------------------ frontier
def test_frontier_table_shape_and_exact_methods(table20):
    table, info = table20
    assert list(table.columns) == list(FRONTIER_COLUMNS)
    assert set(table["method"]) == {"cg", "exact", "neumann", "fixed_point", "identity", "reverse", "truncated",
                                    "forward"}
    assert (table["status"] == "ok").all()
    exact = table[table["method"] == "exact"]
    assert len(exact) == 1 and exact["rel_error"].iloc[0] <= 1e-8 and exact["cosine"].iloc[0] > 1 - 1e-12
    assert math.isnan(exact["knob_value"].iloc[0]) and len(table[table["method"] == "identity"]) == 1
    cg = table[table["method"] == "cg"].sort_values("knob_value")
    assert cg["rel_error"].iloc[0] > 1e-3  # one CG step is far off ...
    assert cg["rel_error"].iloc[-1] <= 1e-8  # ... enough iterations are exact
    assert (cg["iterations"] <= cg["knob_value"]).all()
    # products: one per iteration, plus the certified stop's true residual once per round and the
    # restart residual of every round after the first: hvp = iterations + 2 rounds - 1
    extra = cg["hvp"] - cg["iterations"]
    assert ((extra >= 1) & (extra % 2 == 1)).all()
    assert info["lr"] == pytest.approx(1 / info["L"]) and info["L"] > 0


def test_frontier_neumann_error_decreases_with_k_and_counts_hvps(table20):
    table, _ = table20
    for name in ("neumann", "fixed_point"):
        d = table[table["method"] == name].sort_values("knob_value")
        err = d["rel_error"].to_numpy()
        assert (err[1:] <= err[:-1] * (1 + 1e-9)).all(), (name, err)  # convex quadratic, alpha = 1/L
        assert err[-1] < 0.5 * err[0]
    nm = table[table["method"] == "neumann"]
    assert (nm["hvp"] == nm["knob_value"]).all()  # alpha is given: no power-iteration HVPs
    fp = table[table["method"] == "fixed_point"]
    assert (fp["hvp"] == fp["knob_value"] - 1).all()
    rv = table[table["method"] == "reverse"]
    assert (rv["hvp"] == rv["knob_value"]).all() and (rv["steps"] == rv["knob_value"]).all()
    tr = table[table["method"] == "truncated"]
    assert (tr["steps"] == 200).all() and (tr["hvp"] == tr["knob_value"]).all()
    fw = table[table["method"] == "forward"]
    assert (fw["hvp"] == fw["knob_value"] * 20).all()  # m = 20 HVPs per step


def test_frontier_memory_reverse_grows_with_t_implicit_does_not(table20, ridge20):
    table, _ = table20
    p = ridge20.n_params
    rv = table[table["method"] == "reverse"].set_index("knob_value")["peak_mem_bytes"]
    grow = rv[200.0] - rv[10.0]
    predicted = 190 * p * 8  # reverse mode stores one p-vector (float64) per step
    assert 0.9 * predicted <= grow <= 1.5 * predicted, (grow, predicted)
    assert rv[10.0] < rv[50.0] < rv[200.0]
    tr = table[table["method"] == "truncated"].set_index("knob_value")["peak_mem_bytes"]
    assert 0.9 * 45 * p * 8 <= tr[50.0] - tr[5.0] <= 1.5 * 45 * p * 8  # K stored iterates, not T
    for name in ("cg", "neumann", "fixed_point"):
        # once a method takes an HVP, ridge's linearization holds its explicit p x p Hessian (built once);
        # beyond that, the knob must not add memory: at most a few p-vectors apart
        mem = table[(table["method"] == name) & (table["hvp"] > 0)]["peak_mem_bytes"]
        assert len(mem) >= 2 and mem.max() - mem.min() <= 8 * p * 8, (name, mem.tolist())
    fw = table[table["method"] == "forward"]["peak_mem_bytes"]
    assert fw.max() - fw.min() <= 8 * p * 8  # forward mode: a p x m matrix, independent of T
    assert (table["mem_measure"] == "profiler.cpu_memory").all() and (table["peak_mem_bytes"] > 0).all()


def test_frontier_defaults_skip_and_cap_forward_and_stop_converged_cg(tmp_path):
    grids, notes = default_grids(["cg", "forward", "reverse", "exact"], n_params=20, n_hyper=20, max_iters=100)
    assert grids["cg"] == one_two_five(50) and grids["exact"] is None and grids["reverse"][-1] == 100
    assert grids["forward"] == grids["reverse"] and not notes
    grids, notes = default_grids(["forward"], n_params=20, n_hyper=500)
    assert "forward" not in grids and "forward skipped: m = 500" in notes[0]
    grids, notes = default_grids(["forward"], n_params=20, n_hyper=150, forward_max_hvp=3000)
    assert max(grids["forward"]) <= 20 and "forward capped at T <= 20" in notes[0]
    res = _frontier(tmp_path, methods=["cg"], grids={"cg": [1, 2, 5, 10, 20, 50, 100, 200]}, repeats=1,
                    memory=False)
    table, info = res.table, res.info
    cg = table.sort_values("knob_value")
    assert cg["converged"].iloc[-1] and cg["rel_error"].iloc[-1] <= 1e-8
    assert cg["iterations"].iloc[-1] < cg["knob_value"].iloc[-1]  # stopped at tol before max_iter
    assert cg["knob_value"].max() <= 50 and any("cg converged at max_iter=" in n for n in info["notes"])
    assert (table["mem_measure"] == "off").all()


def test_frontier_bad_grids(tmp_path):
    with pytest.raises(SweepError, match="has no accuracy knob"):
        _frontier(tmp_path, methods=["exact"], grids={"exact": [1]})
    with pytest.raises(SweepError, match="not swept"):
        _frontier(tmp_path, methods=["cg"], grids={"neumann": [1]})
    with pytest.raises(SweepError, match="integers >= 1"):
        _frontier(tmp_path, methods=["cg"], grids={"cg": [0, 3]})
    with pytest.raises(SweepError, match="truncated K must be <= T = 10"):
        _frontier(tmp_path, methods=["truncated"], grids={"truncated": [5, 20]}, truncated_steps=10)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_frontier_is_a_suite_the_harness_runs(frontier20):
    """The sweep writes a suite of probe cells (one per method), runs it into a run folder, reads the table
    from its records; the same suite file run by `hpo-bench run` gives the same errors and counts."""
    res, out = frontier20
    suite = load_suite(str(out / "frontier.suite.toml"))
    assert {c.tuner.name for c in suite.cells()} == {"frontier_probe"}
    assert sorted(c.tuner.label for c in suite.cells()) == sorted(set(res.table["method"]))
    frame = pd.read_parquet(out / "frontier.run" / "records.parquet")
    assert len(frame) == len(res.table) and set(frame["status"]) == {"ok"}
    assert res.info["provenance"]["suite"] == "frontier" and res.info["statuses"] == {c.cell_id: "ok" for c in suite.cells()}
    # resume: every cell is finished, nothing runs again, the table is the same
    again = _frontier(out, grids={k: v for k, v in res.info["grids"].items() if v}, repeats=1, truncated_steps=200, stop_when_converged=False,
                      resume=True)
    pd.testing.assert_frame_equal(again.table, res.table)
    rerun = out / "rerun"
    mine = hpo_bench.run(str(out / "frontier.suite.toml"), rerun).sort_values(["cell_id", "step"]).reset_index(drop=True)
    theirs = frame.sort_values(["cell_id", "step"]).reset_index(drop=True)
    assert list(mine["cell_id"]) == list(theirs["cell_id"])
    # the same computation rerun: errors agree to rounding, integer counts exactly
    assert np.allclose(mine["hypergrad_rel_error"], theirs["hypergrad_rel_error"], rtol=1e-6, atol=1e-12)
    assert (mine["hvps"] == theirs["hvps"]).all()


# ------------------------------------------------------------------------------------ scaling
def _first_reached(rows: pd.DataFrame, f_star: float, thr: float):
    """TargetRecorder's rule, written out again: new incumbents by val_loss, judged by val_loss_ref."""
    inc = math.inf
    for r in rows.itertuples():
        if math.isfinite(r.val_loss) and r.val_loss < inc:
            inc = r.val_loss
            if r.val_loss_ref - f_star <= thr:
                return r
    return None


CFGS = [TunerConfig("gradient-exact", "gradient", {"method": "exact", "inner": "exact", "outer_lr": 0.1}),
        TunerConfig("random3", "random", {}),
        TunerConfig("stuck", "gradient", {"method": "exact", "inner": "exact", "outer_lr": 1e-9})]  # cannot reach


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    res = scaling([1, 3], CFGS, out, target=1e-2, seconds=20.0, steps=60, seeds=[0], oracle_seconds=30.0)
    return res, out


def test_scaling_runs_a_suite_through_the_harness(scaled):
    res, out = scaled
    table = res.table
    assert list(table.columns) == list(SCALING_COLUMNS) and len(table) == 6
    assert list(table["cell_id"]) == [f"p{p}__{c.label}__seed0" for p in (1, 3) for c in CFGS]
    assert (table["n"] == 5 * table["p"]).all() and (table["status"] == "ok").all()
    frame = pd.read_parquet(out / "run" / "records.parquet")  # the harness's run folder, read back
    assert set(frame["cell_id"]) == set(table["cell_id"]) and (out / "run" / "provenance.json").is_file()
    assert res.info["provenance"]["command_line"] and res.info["provenance"]["suite"] == "scaling"
    for r in table.itertuples():
        rows = frame[frame["cell_id"] == r.cell_id].sort_values("step")
        assert len(rows) == r.evals == 60 and r.stop_reason == "budget_steps"  # every cell runs its whole budget
        assert list(rows["stop_reason"]) == [""] * 59 + ["budget_steps"]  # the recorder's, read back from the run
        assert r.threshold == pytest.approx(r.target * r.oracle_gap)
        hit = _first_reached(rows, r.oracle_val_loss, r.threshold)
        assert (hit is not None) == r.reached
        if r.reached:
            assert r.evals_to_target == hit.step + 1 and r.time_to_target_s == hit.time_s
            assert r.time_to_target_s <= r.tuner_seconds
        else:
            assert math.isnan(r.time_to_target_s) and r.final_gap > r.threshold
        assert r.final_gap_frac == pytest.approx(r.final_gap / r.oracle_gap)
    assert table["reached"].any() and not table[table["label"] == "stuck"]["reached"].any()
    fits = res.fits.set_index("label")
    assert list(fits.columns) == list(FIT_COLUMNS)[1:] and fits.loc["stuck", "stops_from_p"] == 1
    assert fits.loc["stuck", "fit_points"] == 0 and math.isnan(fits.loc["stuck", "exponent_time"])


def test_the_default_grid_is_a_shared_lambda_grid_of_50_points(tmp_path):
    grid = [c for c in default_tuner_configs() if c.label == "grid"]
    assert [(c.name, c.params) for c in grid] == [("grid", {"space": "block", "points": 50})]
    res = scaling([1, 3], grid, tmp_path, target=1e-2, seconds=20.0, steps=60, seeds=[0], oracle_seconds=30.0)
    assert (res.table["status"] == "ok").all() and list(res.table["evals"]) == [50, 50]  # the grid, then done
    frame = pd.read_parquet(tmp_path / "run" / "records.parquet")
    rows = frame[frame["cell_id"] == "p3__grid__seed0"]
    thetas = np.array([list(t) for t in rows["theta"]])
    assert thetas.shape == (50, 3) and np.all(thetas == thetas[:, :1])  # one λ shared by the 3 features
    assert len(np.unique(thetas[:, 0])) == 50


def test_replayed_rule_matches_target_recorder():
    """target_trace on a recorder's rows finds the row where TargetRecorder itself stopped."""
    task = get_task("ridge_per_feature", n=15, p=3, seed=0)
    orc = compute_oracle(task, **oracle_options(3, 30.0))
    tuner = TUNERS.get("gradient")(**CFGS[0].params)
    rec = time_to_target(task, orc, tuner, Budget(steps=400), frac=1e-2, seed=0)
    assert rec.reached_at is not None and rec.stop_reason == "target"
    replay = target_trace(rec.rows, orc.val_loss, 1e-2 * orc.gap)
    assert replay["reached_at"] is rec.reached_at and rec.rows[-1] is rec.reached_at


def test_scaling_suite_file_reruns_and_resumes_the_same_cells(scaled, monkeypatch, capsys):
    res, out = scaled
    text = (out / "suite.toml").read_text()
    assert text.startswith("# Written by `hpo-bench sweep scaling`") and "hpo-bench run suite.toml" in text
    again = load_suite(str(out / "suite.toml"))
    made = Suite.from_dict(scaling_suite([1, 3], CFGS, seconds=20.0, steps=60), source="<made>")
    assert [c.config_hash() for c in again.cells()] == [c.config_hash() for c in made.cells()]
    assert [t.params for t in again.tasks] == [{"n": 5, "p": 1}, {"n": 15, "p": 3}]
    assert [u.label for u in again.tuners] == [c.label for c in CFGS] and again.budget.steps == 60
    # `hpo-bench run OUT/suite.toml` on the same folder: the same suite (hash) and cells, all kept
    code, stdout, err = invoke(monkeypatch, capsys, "run", str(out / "suite.toml"), "--out", str(out / "run"),
                               "--resume", "--quiet")
    assert code == 0, err
    assert "6 cells kept from before" in stdout
    with pytest.raises(SweepError, match="already holds a run of suite 'scaling'.*pass --resume"):
        scaling([1, 3], CFGS, out, target=1e-2, seconds=20.0, steps=60, oracle_seconds=30.0)
    res2 = scaling([1, 3], CFGS, out, target=1e-2, seconds=20.0, steps=60, oracle_seconds=30.0, resume=True)
    assert sorted(res2.run.skipped) == sorted(res.table["cell_id"])
    pd.testing.assert_frame_equal(res2.table, res.table)


def test_scaling_records_contain_the_oracle(scaled):
    res, out = scaled
    table = res.table
    for p in (1, 3):
        task = get_task("ridge_per_feature", n=5 * p, p=p, seed=0)
        orc = compute_oracle(task, **oracle_options(p, 30.0))
        rows = table[table["p"] == p]
        assert rows["oracle_val_loss"].iloc[0] == pytest.approx(orc.val_loss, rel=1e-9)
        assert rows["oracle_gap"].iloc[0] == pytest.approx(orc.gap, rel=1e-6)
        assert res.info["oracles"][f"p{p}/seed0"]["n_hyper"] == p
    assert len(list((out / "oracles").glob("ridge_per_feature-seed0-*.json"))) == 2  # cached for the next run
    assert oracle_options(100, 5.0)["starts"] == 6 and oracle_options(1000, 5.0)["starts"] == 1


def _fit_table(rows):
    return pd.DataFrame([{"label": lab, "tuner": "t", "p": p, "seed": s, "reached": t is not None,
                          "time_to_target_s": t if t is not None else math.nan,
                          "cost_to_target": 10 * t if t is not None else math.nan} for lab, p, s, t in rows])


def test_fit_exponents_least_squares_on_log_log_and_where_targets_stop():
    rows = [("a", p, 0, 2.0 * p ** 1.5) for p in (1, 10, 100)]  # exactly p^1.5
    rows += [("b", 1, 0, 0.1), ("b", 10, 0, 1.0), ("b", 100, 0, None), ("b", 1000, 0, None)]
    rows += [("c", 1, 0, 0.5), ("c", 10, 0, None)]  # one size: no exponent
    rows += [("d", 1, 0, 1.0), ("d", 10, 0, None), ("d", 100, 0, 3.0)]  # misses in between, reaches the largest
    rows += [("e", 1, 0, 1.0), ("e", 1, 1, 4.0), ("e", 10, 0, 10.0), ("e", 10, 1, None)]  # seeds: all must reach
    fits = fit_exponents(_fit_table(rows)).set_index("label")
    assert fits.loc["a", "exponent_time"] == pytest.approx(1.5, abs=1e-12)
    assert fits.loc["a", "exponent_cost"] == pytest.approx(1.5, abs=1e-12)
    assert (fits.loc["a", "fit_p_min"], fits.loc["a", "fit_p_max"], fits.loc["a", "fit_points"]) == (1, 100, 3)
    assert math.isnan(fits.loc["a", "stops_from_p"]) and fits.loc["a", "missed_ps"] == ""
    assert fits.loc["b", "exponent_time"] == pytest.approx(1.0, abs=1e-12) and fits.loc["b", "stops_from_p"] == 100
    assert fits.loc["b", "reached_ps"] == "1,10" and fits.loc["b", "missed_ps"] == "100,1000"
    assert math.isnan(fits.loc["c", "exponent_time"]) and "1 size" in fits.loc["c", "note"]
    assert fits.loc["c", "stops_from_p"] == 10
    assert math.isnan(fits.loc["d", "stops_from_p"]) and fits.loc["d", "missed_ps"] == "10"
    # every reached cell is a point: log10 t at p=1 is the mean of log10 1 and log10 4, slope to log10 10 at p=10
    assert fits.loc["e", "exponent_time"] == pytest.approx(1 - math.log10(2), abs=1e-12)
    assert fits.loc["e", "missed_ps"] == "10" and fits.loc["e", "stops_from_p"] == 10


# ------------------------------------------------------------------------------------ tuner configurations
def test_tuner_option_is_a_toml_inline_table_validated_like_suite_files(tmp_path):
    c = parse_tuner_option('{label = "cg5", name = "gradient", params = {method = "cg", '
                           'method_opts = {max_iter = 5, tol = 1e-8}, inner = "exact"}}')
    assert c.label == "cg5" and c.params == {"method": "cg", "method_opts": {"max_iter": 5, "tol": 1e-8},
                                             "inner": "exact"}
    assert parse_tuner_option('{name = "random"}').label == "random"  # the label defaults to the name
    b = parse_tuner_option('{name = "tpe", label = "t", budget = {steps = 5}, timeout = 60.0}')
    assert b.table() == {"name": "tpe", "label": "t", "params": {}, "budget": {"steps": 5}, "timeout": 60.0}
    with pytest.raises(SweepError, match=r"option --tuner 'x=nosuch' must be a TOML inline table like"):
        parse_tuner_option("x=nosuch")
    with pytest.raises(SweepError, match=r"key `tuner\[0\].name` must be a registered tuner name \(.*random"):
        parse_tuner_option('{name = "nosuch"}')
    with pytest.raises(SweepError, match=r"tuner 'gradient': parameter `outer` must be one of"):
        parse_tuner_option('{name = "gradient", params = {outer = "newton"}}')
    with pytest.raises(SweepError, match="tuner 'random': unknown parameter 'bogus'; known parameters: inner"):
        parse_tuner_option('{name = "random", params = {bogus = 1}}')
    with pytest.raises(SweepError, match=r"key `tuner\[0\].tasks` must be one of the keys a sweep takes"):
        parse_tuner_option('{name = "random", tasks = ["p1"]}')
    assert [c.label for c in select_tuners(["tpe", "random"], [])] == ["tpe", "random"]
    with pytest.raises(SweepError, match="unknown configuration 'nope'; known: gradient-cg"):
        select_tuners(["nope"], [])
    with pytest.raises(SweepError, match="used twice"):
        select_tuners(["random"], [parse_tuner_option('{name = "random"}')])
    f = tmp_path / "t.toml"
    f.write_text('[[tuner]]\nlabel = "g"\nname = "gradient"\nparams = { method = "exact", inner = "exact" }\n'
                 '[[tuner]]\nname = "random"\n')
    assert [(c.label, c.params) for c in load_tuner_file(f)] == [("g", {"method": "exact", "inner": "exact"}),
                                                                 ("random", {})]
    f.write_text('[[tuner]]\nlabel = "g"\nname = "gradient"\nparam = {}\n')
    with pytest.raises(SweepError, match=r"--tuners-file .*key `tuner\[0\].param` must be one of the keys"):
        load_tuner_file(f)
    f.write_text('seeds = [0]\n[[tuner]]\nname = "random"\n')
    with pytest.raises(SweepError, match="key `seeds` must be absent: a tuners file holds only"):
        load_tuner_file(f)
    f.write_text('[[tuner]]\nname = "random"\n[[tuner]]\nname = "random"\n')
    with pytest.raises(SweepError, match=r"key `tuner\[\*\].label` must be unique"):
        load_tuner_file(f)


# ------------------------------------------------------------------------------------ suites from dicts
def test_suite_from_dict_is_validated_like_a_file(tmp_path):
    d = scaling_suite([2, 4], [TunerConfig("r", "random", {}), TunerConfig("e", "gradient", {"method": "exact"},
                                                                           {"budget": {"steps": 3}})],
                      seconds=1.5, steps=None, n_factor=3, seeds=[0, 4], task_params={"rho": 0.25})
    text = suite_toml(d, header="a header\n\nwith a blank line")
    assert tomllib.loads(text) == d
    f = tmp_path / "s.toml"
    f.write_text(text)
    from_file, from_dict = load_suite(str(f)), Suite.from_dict(d, source=str(f))
    assert [c.config_hash() for c in from_file.cells()] == [c.config_hash() for c in from_dict.cells()]
    assert len(from_dict.cells()) == 8 and from_dict.name == "scaling" and from_dict.path == str(f)
    assert from_dict.tasks[1].params == {"n": 12, "p": 4, "rho": 0.25} and from_dict.tuners[1].budget.steps == 3
    d["task"][0]["params"]["p"] = 3  # from_dict copied d
    assert from_dict.tasks[0].params["p"] == 2
    for bad, needle in ((dict(d, seeds=[0, 0]), "key `seeds` must be free of repeats, but got [0, 0]"),
                        (dict(d, budget={"steps": 0}), "key `budget.steps` must be an integer >= 1, but got 0"),
                        (dict(d, colour=1), "key `colour` must be one of the known keys"),
                        ({"seeds": [0]}, "key `task` must be a non-empty array of tables")):
        with pytest.raises(SuiteError) as exc:
            Suite.from_dict(bad, source="<mine>")
        assert str(exc.value).startswith("suite file '<mine>': ") and needle in str(exc.value), str(exc.value)
    with pytest.raises(SuiteError, match="must be a table"):
        Suite.from_dict([1], source="<mine>")
    odd = {"s": 'quote " and \\ back', "f": [1e-09, 2.0, -0.5, 1e300], "b": [True, False], "t": {"a b": {"c": 1}}}
    assert tomllib.loads(suite_toml(odd)) == odd


# ------------------------------------------------------------------------------------ CLI
def test_cli_frontier_writes_records_and_figures(monkeypatch, capsys, tmp_path):
    out = tmp_path / "fr"
    code, stdout, err = invoke(monkeypatch, capsys, "sweep", "frontier", "--task", "ridge_per_feature", "-p", "n=40",
                               "-p", "p=4", "--seed", "2", "--theta", "random", "--methods", "cg,exact,reverse",
                               "--grid", "reverse=1,5", "--repeats", "1", "--out", str(out))
    assert code == 0, err
    assert "Frontier" in stdout and "reverse" in stdout
    for ext in ("csv", "json", "png", "pdf"):
        assert (out / f"frontier.{ext}").stat().st_size > 0
    doc = json.loads((out / "frontier.json").read_text())
    assert doc["task"]["params"]["p"] == 4 and doc["seed"] == 2 and doc["theta_mode"] == "random"
    assert doc["provenance"]["packages"]["torch"] == torch.__version__ and doc["provenance"]["host"]
    task = get_task("ridge_per_feature", n=40, p=4, seed=2)
    assert task.space.contains(torch.tensor(doc["theta"], dtype=torch.float64))
    assert doc["theta"] != task.space.init_theta().tolist()
    csv = pd.read_csv(out / "frontier.csv")
    assert sorted(csv[csv["method"] == "reverse"]["knob_value"]) == [1, 5] and len(doc["rows"]) == len(csv)


def test_cli_scaling_writes_suite_run_records_and_figure(monkeypatch, capsys, tmp_path):
    out = tmp_path / "sc"
    code, stdout, err = invoke(monkeypatch, capsys, "sweep", "scaling", "--p", "1,2", "--tuners", "gradient-exact",
                               "--tuner", '{label = "rnd", name = "random"}', "--steps", "5", "--seconds", "5",
                               "--target", "0.01", "--oracle-seconds", "20", "--quiet", "--out", str(out))
    assert code == 0, err
    for name in ("suite.toml", "scaling.csv", "scaling.json", "scaling_fits.csv", "scaling.png", "scaling.pdf",
                 "run/records.parquet", "run/provenance.json", "run/run.log"):
        assert (out / name).stat().st_size > 0
    assert "Exponent of time (cost) to target in p" in stdout and "suite: " in stdout
    assert len(list((out / "oracles").glob("*.json"))) == 2
    csv = pd.read_csv(out / "scaling.csv")
    assert list(csv["label"]) == ["gradient-exact", "rnd"] * 2 and (csv["evals"] == 5).all()
    doc = json.loads((out / "scaling.json").read_text())
    assert doc["budget"] == {"steps": 5, "seconds": 5.0} and set(doc["oracles"]) == {"p1/seed0", "p2/seed0"}
    assert [f["label"] for f in doc["fits"]] == ["gradient-exact", "rnd"] and len(doc["rows"]) == 4
    prov = json.loads((out / "run" / "provenance.json").read_text())
    assert doc["provenance"]["created"] == prov["created"] and "sweep scaling" in prov["command_line"]
    assert doc["provenance"]["executor"] == {"kind": "process-pool", "workers": 1}


@pytest.mark.parametrize("args, needle", [
    (["frontier", "--task", "nosuch"], "unknown task 'nosuch'; known tasks: "),
    (["frontier", "--task", "ridge", "--methods", "cg,bogus"], "unknown hypergradient method 'bogus'; known"),
    (["frontier", "--task", "ridge", "--theta", "middle"], "option --theta must be 'init' or 'random'"),
    (["frontier", "--task", "ridge", "--grid", "exact=1,2"], "method 'exact' has no accuracy knob"),
    (["frontier", "--task", "ridge", "--grid", "cg=1,x"], "option --grid cg must be a comma-separated list"),
    (["frontier", "--task", "ridge", "--repeats", "0"], "option --repeats must be an integer >= 1"),
    (["frontier", "--task", "ridge", "-p", "n=-5"], "parameter `n` must be"),
    (["frontier", "--task", "ridge", "-p", "nn=5"], "option --param: task 'ridge' takes"),
    (["scaling", "--p", "1,0"], "option --p must be a comma-separated list of integers >= 1"),
    (["scaling", "--tuners", "gradient-cg,nope"], "unknown configuration 'nope'; known: gradient-cg"),
    (["scaling", "--tuner", "x=nosuch"], "option --tuner 'x=nosuch' must be a TOML inline table like"),
    (["scaling", "--tuner", '{name = "nosuch"}'], "key `tuner[0].name` must be a registered tuner name"),
    (["scaling", "--tuner", '{name = "gradient", params = {method = "bogus"}}'],
     "unknown hypergradient method 'bogus'"),
    (["scaling", "--target", "2"], "option --target must be a fraction"),
    (["scaling", "--param", "p=3"], "`p` is set by the sweep"),
    (["scaling", "--seed", "0,x"], "option --seed must be a comma-separated list of integers >= 0"),
    (["scaling", "--force"], "option --force must come with --resume"),  # the rule and words of `run`
    (["frontier", "--task", "ridge", "--retry-failed"], "option --retry-failed must come with --resume"),
    (["frontier", "--task", "ridge", "--workers", "0"], "--workers"),
    (["scaling", "--threads", "0"], "--threads"),
    (["scaling", "--timeout", "-1"], "option --timeout must be a number of seconds > 0"),
    (["scaling", "--tuners-file", "/nonexistent/t.toml"], "option --tuners-file '/nonexistent/t.toml': cannot read"),
    (["scaling", "--sparse-above", "-1"], "option --sparse-above must be an integer >= 0, but got -1"),
    (["scaling", "--sparse-above", "10", "--param", 'dataset="diabetes"'], "`dataset` is set by --sparse-above"),
    (["scaling", "--row-nnz", "5"], "option --row-nnz sets the density of the sparse sizes: it needs --sparse-above"),
    (["scaling", "--sparse-above", "10", "--row-nnz", "0"], "option --row-nnz must be a number > 0, but got 0"),
    (["scaling", "--p", "20,40", "--sparse-above", "10", "--row-nnz", "30"],
     "option --row-nnz: 30 non-zeros per row needs p >= 30, but the sparse sizes include p = 20"),
])
def test_cli_sweep_bad_input_is_one_line_exit_2(monkeypatch, capsys, tmp_path, args, needle):
    code, out, err = invoke(monkeypatch, capsys, "sweep", *args, "--out", str(tmp_path / "o"))
    assert code == 2, (out, err)
    assert err.startswith("hpo-bench: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert needle in err, err
    assert not (tmp_path / "o").exists()  # nothing written


def test_scaling_suite_puts_sizes_above_sparse_above_on_text_like_data():
    d = scaling_suite([5, 10, 20], CFGS[:1], sparse_above=10, task_params={"noise": 0.5})
    params = {t["label"]: t["params"] for t in d["task"]}
    assert params["p5"] == {"n": 25, "p": 5, "noise": 0.5} and params["p10"] == {"n": 50, "p": 10, "noise": 0.5}
    assert params["p20"] == {"n": 100, "p": 20, "noise": 0.5, "dataset": "text-like", "density": 1e-3}
    assert [t["params"] for t in scaling_suite([20], CFGS[:1])["task"]] == [{"n": 100, "p": 20}]  # default: dense
    # --row-nnz: the same expected non-zeros per row at every sparse size (density K / p)
    d = scaling_suite([5, 20, 40], CFGS[:1], sparse_above=10, row_nnz=4)
    assert [t["params"].get("density") for t in d["task"]] == [None, 0.2, 0.1]
    rows = get_task("ridge_per_feature", **d["task"][2]["params"]).x_train
    assert 2 < rows._nnz() / rows.shape[0] < 8  # about 4 per row


def test_cli_scaling_sparse_above_runs_the_large_sizes_on_sparse_data(monkeypatch, capsys, tmp_path):
    out = tmp_path / "sp"
    code, stdout, err = invoke(monkeypatch, capsys, "sweep", "scaling", "--p", "2,40", "--sparse-above", "10",
                               "--tuners", "gradient-cg", "--steps", "3", "--seconds", "5", "--target", "0.01",
                               "--oracle-seconds", "20", "--quiet", "--out", str(out))
    assert code == 0, err
    suite = tomllib.loads((out / "suite.toml").read_text())
    assert [t["params"].get("dataset") for t in suite["task"]] == [None, "text-like"]
    doc = json.loads((out / "scaling.json").read_text())
    assert doc["sparse_above"] == 10 and doc["sparse_params"] == {"dataset": "text-like", "density": 1e-3}
    assert "text-like CSR above p = 10" in stdout
    task = get_task("ridge_per_feature", **suite["task"][1]["params"])
    assert task.sparse and task.x_train.layout == torch.sparse_csr  # what the sparse cell ran on
    frame = pd.read_parquet(out / "run" / "records.parquet")
    sparse_rows = frame[frame["task"].astype(str).str.startswith("p40")]
    assert len(sparse_rows) == 3 and (sparse_rows["reference_error_bound"] < 1e-8).all()
