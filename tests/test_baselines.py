"""Black-box baselines: budgets, bounds, costs, reproducibility, grids, eig grid, errors; the tune step."""

from __future__ import annotations

import json
import logging
import math

import optuna
import pytest
import torch

from hpo_bench import TUNERS, Budget, Recorder, TunerParamError, get_task
from hpo_bench.baselines.ask_tell import sampler_seed
from hpo_bench.baselines.grid import grid_values, points_per_axis, ridge_eig_grid
from hpo_bench.running.suite import SuiteError, load_suite

@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small dense solves: one thread is much faster on a busy 2-core machine (results are the same)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: (registered name, params) of every optuna-driven configuration the suites use.
OPTUNA_CONFIGS = [
    ("tpe", {"n_startup_trials": 4}),
    ("tpe", {"n_startup_trials": 4, "multivariate": True}),
    ("random", {}),
    ("grid", {}),
    ("grid", {"space": "full"}),
    ("cmaes", {}),
    ("cmaes", {"popsize": 6, "separable": True}),
    ("gp", {"n_startup_trials": 4}),
    ("qmc", {}),
    ("optuna", {"sampler": "optuna.samplers.QMCSampler", "sampler_kwargs": {"scramble": True}}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'default'}" for n, p in OPTUNA_CONFIGS]


def run(name, params, task, *, steps=12, seconds=None, seed=0):
    rec = Recorder(task, Budget(steps=steps, seconds=seconds), meta={})
    rec.start()
    TUNERS.get(name)(**params).run(task, rec, seed=seed)
    return rec


def thetas(rec):
    return [tuple(r["theta"]) for r in rec.rows]


def extras(rec):
    return [json.loads(r["extra"]) for r in rec.rows]


def test_every_baseline_is_registered_black_box():
    for name in ("tpe", "random", "grid", "grid_eig", "cmaes", "gp", "qmc", "optuna"):
        cls = TUNERS.get(name)
        assert "black-box" in cls.tags and "gradient-based" not in cls.tags


@pytest.mark.parametrize("name,params", OPTUNA_CONFIGS, ids=IDS)
def test_budget_bounds_costs_and_reproducibility(name, params, ridge_pf):
    rec = run(name, params, ridge_pf, steps=10)
    lo, hi = ridge_pf.space.theta_bounds()
    assert 1 <= len(rec.rows) <= 10
    assert all(r["status"] == "ok" for r in rec.rows)
    for r in rec.rows:
        th = torch.tensor(r["theta"], dtype=torch.float64)
        assert ridge_pf.space.contains(th), (th, lo, hi)
        # every evaluation is a reference inner solve: the recorded loss is F(theta)
        assert math.isclose(r["val_loss"], r["val_loss_ref"], rel_tol=1e-9)
    assert rec.costs["inner_solves"] == len(rec.rows)
    assert rec.costs["inner_steps"] == rec.costs["grad_evals"] == rec.costs["hvps"] == 0
    assert [r["inner_solves"] for r in rec.rows] == list(range(1, len(rec.rows) + 1))  # cumulative, one per row
    assert [e["trial"] for e in extras(rec)] == list(range(len(rec.rows)))
    again = run(name, params, ridge_pf, steps=10)
    assert thetas(again) == thetas(rec)
    assert [r["val_loss"] for r in again.rows] == [r["val_loss"] for r in rec.rows]


@pytest.mark.parametrize("name,params", [c for c in OPTUNA_CONFIGS if c[0] != "grid"],
                         ids=[i for i, c in zip(IDS, OPTUNA_CONFIGS) if c[0] != "grid"])
def test_the_seed_changes_the_proposals(name, params, ridge_pf):
    assert thetas(run(name, params, ridge_pf, steps=6, seed=0)) != thetas(run(name, params, ridge_pf, steps=6, seed=1))


def test_sampler_seed_accepts_the_harness_63_bit_seeds():
    big = 2**63 - 25
    s = sampler_seed(big)
    assert 0 <= s < 2**32 and s == sampler_seed(big) and s != sampler_seed(big - 1)
    rec = run("tpe", {}, get_task("ridge", n=40, p=4, seed=0), steps=3, seed=big)
    assert len(rec.rows) == 3


def test_seconds_budget_stops_the_search(ridge):
    rec = run("random", {}, ridge, steps=None, seconds=0.05)
    assert rec.stop_reason == "budget_seconds"
    assert len(rec.rows) >= 1


def test_inexact_inner_solve_is_recorded_as_such(ridge):
    rec = run("random", {"inner": "gd", "inner_steps": 7}, ridge, steps=4)
    n = len(rec.rows)
    assert n == 4
    assert rec.costs["inner_solves"] == 0
    assert rec.costs["inner_steps"] == rec.costs["grad_evals"] == 7 * n
    assert rec.costs["hvps"] > 0  # the 1/L power iteration
    # w_T after 7 steps is not the reference solution: its validation loss differs from F(theta)
    assert any(not math.isclose(r["val_loss"], r["val_loss_ref"], rel_tol=1e-6) for r in rec.rows)
    fixed = run("random", {"inner": "gd", "inner_steps": 7, "inner_lr": 0.01}, ridge, steps=2)
    assert fixed.costs["hvps"] == 0


def test_infeasible_proposals_are_failed_trials_counted_in_the_budget(seed_toy):
    # raw λ in [-100, 100]: where λ < -(smallest Gram eigenvalue) the inner problem has no minimiser
    rec = run("random", {}, seed_toy, steps=20)
    skipped = sum(e.get("infeasible", 0) for e in extras(rec))
    assert skipped > 0
    assert all(r["status"] == "ok" for r in rec.rows)
    trials = extras(rec)[-1]["trial"] + 1
    assert trials <= 20 and len(rec.rows) + skipped <= trials
    assert rec.costs["inner_solves"] == trials or rec.costs["inner_solves"] == 20


def test_grid_block_is_a_shared_lambda_grid_capped_by_the_budget(ridge_pf):
    rec = run("grid", {}, ridge_pf, steps=9)
    assert len(rec.rows) == 9
    for r in rec.rows:
        assert len(set(r["theta"])) == 1  # one block: every feature shares the grid's λ
    lo, hi = ridge_pf.space.blocks[0].theta_bounds
    assert sorted(r["theta"][0] for r in rec.rows) == pytest.approx(grid_values(lo, hi, 9))
    e = extras(rec)[0]
    assert e["grid_space"] == "block" and e["grid_axes"] == 1 and e["grid_points_per_axis"] == 9
    assert e["grid_size"] == 9 and e["grid_complete"] is True


def test_grid_full_factorial_is_honest_about_many_axes(ridge_pf):
    d = ridge_pf.space.dim  # 6 axes
    assert points_per_axis(100, d) == 2 and 2**d <= 100 < 3**d
    rec = run("grid", {"space": "full"}, ridge_pf, steps=100)
    e = extras(rec)[0]
    assert e["grid_axes"] == d and e["grid_points_per_axis"] == 2 and e["grid_size"] == 64
    assert len(rec.rows) == 64 and len(set(thetas(rec))) == 64  # the grid, each point once, then stop
    assert rec.stop_reason == "search space exhausted"
    small = run("grid", {"space": "full"}, ridge_pf, steps=10)  # 2**6 > 10: one point, the centre
    assert extras(small)[0]["grid_points_per_axis"] == 1 and len(small.rows) == 1
    assert small.rows[0]["theta"] == pytest.approx([0.0] * d)  # centre of [log 1e-6, log 1e6]


def test_grid_with_points_truncated_by_the_budget_says_so(ridge):
    rec = run("grid", {"points": 50}, ridge, steps=10)
    assert len(rec.rows) == 10 and extras(rec)[0]["grid_complete"] is False


def test_points_per_axis():
    assert points_per_axis(30, 1) == 30
    assert points_per_axis(30, 2) == 5
    assert points_per_axis(27, 3) == 3
    assert points_per_axis(26, 3) == 2
    assert points_per_axis(5, 50) == 1


def test_grid_eig_matches_reference_solves_with_one_decomposition():
    task = get_task("ridge", n=50, p=30, seed=0)
    rec = run("grid_eig", {}, task, steps=25)
    assert len(rec.rows) == 25
    assert rec.costs["inner_solves"] == 1 and rec.costs["grad_evals"] == rec.costs["hvps"] == 0
    for r in rec.rows:
        assert math.isclose(r["val_loss"], r["val_loss_ref"], rel_tol=1e-8)
        w_ref = task.solve(torch.tensor(r["theta"], dtype=torch.float64))
        assert math.isclose(r["test_loss"], float(task.test_loss(w_ref)), rel_tol=1e-8)
    # the same grid as `grid` on a scalar penalty, so the same best point
    grid = run("grid", {}, task, steps=25)
    best = min(rec.rows, key=lambda r: r["val_loss"])["theta"]
    assert best == pytest.approx(min(grid.rows, key=lambda r: r["val_loss"])["theta"])
    assert sorted(t for (t,) in thetas(rec)) == pytest.approx(sorted(t for (t,) in thetas(grid)))
    assert [r["theta"][0] for r in rec.rows] == sorted(r["theta"][0] for r in rec.rows)  # ascending


def test_ridge_eig_grid_vs_direct_solves(seed_toy):
    thetas_ = torch.tensor([-0.4, 0.0, 0.5, 2.0, 50.0], dtype=torch.float64)  # raw λ; Gram eigenvalues 0.53, 1.17
    w, val, feasible = ridge_eig_grid(seed_toy, thetas_)
    assert bool(feasible.all())
    for k, th in enumerate(thetas_):
        w_ref = seed_toy.solve(th.reshape(1))
        assert torch.allclose(w[k], w_ref, rtol=1e-9, atol=1e-12)
        assert math.isclose(float(val[k]), float(seed_toy.outer_loss(w_ref)), rel_tol=1e-9)
    _, _, feas = ridge_eig_grid(seed_toy, torch.tensor([-100.0, 1.0], dtype=torch.float64))
    assert feas.tolist() == [False, True]


def test_grid_eig_order_and_shuffle_reproducible(ridge):
    desc = run("grid_eig", {"order": "descending"}, ridge, steps=10)
    assert [r["theta"][0] for r in desc.rows] == sorted((r["theta"][0] for r in desc.rows), reverse=True)
    a = run("grid_eig", {"order": "shuffled"}, ridge, steps=10, seed=4)
    b = run("grid_eig", {"order": "shuffled"}, ridge, steps=10, seed=4)
    assert thetas(a) == thetas(b) and sorted(thetas(a)) == sorted(thetas(desc))


def test_grid_eig_refuses_tasks_it_cannot_decompose(ridge_pf):
    with pytest.raises(ValueError, match="one scalar penalty"):
        run("grid_eig", {}, ridge_pf, steps=5)


@pytest.mark.parametrize("name,params,key", [
    ("tpe", {"n_startup_trials": -1}, "n_startup_trials"),
    ("tpe", {"multivariate": "yes"}, "multivariate"),
    ("tpe", {"inner": "newton"}, "inner"),
    ("random", {"inner_steps": 0}, "inner_steps"),
    ("random", {"inner_lr": -1.0}, "inner_lr"),
    ("grid", {"space": "diagonal"}, "space"),
    ("grid", {"points": 0}, "points"),
    ("cmaes", {"separable": "yes"}, "separable"),
    ("cmaes", {"popsize": 1}, "popsize"),
    ("grid_eig", {"order": "random"}, "order"),
])
def test_bad_parameters_are_one_line_errors(name, params, key):
    with pytest.raises(TunerParamError) as exc:
        TUNERS.get(name)(**params)
    msg = str(exc.value)
    assert "\n" not in msg and f"`{key}`" in msg and repr(next(iter(params.values()))) in msg


def test_optuna_logging_is_silenced_and_restored(ridge, caplog):
    before = optuna.logging.get_verbosity()
    with caplog.at_level(logging.INFO):
        run("tpe", {}, ridge, steps=3)
    assert not [r for r in caplog.records if r.name.startswith("optuna") and r.levelno <= logging.INFO]
    assert optuna.logging.get_verbosity() == before


# ------------------------------------------------------------------------------ tune step
TUNE_SUITE = """
name = "tunetest"
seeds = [0, 1]
[budget]
steps = 5
[tune]
seeds = [100, 101]
{scope}
[[task]]
name = "ridge"
params = {{ n = 40, p = 5 }}
[[task]]
name = "seed_toy"
label = "toy"
params = {{ transform = "log" }}
[[tuner]]
name = "gradient"
label = "gd"
params = {{ method = "exact", inner = "exact" }}
tune = {{ outer_lr = [0.001, 0.5] }}
[[tuner]]
name = "random"
"""


def write(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_tune_schema_is_parsed_and_validated(tmp_path):
    s = load_suite(write(tmp_path, TUNE_SUITE.format(scope="")))
    assert s.tune.seeds == (100, 101) and s.tune.scope == "task"
    assert s.tune.grids == {"gd": {"outer_lr": [0.001, 0.5]}}
    assert s.tune.combos("gd") == [{"outer_lr": 0.001}, {"outer_lr": 0.5}]
    bad = {
        "tune.seeds": TUNE_SUITE.format(scope="").replace("seeds = [100, 101]", "seeds = [1, 100]"),
        "tune.scope": TUNE_SUITE.format(scope='scope = "global"'),
        "tuner[0].tune.outer_lr": TUNE_SUITE.format(scope="").replace("[0.001, 0.5]", "[]"),
        "tuner[0].tune": TUNE_SUITE.format(scope="").replace("outer_lr = [0.001, 0.5]", "outer_lrr = [0.1, 0.2]"),
    }
    for key, text in bad.items():
        with pytest.raises(SuiteError) as exc:
            load_suite(write(tmp_path, text, f"{key}.toml"))
        assert f"`{key}`" in str(exc.value) and "\n" not in str(exc.value)
    no_table = TUNE_SUITE.format(scope="").replace("[tune]\nseeds = [100, 101]\n", "")
    with pytest.raises(SuiteError, match="tune.seeds"):
        load_suite(write(tmp_path, no_table, "nt.toml"))
    with pytest.raises(SuiteError, match="absent from tuner"):
        load_suite(write(tmp_path, TUNE_SUITE.format(scope="").replace(
            'inner = "exact" }', 'inner = "exact", outer_lr = 0.1 }'), "dup.toml"))


@pytest.mark.parametrize("scope", ["suite"])  # scope "task" runs end to end in the command test below
def test_tune_step_chooses_on_tuning_seeds_and_records_it(tmp_path, scope):
    from hpo_bench.analysis.tune import read_choices, tune_suite, tuning_suite

    s = load_suite(write(tmp_path, TUNE_SUITE.format(scope=f'scope = "{scope}"')))
    ts = tuning_suite(s)
    cells = ts.cells()
    assert {c.seed for c in cells} == {100, 101}  # never the evaluation seeds
    assert {c.tuner.label for c in cells} == {"gd.tune0", "gd.tune1"}  # untuned tuners do not run
    resolved, doc = tune_suite(s, tmp_path / "run" / "tune")
    choices = read_choices(tmp_path / "run")
    assert choices["seeds"] == [100, 101] and choices["scope"] == scope
    (entry,) = choices["tuners"]
    assert entry["label"] == "gd" and len(entry["scores"]) == 4  # 2 combinations x 2 tasks
    # the choice is the lowest mean over tuning seeds (lr 0.001 barely moves λ in 5 steps)
    for task, c in entry["choice"]["by_task"].items():
        mine = [sc for sc in entry["scores"] if sc["task"] == task]
        best = min(mine, key=lambda sc: (float(sc["score"]), sc["combo"]))
        if scope == "task":
            assert c["combo"] == best["combo"]
        assert c["params"] == {"outer_lr": 0.5}
    gd = [e for e in resolved.tuners if e.label == "gd"]
    assert all(e.params["outer_lr"] == 0.5 and e.params["method"] == "exact" for e in gd)
    assert len(gd) == (2 if scope == "task" else 1)
    # the clean cells keep their ids (same labels) and run on the evaluation seeds only
    assert {c.cell_id for c in resolved.cells()} == {c.cell_id for c in s.cells()}
    assert resolved.tune is None


def test_tune_command_tunes_then_runs_the_clean_seeds(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from hpo_bench import cli

    path = write(tmp_path, TUNE_SUITE.format(scope=""))
    out = tmp_path / "run"
    monkeypatch.setattr("sys.argv", ["hpo-bench", "tune", path, "--out", str(out), "-q"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 0, capsys.readouterr().err
    choices = json.loads((out / "tune" / "choices.json").read_text())
    (entry,) = choices["tuners"]
    chosen = {task: c["params"]["outer_lr"] for task, c in entry["choice"]["by_task"].items()}
    assert set(chosen) == {"ridge", "toy"} and choices["scope"] == "task"
    for task, c in entry["choice"]["by_task"].items():  # scope "task": the lowest mean score per task
        mine = [sc for sc in entry["scores"] if sc["task"] == task]
        assert c["combo"] == min(mine, key=lambda sc: (float(sc["score"]), sc["combo"]))["combo"]
        assert len(mine) == 2 and all(len(sc["per_seed"]) == 2 for sc in mine)
    df = pd.read_parquet(out / "records.parquet")
    assert set(df["seed"]) == {0, 1}
    for (task, label), g in df.groupby(["task", "tuner_label"]):
        params = json.loads(g["tuner_params"].iloc[0])
        if label == "gd":
            assert params["outer_lr"] == chosen[task]
    assert (out / "tune" / "records.parquet").is_file()
    assert not list(tmp_path.glob(".run.tune-*"))  # the staging folder was moved into the run folder
    # a suite without a tune step, or a used folder, is a one-line error
    monkeypatch.setattr("sys.argv", ["hpo-bench", "tune", path, "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "new or empty folder" in err and err.count("\n") == 1
    monkeypatch.setattr("sys.argv", ["hpo-bench", "tune", "quick", "--out", str(tmp_path / "q")])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "declares no tune step" in err


def _eig_grid_direct(task, thetas_):
    """The textbook evaluation (the previous implementation): every w(λ), then the n_val x K residuals."""
    lam = torch.exp(thetas_) if task.space.blocks[0].transform == "log" else thetas_
    s, v = torch.linalg.eigh(2 * task.a * task.gram)
    z = v.T @ (2 * task.a * task.xty)
    d = s.unsqueeze(0) + 2 * task.b * lam.unsqueeze(1)
    w = (z.unsqueeze(0) / d) @ v.T
    resid = w @ task.x_val.T - task.y_val.unsqueeze(0)
    return w, (resid * resid).mean(dim=1)


def _fallback_rounding_bound(task, w):
    """How far two float64 evaluations of ``mean((X_v w - y_v)^2)`` may differ when each forms
    ``w = V u`` with its own ``p``-term dot products (``V`` orthogonal, so ``|w_j - fl(w_j)| <=
    γ_p ||u|| = γ_p ||w||``) and then its own residual products (``γ_p Σ_j |X_ij| |w_j|`` each), with
    ``γ_k = k ε / (1 - k ε)`` (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1)."""
    xv, yv = task.x_val, task.y_val
    m, p = xv.shape
    eps = torch.finfo(xv.dtype).eps
    gamma = lambda k: k * eps / (1 - k * eps)  # noqa: E731
    ax = xv.abs()
    dw = 2 * gamma(p) * torch.linalg.vector_norm(w, dim=1, keepdim=True)  # (K, 1): both paths' w errors
    dr = dw * ax.sum(dim=1) + 2 * gamma(p + 1) * (w.abs() @ ax.T + yv.abs())  # (K, m)
    r = (w @ xv.T - yv).abs()
    return (2 * r * dr + dr * dr).mean(dim=1) * (1 + gamma(m)) + 2 * gamma(m) * (r * r).mean(dim=1)


@pytest.mark.parametrize("params", [
    dict(n=1000, p=100, n_val=500, noise=5.0, seed=0),   # the benchmark's instance (X_v^T X_v branch)
    dict(n=80, p=40, n_val=30, noise=1.0, seed=2),        # n_val < 2p: the (X_v V)^T (X_v V) branch
    dict(n=200, p=20, noise=0.0, seed=1),                 # noiseless: near-perfect fits at small λ (direct fallback)
])
def test_ridge_eig_grid_small_matrices_match_the_direct_residuals(params):
    task = get_task("ridge", **params)
    lo, hi = task.space.blocks[0].theta_bounds
    thetas_ = torch.tensor(grid_values(lo, hi, 200), dtype=torch.float64)
    w_ref, val_ref = _eig_grid_direct(task, thetas_)
    w, val, feasible = ridge_eig_grid(task, thetas_)
    assert bool(feasible.all())
    assert torch.allclose(val, val_ref, rtol=1e-8, atol=0.0)
    assert torch.allclose(w, w_ref, rtol=1e-9, atol=1e-12 * float(w_ref.abs().max()))
    # the two evaluations agree to 1e-8, so their argmins may differ only between near-tied grid points
    assert float(val_ref[int(torch.argmin(val))]) <= float(val_ref.min()) * (1 + 2e-8)
    none, val2, _ = ridge_eig_grid(task, thetas_, weights=False)
    assert none is None
    # the losses-only path forms the near-perfect-fit rows' weights with a smaller product (u[idx] @ V^T
    # instead of rows of U @ V^T): another GEMM kernel, so the rows agree to rounding, not bitwise
    assert bool((torch.abs(val2 - val) <= _fallback_rounding_bound(task, w)).all())
    if params["noise"] == 0.0:  # the fallback really was exercised: some fits are near perfect
        assert float(val_ref.min()) < 1e-7 * float(task.y_val @ task.y_val) / task.y_val.shape[0]


def test_ridge_eig_grid_infeasible_rows_are_nan_and_the_rest_exact(seed_toy):
    thetas_ = torch.tensor([-100.0, -0.4, 0.5, 50.0], dtype=torch.float64)  # raw λ: the first has no minimiser
    w, val, feasible = ridge_eig_grid(seed_toy, thetas_)
    assert feasible.tolist() == [False, True, True, True]
    assert bool(torch.isnan(w[0]).all()) and math.isnan(float(val[0]))
    for k in (1, 2, 3):
        w_ref = seed_toy.solve(thetas_[k].reshape(1))
        assert math.isclose(float(val[k]), float(seed_toy.outer_loss(w_ref)), rel_tol=1e-9)


@pytest.mark.parametrize("name, params, bad", [
    ("random", {"n_trails": 5}, "'n_trails'"),
    ("tpe", {"n_startup_trial": 3}, "'n_startup_trial'"),
    ("cmaes", {"popsize": 4, "sigma": 1.0}, "'sigma'"),
    ("grid", {"pionts": 5}, "'pionts'"),
])
def test_misspelt_parameters_of_optuna_tuners_are_errors(name, params, bad):
    """Keywords pass through **params to the base class; only declared ones may arrive there."""
    with pytest.raises(TunerParamError, match=f"tuner '{name}': unknown parameter {bad}; known parameters: "
                                              f".*inner.*inner_steps"):
        TUNERS.get(name)(**params)
    TUNERS.get(name)(**{k: v for k, v in params.items() if f"'{k}'" != bad})  # the declared ones are fine
