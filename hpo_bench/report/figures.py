"""Report figures (matplotlib's Agg backend, seaborn for the scatter), PNG and PDF, paper-sized.

Every figure reads only the records table (plus the derived columns of
:mod:`hpo_bench.report.metrics`): one panel per task. Each tuner label has one colour, marker
and dash pattern (:mod:`hpo_bench.report.style`: by method family, stable across figures and
subsets of tuners, readable in greyscale). ``regret_vs_time``, ``regret_vs_cost`` and
``hypergrad_error`` are exactly what :func:`hpo_bench.report.plot.plot` draws (``hpo-bench plot
RUN --metric regret --x time --width 7`` redraws the first): medians over seeds with an
interquartile band of step functions on a common axis, a point only where every seed has a record,
and a y-range that fits the curves (target lines are drawn only inside it). Regrets below
``1e-12 |F*|`` (float64 resolution) are drawn at that floor, since a log axis cannot show zero.
``final_hp`` is the distribution of each tuner's distance from the oracle's λ*; ``val_vs_test``
one arrow per cell in the (validation, test) loss plane.

Runs with stochastic solvers (records with the ``samples`` column of
:data:`hpo_bench.core.records.STOCHASTIC_COLUMNS`) also get :data:`STOCHASTIC_FIGURES`, each only when its
columns have a finite value: regret against samples and epochs, ``‖∇F‖²`` against samples, epochs and
time (``plot()``'s curves, as ``hpo-bench plot RUN --metric grad_norm_sq --x samples`` draws them), and
``estimator_errors``: one row of panels per task, the direction's relative error, ``‖w − w*‖/‖w*‖`` and
``v``'s relative error against samples, each as recorded (median and interquartile band over seeds).
Tuners without a ``samples`` column (black-box, deterministic) have no point on a samples axis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..core.registry import TUNERS  # noqa: E402
from .datasets import panel_title  # noqa: E402
from .metrics import TARGETS, target_label  # noqa: E402
from .plot import PlotError, plot, tuner_looks  # noqa: E402

__all__ = ["palette_for", "FIGURES", "STOCHASTIC_FIGURES", "stochastic_figures", "make_figures", "save_figure", "RC"]

#: Paper sizes: a full-width figure of a two-column paper is about 7 inches.
WIDTH_IN = 7.0
PANEL_H_IN = 2.1
RC = {"font.size": 8, "axes.titlesize": 8, "axes.titley": 1.0, "axes.labelsize": 8, "xtick.labelsize": 7,
      "ytick.labelsize": 7,
      "legend.fontsize": 7, "lines.linewidth": 1.2, "pdf.fonttype": 42, "ps.fonttype": 42,
      "svg.fonttype": "none", "figure.dpi": 100, "savefig.dpi": 200}
FIGURES = ("regret_vs_time", "regret_vs_cost", "hypergrad_error", "final_hp", "val_vs_test")
#: Figures of runs with stochastic solvers: name -> (metric, x-axis) of ``plot()``, or None (estimator_errors).
STOCHASTIC_FIGURES: dict[str, tuple[str, str] | None] = {
    "regret_vs_samples": ("regret", "samples"), "regret_vs_epochs": ("regret", "epochs"),
    "grad_norm_sq_vs_samples": ("grad_norm_sq", "samples"), "grad_norm_sq_vs_epochs": ("grad_norm_sq", "epochs"),
    "grad_norm_sq_vs_time": ("grad_norm_sq", "time"), "estimator_errors": None}
#: The estimator errors of stochastic solvers' rows: (column, axis label).
ESTIMATOR_ERRORS = (("hypergrad_rel_error", "direction rel. error"), ("inner_rel_distance", "‖w − w*‖ / ‖w*‖"),
                    ("v_rel_error", "v rel. error"))
N_GRID = 100
LEGEND_COLS = 5


def palette_for(labels: list[str]) -> dict[str, Any]:
    """One colour per tuner label, in the given order (colour-blind safe up to 10)."""
    colours = sns.color_palette("colorblind", len(labels)) if len(labels) <= 10 else \
        sns.color_palette("husl", len(labels))
    return dict(zip(labels, colours))


def _family(tuner_name: str) -> str:
    try:
        tags = TUNERS.get(tuner_name).tags
    except KeyError:
        return "gradient"
    return "black-box" if "black-box" in tags else "gradient"


DASHES = {"gradient": "", "black-box": (4, 2)}


def _grid(ax_values: np.ndarray) -> np.ndarray | None:
    pos = ax_values[np.isfinite(ax_values) & (ax_values > 0)]
    if pos.size == 0:
        return None
    lo, hi = float(pos.min()), float(pos.max())
    if hi <= lo:
        hi = lo * 1.01
    return np.geomspace(lo, hi, N_GRID)


def _resample(d: pd.DataFrame, x: str, grid: np.ndarray) -> pd.DataFrame:
    """Step-function value of the floored incumbent regret of each cell at every grid point."""
    out = []
    for cell_id, g in d.groupby("cell_id", sort=False):
        xs = g[x].to_numpy(dtype=float)
        ys = g["regret_plot"].to_numpy(dtype=float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        xs, ys = xs[ok], ys[ok]
        if xs.size == 0:
            continue
        order = np.argsort(xs, kind="stable")
        xs, ys = xs[order], np.minimum.accumulate(ys[order])
        idx = np.searchsorted(xs, grid, side="right") - 1
        vals = np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan)
        out.append(pd.DataFrame({"cell_id": cell_id, "tuner_label": g["tuner_label"].iloc[0],
                                 "family": g["family"].iloc[0], "x": grid, "y": vals}))
    if not out:
        return pd.DataFrame(columns=["cell_id", "tuner_label", "family", "x", "y"])
    res = pd.concat(out, ignore_index=True)
    # keep a grid point for a tuner only where every one of its seeds has a record, so the median
    # is over a fixed set of monotone curves (and so monotone itself)
    n_cells = res.groupby("tuner_label")["cell_id"].nunique()
    cnt = res.dropna(subset=["y"]).groupby(["tuner_label", "x"]).size().rename("k").reset_index()
    keep = cnt[cnt["k"] >= cnt["tuner_label"].map(n_cells)][["tuner_label", "x"]]
    return res.merge(keep, on=["tuner_label", "x"], how="inner")


def _median_iqr(d: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Median and interquartile range of ``y`` over seeds at each ``x``, per tuner label (vectorised)."""
    g = d.dropna(subset=[y]).groupby(["tuner_label", x], sort=True)[y]
    out = pd.concat([g.median().rename("median"), g.quantile(0.25).rename("q1"), g.quantile(0.75).rename("q3")],
                    axis=1).reset_index()
    return out


