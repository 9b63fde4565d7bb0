"""`hpo-bench report` on a small fixture run: every table and figure, LaTeX shape, statistics, CLI."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from _runs import invoke
from hpo_bench import cli
from hpo_bench.report import TABLES
from hpo_bench.report.figures import FIGURES
from hpo_bench.report.metrics import ReportError, load_records
from hpo_bench.report.tables import MIN_WILCOXON_SEEDS, group_summary, settings_table, wilcoxon_table

FIXTURE_SUITE = """
name = "fixture"
seeds = [0, 1]
[budget]
steps = 6
[[task]]
name = "ridge"
params = { n = 40, p = 5 }
[[task]]
name = "ridge_per_feature"
label = "ridge_pf"
params = { n = 40, p = 5 }
[[task]]
name = "seed_toy"
label = "toy_log"
params = { transform = "log" }
[[tuner]]
name = "gradient"
label = "cg"
params = { method = "cg", inner = "gd", inner_steps = 20, outer_lr = 0.3 }
[[tuner]]
name = "tpe"
params = { n_startup_trials = 3 }
[[tuner]]
name = "random"
[[tuner]]
name = "grid_eig"
tasks = ["ridge", "toy_log"]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from hpo_bench.running.harness import run_suite
    from hpo_bench.running.suite import load_suite

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small dense solves: one thread is much faster on a busy 2-core machine
    root = tmp_path_factory.mktemp("fixture")
    (root / "suite.toml").write_text(FIXTURE_SUITE)
    run_suite(load_suite(str(root / "suite.toml")), root / "run")
    torch.set_num_threads(n)
    return root / "run"


