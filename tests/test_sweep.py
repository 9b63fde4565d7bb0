"""hpo-bench sweep: the accuracy-cost frontier (errors, HVP counts, peak memory) and the scaling sweep
(oracle, time-to-target by TargetRecorder's rule), end to end through the CLI, and bad input."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from _runs import invoke
from hpo_bench import get_task
from hpo_bench.oracle import compute_oracle
from hpo_bench.sweep import (FRONTIER_COLUMNS, SCALING_COLUMNS, SweepError, TunerConfig, default_grids, frontier,
                             load_tuner_file, one_two_five, oracle_options, parse_tuner_spec, peak_memory, scaling,
                             select_tuners)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ridge20():
    return get_task("ridge_per_feature", n=100, p=20, rho=0.5, seed=1)


@pytest.fixture(scope="module")
def table20(ridge20):
    grids = {"cg": [1, 2, 5, 10, 20, 50], "neumann": [1, 5, 20, 100, 500], "fixed_point": [1, 10, 100],
             "reverse": [10, 50, 200], "truncated": [5, 50], "forward": [5, 50]}
    return frontier(ridge20, grids=grids, repeats=1, truncated_steps=200, stop_when_converged=False)




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


def test_frontier_defaults_skip_and_cap_forward_and_stop_converged_cg(ridge20):
    grids, notes = default_grids(["cg", "forward", "reverse", "exact"], n_params=20, n_hyper=20, max_iters=100)
    assert grids["cg"] == one_two_five(50) and grids["exact"] is None and grids["reverse"][-1] == 100
    assert grids["forward"] == grids["reverse"] and not notes
    grids, notes = default_grids(["forward"], n_params=20, n_hyper=500)
    assert "forward" not in grids and "forward skipped: m = 500" in notes[0]
    grids, notes = default_grids(["forward"], n_params=20, n_hyper=150, forward_max_hvp=3000)
    assert max(grids["forward"]) <= 20 and "forward capped at T <= 20" in notes[0]
    table, info = frontier(ridge20, methods=["cg"], grids={"cg": [1, 2, 5, 10, 20, 50, 100, 200]}, repeats=1,
                           memory=False)
    cg = table.sort_values("knob_value")
    assert cg["converged"].iloc[-1] and cg["rel_error"].iloc[-1] <= 1e-8
    assert cg["iterations"].iloc[-1] < cg["knob_value"].iloc[-1]  # stopped at tol before max_iter
    assert cg["knob_value"].max() <= 50 and any("cg converged at max_iter=" in n for n in info["notes"])
    assert (table["mem_measure"] == "off").all()


def test_frontier_bad_grids(ridge20):
    with pytest.raises(SweepError, match="has no accuracy knob"):
        frontier(ridge20, methods=["exact"], grids={"exact": [1]})
    with pytest.raises(SweepError, match="not swept"):
        frontier(ridge20, methods=["cg"], grids={"neumann": [1]})
    with pytest.raises(SweepError, match="integers >= 1"):
        frontier(ridge20, methods=["cg"], grids={"cg": [0, 3]})
    with pytest.raises(SweepError, match="truncated K must be <= T = 10"):
        frontier(ridge20, methods=["truncated"], grids={"truncated": [5, 20]}, truncated_steps=10)


# ------------------------------------------------------------------------------------ scaling
def _first_reached(trace: pd.DataFrame, f_star: float, thr: float):
    """TargetRecorder's rule, written out again: new incumbents by val_loss, judged by val_loss_ref."""
    inc = math.inf
    for r in trace.itertuples():
        if math.isfinite(r.val_loss) and r.val_loss < inc:
            inc = r.val_loss
            if r.val_loss_ref - f_star <= thr:
                return r
    return None


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    cfgs = [TunerConfig("gradient-exact", "gradient", {"method": "exact", "inner": "exact", "outer_lr": 0.1}),
            TunerConfig("random3", "random", {}),
            TunerConfig("stuck", "gradient", {"method": "exact", "inner": "exact", "outer_lr": 1e-9})]  # cannot reach
    cache = tmp_path_factory.mktemp("oracles")
    table, trace, info = scaling([1, 3], cfgs, target=1e-2, seconds=20.0, steps=400, seed=0, oracle_cache=cache,
                                 oracle_seconds=30.0, trace="all")
    return table, trace, info, cache


def test_scaling_rows_follow_target_recorders_rule(scaled):
    table, trace, info, _ = scaled
    assert list(table.columns) == list(SCALING_COLUMNS)
    assert len(table) == 6 and set(table["p"]) == {1, 3} and (table["n"] == 5 * table["p"]).all()
    assert table["reached"].any() and not table[table["label"] == "stuck"]["reached"].any()
    for r in table.itertuples():
        t = trace[(trace["p"] == r.p) & (trace["label"] == r.label)].sort_values("step")
        assert len(t) == r.evals and r.status == "ok"
        assert r.threshold == pytest.approx(r.target * r.oracle_gap)
        hit = _first_reached(t, r.oracle_val_loss, r.threshold)
        assert (hit is not None) == r.reached
        if r.reached:
            assert r.evals_to_target == hit.step + 1 and r.time_to_target_s == pytest.approx(hit.time_s)
            assert hit.val_loss_ref - r.oracle_val_loss <= r.threshold and r.stop_reason == "target"
            assert r.evals == r.evals_to_target  # the tuner stops at the target
        else:
            assert math.isnan(r.time_to_target_s) and r.stop_reason in ("budget_steps", "budget_seconds")
            assert r.final_gap > r.threshold and r.final_gap_frac == pytest.approx(r.final_gap / r.oracle_gap)
    rnd = table[table["label"] == "random3"]
    assert (rnd["evals"] <= 400).all()