def _band_lines(ax: plt.Axes, agg: pd.DataFrame, x: str, hue_order: list[str], palette: dict,
                families: dict[str, str]) -> None:
    """Median lines (seaborn) with interquartile bands; dashed for black-box tuners."""
    agg = agg.assign(family=agg["tuner_label"].map(families).fillna("gradient"))
    sns.lineplot(data=agg, x=x, y="median", hue="tuner_label", hue_order=hue_order, palette=palette,
                 style="family", style_order=["gradient", "black-box"], dashes=DASHES, estimator=None,
                 errorbar=None, legend=False, ax=ax)
    for lab in hue_order:
        a = agg[agg["tuner_label"] == lab]
        ax.fill_between(a[x].to_numpy(dtype=float), a["q1"].to_numpy(dtype=float), a["q3"].to_numpy(dtype=float),
                        color=palette[lab], alpha=0.15, linewidth=0)


def _title_lines(tasks: list[str]) -> int:
    """Lines of the tallest panel title (2 for an instance on a synthetic stand-in: :func:`panel_title`)."""
    return max((panel_title(t).count("\n") + 1 for t in tasks), default=1)


def _panels(n: int, n_legend: int, title_lines: int = 1) -> tuple[plt.Figure, list[plt.Axes]]:
    """A grid of up to 3 panels per row above a legend band sized for ``n_legend`` entries (and panel titles of
    ``title_lines`` lines).

    Margins are fixed in inches (no constrained layout: it re-measures every tick label of
    every log axis at each save, which dominated the report's run time).
    """
    ncols = min(3, max(n, 1))
    nrows = math.ceil(max(n, 1) / ncols)
    legend_rows = math.ceil(max(n_legend, 1) / LEGEND_COLS)
    extra = 0.14 * (title_lines - 1)  # inches per extra title line (8 pt)
    top_in, bottom_in = 0.25 + extra, 0.45 + 0.17 * legend_rows
    height = PANEL_H_IN * nrows + top_in + bottom_in + extra * (nrows - 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH_IN, height), squeeze=False)
    fig.subplots_adjust(left=0.75 / WIDTH_IN, right=1 - 0.1 / WIDTH_IN, top=1 - top_in / height,
                        bottom=bottom_in / height, wspace=0.42, hspace=0.55 * 2.1 / PANEL_H_IN + extra / PANEL_H_IN)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend(fig: plt.Figure, labels: list[str], palette: dict, families: dict[str, str], extra: list | None = None,
            *, markers: bool = False):
    if markers:  # scatter plots: a dot per tuner
        handles = [Line2D([], [], color=palette[lab], linestyle="", marker="o", markersize=4, label=lab)
                   for lab in labels]
    else:
        handles = [Line2D([], [], color=palette[lab], linestyle="--" if families.get(lab) == "black-box" else "-",
                          label=lab) for lab in labels]
    handles += extra or []
    if handles:
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), LEGEND_COLS),
                   frameon=False)