@pytest.fixture(scope="module")
def report(run_dir):
    """The report, made through the command line (``hpo-bench report RUN_DIR``); returns its printout."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out, err = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("error")  # nothing from seaborn, matplotlib, pandas or scipy may escape
            mp.setenv("HPO_BENCH_CACHE_DIR", str(run_dir.parent / "shared-cache"))  # never the user's cache
            mp.setattr(sys, "argv", ["hpo-bench", "report", str(run_dir)])
            with pytest.raises(SystemExit) as exc:
                cli.main()
    finally:
        torch.set_num_threads(n)
    assert exc.value.code == 0, err.getvalue()
    return out.getvalue()


def test_every_table_and_figure_is_written(report, run_dir):
    out = run_dir / "report"
    printed = report.replace("\n", "")
    for where in (out / "summary.md", out / "tables", out / "figures", run_dir / "oracle"):
        assert str(where) in printed  # the command says where it wrote
    for name in TABLES:
        for ext in ("md", "tex", "csv"):
            p = out / "tables" / f"{name}.{ext}"
            assert p.is_file() and p.stat().st_size > 0, p
    assert (out / "tables" / "cells.csv").is_file()
    for name in FIGURES:
        png, pdf = out / "figures" / f"{name}.png", out / "figures" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.read_bytes()[:5] == b"%PDF-"
    summary = (out / "summary.md").read_text()
    for name in FIGURES:
        assert f"(figures/{name}.png)" in summary and f"(figures/{name}.pdf)" in summary
    for heading in ("## Headline", "## Results", "## Overfitting the validation split", "## Average rank",
                    "## Wilcoxon", "## Tuner settings", "## Oracle"):
        assert heading in summary
    assert "**val–test gap**" in summary and "val_loss_gap_own_w" in summary  # said how to read them
    assert list((run_dir / "oracle").glob("*.json"))  # cached next to the results


def test_results_cover_every_task_and_tuner(report, run_dir):
    res = pd.read_csv(run_dir / "report" / "tables" / "results.csv")
    cells = pd.read_csv(run_dir / "report" / "tables" / "cells.csv")
    assert len(cells) == 2 * (3 * 3 + 2)  # seeds x (tasks x tuners on all + grid_eig on two)
    pairs = set(zip(res["task"], res["tuner"]))
    assert pairs == set(zip(cells["task"], cells["tuner_label"]))
    assert ("ridge_pf", "grid_eig") not in pairs
    assert list(pd.unique(res["task"])) == ["ridge", "ridge_pf", "toy_log"]  # suite order
    for (task, tuner), g in cells.groupby(["task", "tuner_label"]):
        row = res[(res["task"] == task) & (res["tuner"] == tuner)].iloc[0]
        assert row["regret_mean"] == pytest.approx(g["final_regret"].mean(), rel=1e-9)
        assert row["test_mean"] == pytest.approx(g["final_test_loss"].mean(), rel=1e-9)
        assert row["seeds"] == 2
    assert (cells["final_regret"] > -1e-9).all()  # F at the reference solve cannot beat the oracle
    # the validation-test gap of every cell, and its mean per task x tuner in both tables
    # (cells.csv holds 10 significant digits: each loss is off by up to 5e-10 of itself)
    test, val = cells["final_test_loss"].to_numpy(), cells["final_val_loss"].to_numpy()
    off = np.abs(cells["final_val_test_gap"].to_numpy() - (test - val)) - 1e-9 * (np.abs(test) + np.abs(val))
    assert np.all(np.isnan(off) | (off <= 0)) and np.isnan(off).sum() == np.isnan(test - val).sum()
    head = pd.read_csv(run_dir / "report" / "tables" / "headline.csv")
    for (task, tuner), g in cells.groupby(["task", "tuner_label"]):
        for table in (res, head):
            row = table[(table["task"] == task) & (table["tuner"] == tuner)].iloc[0]
            assert row["val_test_gap_mean"] == pytest.approx(g["final_val_test_gap"].mean(), rel=1e-9)
            assert row["overfit_seeds"] == int(g["overfit"].sum())
    for task, g in res.groupby("task"):
        assert g["best"].sum() >= 1
        assert g.loc[g["best"], "regret_mean"].min() == pytest.approx(g["regret_mean"].min())
    # gradient tuners have a hypergradient error, black-box ones do not
    assert res[res["tuner"] == "cg"]["hypergrad_rel_error_median"].notna().all()
    assert res[res["tuner"] == "tpe"]["hypergrad_rel_error_median"].isna().all()


def test_targets_are_not_reached_rather_than_numbers(report, run_dir):
    cells = pd.read_csv(run_dir / "report" / "tables" / "cells.csv")
    for key in ("1pct", "0_1pct"):
        reached = cells[f"reached_{key}"].astype(bool)
        assert cells.loc[~reached, f"time_to_{key}"].isna().all()
        assert cells.loc[~reached, f"cost_to_{key}"].isna().all()
        assert (cells.loc[reached, f"time_to_{key}"] >= 0).all()
    md = (run_dir / "report" / "tables" / "results.md").read_text()
    if (~cells["reached_0_1pct"].astype(bool)).any():
        assert "n.r." in md


def _tex_rows(tex: str) -> list[str]:
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    return [ln for ln in body.splitlines() if ln.strip() and ln.strip() != "\\midrule"]


@pytest.mark.parametrize("name", TABLES)
def test_latex_is_balanced_booktabs(report, run_dir, name):
    tex = (run_dir / "report" / "tables" / f"{name}.tex").read_text()
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", tex):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"unbalanced \\end{{{env}}}"
    assert not stack
    assert tex.index("\\begin{tabular}") < tex.index("\\toprule") < tex.index("\\midrule") \
        < tex.index("\\bottomrule") < tex.index("\\end{tabular}")
    assert tex.count("\\toprule") == 1 and tex.count("\\bottomrule") == 1
    spec = re.findall(r"S\[[^\]]*\]|>\{[^{}]*\}p\{[^{}]*\}|[lrc]",
                      re.search(r"\\begin\{tabular\}\{(.*)\}\n", tex).group(1))
    header = tex.split("\\toprule", 1)[1].split("\\midrule", 1)[0]
    for line in [header.strip()] + _tex_rows(tex):
        assert line.endswith("\\\\")
        assert len(re.findall(r"(?<!\\)&", line)) == len(spec) - 1, line
    body = re.sub(r"\$[^$]*\$", "", tex)  # math mode may hold ^ and \
    assert not re.search(r"(?<!\\)[_%#]", body.split("\n", 1)[1]), "unescaped LaTeX special character"
    assert tex.count("{") == tex.count("}")


def test_latex_marks_the_best_in_bold(report, run_dir):
    tex = (run_dir / "report" / "tables" / "results.tex").read_text()
    res = pd.read_csv(run_dir / "report" / "tables" / "results.csv")
    bold_rows = [ln for ln in _tex_rows(tex) if "\\textbf{" in ln]
    assert len(bold_rows) == int(res["best"].sum())
    task_of = {}  # a task is printed once, \multirow over its rows
    for ln in _tex_rows(tex):
        first = ln.split("&")[0].strip()
        task = re.sub(r"^\\multirow\[t\]\{\d+\}\{\*\}\{(.*)\}$", r"\1", first) or task
        task_of[ln] = task
    for ln in bold_rows:
        tuner = [c.strip() for c in ln.split("&")[:2]][1]
        tuner = tuner.removeprefix("\\textbf{").removesuffix("}").replace("\\_", "_")
        task = task_of[ln].replace("\\_", "_")
        assert bool(res[(res["task"] == task) & (res["tuner"] == tuner)]["best"].iloc[0])


def test_ranks_and_wilcoxon_flags(report, run_dir):
    ranks = pd.read_csv(run_dir / "report" / "tables" / "ranks.csv")
    res = pd.read_csv(run_dir / "report" / "tables" / "results.csv")
    for r in ranks.itertuples():
        assert r.average_rank == pytest.approx(res[res["tuner"] == r.tuner]["rank"].mean())
    assert ranks.set_index("tuner").loc["grid_eig", "tasks"] == 2
    w = pd.read_csv(run_dir / "report" / "tables" / "wilcoxon.csv")
    assert len(w) == len(res) - res["task"].nunique()  # every tuner but the best, per task
    assert w["too_few_seeds"].all()  # two seeds: p < 0.05 is unattainable
    assert w["note"].str.contains("too few seeds").all()


def test_wilcoxon_with_enough_seeds_matches_scipy():
    rng = np.random.default_rng(0)
    n = MIN_WILCOXON_SEEDS + 2
    rows = []
    for tuner, shift in (("good", 0.0), ("bad", 0.3)):
        for s in range(n):
            rows.append({"task": "t", "tuner_label": tuner, "tuner": tuner, "seed": s, "status": "ok",
                         "final_val_loss": 1.0, "final_test_loss": 1.0, "tuner_s": 1.0, "wall_s": 1.0,
                         "cost_units": 1.0,
                         "final_regret": shift + 0.1 * rng.random(), **{f"{w}_to_{k}": np.nan for w in ("time", "cost")
                                                                       for k in ("1pct", "0_1pct")}})
    cells = pd.DataFrame(rows)
    summary = group_summary(cells, cells.assign(hypergrad_rel_error=np.nan))
    w = wilcoxon_table(summary, cells)
    (row,) = w.itertuples()
    assert row.best == "good" and row.tuner == "bad" and row.n == n and not row.too_few_seeds
    ref = stats.wilcoxon(cells[cells.tuner_label == "bad"]["final_regret"].to_numpy(),
                         cells[cells.tuner_label == "good"]["final_regret"].to_numpy())
    assert row.p_value == pytest.approx(ref.pvalue) and row.p_value < 0.05


def test_settings_say_where_each_setting_came_from():
    cells = pd.DataFrame([
        {"tuner_label": "cg", "tuner": "gradient", "task": "a", "tuner_params": json.dumps({"outer_lr": 0.5})},
        {"tuner_label": "cg", "tuner": "gradient", "task": "b", "tuner_params": json.dumps({"outer_lr": 0.1})},
        {"tuner_label": "tpe", "tuner": "tpe", "task": "a", "tuner_params": "{}"},
    ])
    choices = {"seeds": [100], "scope": "task", "tuners": [
        {"label": "cg", "grid": {"outer_lr": [0.1, 0.5]},
         "choice": {"scope": "task", "by_task": {"a": {"params": {"outer_lr": 0.5}},
                                                 "b": {"params": {"outer_lr": 0.1}}}}}]}
    t = settings_table(cells, choices, None)
    md = t.markdown()
    assert md.count("tuned (task scope") == 2 and "outer_lr=0.5" in md and "outer_lr=0.1" in md
    assert "| tpe | tpe | a | (defaults) | declared |" in md
    untuned = settings_table(cells, None, {"cg": {"outer_lr": [0.1, 0.5]}}).markdown()
    assert "was not run" in untuned




def test_cli_report_bad_folder_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    code, _, err = invoke(monkeypatch, capsys, "report", str(tmp_path / "nope"))
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, _, err = invoke(monkeypatch, capsys, "report", str(tmp_path / "empty"))
    assert code == 2 and err.count("\n") == 1 and "run folder" in err


def test_partial_run_reads_finished_cells(run_dir, tmp_path):
    part = tmp_path / "partial"
    (part / "cells").mkdir(parents=True)
    for p in sorted((run_dir / "cells").glob("*.parquet"))[:3]:
        shutil.copy(p, part / "cells" / p.name)
    df = load_records(part)
    assert df["cell_id"].nunique() == 3
    assert (df.groupby("cell_id")["step"].apply(lambda s: s.is_monotonic_increasing)).all()
    with pytest.raises(ReportError, match="no records.parquet"):
        load_records(tmp_path)


def test_tuner_time_and_wall_time_are_separate_columns(report, run_dir):
    """``tuner (s)`` holds the tuner's clock, ``wall (s)`` the cell's wall clock (issue 10, item 2)."""
    cells = pd.read_csv(run_dir / "report" / "tables" / "cells.csv").set_index("cell_id")
    records = load_records(run_dir)
    last = records.groupby("cell_id").tail(1).set_index("cell_id")
    assert np.allclose(cells["tuner_s"], last.loc[cells.index, "time_s"], rtol=1e-9)
    assert np.allclose(cells["wall_s"], last.loc[cells.index, "wall_s"], rtol=1e-9)
    assert (cells["wall_s"] > cells["tuner_s"]).all()  # the wall clock also holds measurements and the harness
    for name in ("headline", "results"):
        md = (run_dir / "report" / "tables" / f"{name}.md").read_text()
        head = md.splitlines()[0]
        assert "| tuner (s) |" in head and "| wall (s) |" in head, head
        raw = pd.read_csv(run_dir / "report" / "tables" / f"{name}.csv")
        assert {"tuner_s_mean", "wall_s_mean"} <= set(raw.columns)
        assert (raw["wall_s_mean"] > raw["tuner_s_mean"]).all()


def _tied_cells() -> pd.DataFrame:
    """Two tuners whose mean final regrets differ below the printed 4 significant digits, one worse."""
    rows = []
    for tuner, regrets in (("a", (0.0087971, 0.0087971)), ("b", (0.0087969, 0.0087969)), ("c", (0.02, 0.03))):
        for seed, reg in enumerate(regrets):
            rows.append({"task": "t", "tuner_label": tuner, "tuner": tuner, "seed": seed, "status": "ok",
                         "final_val_loss": 1.0 + reg, "final_test_loss": 1.0, "tuner_s": 1.0, "wall_s": 2.0,
                         "cost_units": 1.0, "final_regret": reg,
                         **{f"{w}_to_{k}": np.nan for w in ("time", "cost") for k in ("1pct", "0_1pct")}})
    return pd.DataFrame(rows)


class _FakeOracle:
    val_loss, gap, n_params, hp, transforms = 0.1, 1.0, 2, [1.0], ["log"]


def _records_that_overfit() -> pd.DataFrame:
    """Cell ``pw``: validation 1.0 -> 0.2 while test 1.0 -> 3.0 (overfits the validation split);
    cell ``sc``: both fall. A third row of ``pw`` is worse on validation (not the incumbent)."""
    params = json.dumps({"name": "seed_toy"})
    rows = []
    for cell, vals, tests in (("pw", [1.0, 0.2, 0.6], [1.0, 3.0, 1.5]), ("sc", [1.0, 0.5], [1.2, 0.9])):
        for step, (v, t) in enumerate(zip(vals, tests)):
            rows.append({"cell_id": cell, "task": "toy", "task_params": params, "tuner": cell, "tuner_label": cell,
                         "tuner_params": "{}", "seed": 0, "step": step, "time_s": 0.1 * (step + 1), "val_loss": v,
                         "val_loss_ref": v, "test_loss": t, "hp": [1.0], "theta": [0.0], "status": "ok",
                         "grad_evals": 0, "hvps": 0, "inner_solves": step + 1, "hypergrad_rel_error": np.nan})
    return pd.DataFrame(rows)


def test_validation_test_gap_and_overfitting_flag_in_cells_and_tables():
    """Issue 12 item 6: every report shows the test-side cost beside the validation gain."""
    from hpo_bench.report.metrics import add_derived, cell_metrics
    from hpo_bench.report.tables import headline_table, results_table

    df = _records_that_overfit()
    orc = {(df["task_params"].iloc[0], 0): _FakeOracle()}
    cells = cell_metrics(add_derived(df, orc), orc).set_index("cell_id")
    assert cells.loc["pw", "final_val_test_gap"] == pytest.approx(3.0 - 0.2)
    assert cells.loc["sc", "final_val_test_gap"] == pytest.approx(0.9 - 0.5)
    assert (cells.loc["pw", "first_val_loss"], cells.loc["pw", "first_test_loss"]) == (1.0, 1.0)
    assert cells.loc["pw", "overfit"] and not cells.loc["sc", "overfit"]
    cells = cells.reset_index()
    summary = group_summary(cells, df)
    w = wilcoxon_table(summary, cells)
    for table in (results_table(summary, cells, w), headline_table(summary, cells)):
        md, tex = table.markdown(), table.latex(columns=[k for k, _ in table.columns])  # every column, not the fit
        assert "val–test gap" in md and "| 2.8 (test↑ 1/1) |" in md and "| 0.4 |" in md
        assert "2.80 (test$\\uparrow$ 1/1)" in tex and "val--test gap" in tex  # 3 significant digits in LaTeX
        assert any("test↑ k/n" in n for n in table.notes)
        raw = table.raw.set_index("tuner")
        assert raw.loc["pw", "val_test_gap_mean"] == pytest.approx(2.8) and raw.loc["pw", "overfit_seeds"] == 1
        assert raw.loc["sc", "overfit_seeds"] == 0


def test_val_vs_test_figure_draws_one_arrow_per_cell_solid_where_it_overfits():
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation

    from hpo_bench.report.figures import _val_test_figure, palette_for
    from hpo_bench.report.metrics import add_derived, cell_metrics

    assert "val_vs_test" in FIGURES
    df = _records_that_overfit()
    orc = {(df["task_params"].iloc[0], 0): _FakeOracle()}
    cells = cell_metrics(add_derived(df, orc), orc)
    fig = _val_test_figure(cells, ["toy"], ["pw", "sc"], palette_for(["pw", "sc"]), {})
    ax = fig.axes[0]
    arrows = {a.xy: a for a in ax.get_children() if isinstance(a, Annotation)}
    assert set(arrows) == {(0.2, 3.0), (0.5, 0.9)}  # one per cell, ending at its incumbent
    assert arrows[(0.2, 3.0)].arrow_patch.get_linestyle() == "-"  # pw overfits: solid
    assert arrows[(0.5, 0.9)].arrow_patch.get_linestyle() == ":"
    x0, x1 = ax.get_xlim()
    assert x0 < 0.2 and x1 > 1.0  # the first points (val 1.0) are inside the axes
    plt.close(fig)


def test_results_equal_as_printed_share_rank_and_bold():
    from hpo_bench.report.tables import headline_table, rank_table, results_table

    cells = _tied_cells()
    summary = group_summary(cells, cells.assign(hypergrad_rel_error=np.nan)).set_index("tuner")
    assert summary.loc["a", "rank"] == summary.loc["b", "rank"] == 1.5  # average rank, as scipy's rankdata
    assert summary.loc["c", "rank"] == 3
    assert summary.loc["a", "best"] and summary.loc["b", "best"] and not summary.loc["c", "best"]
    summary = summary.reset_index()
    w = wilcoxon_table(summary, cells)
    assert list(w["tuner"]) == ["c"]  # both tied tuners are best; only the other one is tested
    for table in (headline_table(summary, cells), results_table(summary, cells, w)):
        md = table.markdown()
        assert "| **a** |" in md and "| **b** |" in md and "| **c** |" not in md
        assert md.count("**0.008797 ± 0**") == 2
    ranks = rank_table(summary).markdown()
    assert "| **a** | **1.5** |" in ranks and "| **b** | **1.5** |" in ranks


def test_report_prints_one_line_per_oracle_and_per_figure(report, run_dir, monkeypatch, capsys):
    """``hpo-bench report`` says what it is doing while oracles run (issue 10, item 8)."""
    instances = load_records(run_dir)[["task", "seed"]].drop_duplicates()
    n = len(instances)
    lines = report.splitlines()
    oracle_lines = [ln for ln in lines if ln.startswith("oracle ") and "/" in ln.split()[1]]
    assert len(oracle_lines) == n
    assert [ln.split()[1] for ln in oracle_lines] == [f"{k}/{n}" for k in range(1, n + 1)]
    for r in instances.itertuples():  # the first report computes every oracle
        assert sum(f" {r.task} seed {r.seed}: computed in " in ln for ln in oracle_lines) == 1, r
    for name in FIGURES:
        assert sum(ln.startswith(f"figure {name}: ") for ln in lines) == 1
    # a second report reads every oracle from the cache, and says so
    monkeypatch.setenv("HPO_BENCH_CACHE_DIR", str(run_dir.parent / "shared-cache"))
    code, out, _ = invoke(monkeypatch, capsys, "report", str(run_dir), "--out", str(run_dir / "report2"))
    assert code == 0
    again = [ln for ln in out.splitlines() if re.match(r"oracle \d+/\d+ ", ln)]
    assert len(again) == n and all(": cached (computed in " in ln for ln in again)
    code, out, _ = invoke(monkeypatch, capsys, "report", str(run_dir), "--out", str(run_dir / "report3"), "--quiet")
    assert code == 0 and not any(re.match(r"(oracle \d+/\d+|figure \w+:) ", ln) for ln in out.splitlines())


def test_a_new_run_folder_reads_oracles_from_the_shared_cache(report, run_dir, tmp_path, monkeypatch, capsys):
    """Run folders made with the same code share computed oracles (issue 10, item 11): the main job
    writes a new run folder each time, and its report need not recompute them."""
    from hpo_bench.report import shared_oracle_cache

    monkeypatch.setenv("HPO_BENCH_CACHE_DIR", str(run_dir.parent / "shared-cache"))
    shared = shared_oracle_cache()
    assert shared is not None and len(list(shared.glob("*.json"))) == len(list((run_dir / "oracle").glob("*.json")))
    fresh = tmp_path / "fresh"
    (fresh / "cells").mkdir(parents=True)
    shutil.copy(run_dir / "records.parquet", fresh / "records.parquet")
    code, out, _ = invoke(monkeypatch, capsys, "report", str(fresh))
    assert code == 0
    lines = [ln for ln in out.splitlines() if re.match(r"oracle \d+/\d+ ", ln)]
    assert lines and all("shared cache" in ln for ln in lines)
    assert sorted(p.name for p in (fresh / "oracle").glob("*.json")) == sorted(p.name for p in shared.glob("*.json"))
    a = pd.read_csv(run_dir / "report" / "tables" / "oracle.csv")
    b = pd.read_csv(fresh / "report" / "tables" / "oracle.csv")
    assert (a["oracle_val_loss"] == b["oracle_val_loss"]).all()
    # disabled: computed again, nothing read from the shared cache
    monkeypatch.setenv("HPO_BENCH_CACHE_DIR", "off")
    assert shared_oracle_cache() is None
    shutil.rmtree(fresh / "oracle")
    code, out, _ = invoke(monkeypatch, capsys, "report", str(fresh), "--quiet")
    assert code == 0 and "shared:" not in out


def test_oracle_table_labels_a_record_note_as_such_not_as_cut_short():
    """A tuner's record beating a complete oracle is not a budget cut (the quick report said "cut short")."""
    from hpo_bench.analysis.oracle import OracleResult, best_known
    from hpo_bench.report.tables import oracle_table

    o = OracleResult(task="ridge", params={}, seed=0, val_loss=1.0, theta=[0.0], hp=[1.0], init_val_loss=2.0,
                     method="grid+lbfgsb", n_params=3, n_hyper=1, transforms=["log"], grid_points=2001, starts=0,
                     n_evals=10, seconds=0.1)
    b = best_known(o, 0.5, [0.1], [1.1], what="cell c (step 3)")
    md = oracle_table([("ridge", b), ("ridge", o)]).markdown()
    assert "cut short" not in md.split("\n\n")[0]
    assert "grid+lbfgsb+records (cell c (step 3) reached F = 0.5" in md
