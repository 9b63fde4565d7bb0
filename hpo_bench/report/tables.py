"""Report tables: one display model, rendered as markdown, LaTeX (booktabs) and CSV.

A :class:`Table` holds display strings (unicode ``±``, ``→``, ``—``) plus the cells to mark
best, and a raw :class:`pandas.DataFrame` with full-precision numbers for the CSV.
LaTeX output escapes ``& % $ # _ { } ~ ^ \\``, maps the unicode symbols to math mode and
wraps the tabular in ``\\toprule``/``\\midrule``/``\\bottomrule`` (needs ``booktabs``).

LaTeX goes through :meth:`pandas.io.formats.style.Styler.to_latex`; markdown (:meth:`Table.markdown`) and the
HTML page's tables (:mod:`hpo_bench.report.html`) are written by hand because ``Styler.to_string`` writes no
GitHub table (no rule row, alignment or ``|`` escaping), ``DataFrame.to_markdown`` needs ``tabulate``, and
``Styler.to_html`` cannot give a cell the ``data-v`` sort key the page's sorting reads.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .metrics import TARGETS, target_key, target_label

__all__ = ["Table", "results_table", "headline_table", "rank_table", "wilcoxon_table", "settings_table",
           "oracle_table", "group_summary", "MIN_WILCOXON_SEEDS", "fmt", "as_printed"]

#: With fewer paired seeds, the two-sided exact signed-rank test cannot reach p < 0.05
#: (its smallest p-value is 2 / 2^n = 0.0625 at n = 5).
MIN_WILCOXON_SEEDS = 6


@dataclass
class Table:
    """A rendered-later table.

    Attributes:
        name: file stem (``results`` -> ``results.md``, ``results.tex``, ``results.csv``).
        caption: one sentence for LaTeX and the summary.
        columns: ``(key, header)`` pairs; headers may hold unicode symbols.
        rows: dicts of display strings; ``rows[i]["_bold"]`` is the set of keys to mark.
        raw: full-precision data for the CSV.
        align: per key ``"l"`` or ``"r"`` (default ``"r"``).
        notes: lines printed under the markdown table.
        latex_columns: the keys :meth:`latex` prints by default (chosen so that the table fits
            the text width of a one-column paper, 5.5in, in ``\\footnotesize``); ``None``: all.
        latex_env: the default float, ``"table*"`` (full width in a two-column paper) or ``"table"``.
        digits: per key the significant digits of its numbers in LaTeX (default: :meth:`latex`'s ``digits``).
        widths: per key a LaTeX width (``"0.3\\linewidth"``): that column is a wrapping ``p`` column.
    """

    name: str
    caption: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]]
    raw: pd.DataFrame
    align: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    latex_columns: list[str] | None = None
    latex_env: str = "table*"
    widths: dict[str, str] = field(default_factory=dict)
    digits: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------ markdown
    def markdown(self) -> str:
        def cell(r: dict, k: str) -> str:
            text = str(r.get(k, "")).replace("|", "\\|")
            return f"**{text}**" if k in r.get("_bold", ()) and text else text

        head = "| " + " | ".join(h for _, h in self.columns) + " |"
        rule = "|" + "|".join(":---" if self.align.get(k, "r") == "l" else "---:" for k, _ in self.columns) + "|"
        body = ["| " + " | ".join(cell(r, k) for k, _ in self.columns) + " |" for r in self.rows]
        out = "\n".join([head, rule, *body]) + "\n"
        if self.notes:
            out += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return out

    # --------------------------------------------------------------- latex
    def latex(self, *, columns: list[str] | None = None, env: str | None = None, placement: str = "t",
              size: str = "footnotesize", label_prefix: str = "tab:", multirow: bool = True, siunitx: bool = True,
              digits: int = 3, tabcolsep: str = "4pt") -> str:
        """The table as LaTeX, rendered by :meth:`pandas.io.formats.style.Styler.to_latex`.

        Guarantees: booktabs rules (``\\toprule``/``\\midrule``/``\\bottomrule``, one ``\\midrule``
        between groups of rows, e.g. tasks); every LaTeX special character escaped and the unicode
        symbols in math mode; numbers of a column with the same significant ``digits`` (2 for a
        spread after ``±``) and one notation per column (scientific where the column holds values
        below 1e-3 or from 1e5); with ``siunitx``, plain-number columns are ``S`` columns aligned
        on the decimal point (needs ``\\usepackage{siunitx}``); with ``multirow``, a name repeated
        down the first column is printed once, ``\\multirow`` over its rows (needs
        ``\\usepackage{multirow}``).

        Args:
            columns: keys to print, in order (default :attr:`latex_columns`, else every column).
            env: ``"table"`` or ``"table*"`` (default :attr:`latex_env`).
            placement: the float's placement, e.g. ``"t"``, ``"htbp"``.
            size: a font-size command name (``footnotesize``, ``small``, ``scriptsize``...), or ``""``.
            label_prefix: ``\\label{<prefix><name>}``: two reports in one paper use two prefixes.
            tabcolsep: ``\\tabcolsep`` of the table (``""``: the document's).

        Raises:
            ValueError: an unknown column key, environment or size.
        """
        return render_latex(self, columns=columns, env=env, placement=placement, size=size,
                            label_prefix=label_prefix, multirow=multirow, siunitx=siunitx, digits=digits,
                            tabcolsep=tabcolsep)

    def csv(self) -> str:
        return self.raw.to_csv(index=False, float_format="%.10g")


_TEX_SPECIAL = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
                "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
_TEX_UNICODE = {"±": "$\\pm$", "→": "$\\to$", "—": "---", "≥": "$\\geq$", "≤": "$\\leq$", "λ": "$\\lambda$",
                "×": "$\\times$", "·": "$\\cdot$", "✓": "yes", "✗": "no", "†": "$^\\dagger$",
               "∞": "$\\infty$", "∈": "$\\in$", "−": "$-$", "↑": "$\\uparrow$", "–": "--",
                "‖": "$\\|$", "∇": "$\\nabla$"}


def tex_escape(text: str) -> str:
    out = "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)
    for u, t in _TEX_UNICODE.items():
        out = out.replace(u, t)
    return out


def _tex_two_lines(text: str) -> str:
    """A cell as LaTeX; an instance label marked as on a synthetic stand-in (:mod:`hpo_bench.report.datasets`)
    puts the mark on a second line (a top-aligned inner tabular), so the column is as wide as its longer line."""
    from .datasets import STAND_IN, is_marked

    if not is_marked(text):
        return tex_escape(text)
    at = text.index(f" ({STAND_IN}: ")
    label, mark = text[:at], text[at + 2:]
    return f"\\begin{{tabular}}[t]{{@{{}}l@{{}}}}{tex_escape(label)}\\\\({tex_escape(mark)}\\end{{tabular}}"


#: Floats the LaTeX renderer reformats (a decimal point or an exponent; integers such as counts stay).
_FLOAT_RE = re.compile(r"(?<![\w.])-?(?:\d+\.\d*|\.\d+|\d+(?=e))(?:e[+-]?\d+)?(?![\w.])")
_PLAIN_RE = re.compile(r"^-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$")
LATEX_ENVS = ("table", "table*")
LATEX_SIZES = ("", "tiny", "scriptsize", "footnotesize", "small", "normalsize")


def sig(x: float, digits: int, sci: bool) -> str:
    """``x`` with ``digits`` significant digits, trailing zeros kept: ``sig(0.1, 3, False) == "0.100"``,
    ``sig(1.234e-5, 3, True) == "1.23e-05"``."""
    if not math.isfinite(x):
        return fmt(x)
    if sci:
        return f"{x:.{max(digits - 1, 0)}e}"
    if x == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
    text = f"{x:.{decimals}f}"
    if len(text.lstrip("-").replace(".", "").lstrip("0")) > digits and decimals > 0:  # rounding added a digit
        text = f"{x:.{decimals - 1}f}"
    return text


def _column_notation(cells: list[str]) -> bool:
    """Scientific notation for the whole column when any of its main numbers is below 1e-3 or from 1e5."""
    for text in cells:
        for m in _FLOAT_RE.finditer(text):
            v = abs(float(m.group(0)))
            if v and (v < 1e-3 or v >= 1e5):
                return True
    return False


def _reformat(text: str, digits: int, sci: bool) -> str:
    """Every float of a cell with the column's digits and notation (2 digits after ``±``)."""
    def repl(m: re.Match) -> str:
        spread = text[:m.start()].rstrip().endswith("±")
        return sig(float(m.group(0)), 2 if spread else digits, sci)
    return _FLOAT_RE.sub(repl, text)


def _table_format(cells: list[str]) -> str:
    """siunitx ``table-format`` wide enough for every number of an ``S`` column."""
    sign = any(c.startswith("-") for c in cells)
    ints, decs, exps = 1, 0, 0
    for c in cells:
        mant, _, exp = c.lstrip("-").partition("e")
        i, _, d = mant.partition(".")
        ints, decs = max(ints, len(i)), max(decs, len(d))
        if exp:
            exps = max(exps, len(exp.lstrip("+-").lstrip("0")) or 1)
    return ("-" if sign else "") + f"{ints}.{decs}" + (f"e-{exps}" if exps else "")


def render_latex(table: Table, *, columns: list[str] | None = None, env: str | None = None, placement: str = "t",
                 size: str = "footnotesize", label_prefix: str = "tab:", multirow: bool = True,
                 siunitx: bool = True, digits: int = 3, tabcolsep: str = "4pt") -> str:
    """:meth:`Table.latex` (see there)."""
    known = [k for k, _ in table.columns]
    keys = list(columns) if columns is not None else list(table.latex_columns or known)
    bad = [k for k in keys if k not in known]
    if bad:
        raise ValueError(f"columns must be keys of table {table.name!r} ({known}), but got {bad}")
    env = table.latex_env if env is None else env
    if env not in LATEX_ENVS:
        raise ValueError(f"env must be one of {list(LATEX_ENVS)}, but got {env!r}")
    if size not in LATEX_SIZES:
        raise ValueError(f"size must be one of {list(LATEX_SIZES)}, but got {size!r}")
    headers = dict(table.columns)
    raw_cells = {k: [str(r.get(k, "")) for r in table.rows] for k in keys}
    bold = [set(r.get("_bold", ())) for r in table.rows]
    body: dict[str, list[str]] = {}
    spec = []
    for k in keys:
        if table.align.get(k, "r") == "r":  # number columns; text columns (names, params, notes) stay as they are
            sci = _column_notation(raw_cells[k])
            cells = [_reformat(c, table.digits.get(k, digits), sci) for c in raw_cells[k]]
        else:
            cells = raw_cells[k]
        plain = [c for c in cells if c not in ("", "—")]
        as_s = (siunitx and plain and all(_PLAIN_RE.match(c) for c in plain) and k not in table.widths
                and not any(k in b for b in bold))
        if as_s:
            spec.append(f"S[table-format={_table_format(plain)}]")
            body[k] = [c if c not in ("", "—") else "{---}" for c in cells]
            continue
        width = table.widths.get(k)
        spec.append(f">{{\\raggedright\\arraybackslash}}p{{{width}}}" if width else table.align.get(k, "r"))
        body[k] = [tex_escape(c) for c in cells] if width else [_tex_two_lines(c) for c in cells]
    groups = [r.get("_group") for r in table.rows]
    first = keys[0] if keys else None
    if multirow and first is not None and len(table.rows) > 1:
        col = body[first]
        i = 0
        while i < len(col):
            j = i + 1
            while j < len(col) and raw_cells[first][j] == raw_cells[first][i] and groups[j] == groups[i]:
                j += 1
            if j - i > 1 and raw_cells[first][i]:
                col[i] = f"\\multirow[t]{{{j - i}}}{{*}}{{{col[i]}}}"
                for t in range(i + 1, j):
                    col[t] = ""
            i = j
    frame = pd.DataFrame(body, columns=keys)
    styler = frame.style.hide(axis="index")
    styler = styler.relabel_index([tex_escape(headers[k]) for k in keys], axis=1)
    marks = pd.DataFrame([["textbf:--rwrap;" if k in b and body[k][i] else "" for k in keys]
                          for i, b in enumerate(bold)], columns=keys, index=frame.index)
    styler = styler.apply(lambda _: marks, axis=None)
    commands = ([{"selector": size, "props": ":;"}] if size else []) + \
        ([{"selector": "setlength", "props": f":{{\\tabcolsep}}{{{tabcolsep}}};"}] if tabcolsep else [])
    if commands:
        styler = styler.set_table_styles(commands, overwrite=False)
    text = styler.to_latex(environment=env, position=placement or None, position_float="centering", hrules=True,
                           caption=tex_escape(table.caption), label=f"{label_prefix}{table.name}",
                           column_format="".join(spec), siunitx=siunitx)
    lines = text.rstrip("\n").split("\n")
    head = lines.index("\\midrule")  # after the header row: one \midrule between groups of rows
    out, prev = lines[:head + 1], None
    for i, line in enumerate(lines[head + 1:head + 1 + len(table.rows)]):
        if i and groups[i] is not None and groups[i] != prev:
            out.append("\\midrule")
        prev = groups[i]
        out.append(line)
    out += lines[head + 1 + len(table.rows):]
    needs = ["booktabs"] + (["siunitx"] if any(s.startswith("S[") for s in spec) else []) + \
        (["multirow"] if any("\\multirow" in c for c in body.get(first, [])) else []) + \
        (["array"] if any(s.startswith(">{") for s in spec) else [])
    return f"% generated by `hpo-bench report`; needs \\usepackage{{{','.join(needs)}}}\n" + "\n".join(out) + "\n"


# ------------------------------------------------------------------ formatting
def fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}g}"


