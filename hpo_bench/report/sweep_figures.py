"""The sweeps' figures (``hpo-bench sweep frontier`` and ``sweep scaling``), in the report's style.

:func:`frontier_figure` draws a frontier table (:func:`hpo_bench.analysis.sweep.frontier`), :func:`scaling_figure`
a scaling table and its fits (:func:`hpo_bench.analysis.sweep.scaling_table`, :func:`~hpo_bench.analysis.sweep.fit_exponents`).
Both read only the tables, use the report's stable looks (:func:`hpo_bench.report.style.look_for`) and its
writer (:func:`hpo_bench.report.figures.save_figure`: PNG and PDF).
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from .figures import RC, save_figure

__all__ = ["frontier_figure", "scaling_figure", "ERR_FLOOR"]


def _fig_style():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns, RC


ERR_FLOOR = 1e-16


def _has_knob(g: pd.DataFrame) -> bool:
    k = g["knob"].iloc[0]
    return isinstance(k, str) and bool(k)  # a table read back from CSV has NaN for no knob


def frontier_figure(table: pd.DataFrame, out: Path, *, title: str = "", name: str = "frontier") -> list[Path]:
    """Relative error vs time and vs peak memory (log-log), one line per method in the report's colour of the
    method (:func:`hpo_bench.report.style.look_for`), solid for implicit and dashed for unrolled methods, points
    labelled by knob."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from .style import look_for

    plt, sns, rc = _fig_style()
    d = table[table["status"] == "ok"].copy()
    d["err"] = d["rel_error"].clip(lower=ERR_FLOOR)
    d["mem_mib"] = (d["peak_mem_bytes"] / 2 ** 20).clip(lower=2 ** -20)
    methods = list(pd.unique(d["method"]))
    palette = {m: look_for(m).color for m in methods}  # the report's colour of each method, the same in every figure
    with sns.axes_style("whitegrid"), plt.rc_context(rc):
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.3))
        fig.subplots_adjust(left=0.09, right=0.99, top=0.9 if title else 0.95, bottom=0.3, wspace=0.25)
        for ax, x, xlabel in ((axes[0], "time_s", "time per call (s, min of repeats, 1 thread)"),
                              (axes[1], "mem_mib", "peak memory of the call (MiB)")):
            for m in methods:
                g = d[d["method"] == m].sort_values("knob_value")
                if g.empty:
                    continue
                marker = "o" if _has_knob(g) else "s"
                ax.plot(g[x], g["err"], marker=marker, markersize=3.2 if len(g) > 1 else 5, color=palette[m],
                        linestyle="-" if g["kind"].iloc[0] == "implicit" else "--", linewidth=1.0)
                for _, r in g.iterrows():
                    if math.isfinite(r["knob_value"]):
                        ax.annotate(f"{int(r['knob_value'])}", (r[x], r["err"]), textcoords="offset points",
                                    xytext=(2, 2), fontsize=4.5, color=palette[m])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow log range would label every minor tick
            xs = d[x][d[x] > 0]
            if len(xs) and xs.max() / xs.min() < 30:  # less than ~1.5 decades: label 1..9 x 10^k, plainly
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"rel. error vs reference (0 at {ERR_FLOOR:g})")
        handles = []
        for m in methods:
            g = d[d["method"] == m]
            lab = f"{m} ({g['knob'].iloc[0]})" if _has_knob(g) else m
            handles.append(Line2D([], [], color=palette[m], marker="o" if _has_knob(g) else "s", markersize=3.5,
                                  linestyle="-" if g["kind"].iloc[0] == "implicit" else "--", label=lab))
        fig.legend(handles=handles, loc="lower center", ncol=min(4, max(len(handles), 1)), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        if title:
            fig.suptitle(title, fontsize=8)
        return save_figure(fig, out, name)


def scaling_figure(table: pd.DataFrame, out: Path, *, fits: pd.DataFrame | None = None, title: str = "",
                   name: str = "scaling") -> list[Path]:
    """Time-to-target (left) and cost-to-target (right) vs p, log-log, one line per configuration with the
    report's stable look of its label (:func:`hpo_bench.report.style.look_for`: colour, marker, dashes); the
    legend gives the fitted exponent (``fits``, :func:`fit_exponents`) and the p range of the fit, and says from
    which p a configuration stops reaching the target. A cell that did not reach it is an open triangle at the
    tuner time (cost) it spent, labelled with the gap fraction it left (``final_gap_frac``)."""
    from matplotlib.lines import Line2D

    from .style import look_for, rc_for

    plt, sns, _ = _fig_style()
    labels = list(pd.unique(table["label"]))
    tuner_of = dict(zip(table["label"], table["tuner"]))
    method_of = {lab: json.loads(tp).get("method") for lab, tp in zip(table["label"], table["tuner_params"])}
    looks = {lab: look_for(lab, tuner_of[lab], method_of[lab]) for lab in labels}
    fit_by = {r["label"]: r for r in fits.to_dict("records")} if fits is not None else {}
    with sns.axes_style("whitegrid"), plt.rc_context(rc_for("paper")):
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.4))
        # a long title (sparse sizes, rows of fixed size, budgets) wraps instead of running off the figure
        title = "\n".join(textwrap.wrap(title, 110)) if title else ""
        fig.subplots_adjust(left=0.1, right=0.99, top=(0.9 if "\n" not in title else 0.86) if title else 0.95,
                            bottom=0.34, wspace=0.27)
        n_miss: dict[tuple[Any, int], int] = {}
        for ax, y, spent, ylabel in ((axes[0], "time_to_target_s", "tuner_seconds", "tuner time to target (s)"),
                                     (axes[1], "cost_to_target", "cost", "cost units to target")):
            for lab in labels:
                lk = looks[lab]
                g = table[table["label"] == lab].sort_values("p")
                hit = g[g["reached"].astype(bool)].groupby("p")[y].median()
                ax.plot(hit.index, hit.clip(lower=1e-6), marker=lk.marker, markersize=3.5, color=lk.color,
                        linewidth=1.1, dashes=lk.dashes or (None, None))
                miss = g[~g["reached"].astype(bool)]
                if not miss.empty:
                    ax.plot(miss["p"], miss[spent].clip(lower=1e-6), marker="^", markersize=5, linestyle="",
                            markerfacecolor="none", color=lk.color)
                    for _, r in miss.iterrows():
                        if math.isfinite(r["final_gap_frac"]):
                            k = n_miss.get((ax, r["p"]), 0)  # stagger the labels of misses at the same p
                            n_miss[(ax, r["p"])] = k + 1
                            ax.annotate(f"{r['final_gap_frac']:.0e}", (r["p"], max(r[spent], 1e-6)),
                                        textcoords="offset points", xytext=(4, 2 - 6 * k), fontsize=4.5,
                                        color=lk.color)
            if len(table):
                ax.set_xlim(table["p"].min() / 1.6, table["p"].max() * 2.5)
            ax.set_xscale("log")
            ax.set_yscale("log")
            nf = int(table["n"].iloc[0] / table["p"].iloc[0]) if len(table) else 0
            ax.set_xlabel(f"p (hyperparameters = features; n = {nf} p)" if len(table) else "p")
            ax.set_ylabel(ylabel)
        handles = []
        for lab in labels:
            lk, f = looks[lab], fit_by.get(lab)
            text = lab
            if f is not None:
                if math.isfinite(f["exponent_time"]):
                    text += f": p^{f['exponent_time']:.2f} (p {int(f['fit_p_min'])}-{int(f['fit_p_max'])})"
                if math.isfinite(f["stops_from_p"]):
                    text += f", misses from p={int(f['stops_from_p'])}"
            handles.append(Line2D([], [], color=lk.color, marker=lk.marker, markersize=3.5,
                                  dashes=lk.dashes or (None, None), label=text))
        handles.append(Line2D([], [], color="0.3", marker="^", markerfacecolor="none", linestyle="",
                              label="not reached: budget spent (gap fraction left)"))
        fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), frameon=False,
                   bbox_to_anchor=(0.5, 0.0), fontsize=5.5)
        if title:
            fig.suptitle(title, fontsize=8)
        return save_figure(fig, out, name)