def test_scaling_records_contain_the_oracle(scaled):
    table, _, info, cache = scaled
    for p in (1, 3):
        task = get_task("ridge_per_feature", n=5 * p, p=p, seed=0)
        orc = compute_oracle(task, **oracle_options(p, 30.0))
        rows = table[table["p"] == p]
        assert rows["oracle_val_loss"].iloc[0] == pytest.approx(orc.val_loss, rel=1e-9)
        assert rows["oracle_gap"].iloc[0] == pytest.approx(orc.gap, rel=1e-6)
        assert info["oracles"][str(p)]["n_hyper"] == p
    assert len(list(cache.glob("ridge_per_feature-seed0-*.json"))) == 2  # cached for the next run
    assert oracle_options(100, 5.0)["starts"] == 6 and oracle_options(1000, 5.0)["starts"] == 1


def test_tuner_configurations_parse_and_validate(tmp_path):
    c = parse_tuner_spec('cg5=gradient:method="cg",method_opts={max_iter = 5, tol = 1e-8},inner=exact')
    assert c.label == "cg5" and c.params == {"method": "cg", "method_opts": {"max_iter": 5, "tol": 1e-8},
                                             "inner": "exact"}
    assert parse_tuner_spec("r=random").params == {}
    with pytest.raises(Exception, match="known tuners: .*random"):
        parse_tuner_spec("x=nosuch")
    with pytest.raises(SweepError, match="parameter `outer` must be one of"):
        parse_tuner_spec("g=gradient:outer=newton")
    with pytest.raises(SweepError, match="tuner 'random' are inner, inner_lr, inner_steps, but got bogus"):
        parse_tuner_spec("r=random:bogus=1")  # the baseline itself would accept it silently (**params)
    assert parse_tuner_spec("t=tpe:n_startup_trials=5,inner=gd").params == {"n_startup_trials": 5, "inner": "gd"}
    with pytest.raises(SweepError, match="LABEL=NAME"):
        parse_tuner_spec("gradient")
    assert [c.label for c in select_tuners(["tpe", "random"], [])] == ["tpe", "random"]
    with pytest.raises(SweepError, match="unknown configuration 'nope'; known: gradient-cg"):
        select_tuners(["nope"], [])
    with pytest.raises(SweepError, match="used twice"):
        select_tuners(["random"], [parse_tuner_spec("random=random")])
    f = tmp_path / "t.toml"
    f.write_text('[[tuner]]\nlabel = "g"\nname = "gradient"\nparams = { method = "exact", inner = "exact" }\n')
    assert load_tuner_file(f)[0].params["method"] == "exact"
    f.write_text('[[tuner]]\nlabel = "g"\nname = "gradient"\nparam = {}\n')
    with pytest.raises(SweepError, match=r"tuner\[0\]: keys must be label, name, params"):
        load_tuner_file(f)


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


def test_cli_scaling_writes_records_and_figure(monkeypatch, capsys, tmp_path):
    out = tmp_path / "sc"
    code, stdout, err = invoke(monkeypatch, capsys, "sweep", "scaling", "--p", "1,2", "--tuners", "gradient-exact",
                               "--tuner", "rnd=random", "--steps", "5", "--seconds", "5", "--target", "0.01",
                               "--oracle-seconds", "20", "--out", str(out))
    assert code == 0, err
    for name in ("scaling.csv", "scaling.json", "scaling_trace.csv", "scaling.png", "scaling.pdf"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "oracles").glob("*.json"))) == 2
    csv = pd.read_csv(out / "scaling.csv")
    assert list(csv["label"]) == ["gradient-exact", "rnd"] * 2
    doc = json.loads((out / "scaling.json").read_text())
    assert doc["budget"] == {"steps": 5, "seconds": 5.0} and set(doc["oracles"]) == {"1", "2"}
    tr = pd.read_csv(out / "scaling_trace.csv")  # new incumbents and each run's last row only
    for (p, lab), t in tr.groupby(["p", "label"]):
        row = csv[(csv["p"] == p) & (csv["label"] == lab)].iloc[0]
        assert t["incumbent"].iloc[:-1].all() and t["step"].iloc[-1] == row["evals"] - 1
        assert t["val_loss"][t["incumbent"]].is_monotonic_decreasing


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
    (["scaling", "--tuner", "x=nosuch"], "unknown tuner 'nosuch'; known tuners: "),
    (["scaling", "--tuner", "g=gradient:method=bogus"], "unknown hypergradient method 'bogus'"),
    (["scaling", "--target", "2"], "option --target must be a fraction"),
    (["scaling", "--param", "p=3"], "`p` is set by the sweep"),
    (["scaling", "--tuners-file", "/nonexistent/t.toml"], "option --tuners-file '/nonexistent/t.toml': cannot read"),
])
def test_cli_sweep_bad_input_is_one_line_exit_2(monkeypatch, capsys, tmp_path, args, needle):
    code, out, err = invoke(monkeypatch, capsys, "sweep", *args, "--out", str(tmp_path / "o"))
    assert code == 2, (out, err)
    assert err.startswith("hpo-bench: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert needle in err, err
    assert not (tmp_path / "o").exists()  # nothing written
