"""`hpo-bench plot` and hpo_bench.report.plot / style: stable looks, widths, curves, y-range, errors."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from _report_fixture import reported_run
from hpo_bench import cli
from hpo_bench.report import style
from hpo_bench.report.plot import PlotError, curves, draw_panel, plot, plot_records


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return reported_run(tmp_path_factory)


def _cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["hpo-bench", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# ------------------------------------------------------------------ style
PAPER_LABELS = ["exact", "cg-gd100", "neumann20-gd100", "reverse-gd50", "tpe", "tpe-mv", "random", "grid", "grid_eig",
                "cmaes", "soba", "saba", "truncated", "forward"]


def test_a_look_depends_only_on_the_label():
    full = style.looks_for(PAPER_LABELS)
    for subset in (PAPER_LABELS[:3], PAPER_LABELS[::-1], ["tpe", "cg-gd100"]):
        assert style.looks_for(subset) == {lab: full[lab] for lab in subset}
    looks = list(full.values())
    assert len({lk.color for lk in looks}) == len(looks)  # the paper suite's tuners: every colour differs
    methods = [w for _, _, words in style.FAMILIES.values() for w in words]
    base = style.looks_for(methods)
    assert len({(lk.marker, lk.dashes) for lk in base.values()}) == len(methods)  # method names: greyscale too
    for variant, method in (("cg-gd100", "cg"), ("tpe-mv", "tpe"), ("neumann20-gd100", "neumann")):
        v, m = style.look_for(variant), style.look_for(method)
        assert v.family == m.family and v.dashes == m.dashes and v.color != m.color and v.marker != m.marker


def test_families_and_their_palettes():
    fam = {lab: style.family_of(lab) for lab in PAPER_LABELS}
    assert fam["cg-gd100"] == fam["exact"] == "implicit" and fam["reverse-gd50"] == "unrolled"
    assert fam["tpe"] == fam["cmaes"] == "optuna" and fam["random"] == fam["grid_eig"] == "grid-random"
    assert fam["soba"] == "stochastic"
    cg, tpe = style.look_for("cg"), style.look_for("tpe")
    assert cg.color in style.FAMILIES["implicit"][0] and tpe.color in style.FAMILIES["optuna"][0]
    assert cg.dashes != tpe.dashes
    # a label that names no method falls back on the tuner behind it
    assert style.family_of("ours", tuner="gradient", method="reverse") == "unrolled"
    assert style.family_of("baseline-A", tuner="tpe") == "optuna"


def test_widths_in_inches_and_templates():
    assert style.parse_width("icml") == style.parse_width("icml:column") == 3.25
    assert style.parse_width("icml:text") == 6.75
    assert style.parse_width("0.5*neurips") == pytest.approx(2.75)
    assert style.parse_width("8cm") == pytest.approx(8 / 2.54)
    assert style.parse_width("3.25in") == style.parse_width(3.25) == 3.25
    assert style.parse_width(None, "slides") > style.parse_width(None, "paper")
    for bad in ("icml:colum", "wide", "0in", "-2", "50"):
        with pytest.raises(style.StyleError, match="width"):
            style.parse_width(bad)
    with pytest.raises(style.StyleError, match="style must be one of"):
        style.rc_for("poster")


# ------------------------------------------------------------------ curves and drawing
def _records(rows):
    df = pd.DataFrame(rows, columns=["cell_id", "task", "tuner", "tuner_label", "tuner_params", "seed", "step", "time_s",
                                     "val_loss"])
    df["task_order"], df["tuner_label_order"], df["val_loss_ref"] = 0, 0, df["val_loss"]
    return df


def test_curves_are_medians_of_step_functions_where_every_seed_has_a_record():
    rows = [("a", "t", "random", "r", "{}", 0, 0, 1.0, 3.0), ("a", "t", "random", "r", "{}", 0, 1, 2.0, 1.0),
            ("b", "t", "random", "r", "{}", 1, 0, 1.5, 5.0), ("b", "t", "random", "r", "{}", 1, 1, 3.0, 4.0),
            ("c", "t", "random", "r", "{}", 2, 0, 1.2, 2.0), ("c", "t", "random", "r", "{}", 2, 1, 3.0, 9.0)]
    agg = curves(_records(rows), metric="validation", x="time", n_grid=50)
    assert agg["x"].min() >= 1.5  # before 1.5 s cell b has no record yet
    at = agg.iloc[(agg["x"] - 2.5).abs().argmin()]
    # at x ~ 2.5 the incumbents' validation losses are a: 1, b: 5, c: 2 (c's 9 is no improvement)
    assert at["median"] == 2.0 and at["q1"] == pytest.approx(1.5) and at["q3"] == pytest.approx(3.5)
    assert at["seeds"] == 3


def test_y_range_fits_the_data_not_the_target_lines():
    import matplotlib.pyplot as plt

    agg = pd.DataFrame({"tuner_label": "r", "x": [1.0, 2.0, 3.0], "median": [1e-1, 3e-2, 1e-2],
                        "q1": [8e-2, 2e-2, 8e-3], "q3": [2e-1, 5e-2, 2e-2]})
    fig, ax = plt.subplots()
    draw_panel(ax, agg, ["r"], {"r": style.look_for("r")}, scale="log", hlines=[(1e-9, ":", "target")])
    lo, hi = ax.get_ylim()
    assert 1e-3 < lo < 8e-3 and 2e-1 < hi < 1.0  # a decade around the data, not down to the 1e-9 target
    assert not [ln for ln in ax.get_lines() if ln.get_ydata()[0] == 1e-9]  # the target is off the range: not drawn
    plt.close(fig)


# ------------------------------------------------------------------ from a run folder
def test_plot_draws_every_tuner_with_its_look_and_a_subset_keeps_it(run_dir, tmp_path):
    import matplotlib.pyplot as plt

    df = plot_records(run_dir, metric="regret")
    full = plot(df, metric="regret", x="time")
    sub = plot(df, metric="regret", x="time", tuners=["tpe-mv", "cg"], rename={"cg": "CG"}, order=["CG"])

    def colours(fig):
        return {h.get_label(): (h.get_color(), h.get_marker()) for h in fig.legends[0].legend_handles}

    cf, cs = colours(full), colours(sub)
    assert set(cf) >= {"cg", "tpe-mv", "random", "neumann20-gd100"} and list(cs)[:2] == ["CG", "tpe-mv"]
    assert cs["CG"] == cf["cg"] and cs["tpe-mv"] == cf["tpe-mv"]  # renamed: same look
    assert cf["cg"][0] != cf["tpe-mv"][0]
    assert len(full.axes) == 2 and [a.get_title() for a in full.axes] == ["ridge-synth100", "ridge_pf-synth200"]
    plt.close("all")


def test_cli_plot_writes_each_format(run_dir, tmp_path, monkeypatch, capsys):
    for ext, magic in ((".pdf", b"%PDF-"), (".png", b"\x89PNG"), (".svg", b"<?xml")):
        out = tmp_path / f"f{ext}"
        rc, printed, err = _cli(monkeypatch, capsys, "plot", run_dir, "--out", out, "--metric", "test_loss", "--x",
                                "step", "--tuners", "cg,random", "--rename", "cg=CG", "--style", "slides", "--width",
                                "icml:text")
        assert rc == 0, err
        assert out.read_bytes().startswith(magic) and str(out) in printed


@pytest.mark.parametrize("args, needle", [
    (["--metric", "test_accuracy"], "available metrics: ['regret', 'validation', 'test_loss', 'hypergrad_error']"),
    (["--metric", "loss"], "metric must be one of"),
    (["--x", "samples"], "available x-axes: ['time', 'cost', 'step']"),
    (["--x", "wall"], "x must be one of"),
    (["--tuners", "cg,nope"], "tuner 'nope' is not in these runs; known: ['neumann20-gd100', 'cg', 'tpe-mv', 'random']"),
    (["--rename", "cg"], "rename must look like old=new"),
    (["--rename", "zz=Z"], "name no task or tuner"),
    (["--width", "icml:col"], "width must be inches"),
    (["--style", "poster"], "style must be one of"),
])
def test_cli_plot_bad_values_are_one_line_exit_2(run_dir, tmp_path, monkeypatch, capsys, args, needle):
    rc, _, err = _cli(monkeypatch, capsys, "plot", run_dir, "--out", tmp_path / "f.pdf", *args)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("hpo-bench: error: ") and needle in err, err
    assert not (tmp_path / "f.pdf").exists()


def test_cli_plot_bad_format_and_bad_folder(run_dir, tmp_path, monkeypatch, capsys):
    rc, _, err = _cli(monkeypatch, capsys, "plot", run_dir, "--out", tmp_path / "f.jpg")
    assert rc == 2 and "out must end in one of ['.pdf', '.png', '.svg']" in err
    rc, _, err = _cli(monkeypatch, capsys, "plot", tmp_path / "none", "--out", tmp_path / "f.pdf")
    assert rc == 2 and "does not exist" in err and err.count("\n") == 1


def test_regret_uses_the_reports_oracles_without_computing_any(run_dir, tmp_path, monkeypatch):
    import hpo_bench.analysis.oracle as oracle

    from hpo_bench.report.plot import export_for_redraw

    copy = tmp_path / "copy"  # only what a committed result keeps: records + the report's oracles
    files = export_for_redraw(run_dir, copy)
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == \
        ["oracle/report/used.json", "records.parquet"] == sorted(p.relative_to(copy).as_posix() for p in files)
    assert list(pd.read_parquet(copy / "records.parquet").columns) == list(pd.read_parquet(
        run_dir / "records.parquet").columns)

    def no(*a, **k):
        raise AssertionError("an oracle was computed")

    monkeypatch.setattr(oracle, "compute_oracle", no)
    monkeypatch.setattr(oracle, "polish_oracle", no)
    a = plot_records(copy, metric="regret")
    b = plot_records(run_dir, metric="regret")
    assert np.allclose(a["incumbent_regret"], b["incumbent_regret"], equal_nan=True)
    assert a["incumbent_regret"].notna().any()


def test_other_metrics_need_no_oracle(run_dir, tmp_path, monkeypatch):
    import hpo_bench.analysis.oracle as oracle

    copy = tmp_path / "bare"
    copy.mkdir()
    shutil.copy(run_dir / "records.parquet", copy / "records.parquet")
    monkeypatch.setattr(oracle, "compute_oracle", lambda *a, **k: (_ for _ in ()).throw(AssertionError("oracle")))
    df = plot_records(copy, metric="hypergrad_error", x="step")
    assert "oracle_val_loss" not in df.columns and not (copy / "oracle").exists()
    agg = curves(df, metric="hypergrad_error", x="step")
    assert set(agg["tuner_label"]) == {"neumann20-gd100", "cg"}  # black-box tuners have no hypergradient
    with pytest.raises(PlotError, match="needs the oracle"):
        plot(df, metric="regret")


def test_runs_merge_and_a_repeated_cell_stays_two_cells(run_dir, tmp_path):
    other = tmp_path / "again"
    other.mkdir()
    shutil.copy(run_dir / "records.parquet", other / "records.parquet")
    one = plot_records(run_dir, metric="validation")
    two = plot_records([run_dir, other], metric="validation")
    assert len(two) == 2 * len(one) and two["cell_id"].nunique() == 2 * one["cell_id"].nunique()
    agg1, agg2 = curves(one, metric="validation", x="step"), curves(two, metric="validation", x="step")
    assert (agg2["seeds"] == 2 * agg1["seeds"]).all()
    assert np.allclose(agg1["median"], agg2["median"])  # the same cells twice: the same medians


# ------------------------------------------------------------------ task extra metrics
def test_task_extra_metrics_are_recorded_with_the_clock_paused_and_plottable():
    import torch

    from hpo_bench import Budget, Recorder, get_task
    from hpo_bench.core.records import COLUMNS

    logi = get_task("logistic_l2", dataset="synthetic", n=40, p=5, seed=0)
    clean = get_task("hyper_cleaning", n_train=60, n_val=60, n_test=60, seed=0)
    for task in (logi, clean):
        rec = Recorder(task, Budget(steps=3), meta={"cell_id": "c", "task": task.name, "tuner": "gradient",
                                                    "tuner_label": "cg", "tuner_params": "{}", "seed": 0})
        rec.start()
        theta = task.space.init_theta()
        if task is clean:  # down-weight the first ten examples: a known kept set
            theta[:10] = -3.0
        w = task.solve(theta)
        rec.record(w=w, theta=theta)
        row = rec.rows[-1]
        assert not set(task.extra_metrics(w, theta)) & set(COLUMNS)
        if task is logi:
            pred = torch.sign(task.x1_test @ w)
            assert row["test_accuracy"] == pytest.approx(float((pred == task.y_test).double().mean()), abs=1e-15)
        else:
            probs = (task.x_test @ task.as_matrix(w).T).argmax(1)
            assert row["test_accuracy"] == pytest.approx(float((probs == task.y_test).double().mean()), abs=1e-15)
            kept = np.ones(60, dtype=bool)
            kept[:10] = False
            ok = ~task.corrupted.cpu().numpy()
            assert row["clean_precision"] == pytest.approx((kept & ok).sum() / kept.sum())
            assert row["clean_recall"] == pytest.approx((kept & ok).sum() / ok.sum())
            df = pd.DataFrame(rec.rows).assign(val_loss_ref=lambda d: d["val_loss"], task_order=0,
                                               tuner_label_order=0)
            agg = curves(df, metric="clean_recall", x="step")  # any recorded task metric is a metric
            assert agg["median"].iloc[0] == pytest.approx(row["clean_recall"])
            assert curves(df, metric="test_accuracy", x="step")["median"].iloc[0] == row["test_accuracy"]


def test_a_task_metric_named_like_a_record_column_is_refused():
    from hpo_bench import Budget, Recorder, get_task

    task = get_task("logistic_l2", dataset="synthetic", n=40, p=5, seed=0)
    task.extra_metrics = lambda w, theta: {"val_loss": 0.0}
    rec = Recorder(task, Budget(steps=2))
    rec.start()
    theta = task.space.init_theta()
    with pytest.raises(ValueError, match=r"must not be record columns, but got \['val_loss'\]"):
        rec.record(w=task.solve(theta), theta=theta)


@pytest.mark.parametrize("compact", [False, True])
def test_plot_of_an_exported_run_redraws_the_report_figure_byte_for_byte(run_dir, tmp_path, monkeypatch, capsys,
                                                                          compact):
    from hpo_bench.report.plot import export_for_redraw

    export_for_redraw(run_dir, tmp_path / "committed", compact=compact)
    if compact:  # λ lists only where a figure or the oracle's polish reads them
        kept = pd.read_parquet(tmp_path / "committed" / "records.parquet")["hp"].map(len) > 0
        assert 0 < kept.sum() <= 3 * pd.read_parquet(run_dir / "records.parquet")["cell_id"].nunique()
    for x, name in (("time", "regret_vs_time"), ("cost", "regret_vs_cost")):
        out = tmp_path / f"{name}.pdf"
        rc, _, err = _cli(monkeypatch, capsys, "plot", tmp_path / "committed", "--metric", "regret", "--x", x,
                          "--width", "7", "--out", out)
        assert rc == 0, err
        assert out.read_bytes() == (run_dir / "report" / "figures" / f"{name}.pdf").read_bytes()
