"""The report of a run with stochastic solvers: regret and ||dF||^2 against samples, epochs and time, and the
estimator errors against samples (issue 13), drawn only where the records have those columns."""

from __future__ import annotations

import contextlib
import io

import pandas as pd

from hpo_bench.core._threads import one_thread
from hpo_bench.running.harness import run_suite
from hpo_bench.report import make_report
from hpo_bench.report.figures import FIGURES, STOCHASTIC_FIGURES, stochastic_figures
from hpo_bench.report.metrics import load_records
from hpo_bench.running.suite import load_suite

from _report_fixture import reported_run

#: 1 seed, 2 stochastic solvers and the exact deterministic tuner, small budgets: a few seconds
SUITE = """
name = "stoch-tiny"
seeds = [0]
[budget]
steps = 4
[[task]]
name = "quadratic_bilevel"
label = "quad"
params = { n = 64, m = 32, d_inner = 5, d_outer = 2, mu = 0.1 }
[[tuner]]
name = "soba"
params = { step_size = 0.3, outer_ratio = 30.0, batch_size = 8, eval_every = 16 }
[[tuner]]
name = "srba"
params = { step_size = 0.3, outer_ratio = 30.0, batch_size = 8, eval_every = 16 }
[[tuner]]
name = "gradient"
label = "exact"
params = { method = "exact", inner = "exact" }
"""


def _files(out, name):
    return out / "figures" / f"{name}.png", out / "figures" / f"{name}.pdf"


def test_report_of_a_stochastic_run_draws_the_stochastic_figures(tmp_path):
    (tmp_path / "suite.toml").write_text(SUITE)
    with one_thread(), contextlib.redirect_stdout(io.StringIO()):
        run_suite(load_suite(str(tmp_path / "suite.toml")), tmp_path / "run")
        res = make_report(tmp_path / "run", oracle_evals=100, oracle_polish_evals=10, html=False)
    summary = res.summary_path.read_text()
    assert set(res.figures) == set(FIGURES) | set(STOCHASTIC_FIGURES)
    for name in STOCHASTIC_FIGURES:
        png, pdf = _files(res.out_dir, name)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-", name
        assert f"(figures/{name}.png)" in summary and f"(figures/{name}.pdf)" in summary, name
    # the deterministic tuner's rows alone (stochastic columns NaN in the mixed table) draw none of them
    rows = load_records(tmp_path / "run")
    assert stochastic_figures(rows) == list(STOCHASTIC_FIGURES)
    assert stochastic_figures(rows[rows["tuner_label"] == "exact"]) == []
    # a solver that records no v (F2SA records one; here: NaN v errors) still gets the other panels
    assert stochastic_figures(rows.assign(v_rel_error=float("nan"), inner_rel_distance=float("nan"))) \
        == list(STOCHASTIC_FIGURES)
    assert stochastic_figures(rows.assign(grad_norm_sq=float("nan"))) == \
        [n for n in STOCHASTIC_FIGURES if not n.startswith("grad_norm_sq")]


def test_a_run_without_stochastic_solvers_gets_none_of_them(tmp_path_factory):
    run = reported_run(tmp_path_factory)
    out = run / "report"
    for name in STOCHASTIC_FIGURES:
        png, pdf = _files(out, name)
        assert not png.exists() and not pdf.exists(), name
        assert f"figures/{name}.png" not in (out / "summary.md").read_text()
    assert stochastic_figures(pd.DataFrame({"task": ["t"], "tuner_label": ["cg"], "val_loss": [1.0]})) == []