def as_printed(x: float, digits: int = 4) -> float:
    """``x`` rounded to what :func:`fmt` prints (NaN and ±inf unchanged): values that print the
    same compare equal, so ranks and bold never split results a reader cannot tell apart."""
    if x is None or not math.isfinite(float(x)):
        return math.nan if x is None else float(x)
    return float(f"{float(x):.{digits}g}")


def _pm(mean: float, std: float) -> str:
    return fmt(mean) if not math.isfinite(std) else f"{fmt(mean)} ± {fmt(std, 2)}"


def _ci(lo: float, hi: float) -> str:
    return "—" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{fmt(lo)}, {fmt(hi)}]"


def _mean_std_ci(x: np.ndarray) -> tuple[float, float, float, float]:
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return (math.nan,) * 4
    m = float(x.mean())
    if n == 1:
        return m, math.nan, math.nan, math.nan
    s = float(x.std(ddof=1))
    h = float(stats.t.ppf(0.975, n - 1)) * s / math.sqrt(n)
    return m, s, m - h, m + h


def _median_with_unreached(x: np.ndarray) -> float:
    """Median where NaN (not reached) counts as +inf."""
    return float(np.median(np.where(np.isfinite(x), x, np.inf))) if x.size else math.nan


def _reach(x: np.ndarray, unit: str = "") -> str:
    med = _median_with_unreached(x)
    k, n = int(np.isfinite(x).sum()), x.size
    text = "n.r." if not math.isfinite(med) else f"{fmt(med, 3)}{unit}"
    return text if k == n else f"{text} ({k}/{n})"


