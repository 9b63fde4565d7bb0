"""``summary.md``: the report's front page, embedding every table and figure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from .datasets import STAND_IN, data_lines
from .figures import STOCHASTIC_FIGURES
from .metrics import TARGETS, target_label

__all__ = ["write_summary"]

FIGURE_CAPTIONS = {
    "regret_vs_time": "Regret of the incumbent vs tuner time (log-log; median and interquartile band over seeds).",
    "regret_vs_cost": "Regret of the incumbent vs cost units (gradient evaluations + HVPs + n_params per inner "
                      "solve).",
    "hypergrad_error": "Hypergradient relative error vs the reference, per outer step (gradient tuners; median "
                       "and interquartile band over seeds).",
    "final_hp": "Distance of every final hyperparameter (all seeds) from the oracle's λ*: the fraction of "
                "hyperparameters within each distance, |log10 λ/λ*| in decades for log-scaled ones (further up "
                "and left is closer).",
    "val_vs_test": "Validation vs test loss (both at the tuner's own w), one arrow per cell from its first recorded "
                   "point to its final incumbent; solid arrows: the validation loss fell while the test loss rose.",
    "regret_vs_samples": "Regret of the incumbent vs samples (examples touched by every oracle call; stochastic "
                         "solvers).",
    "regret_vs_epochs": "Regret of the incumbent vs epochs (samples / (n_train + n_val); stochastic solvers).",
    "grad_norm_sq_vs_samples": "‖∇F‖² at each recorded iterate vs samples (stochastic solvers; median and "
                               "interquartile band over seeds).",
    "grad_norm_sq_vs_epochs": "‖∇F‖² at each recorded iterate vs epochs (stochastic solvers).",
    "grad_norm_sq_vs_time": "‖∇F‖² at each recorded iterate vs tuner time (stochastic solvers).",
    "estimator_errors": "Estimator errors of the stochastic solvers vs samples, one row per task: the stochastic "
                        "direction's relative error vs the reference hypergradient, ‖w − w*(λ)‖/‖w*(λ)‖ and v's "
                        "relative error vs H⁻¹∇outer (as recorded; median and interquartile band over seeds).",
}


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _overfit_lines(cells: pd.DataFrame) -> list[str]:
    """The cells whose validation loss fell while their test loss rose (first point to incumbent)."""
    flagged = cells[cells["overfit"].astype(bool)] if "overfit" in cells else cells.iloc[:0]
    if flagged.empty:
        return ["No cell's test loss rose while its validation loss fell (first recorded point to final "
                "incumbent).", ""]
    lines = [f"{len(flagged)} of {len(cells)} cells lowered the validation loss at the cost of the test loss "
             "(first recorded point → final incumbent, both at the tuner's own w):", "",
             "| task | tuner | seed | val: first → incumbent | test: first → incumbent | val–test gap |",
             "|:---|:---|---:|---:|---:|---:|"]
    for r in flagged.itertuples():
        lines.append(f"| {r.task} | {r.tuner_label} | {r.seed} | {r.first_val_loss:.4g} → {r.final_val_loss:.4g} | "
                     f"{r.first_test_loss:.4g} → {r.final_test_loss:.4g} | {r.final_val_test_gap:.4g} |")
    return [*lines, ""]


def _no_reference_lines(cells: pd.DataFrame) -> list[str]:
    """The cells with rows at a λ where the task has no reference (their F(λ) is NaN, not a regret of 0)."""
    if "no_ref_rows" not in cells or not (cells["no_ref_rows"] > 0).any():
        return ["Every recorded row has a reference (F(λ) and, for gradient tuners, the hypergradient error).", ""]
    hit = cells[cells["no_ref_rows"] > 0]
    lines = [f"{int(hit['no_ref_rows'].sum())} of {int(cells['rows'].sum())} recorded rows, in {len(hit)} cells, are "
             "at a λ where the task has no reference (for `weight_decay_mlp`: the branch of minima folds on the "
             "last step of its path; see docs/validity.md). Their F(λ), regret and hypergradient error are "
             "missing (NaN), not zero.", "",
             "| task | tuner | seed | rows without a reference | rows |", "|:---|:---|---:|---:|---:|"]
    for r in hit.itertuples():
        lines.append(f"| {r.task} | {r.tuner_label} | {r.seed} | {r.no_ref_rows} | {r.rows} |")
    return [*lines, ""]


def write_summary(out: Path, run: Path, tables: dict, figures: dict[str, list[Path]], cells: pd.DataFrame,
                  prov: dict[str, Any], choices: dict[str, Any] | None) -> Path:
    def fig(name: str) -> str:
        png, pdf = figures[name]
        return f"![{name}]({_rel(png, out)})\n\n*{FIGURE_CAPTIONS[name]}* ([PDF]({_rel(pdf, out)}))\n"

    suite = prov.get("suite", cells["cell_id"].iloc[0].split("__")[0] if len(cells) else "?")
    status = cells["status"].value_counts()
    bad = cells[cells["status"] != "ok"]
    lines = [
        f"# hpo-bench report: suite `{suite}`",
        "",
        f"Run folder `{run}`: {len(cells)} cells ({cells['task'].nunique()} tasks, "
        f"{cells['tuner_label'].nunique()} tuners, {cells['seed'].nunique()} seeds; a tuner with a task filter runs "
        "on fewer tasks); statuses: "
        + ", ".join(f"{k} {v}" for k, v in status.items()) + ".",
    ]
    if prov:
        pk = prov.get("packages", {})
        lines.append(
            f"Created {prov.get('created', '?')} on `{prov.get('host', '?')}` ({prov.get('cpu_count', '?')} CPUs, "
            f"torch threads {prov.get('torch_threads', '?')}, device {prov.get('device', 'cpu')}); git "
            f"`{str(prov.get('git_commit') or '?')[:10]}`{' (dirty)' if prov.get('git_dirty') else ''}; "
            f"torch {pk.get('torch', '?')}, optuna {pk.get('optuna', '?')}.")
    if len(bad):
        lines += ["", f"**{len(bad)} cells did not end ok:** "
                  + ", ".join(f"`{r.cell_id}` ({r.status})" for r in bad.itertuples()) + "."]
    data = data_lines(cells, prov.get("datasets") if prov else None)
    if data:
        marked = any(STAND_IN in line for line in data)
        lines += ["", "## Data", "", "Which data each task instance used"
                  + (f" (an instance on synthetic data is labelled *(synthetic stand-in: NAME)* in every table and "
                     "figure)" if marked else "") + ":", "", *data]
    t1, t2 = (target_label(f) for f in TARGETS)
    lines += [
        "",
        "## How to read it",
        "",
        "- **F(λ)**: validation loss at the reference (exact) inner solve of λ; **F\\***: the oracle's best-known "
        "optimum of the same task instance (see *Oracle*).",
        "- **Incumbent**: the λ a tuner would return if stopped — its lowest *observed* validation loss so far. "
        "**Regret** = F(incumbent) − F\\*; *final* values are the incumbent's at the end of the budget. "
        "Regret is ≥ 0 up to the oracle's accuracy (F\\* is the best known F); the tuner's own validation loss "
        "minus F\\* (column `val_loss_gap_own_w` of the derived rows) can be negative, because an unconverged "
        "inner w can beat w\\*(λ) on the validation split, and is not a regret.",
        "- **val–test gap**: the final incumbent's test loss minus its validation loss, both at the tuner's own w "
        "(mean ± std over seeds). **test↑ k/n**: in k of n seeds, from the cell's first recorded point to its "
        "incumbent the validation loss fell while the test loss rose: the tuner bought its validation gain with "
        "test loss (see *Overfitting the validation split*).",
        f"- **Targets**: the regret is within {t1} / {t2} of the *oracle gap* F(init) − F\\* (init = the space's "
        "starting λ). Time-to-target is tuner seconds (measurements excluded), cost-to-target is cost units "
        "(inner gradient evaluations + HVPs + n_params per reference inner solve). *n.r.* = not reached.",
        "- **tuner (s)**: the tuner's own clock over the whole budget (measurements excluded); **wall (s)**: the "
        "cell's wall clock (task build, tuner, measurements of losses and reference hypergradients, harness); "
        "both are means over seeds.",
        "- **Best** (bold): lowest mean final regret in a task. **p vs best**: Wilcoxon signed-rank test paired by "
        "seed; † = too few seeds for p < 0.05 to be attainable.",
        "",
        "## Headline",
        "",
        tables["headline"].markdown(),
        fig("regret_vs_time"),
        "## Results",
        "",
        tables["results"].markdown(),
        "## Overfitting the validation split",
        "",
        *_overfit_lines(cells),
        fig("val_vs_test"),
        "## Rows without a reference",
        "",
        *_no_reference_lines(cells),
        "## Average rank",
        "",
        tables["ranks"].markdown(),
        "## Wilcoxon signed-rank tests",
        "",
        tables["wilcoxon"].markdown(),
        "## Figures",
        "",
        fig("regret_vs_cost"),
        fig("hypergrad_error"),
        fig("final_hp"),
        *[fig(name) for name in STOCHASTIC_FIGURES if name in figures],
        "## Tuner settings",
        "",
    ]
    if choices:
        lines.append(f"Tune step: knobs chosen on tuning seeds {choices.get('seeds')} (scope "
                     f"`{choices.get('scope')}`) by {choices.get('score')}; every score is in `tune/choices.json` "
                     "of the run folder.")
        lines.append("")
    lines += [tables["settings"].markdown(), "## Oracle", "", tables["oracle"].markdown(),
              "## Files", "",
              "Tables as markdown, LaTeX (booktabs) and CSV in `tables/` (`cells.csv`: one row per cell); figures "
              "as PNG and PDF in `figures/`.", ""]
    path = out / "summary.md"
    tmp = out / ".summary.md.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path