def save_figure(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    """``name.png`` and ``name.pdf`` (no creation date: reruns give the same bytes) in ``out_dir``; closes ``fig``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, kw in (("png", {}), ("pdf", {"metadata": {"CreationDate": None}})):
        p = out_dir / f"{name}.{ext}"
        fig.savefig(p, **kw)
        paths.append(p)
    plt.close(fig)
    return paths


def _empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=7, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _regret_figure(rows: pd.DataFrame, cells: pd.DataFrame, x: str, xlabel: str, tasks: list[str], labels: list[str],
                   palette: dict, families: dict) -> plt.Figure:
    fig, axes = _panels(len(tasks), len(labels) + len(TARGETS), _title_lines(tasks))
    target_handles = [Line2D([], [], color="0.4", linestyle=ls, linewidth=0.8, label=f"{target_label(f)} of gap")
                      for f, ls in zip(TARGETS, (":", "-."))]
    for ax, task in zip(axes, tasks):
        d = rows[rows["task"] == task]
        grid = _grid(d[x].to_numpy(dtype=float))
        res = _resample(d, x, grid) if grid is not None else None
        if res is None or res.empty:
            _empty(ax, "no records with a positive " + xlabel)
            ax.set_title(panel_title(task))
            continue
        hue_order = [lab for lab in labels if lab in set(res["tuner_label"])]
        _band_lines(ax, _median_iqr(res, "x", "y"), "x", hue_order, palette, families)
        c = cells[cells["task"] == task]
        for frac, ls in zip(TARGETS, (":", "-.")):
            ax.axhline(float(np.median(frac * c["oracle_gap"])), color="0.4", linestyle=ls, linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("regret F(λ) − F*")
        ax.set_title(panel_title(task))
    _legend(fig, [lab for lab in labels if lab in set(rows["tuner_label"])], palette, families, target_handles)
    return fig


def _hypergrad_figure(rows: pd.DataFrame, tasks: list[str], labels: list[str], palette: dict,
                      families: dict) -> plt.Figure:
    fig, axes = _panels(len(tasks), len(labels), _title_lines(tasks))
    err = pd.to_numeric(rows.get("hypergrad_rel_error", pd.Series(np.nan, index=rows.index)), errors="coerce")
    d_all = rows.assign(err=err.clip(lower=1e-16))[np.isfinite(err)]
    shown: list[str] = []
    for ax, task in zip(axes, tasks):
        d = d_all[d_all["task"] == task]
        ax.set_title(panel_title(task))
        if d.empty:
            _empty(ax, "no hypergradients recorded\n(black-box tuners only)")
            continue
        hue_order = [lab for lab in labels if lab in set(d["tuner_label"])]
        shown += [lab for lab in hue_order if lab not in shown]
        _band_lines(ax, _median_iqr(d, "step", "err"), "step", hue_order, palette, families)
        ax.set_yscale("log")
        ax.set_xlabel("outer step")
        ax.set_ylabel("hypergradient rel. error")
    _legend(fig, [lab for lab in labels if lab in shown], palette, families)
    return fig


def _hp_distance(final: float, oracle: float, transform: str) -> float:
    """How far a final hyperparameter is from the oracle's: ``|log10(final / oracle)|`` (decades) for a
    log-transformed one, ``|final - oracle|`` otherwise (NaN where undefined)."""
    if transform == "log":
        return abs(math.log10(final / oracle)) if final > 0 and oracle > 0 else math.nan
    return abs(final - oracle)


def _hp_figure(cells: pd.DataFrame, tasks: list[str], labels: list[str], looks: dict) -> plt.Figure:
    """Per task, the empirical CDF over every hyperparameter and seed of each tuner's distance from
    the oracle's λ* (:func:`_hp_distance`): a curve up and to the left is closer. Unlike a scatter of
    final vs oracle values, hyperparameters stuck at a bound do not pile up on one point, and
    tuners differ by colour, marker and dash."""
    fig, axes = _panels(len(tasks), len(labels), _title_lines(tasks))
    shown: list[str] = []
    for ax, task in zip(axes, tasks):
        c = cells[cells["task"] == task]
        ax.set_title(panel_title(task))
        dist: dict[str, list[float]] = {}
        log = True
        for r in c.itertuples():
            if len(r.final_hp) != len(r.oracle_hp) or not r.final_hp:
                continue
            tr = list(r.transforms) if len(r.transforms) == len(r.final_hp) else ["none"] * len(r.final_hp)
            log = log and all(t == "log" for t in tr)
            dist.setdefault(r.tuner_label, []).extend(_hp_distance(f, o, t) for f, o, t in zip(r.final_hp,
                                                                                                r.oracle_hp, tr))
        vals = np.array([v for d in dist.values() for v in d], dtype=float)
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            _empty(ax, "no final hyperparameters")
            continue
        pos = vals[vals > 0]
        floor = float(pos.min()) / 3 if pos.size else 1e-6
        for i, lab in enumerate(lab for lab in labels if lab in dist):
            d = np.sort(np.maximum(np.asarray(dist[lab], dtype=float)[np.isfinite(dist[lab])], floor))
            if not d.size:
                continue
            lk = looks[lab]
            y = np.arange(1, d.size + 1) / d.size
            line, = ax.step(np.concatenate([[floor], d]), np.concatenate([[0.0], y]), where="post", color=lk.color,
                            marker=lk.marker, markevery=(i % 4, max(d.size // 5, 1)), markeredgewidth=0)
            if lk.dashes:
                line.set_dashes(lk.dashes)
            shown.append(lab)
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("|log10 λ / λ*| (decades)" if log else "|λ − λ*|")
        ax.set_ylabel("fraction of hyperparameters")
    _legend_looks(fig, [lab for lab in labels if lab in shown], looks)
    return fig


def _legend_looks(fig: plt.Figure, labels: list[str], looks: dict, extra: list | None = None) -> None:
    """A legend of lines with each tuner's colour, marker and dash (survives greyscale)."""
    handles = []
    for lab in labels:
        lk = looks[lab]
        h = Line2D([], [], color=lk.color, marker=lk.marker, markeredgewidth=0, label=lab)
        if lk.dashes:
            h.set_dashes(lk.dashes)
        handles.append(h)
    handles += extra or []
    if handles:
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), LEGEND_COLS),
                   frameon=False, handlelength=3.0)


