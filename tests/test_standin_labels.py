"""Every place the report layer shows a task instance says "synthetic stand-in" when its data are synthetic
(a registered stand-in here: `cadata` is not cached, so `fallback = "stand-in"` runs `cadata-like`), and never
for an instance on real data (bundled `diabetes`): tables (markdown, LaTeX, CSV, HTML), summary.md, figure
texts (matplotlib objects, not pixels), report.html, `hpo-bench plot` and `hpo-bench show`."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil

import matplotlib
import pytest

matplotlib.use("Agg")

from _runs import invoke  # noqa: E402
from hpo_bench import data  # noqa: E402
from hpo_bench.report.datasets import is_marked, mark_instances, marked_label, panel_title  # noqa: E402

MARKED = "ridge-cadata (synthetic stand-in: cadata-like)"
SUITE = """
name = "standin"
seeds = [0, 1]
[budget]
steps = 4
[[task]]
name = "ridge"
label = "ridge-cadata"
params = { dataset = "cadata", max_train = 40 }
fallback = "stand-in"
[[task]]
name = "ridge"
label = "ridge-diabetes"
params = { dataset = "diabetes" }
[[tuner]]
name = "gradient"
label = "cg"
params = { method = "cg", inner = "gd", inner_steps = 20, outer_lr = 0.3 }
[[tuner]]
name = "random"
"""

_FIGURES: dict[str, list[str]] = {}


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run folder, reported; every figure's texts captured as the report saves it."""
    from hpo_bench.core._threads import one_thread
    from hpo_bench.running.harness import run_suite
    from hpo_bench.report import figures, make_report
    from hpo_bench.running.suite import load_suite

    root = tmp_path_factory.mktemp("standin")
    (root / "suite.toml").write_text(SUITE)
    save = figures.save_figure

    def capture(fig, out_dir, name):
        _FIGURES[name] = _texts(fig)
        return save(fig, out_dir, name)

    with pytest.MonkeyPatch.context() as mp, one_thread(), contextlib.redirect_stdout(io.StringIO()):
        mp.setenv(data.DATA_ENV, str(root / "empty-data"))  # nothing cached: cadata falls back on cadata-like
        mp.setattr(figures, "save_figure", capture)
        data.clear_memory()
        run_suite(load_suite(str(root / "suite.toml")), root / "run")
        make_report(root / "run", oracle_evals=200, oracle_polish_evals=10)
    data.clear_memory()
    return root / "run"


def test_labels_mark_once_and_panel_titles_take_two_lines():
    assert marked_label("ridge-cadata", "cadata-like") == MARKED and is_marked(MARKED)
    assert panel_title(MARKED) == "ridge-cadata\n(synthetic stand-in: cadata-like)"
    assert panel_title("ridge-diabetes") == "ridge-diabetes"
    import pandas as pd

    df = pd.DataFrame({"task": ["a", "b", "c"], "task_params": [json.dumps({"name": "ridge", "dataset": "cadata-like"}),
                                                                json.dumps({"name": "ridge", "dataset": "cadata"}),
                                                                json.dumps({"name": "ridge", "dataset": "text-like"})]})
    once = mark_instances(df)
    assert list(once["task"]) == ["a (synthetic stand-in: cadata-like)", "b", "c (synthetic stand-in: text-like)"]
    assert list(once["task_label"]) == ["a", "b", "c"] and list(df["task"]) == ["a", "b", "c"]
    assert list(mark_instances(once)["task"]) == list(once["task"])  # idempotent
    # what provenance recorded wins over the registry (a plug-in's dataset the registry may not know)
    rec = [{"task": "b", "dataset": "cadata", "dataset_kind": "synthetic stand-in"}]
    assert mark_instances(df, rec)["task"].iloc[1] == "b (synthetic stand-in: cadata)"


def test_every_table_format_marks_the_stand_in_instance_and_only_it(run):
    tables = run / "report" / "tables"
    for name in ("headline", "results", "ranks", "wilcoxon", "settings", "oracle"):
        for ext in ("md", "tex", "csv"):
            text = (tables / f"{name}.{ext}").read_text()
            assert "ridge-diabetes (synthetic" not in text
            # every instance label is marked (a cell id such as `ridge-cadata__cg__seed1` is an id, not a label)
            bare = re.findall(r"ridge-cadata(?! \(synthetic stand-in: cadata-like\)|__|\\_\\_|\\\\\(synthetic "
                              r"stand-in: cadata-like\))", text)
            assert not bare, (name, ext, text)
    two_lines = "\\begin{tabular}[t]{@{}l@{}}ridge-cadata\\\\(synthetic stand-in: cadata-like)\\end{tabular}"
    for name in ("headline", "results", "oracle"):
        for ext in ("md", "tex", "csv"):
            text = (tables / f"{name}.{ext}").read_text()
            assert (two_lines if ext == "tex" else MARKED) in text and "ridge-diabetes" in text, (name, ext)
    assert MARKED in (tables / "cells.csv").read_text()


