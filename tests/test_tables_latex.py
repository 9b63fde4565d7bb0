"""LaTeX tables through pandas Styler: they fit the page, escape, align, group and label as promised.

Every shipped table (the report's tables of a small run whose labels are as long as the paper
suite's) is compiled with pdflatex when it is installed, at the default width: ``table*`` in the
6.75in text width of a two-column paper (ICML, AISTATS), ``table`` in the 5.5in text width of a
one-column paper (NeurIPS, ICLR); an ``Overfull \\hbox`` above 1 pt fails. Without pdflatex the
same tables are measured structurally (a column count and a per-character width bound).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest

from _report_fixture import reported_run
from hpo_bench.report import TABLES
from hpo_bench.report.tables import Table, sig

WIDTH_IN = {"table*": 6.75, "table": 5.5}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    run = reported_run(tmp_path_factory)
    return {name: (run / "report" / "tables" / f"{name}.tex").read_text() for name in TABLES}


def _overfull(tex: str, tmp_path) -> list[float]:
    env = "table*" if "\\begin{table*}" in tex else "table"
    doc = ("\\documentclass[10pt%s]{article}\n\\usepackage[textwidth=%sin,columnsep=0.25in]{geometry}\n"
           "\\usepackage{booktabs,siunitx,multirow,array}\n\\begin{document}\n%s\n\\end{document}\n"
           % (",twocolumn" if env == "table*" else "", WIDTH_IN[env], tex))
    (tmp_path / "t.tex").write_text(doc)
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    log = (tmp_path / "t.log").read_text(errors="replace")
    assert res.returncode == 0, log[-2000:]
    return [float(v) for v in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (Debian: texlive-latex-extra "
                    "texlive-science); the structural width test below still runs")
@pytest.mark.parametrize("name", TABLES)
def test_every_shipped_table_compiles_without_overfull_boxes(tables, name, tmp_path):
    over = _overfull(tables[name], tmp_path)
    assert [v for v in over if v > 1.0] == [], f"{name}.tex is too wide by {over} pt"


def _columns(tex: str) -> list[str]:
    spec = re.search(r"\\begin\{tabular\}\{(.*)\}\n", tex).group(1)
    return re.findall(r"S\[[^\]]*\]|>\{[^{}]*\}p\{[^{}]*\}|[lrc]", spec)


def _visible(cell: str) -> str:
    cell = re.sub(r"\\multirow\[t\]\{\d+\}\{\*\}\{(.*)\}", r"\1", cell)
    cell = re.sub(r"\\textbf\{(.*)\}", r"\1", cell)
    cell = cell.replace("$\\pm$", "±").replace("$\\to$", "→").replace("$^\\dagger$", "†").replace("\\_", "_")
    return cell.replace("\\%", "%").replace("{---}", "—").replace("---", "—").strip()


@pytest.mark.parametrize("name", TABLES)
def test_table_widths_structurally(tables, name):
    """An upper bound of the width: 4.6 pt per character of footnotesize (its widest digits and
    letters average below that) plus the column gaps; a ``p`` column counts its declared width."""
    tex = tables[name]
    env = "table*" if "\\begin{table*}" in tex else "table"
    cols = _columns(tex)
    assert len(cols) <= 9, f"{name}: {len(cols)} columns by default"
    rows = [ln for ln in tex.split("\\midrule", 1)[1].split("\\bottomrule")[0].splitlines()
            if ln.strip() and ln.strip() != "\\midrule"]
    header = tex.split("\\toprule", 1)[1].split("\\midrule", 1)[0].strip()
    cells = [[_visible(c) for c in re.split(r"(?<!\\)&", ln.removesuffix("\\\\"))] for ln in [header, *rows]]
    assert all(len(r) == len(cols) for r in cells), name
    linewidth = WIDTH_IN[env] * 72.27
    total = 0.0
    for j, spec in enumerate(cols):
        m = re.search(r"p\{([\d.]+)\\linewidth\}", spec)
        if m:
            total += float(m.group(1)) * linewidth
        else:
            header_words = max(len(w) for w in cells[0][j].strip("{}").split()) if cells[0][j].strip("{}") else 0
            total += 4.6 * max([len(r[j]) for r in cells[1:]] + [header_words])
        total += 2 * 4.0  # \tabcolsep 4pt on each side
    assert total <= linewidth * 1.2, f"{name}: about {total:.0f} pt of {linewidth:.0f} pt"


def _toy() -> Table:
    rows = [{"_group": "a_b", "task": "a_b", "tuner": "x&y", "v": "0.1 ± 0.012345", "n": "12.3456", "p": "50%"},
            {"_group": "a_b", "task": "a_b", "tuner": "z#1", "v": "0.123456 ± 0.5", "n": "0.5", "p": "—",
             "_bold": {"tuner", "v"}},
            {"_group": "c", "task": "c", "tuner": "w_2", "v": "12.3 ± 1", "n": "7.25e-05", "p": "~"}]
    return Table("toy", "Toy $x$ table_1.", [("task", "task"), ("tuner", "tuner"), ("v", "value"), ("n", "n"),
                                          ("p", "p")], rows, pd.DataFrame(rows), align={"task": "l", "tuner": "l",
                                                                                      "p": "l"})


def test_escaping_multirow_bold_and_groups():
    tex = _toy().latex()
    assert "x\\&y" in tex and "z\\#1" in tex and "w\\_2" in tex and "50\\%" in tex and "\\textasciitilde{}" in tex
    assert "Toy \\$x\\$ table\\_1." in tex  # the caption is escaped too
    assert tex.count("\\multirow[t]{2}{*}{a\\_b}") == 1 and "\n & \\textbf{z\\#1}" in tex  # printed once
    assert tex.count("\\midrule") == 2  # under the header, and between the two tasks
    assert "\\textbf{0.123 $\\pm$ 0.50}" in tex


def test_significant_digits_and_notation_are_consistent_per_column():
    tex = _toy().latex()
    assert "0.100 $\\pm$ 0.012" in tex and "12.3 $\\pm$ 1" in tex  # 3 digits, 2 for the spread
    # n holds 7.25e-05: the whole column is scientific, each number with 3 digits, in an S column
    assert "1.23e+01" in tex and "5.00e-01" in tex and "7.25e-05" in tex
    assert re.search(r"S\[table-format=1\.2e-1\]", tex)
    assert sig(0.1, 3, False) == "0.100" and sig(99.96, 3, False) == "100" and sig(1.0e-5, 2, True) == "1.0e-05"


def test_environment_label_prefix_columns_and_size():
    t = _toy()
    two = t.latex(label_prefix="tab:a-"), t.latex(label_prefix="tab:b-")
    assert "\\label{tab:a-toy}" in two[0] and "\\label{tab:b-toy}" in two[1]  # two reports in one paper
    assert "\\begin{table*}[t]" in t.latex() and "\\begin{table}[htbp]" in t.latex(env="table", placement="htbp")
    small = t.latex(columns=["tuner", "v"], size="small")
    assert "\\small" in small and "{tuner} & {value} \\\\" in small and "12.3" not in small.split("\\midrule")[0]
    for bad in ({"columns": ["nope"]}, {"env": "figure"}, {"size": "huge"}):
        with pytest.raises(ValueError, match="must be"):
            t.latex(**bad)


def test_task_metrics_reach_the_tables_at_the_final_incumbent(tmp_path_factory):
    import numpy as np

    from hpo_bench.report.metrics import add_derived, cell_metrics, load_records
    from hpo_bench.report.plot import load_report_oracles
    from hpo_bench.report.tables import group_summary, headline_table, results_table, wilcoxon_table

    run = reported_run(tmp_path_factory)
    records = load_records(run)
    oracles = load_report_oracles(run / "oracle", records)
    # a task metric: 0.5 + step/100 + seed/10, so the final incumbent's step decides it
    records["test_accuracy"] = 0.5 + records["step"] / 100 + records["seed"] / 10
    rows = add_derived(records, oracles)
    cells = cell_metrics(rows, oracles)
    summary = group_summary(cells, rows)
    assert summary.attrs["task_metrics"] == ["test_accuracy"]
    for r in summary.itertuples():
        ids = cells[(cells["task"] == r.task) & (cells["tuner_label"] == r.tuner)]["cell_id"]
        finals = [float(rows.loc[int(rows[rows["cell_id"] == c]["incumbent_row"].iloc[-1]), "test_accuracy"])
                  for c in ids]
        assert r.test_accuracy_mean == pytest.approx(np.mean(finals))
        assert r.test_accuracy_std == pytest.approx(np.std(finals, ddof=1))
    res = results_table(summary, cells, wilcoxon_table(summary, cells))
    head = headline_table(summary, cells)
    assert ("m_test_accuracy", "test accuracy") in res.columns and "test accuracy" in res.markdown()
    assert "{test accuracy}" in head.latex()  # in the headline's default LaTeX columns too
    assert "test_accuracy_mean" in head.csv().splitlines()[0]