def _val_test_figure(cells: pd.DataFrame, tasks: list[str], labels: list[str], palette: dict,
                     families: dict) -> plt.Figure:
    """Per cell, an arrow from its first recorded point to its final incumbent in the
    (validation loss, test loss) plane, both at the tuner's own w: an arrow pointing left and
    up (``overfit`` cells, drawn solid) bought validation loss with test loss."""
    fig, axes = _panels(len(tasks), len(labels) + 2, _title_lines(tasks))
    shown: list[str] = []
    cols = ("first_val_loss", "first_test_loss", "final_val_loss", "final_test_loss")
    for ax, task in zip(axes, tasks):
        c = cells[cells["task"] == task]
        c = c[np.isfinite(c[list(cols)].to_numpy(dtype=float)).all(axis=1)] if set(cols) <= set(c.columns) else c[:0]
        ax.set_title(panel_title(task))
        if c.empty:
            _empty(ax, "no finite validation and test losses")
            continue
        for r in c.itertuples():
            over = bool(r.overfit)
            ax.annotate("", xy=(r.final_val_loss, r.final_test_loss), xytext=(r.first_val_loss, r.first_test_loss),
                        arrowprops={"arrowstyle": "->", "color": palette[r.tuner_label], "linewidth": 0.9,
                                    "linestyle": "-" if over else ":", "alpha": 0.9 if over else 0.5})
            if r.tuner_label not in shown:
                shown.append(r.tuner_label)
        sns.scatterplot(data=c, x="final_val_loss", y="final_test_loss", hue="tuner_label",
                        hue_order=[lab for lab in labels if lab in set(c["tuner_label"])], palette=palette,
                        legend=False, ax=ax, s=14, linewidth=0)
        vals = c[list(cols)].to_numpy(dtype=float)
        ax.update_datalim(np.concatenate([vals[:, :2], vals[:, 2:]]))  # arrows do not widen the axes
        ax.autoscale_view()
        if (vals > 0).all() and vals.max() > 100 * vals.min():
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("validation loss (own w)")
        ax.set_ylabel("test loss (own w)")
    _legend(fig, [lab for lab in labels if lab in shown], palette, families,
            [Line2D([], [], color="0.3", linestyle="-", linewidth=0.9, label="val ↓ test ↑ (overfit)"),
             Line2D([], [], color="0.3", linestyle=":", linewidth=0.9, label="first point → incumbent, not overfit")],
            markers=True)
    return fig