def test_summary_says_which_data_each_instance_used(run):
    text = (run / "report" / "summary.md").read_text()
    assert "## Data" in text
    assert (f"- {MARKED}: `cadata-like`, a synthetic stand-in for `cadata` (same shape and sparsity, generated "
            "data); `cadata` was asked for but is not in the data cache") in text
    assert "- ridge-diabetes: `diabetes`, real data bundled with scikit-learn" in text


def test_the_interactive_report_marks_the_instance(run):
    page = (run / "report" / "report.html").read_text()
    assert MARKED in page and "ridge-diabetes (synthetic" not in page
    assert json.dumps(MARKED) in page  # the task picker's data, not only the embedded tables


def test_every_report_figure_titles_the_stand_in_panel_as_such(run):
    assert set(_FIGURES) >= {"regret_vs_time", "regret_vs_cost", "hypergrad_error", "final_hp", "val_vs_test"}
    for name, texts in _FIGURES.items():
        assert "ridge-cadata\n(synthetic stand-in: cadata-like)" in texts, (name, texts)
        assert "ridge-diabetes" in texts and not any("ridge-diabetes (synthetic" in t for t in texts), name


def test_hpo_bench_plot_marks_the_panel_and_takes_the_suite_label(run):
    from hpo_bench.report.plot import plot, plot_records

    df = plot_records(run, metric="regret", x="time")
    fig = plot(df, metric="regret", x="time", tasks=["ridge-cadata", "ridge-diabetes"],
               rename={"ridge-cadata": "housing"})
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["housing\n(synthetic stand-in: cadata-like)", "ridge-diabetes"]
    fig = plot(df, metric="validation", x="step", tasks=[MARKED])
    assert [ax.get_title() for ax in fig.axes] == ["ridge-cadata\n(synthetic stand-in: cadata-like)"]


def test_hpo_bench_plot_command_and_show_mark_it(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "fig.svg"
    code, _, err = invoke(monkeypatch, capsys, "plot", run, "--metric", "validation", "--x", "step", "--tasks",
                          "ridge-cadata", "--out", out)
    assert code in (0, None), err
    assert "synthetic stand-in: cadata-like" in out.read_text()
    from hpo_bench.core.records import read_records_file
    from hpo_bench.analysis.summary import summarize

    table = summarize(read_records_file(run / "records.parquet"))
    cells = list(table.columns[0]._cells)
    assert MARKED in cells and "ridge-diabetes" in cells


def test_without_provenance_the_registry_still_marks_it(run, tmp_path):
    from hpo_bench.report.metrics import load_records

    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run / "records.parquet", copy / "records.parquet")
    df = load_records(copy)
    assert set(df["task"]) == {MARKED, "ridge-diabetes"}


def test_the_plot_command_on_a_stand_in_run_imports_neither_torch_nor_scipy(run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    probe = tmp_path / "probe.py"
    probe.write_text("import sys, json\nfrom hpo_bench.cli import main\n"
                     f"sys.argv = ['hpo-bench', 'plot', {str(run)!r}, '--metric', 'validation', '--x', 'step', "
                     f"'--out', {str(tmp_path / 'f.pdf')!r}]\n"
                     "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
                     "print(json.dumps(sorted(m for m in ('torch', 'scipy') if m in sys.modules)))\n")
    res = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1],
                         env={"OMP_NUM_THREADS": "1", "HPO_BENCH_CACHE_DIR": "off", "PATH": "/usr/bin:/bin",
                              "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_the_settings_table_finds_tune_choices_by_the_suite_label():
    import pandas as pd

    from hpo_bench.report.tables import settings_table

    cells = pd.DataFrame({"tuner_label": ["cg"], "tuner": ["gradient"], "task": [MARKED], "task_label": ["ridge-cadata"],
                          "tuner_params": [json.dumps({"outer_lr": 0.2})]})
    choices = {"seeds": [100, 101], "tuners": [{"label": "cg", "grid": {"outer_lr": [0.05, 0.2]},
                                                "choice": {"scope": "task", "by_task": {"ridge-cadata": {"combo": 1}}}}]}
    table = settings_table(cells, choices, None)
    assert table.rows[0]["source"].startswith("tuned (task scope") and table.rows[0]["tasks"] == MARKED


def test_latex_tables_with_marked_labels_still_fit_the_page(run):
    from test_tables_latex import test_table_widths_structurally as width_bound  # the same bound, these labels

    from hpo_bench.report import TABLES

    def longer_line(m: re.Match) -> str:  # a two-line cell is as wide as its longer line
        return max(m.group(1), m.group(2), key=len)

    two = re.compile(r"\\begin\{tabular\}\[t\]\{@\{\}l@\{\}\}(.*?)\\\\(.*?)\\end\{tabular\}")
    tex = {name: two.sub(longer_line, (run / "report" / "tables" / f"{name}.tex").read_text()) for name in TABLES}
    assert "synthetic stand-in" in tex["oracle"]
    for name in TABLES:
        width_bound(tex, name)