# ------------------------------------------------------------------ summaries
#: Columns the report derives from the records (never a task's own metric).
_DERIVED = {"objective", "incumbent_objective", "incumbent_row", "first_row", "oracle_val_loss", "oracle_gap",
            "n_params", "regret", "val_loss_gap_own_w", "incumbent_regret", "cost_units", "task_order",
            "tuner_label_order", "family", "regret_plot"}


def task_metric_columns(rows: pd.DataFrame) -> list[str]:
    """The numeric columns of ``rows`` that tasks recorded (:meth:`hpo_bench.core.task.Task.extra_metrics`):
    neither record columns nor stochastic-tuner columns nor derived by the report."""
    from ..core.records import COLUMNS

    try:
        from ..core.records import STOCHASTIC_COLUMNS
    except ImportError:  # an older records module
        STOCHASTIC_COLUMNS = ()
    known = set(COLUMNS) | set(STOCHASTIC_COLUMNS) | _DERIVED
    return [c for c in rows.columns if c not in known and pd.api.types.is_numeric_dtype(rows[c])
            and not pd.api.types.is_bool_dtype(rows[c]) and rows[c].notna().any()]


def _final_task_metrics(cells: pd.DataFrame, rows: pd.DataFrame) -> dict[str, dict[Any, float]]:
    """Per task metric, per cell id: its value at the cell's final incumbent (NaN where none)."""
    cols = task_metric_columns(rows)
    if not cols or "incumbent_row" not in rows:
        return {}
    last = rows.groupby("cell_id", sort=False)["incumbent_row"].last()
    out: dict[str, dict[Any, float]] = {}
    for c in cols:
        vals = pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=float)
        out[c] = {cid: float(vals[i]) if i >= 0 else math.nan for cid, i in last.items()}
    return out