def _finite_any(rows: pd.DataFrame, col: str, mask: np.ndarray | None = None) -> bool:
    if col not in rows.columns:
        return False
    v = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=float)
    return bool(np.isfinite(v if mask is None else v[mask]).any())


def stochastic_figures(rows: pd.DataFrame) -> list[str]:
    """The names of :data:`STOCHASTIC_FIGURES` these records can draw (none without a finite ``samples``)."""
    if not _finite_any(rows, "samples"):
        return []
    sampled = np.isfinite(pd.to_numeric(rows["samples"], errors="coerce").to_numpy(dtype=float))
    out = []
    for name, spec in STOCHASTIC_FIGURES.items():
        if spec is None:
            ok = any(_finite_any(rows, col, sampled) for col, _ in ESTIMATOR_ERRORS)
        else:
            metric, x = spec
            ok = (metric == "regret" or _finite_any(rows, metric, sampled)) and \
                (x == "time" or _finite_any(rows, {"samples": "samples", "epochs": "epochs"}[x], sampled))
        if ok:
            out.append(name)
    return out


def _as_recorded_curves(d: pd.DataFrame, col: str, x: str = "samples") -> pd.DataFrame:
    """Median and quartiles over seeds of ``col`` as recorded (a step function of ``x`` per cell, on a log grid),
    per tuner label, kept where every seed of the tuner has a record: :func:`hpo_bench.report.plot.curves`'s
    table for a column it would take at the incumbent."""
    xs_all = pd.to_numeric(d[x], errors="coerce").to_numpy(dtype=float)
    grid = _grid(xs_all)
    out = []
    if grid is None or col not in d.columns:
        return pd.DataFrame(columns=["tuner_label", "x", "median", "q1", "q3"])
    for lab, g in d.groupby("tuner_label", sort=False):
        per_cell = []
        for _, c in g.groupby("cell_id", sort=False):
            xs = pd.to_numeric(c[x], errors="coerce").to_numpy(dtype=float)
            ys = pd.to_numeric(c[col], errors="coerce").to_numpy(dtype=float)
            ok = np.isfinite(xs) & np.isfinite(ys)
            if not ok.any():
                continue
            order = np.argsort(xs[ok], kind="stable")
            xs, ys = xs[ok][order], ys[ok][order]
            idx = np.searchsorted(xs, grid, side="right") - 1
            per_cell.append(np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan))
        if not per_cell:
            continue
        mat = np.vstack(per_cell)
        full = np.isfinite(mat).all(axis=0)
        if not full.any():
            continue
        q1, med, q3 = np.quantile(mat[:, full], [0.25, 0.5, 0.75], axis=0)
        out.append(pd.DataFrame({"tuner_label": lab, "x": grid[full], "median": med, "q1": q1, "q3": q3}))
    if not out:
        return pd.DataFrame(columns=["tuner_label", "x", "median", "q1", "q3"])
    return pd.concat(out, ignore_index=True)


