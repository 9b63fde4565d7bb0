"""Report speed (pytest-benchmark): one `hpo-bench plot` figure, and what report.html adds to a report.

Run and save:

    .venv/bin/pytest benchmarks/bench_report.py --benchmark-enable \
        --benchmark-json results/benchmarks/report.json

Goals (read them in the saved JSON; CI runs each body once with ``--benchmark-disable`` and checks
only the results):

1. ``hpo-bench plot RUN --metric regret --x time --out F.pdf`` from a reported run folder (its oracles
   cached by the report) takes at most 3 s, the whole command (interpreter start and imports
   included): ``test_plot_command_from_a_cached_run`` on a small run, and
   ``test_plot_command_on_the_committed_paper_run`` on ``results/paper`` (39,563 records, 7 tasks x 10
   tuners x 6 seeds; the README's figure, checked byte for byte), 5 rounds: read the median.
2. Writing ``report.html`` adds at most 20% to the report's time: ``test_report_html_share`` times a
   report with and without it, alternately in one process (oracles cached), and stores
   ``html_share`` = (with - without) / without in ``extra_info``.

The run: 3 tasks x 4 tuners x 3 seeds x 20 steps of the shipped task family (small instances).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo_bench.core._threads import one_thread

SUITE = """
name = "benchreport"
seeds = [0, 1, 2]
[budget]
steps = 20
[[task]]
name = "ridge"
params = { n = 60, p = 6 }
[[task]]
name = "ridge_per_feature"
params = { n = 60, p = 6 }
[[task]]
name = "logistic_l2"
params = { dataset = "synthetic", n = 60, p = 5 }
[[tuner]]
name = "gradient"
label = "cg-gd50"
params = { method = "cg", inner = "gd", inner_steps = 50, outer_lr = 0.3 }
[[tuner]]
name = "gradient"
label = "reverse-gd20"
params = { method = "reverse", inner = "gd", inner_steps = 20, outer_lr = 0.3 }
[[tuner]]
name = "tpe"
[[tuner]]
name = "random"
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from hpo_bench.running.harness import run_suite
    from hpo_bench.report import make_report
    from hpo_bench.running.suite import load_suite

    root = tmp_path_factory.mktemp("benchreport")
    (root / "suite.toml").write_text(SUITE)
    with one_thread(), contextlib.redirect_stdout(io.StringIO()):
        run_suite(load_suite(str(root / "suite.toml")), root / "run")
        make_report(root / "run", oracle_evals=2000, oracle_polish_evals=50)  # caches the oracles
    return root / "run"


def test_plot_command_from_a_cached_run(benchmark, run_dir, tmp_path):
    out = tmp_path / "regret.pdf"
    exe = Path(sys.executable).with_name("hpo-bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HPO_BENCH_CACHE_DIR": "off"}

    def once():
        subprocess.run([str(exe), "plot", str(run_dir), "--metric", "regret", "--x", "time", "--out", str(out)],
                       check=True, capture_output=True, env=env, timeout=120)

    benchmark.pedantic(once, rounds=3, iterations=1)
    assert out.read_bytes().startswith(b"%PDF-")


PAPER = Path(__file__).resolve().parents[1] / "results" / "paper"


@pytest.mark.skipif(not (PAPER / "records.parquet").is_file(), reason="results/paper is not in this checkout")
def test_plot_command_on_the_committed_paper_run(benchmark, tmp_path):
    out = tmp_path / "regret_vs_time.pdf"
    exe = Path(sys.executable).with_name("hpo-bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HPO_BENCH_CACHE_DIR": "off"}

    def once():
        subprocess.run([str(exe), "plot", str(PAPER), "--metric", "regret", "--x", "time", "--width", "7", "--out",
                        str(out)], check=True, capture_output=True, env=env, timeout=120)

    benchmark.pedantic(once, rounds=5, iterations=1)
    assert out.read_bytes() == (PAPER / "report" / "figures" / "regret_vs_time.pdf").read_bytes()


def test_report_html_share(benchmark, run_dir, tmp_path):
    from hpo_bench.report import make_report

    times: dict[bool, list[float]] = {True: [], False: []}

    def both():
        for html in (False, True):  # alternately: the machine's load hits both alike
            t0 = time.perf_counter()
            with one_thread():
                res = make_report(run_dir, tmp_path / f"r{int(html)}", html=html, oracle_evals=2000,
                                  oracle_polish_evals=50)
            times[html].append(time.perf_counter() - t0)
            assert (res.html_path is not None) == html
        return res

    res = benchmark.pedantic(both, rounds=2, iterations=1)
    assert res.html_path.stat().st_size > 1_000_000
    with_html, without = min(times[True]), min(times[False])
    benchmark.extra_info.update(report_s=without, report_with_html_s=with_html,
                                html_share=(with_html - without) / without)