def group_summary(cells: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """One row per task x tuner label: aggregates over seeds (raw numbers).

    Task metrics (e.g. ``test_accuracy``) at each cell's final incumbent give ``<name>_mean`` and
    ``<name>_std`` (over seeds), where the records hold them."""
    finals = _final_task_metrics(cells, rows)
    med_err = rows.groupby(["task", "tuner_label"], sort=False)["hypergrad_rel_error"].median() \
        if "hypergrad_rel_error" in rows else pd.Series(dtype=float)
    out = []
    for (task, tuner), g in cells.groupby(["task", "tuner_label"], sort=False):
        r: dict[str, Any] = {"task": task, "tuner": tuner, "tuner_name": g["tuner"].iloc[0],
                             "seeds": len(g), "seeds_ok": int((g["status"] == "ok").sum())}
        for col, key in (("final_val_loss", "val"), ("final_test_loss", "test"), ("final_regret", "regret")):
            m, s, lo, hi = _mean_std_ci(g[col].to_numpy(dtype=float))
            r.update({f"{key}_mean": m, f"{key}_std": s, f"{key}_ci_low": lo, f"{key}_ci_high": hi})
        r["regret_median"] = float(np.nanmedian(g["final_regret"])) if g["final_regret"].notna().any() else math.nan
        # validation-test gap: the incumbent's test minus validation loss (both at its own w), see metrics
        m, s, lo, hi = _mean_std_ci((g["final_test_loss"] - g["final_val_loss"]).to_numpy(dtype=float))
        r.update({"val_test_gap_mean": m, "val_test_gap_std": s})
        r["overfit_seeds"] = int(g["overfit"].astype(bool).sum()) if "overfit" in g else 0
        for frac in TARGETS:
            k = target_key(frac)
            for what in ("time", "cost"):
                x = g[f"{what}_to_{k}"].to_numpy(dtype=float)
                r[f"{what}_to_{k}_median"] = _median_with_unreached(x)
                r[f"reached_{k}"] = int(np.isfinite(x).sum())
        r["hypergrad_rel_error_median"] = float(med_err.get((task, tuner), math.nan))
        for name, per_cell in finals.items():
            m, sd, _, _ = _mean_std_ci(np.array([per_cell.get(c, math.nan) for c in g["cell_id"]], dtype=float))
            r[f"{name}_mean"], r[f"{name}_std"] = m, sd
        r["tuner_s_mean"] = float(g["tuner_s"].mean())
        r["wall_s_mean"] = float(g["wall_s"].mean()) if "wall_s" in g else math.nan
        r["cost_units_mean"] = float(g["cost_units"].mean())
        out.append(r)
    df = pd.DataFrame(out)
    df.attrs["task_metrics"] = list(finals)
    # rank the mean regret as printed (fmt's 4 significant digits): equal-looking results tie,
    # share the average rank and are all marked best
    printed = df["regret_mean"].map(as_printed)
    df["rank"] = printed.groupby(df["task"]).rank(method="average", na_option="bottom")
    df["best"] = df["rank"] == df.groupby("task")["rank"].transform("min")
    return df


def _gap(r: Any) -> str:
    """The validation-test gap (mean ± std), flagged ``test↑ k/n`` when k seeds overfit."""
    text = _pm(r.val_test_gap_mean, r.val_test_gap_std)
    return f"{text} (test↑ {r.overfit_seeds}/{r.seeds})" if r.overfit_seeds else text


#: The note under every table with a validation-test gap column.
GAP_NOTE = ("val–test gap: the final incumbent's test loss minus its validation loss, both at the tuner's own w "
            "(mean ± std over seeds); test↑ k/n: k of n seeds where, from the cell's first recorded point to its "
            "incumbent, the validation loss fell while the test loss rose (the tuner fitted the validation split "
            "at the test split's expense)")


def _metric_columns(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """Table columns of the task metrics in ``summary`` (``test_accuracy`` -> ``test accuracy``)."""
    return [(f"m_{m}", m.replace("_", " ")) for m in summary.attrs.get("task_metrics", [])]


def _metric_cells(r: Any) -> dict[str, str]:
    """Display cells (mean ± std over seeds) of the task metrics of one summary row."""
    d = r._asdict()
    return {f"m_{k[:-5]}": _pm(d[k], d.get(k[:-5] + "_std", math.nan)) for k in d
            if k.endswith("_mean") and k[:-5] + "_std" in d and k[:-5] not in _SUMMARY_KEYS}


_SUMMARY_KEYS = {"val", "test", "regret", "val_test_gap", "tuner_s", "wall_s", "cost_units"}


def results_table(summary: pd.DataFrame, cells: pd.DataFrame, wilcoxon: pd.DataFrame) -> Table:
    p = {(r.task, r.tuner): r for r in wilcoxon.itertuples()} if not wilcoxon.empty else {}
    cols = [("task", "task"), ("tuner", "tuner"), ("seeds", "seeds ok"), ("val", "val loss"),
            ("val_ci", "val 95% CI"), ("test", "test loss"), ("test_ci", "test 95% CI")]
    cols += _metric_columns(summary)
    cols += [("regret", "regret"), ("gap", "val–test gap")]
    for frac in TARGETS:
        cols.append((f"t_{target_key(frac)}", f"t→{target_label(frac)} (s)"))
    for frac in TARGETS:
        cols.append((f"c_{target_key(frac)}", f"cost→{target_label(frac)}"))
    cols += [("hg", "hypergrad err"), ("tuner_s", "tuner (s)"), ("wall_s", "wall (s)"), ("p", "p vs best")]
    rows = []
    for r in summary.itertuples():
        g = cells[(cells["task"] == r.task) & (cells["tuner_label"] == r.tuner)]
        d: dict[str, Any] = {"_group": r.task, "task": r.task, "tuner": r.tuner,
                             "seeds": f"{r.seeds_ok}/{r.seeds}",
                             "val": _pm(r.val_mean, r.val_std), "val_ci": _ci(r.val_ci_low, r.val_ci_high),
                             "test": _pm(r.test_mean, r.test_std), "test_ci": _ci(r.test_ci_low, r.test_ci_high),
                             "regret": _pm(r.regret_mean, r.regret_std), "gap": _gap(r),
                             "hg": fmt(r.hypergrad_rel_error_median, 2), "tuner_s": fmt(r.tuner_s_mean, 3),
                             "wall_s": fmt(r.wall_s_mean, 3)}
        for frac in TARGETS:
            k = target_key(frac)
            d[f"t_{k}"] = _reach(g[f"time_to_{k}"].to_numpy(dtype=float))
            d[f"c_{k}"] = _reach(g[f"cost_to_{k}"].to_numpy(dtype=float))
        d.update(_metric_cells(r))
        w = p.get((r.task, r.tuner))
        d["p"] = "best" if r.best else ("—" if w is None else w.display)
        if r.best:
            d["_bold"] = {"tuner", "regret"}
        rows.append(d)
    raw = summary.drop(columns=["best"]).copy()
    raw.insert(raw.columns.get_loc("rank") + 1, "best", summary["best"])
    notes = ["final = the incumbent at the end of the budget (lowest observed validation loss); regret = its "
             "validation loss at the reference inner solve minus the oracle's; mean ± std over seeds",
             "t→x% / cost→x%: median over seeds of tuner seconds / cost units until the regret is within x% of "
             "the oracle gap; n.r. = not reached; (k/n) = seeds that reached it",
             "tuner (s): the tuner's own clock at the end of the budget (measurements paused), mean over seeds; "
             "wall (s): the cell's wall clock (task build + tuner + measurements + harness), mean over seeds",
             "p vs best: Wilcoxon signed-rank test of the final regret against the task's best tuner, paired by seed",
             GAP_NOTE]
    return Table("results", "Final validation and test loss, regret, time- and cost-to-target per task and tuner "
                 "(best mean regret in bold).", cols, rows, raw,
                 align={"task": "l", "tuner": "l", "p": "l"}, notes=notes,
                 latex_columns=["task", "tuner", "seeds", "test", "regret", f"t_{target_key(TARGETS[0])}", "hg", "p"])


def headline_table(summary: pd.DataFrame, cells: pd.DataFrame) -> Table:
    k = target_key(TARGETS[0])
    cols = [("task", "task"), ("tuner", "tuner"), ("regret", "regret"), ("median", "regret (median)"),
            ("test", "test loss"), *_metric_columns(summary), ("gap", "val–test gap"),
            ("t", f"t→{target_label(TARGETS[0])} (s)"), ("tuner_s", "tuner (s)"), ("wall_s", "wall (s)"),
            ("rank", "rank")]
    rows = []
    for r in summary.itertuples():
        g = cells[(cells["task"] == r.task) & (cells["tuner_label"] == r.tuner)]
        d = {"_group": r.task, "task": r.task, "tuner": r.tuner, "regret": _pm(r.regret_mean, r.regret_std),
             "median": fmt(r.regret_median, 3),
             "test": _pm(r.test_mean, r.test_std), "gap": _gap(r), "t": _reach(g[f"time_to_{k}"].to_numpy(dtype=float)),
             "tuner_s": fmt(r.tuner_s_mean, 3), "wall_s": fmt(r.wall_s_mean, 3), "rank": fmt(r.rank, 3),
             **_metric_cells(r)}
        if r.best:
            d["_bold"] = {"tuner", "regret"}
        rows.append(d)
    raw = summary[["task", "tuner", "regret_mean", "regret_std", "regret_median", "test_mean", "test_std",
                   "val_test_gap_mean", "val_test_gap_std", "overfit_seeds", f"time_to_{k}_median", "tuner_s_mean",
                   "wall_s_mean", "rank"] + [f"{m}_{s}" for m in summary.attrs.get("task_metrics", [])
                                             for s in ("mean", "std")]]
    return Table("headline", "Headline: final regret (mean ± std over seeds, and median), test loss, time to 1% of "
                 "the oracle gap; best mean regret in bold, ranks by mean regret.", cols, rows, raw,
                 align={"task": "l", "tuner": "l"}, notes=[GAP_NOTE],
                 latex_columns=["task", "tuner", "regret", "test"]
                 + (["m_test_accuracy"] if "test_accuracy" in summary.attrs.get("task_metrics", []) else [])
                 + ["t", "rank"])


def rank_table(summary: pd.DataFrame) -> Table:
    rows, raw = [], []
    for tuner, g in summary.groupby("tuner", sort=False):
        ar = float(g["rank"].mean())
        raw.append({"tuner": tuner, "average_rank": ar, "tasks": len(g), "wins": int(g["best"].sum()),
                    "tasks_list": ";".join(g["task"])})
    raw_df = pd.DataFrame(raw).sort_values(["average_rank", "tuner"], kind="stable").reset_index(drop=True)
    n_tasks = summary["task"].nunique()
    best = as_printed(raw_df["average_rank"].min(), 3)
    for r in raw_df.itertuples():
        d = {"tuner": r.tuner, "rank": fmt(r.average_rank, 3), "tasks": f"{r.tasks}/{n_tasks}", "wins": str(r.wins)}
        if as_printed(r.average_rank, 3) == best:  # ties as printed share the bold
            d["_bold"] = {"tuner", "rank"}
        rows.append(d)
    notes = ["rank within each task by mean final regret (1 = best, ties share the average rank), averaged over the "
             "tasks a tuner ran on; a tuner limited to some tasks is ranked on those only"]
    return Table("ranks", "Average rank per tuner across tasks (by mean final regret).",
                 [("tuner", "tuner"), ("rank", "average rank"), ("tasks", "tasks"), ("wins", "wins")], rows, raw_df,
                 align={"tuner": "l"}, notes=notes, latex_env="table")


def wilcoxon_table(summary: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Each tuner vs the task's best (by mean final regret), paired by seed (raw rows + display).

    Tuners tied for best (equal as printed) are all best and are not tested; the others are
    tested against the first of them in the suite's order.
    """
    out = []
    for task, s in summary.groupby("task", sort=False):
        bests = set(s[s["best"]]["tuner"])
        best = s[s["best"]]["tuner"].iloc[0]
        cb = cells[(cells["task"] == task) & (cells["tuner_label"] == best)].set_index("seed")["final_regret"]
        for tuner in s["tuner"]:
            if tuner in bests:
                continue
            ct = cells[(cells["task"] == task) & (cells["tuner_label"] == tuner)].set_index("seed")["final_regret"]
            pair = pd.concat([cb.rename("best"), ct.rename("other")], axis=1, join="inner").dropna()
            pair = pair[np.isfinite(pair["best"]) & np.isfinite(pair["other"])]
            n = len(pair)
            diff = (pair["other"] - pair["best"]).to_numpy(dtype=float)
            stat, pval, note = math.nan, math.nan, ""
            if n == 0:
                note = "no paired seeds"
            elif np.all(diff == 0):
                pval, note = 1.0, "identical final regrets"
            else:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    res = stats.wilcoxon(pair["other"], pair["best"], alternative="two-sided")
                stat, pval = float(res.statistic), float(res.pvalue)
                if caught:
                    note = "; ".join(sorted({str(w.message).split(".")[0] for w in caught}))
            too_few = n < MIN_WILCOXON_SEEDS
            if too_few and n > 0:
                note = (f"too few seeds (n={n}: smallest attainable p = {2 / 2 ** n:.3g})" + (f"; {note}" if note
                                                                                          else ""))
            display = "—" if not math.isfinite(pval) else f"{pval:.3g}" + ("†" if too_few else "")
            out.append({"task": task, "best": best, "tuner": tuner, "n": n, "median_diff": float(np.median(diff))
                        if n else math.nan, "statistic": stat, "p_value": pval, "too_few_seeds": too_few,
                        "note": note, "display": display})
    return pd.DataFrame(out, columns=["task", "best", "tuner", "n", "median_diff", "statistic", "p_value",
                                      "too_few_seeds", "note", "display"])


def wilcoxon_display(w: pd.DataFrame) -> Table:
    rows = []
    for r in w.itertuples():
        rows.append({"_group": r.task, "task": r.task, "best": r.best, "tuner": r.tuner, "n": str(r.n),
                     "diff": fmt(r.median_diff, 3), "p": fmt(r.p_value, 3),
                     "flag": "too few seeds" if r.too_few_seeds else "", "note": r.note})
    notes = [f"two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon) of final regret, tuner vs the task's best, "
             f"paired by seed; with fewer than {MIN_WILCOXON_SEEDS} pairs p < 0.05 is unattainable (flagged, † in "
             "the results table); diff = median of (tuner − best)"]
    return Table("wilcoxon", "Wilcoxon signed-rank tests against the best tuner per task.",
                 [("task", "task"), ("best", "best"), ("tuner", "tuner"), ("n", "n"), ("diff", "median diff"),
                  ("p", "p"), ("flag", "flag"), ("note", "note")], rows,
                 w.drop(columns=["display"]), align={k: "l" for k in ("task", "best", "tuner", "flag", "note")},
                 notes=notes, latex_columns=["task", "best", "tuner", "n", "diff", "p", "flag"])


def _params_text(params: str | dict) -> str:
    d = json.loads(params) if isinstance(params, str) else dict(params)
    return ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(d.items())) or "(defaults)"


def settings_table(cells: pd.DataFrame, choices: dict[str, Any] | None, declared: dict[str, dict] | None) -> Table:
    """Which settings each tuner ran with, and where they came from (declared or the tune step)."""
    tuned = {t["label"]: t for t in (choices or {}).get("tuners", [])}
    rows, raw = [], []
    for (tuner, task), g in cells.groupby(["tuner_label", "task"], sort=False):
        params = g["tuner_params"].iloc[0]
        src = "declared"
        t = tuned.get(tuner)
        label = g["task_label"].iloc[0] if "task_label" in g else task  # tune choices name the suite's label
        if t is not None and t.get("choice") and label in t["choice"]["by_task"]:
            grid = ", ".join(f"{k} ∈ {json.dumps(v)}" for k, v in t["grid"].items())
            src = f"tuned ({t['choice']['scope']} scope, seeds {choices['seeds']}): {grid}"
        elif declared and tuner in declared:
            grid = ", ".join(f"{k} ∈ {json.dumps(v)}" for k, v in declared[tuner].items())
            src = f"declared defaults: the suite's tune step ({grid}) was not run"
        raw.append({"tuner": tuner, "name": g["tuner"].iloc[0], "task": task, "params": params, "source": src})
    raw_df = pd.DataFrame(raw)
    order = {lab: i for i, lab in enumerate(pd.unique(cells["tuner_label"]))}
    raw_df = raw_df.sort_values("tuner", key=lambda col: col.map(order), kind="stable")
    # one row per tuner when its params agree across tasks
    for (tuner, params, src), g in raw_df.groupby(["tuner", "params", "source"], sort=False):
        tasks = ", ".join(g["task"])
        rows.append({"tuner": tuner, "name": g["name"].iloc[0], "tasks": tasks, "params": _params_text(params),
                     "source": src})
    return Table("settings", "Tuner settings used in the runs and where they came from.",
                 [("tuner", "tuner"), ("name", "registered"), ("tasks", "tasks"), ("params", "params"),
                  ("source", "source")], rows, raw_df, align={k: "l" for k in ("tuner", "name", "tasks", "params",
                                                                                "source")},
                 widths={"tasks": "0.17\\linewidth", "params": "0.27\\linewidth", "source": "0.15\\linewidth"})


def oracle_table(oracles: list[tuple[str, Any]]) -> Table:
    """``oracles``: ``(task label, OracleResult)`` pairs, in display order.

    The table names, per instance, the source of F* (the oracle, or a tuner's record when one beat
    it: an *oracle failure*), which start found it, and the evaluations against the count budget;
    oracle failures and incomplete (backstop) oracles are set in bold and head the notes.
    """
    rows, raw, alarms = [], [], []
    for label, o in oracles:
        hp = np.asarray(o.hp, dtype=float)
        if hp.size <= 2:
            hp_text = ", ".join(fmt(float(v), 4) for v in hp)
        else:
            hp_text = f"{hp.size} values in [{fmt(float(hp.min()), 3)}, {fmt(float(hp.max()), 3)}]"
        failed = bool(getattr(o, "failed", False))
        complete = bool(getattr(o, "complete", True))
        source = getattr(o, "source", "oracle")
        if failed:
            alarms.append(f"ORACLE FAILURE on {label} seed {o.seed}: {source} is below the computed F*")
        if not complete:
            alarms.append(f"INCOMPLETE ORACLE on {label} seed {o.seed}: the wall-clock backstop fired, "
                          "so this F* depends on the machine")
        budget = getattr(o, "max_evals", 0)
        polished = getattr(o, "polished", 0)
        stat = getattr(o, "stationarity", None)
        rows.append({"_group": label, "task": label, "seed": str(o.seed), "f": fmt(o.val_loss, 8),
                     "init": fmt(o.init_val_loss, 6),
                     "hp": hp_text,
                     # each note says what it is (grid thinned, backstop fired, a record beat it)
                     "method": o.method + (" (" + "; ".join(o.notes) + ")" if o.notes else ""),
                     "source": (f"{source} (oracle failure)" if failed else source)
                     + ("" if complete else " (INCOMPLETE)"),
                     "_bold": ("source",) if failed or not complete else (),
                     "winner": getattr(o, "winner", ""),
                     "evals": str(o.n_evals) + (f" / {budget}" if budget else "")
                     + (f" (+{polished} polished)" if polished else ""),
                     "stat": "–" if stat is None else fmt(float(stat), 2), "s": fmt(o.seconds, 3)})
        raw.append({"task": label, "name": o.task, "params": json.dumps(o.params, sort_keys=True), "seed": o.seed,
                    "oracle_val_loss": o.val_loss, "init_val_loss": o.init_val_loss, "gap": o.gap,
                    "method": o.method, "n_evals": o.n_evals, "max_evals": budget, "starts": o.starts,
                    "polished": polished, "winner": getattr(o, "winner", ""), "source": source,
                    "complete": complete, "seconds": o.seconds, "hp": json.dumps(o.hp),
                    "stationarity": stat, "best_bound": getattr(o, "best_bound", None),
                    "reference_bound": getattr(o, "reference_bound", None),
                    "key": o.key, "notes": "; ".join(o.notes)})
    notes = alarms + [
        "≤ 2 hyperparameters: dense grid of the reference solve + L-BFGS-B polish (grid cells, then the whole box); "
        "more: L-BFGS-B with the exact hypergradient from min(max(8, 2m), 32) starts for m hyperparameters; then "
        "L-BFGS-B from every cell's best point (+polish, 'polished'); infeasible points are projected back onto the "
        "feasible set. Budgets are counts of evaluations (evaluations: spent / budget), never seconds, so F* is "
        "the same on every machine; computed after the run, never in tuner time; found by: the start that won; "
        "source: the oracle, or a tuner's record that was below it beyond rounding (an oracle failure, the "
        "method column then ends in +records); ‖P∇F‖∞: the largest entry of the projected gradient of F at λ* "
        "(in the tuned coordinates, entries at a bound pointing out of the box count 0; 0 at an exact stationary "
        "point; – where λ* was reached without a gradient); seconds: wall time of the computation"]
    return Table("oracle", "Oracle (best-known optimum) per task instance.",
                 [("task", "task"), ("seed", "seed"), ("f", "F*"), ("init", "F(init)"), ("hp", "λ*"),
                  ("source", "F* source"), ("winner", "found by"), ("method", "method"), ("evals", "evaluations"),
                  ("stat", "‖P∇F‖∞"), ("s", "seconds")], rows, pd.DataFrame(raw),
                 align={"task": "l", "hp": "l", "method": "l", "source": "l", "winner": "l"}, notes=notes,
                 latex_columns=["task", "seed", "f", "init", "winner", "evals", "s"],
                 digits={"f": 8, "init": 6},
                 widths={"winner": "0.26\\linewidth", "evals": "0.13\\linewidth"})