def _estimator_errors_figure(rows: pd.DataFrame, tasks: list[str], labels: list[str], looks: dict) -> plt.Figure:
    """One row of panels per task with stochastic rows: each estimator error of :data:`ESTIMATOR_ERRORS`
    against samples (log-log), in each tuner's look (:mod:`hpo_bench.report.style`)."""
    from .plot import draw_panel

    sampled = rows[np.isfinite(pd.to_numeric(rows["samples"], errors="coerce").to_numpy(dtype=float))]
    tasks = [t for t in tasks if t in set(sampled["task"])]
    fig, axes = _panels(len(tasks) * len(ESTIMATOR_ERRORS), len(labels), _title_lines(tasks))
    shown: list[str] = []
    for i, task in enumerate(tasks):
        d = sampled[sampled["task"] == task]
        for j, (col, ylabel) in enumerate(ESTIMATOR_ERRORS):
            ax = axes[i * len(ESTIMATOR_ERRORS) + j]
            agg = _as_recorded_curves(d, col)
            agg = agg.assign(median=agg["median"].clip(lower=1e-16), q1=agg["q1"].clip(lower=1e-16),
                             q3=agg["q3"].clip(lower=1e-16))
            got = draw_panel(ax, agg, [lab for lab in labels if lab in set(agg["tuner_label"])], looks, scale="log")
            if not got:
                _empty(ax, f"no {ylabel} recorded")
            shown += [lab for lab in got if lab not in shown]
            if got:
                ax.set_xscale("log")
            ax.set_title(panel_title(task))
            ax.set_xlabel("samples")
            ax.set_ylabel(ylabel)
    _legend_looks(fig, [lab for lab in labels if lab in shown], looks)
    return fig


def make_figures(rows: pd.DataFrame, cells: pd.DataFrame, out_dir: str | Path, *,
                 on_figure: Callable[[str, float], None] | None = None) -> dict[str, list[Path]]:
    """Write every figure of :data:`FIGURES` as PNG and PDF into ``out_dir``, and those of
    :data:`STOCHASTIC_FIGURES` the records can draw (:func:`stochastic_figures`); returns their paths.

    ``on_figure(name, seconds)`` is called after each figure is written (drawing and saving).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = list(pd.unique(cells["task"]))
    labels = list(pd.unique(cells["tuner_label"]))
    looks = tuner_looks(rows, labels)
    palette = {lab: lk.color for lab, lk in looks.items()}  # stable: a function of the label alone
    families = {lab: _family(name) for lab, name in zip(cells["tuner_label"], cells["tuner"])}
    rows = rows.assign(family=rows["tuner_label"].map(families).fillna("gradient"),
                       regret_plot=np.maximum(rows["incumbent_regret"],
                                              1e-12 * np.maximum(rows["oracle_val_loss"].abs(), 1e-300)))
    paths: dict[str, list[Path]] = {}
    with sns.axes_style("whitegrid"), plt.rc_context(RC):
        def one(metric: str, x: str, fallback: Callable[[], plt.Figure]) -> plt.Figure:
            """The figure `hpo-bench plot RUN --metric M --x X --width 7` draws (the same curves and looks)."""
            try:
                return plot(rows, metric=metric, x=x, tasks=tasks, tuners=labels, width=WIDTH_IN)
            except PlotError:  # nothing to draw (e.g. only black-box tuners): the figure says so per panel
                return fallback()

        builders = {
            "regret_vs_time": lambda: one("regret", "time", lambda: _regret_figure(
                rows, cells, "time_s", "tuner time (s)", tasks, labels, palette, families)),
            "regret_vs_cost": lambda: one("regret", "cost", lambda: _regret_figure(
                rows, cells, "cost_units", "cost units", tasks, labels, palette, families)),
            "hypergrad_error": lambda: one("hypergrad_error", "step", lambda: _hypergrad_figure(
                rows, tasks, labels, palette, families)),
            "final_hp": lambda: _hp_figure(cells, tasks, labels, looks),
            "val_vs_test": lambda: _val_test_figure(cells, tasks, labels, palette, families),
        }
        sampled = np.isfinite(pd.to_numeric(rows.get("samples", pd.Series(np.nan, index=rows.index)),
                                            errors="coerce").to_numpy(dtype=float))
        s_tasks = [t for t in tasks if t in set(rows.loc[sampled, "task"])]  # panels only where a solver ran
        for name in stochastic_figures(rows):
            spec = STOCHASTIC_FIGURES[name]
            builders[name] = (lambda: _estimator_errors_figure(rows, s_tasks, labels, looks)) if spec is None else \
                (lambda spec=spec: plot(rows, metric=spec[0], x=spec[1], tasks=s_tasks, tuners=labels,
                                        width=WIDTH_IN))
        for name in builders:
            t0 = time.perf_counter()
            paths[name] = save_figure(builders[name](), out, name)
            if on_figure is not None:
                on_figure(name, time.perf_counter() - t0)
    return paths
