"""`hpo-bench plot` and the CLI's start import no torch (issue 17, speed), and still draw the committed figure.

The speed goal itself (one figure in <= 3 s) is measured in benchmarks/bench_report.py; what can be checked
without a clock is that the heavy modules stay out of the process: torch (about half of the command's time
before), the oracle's scipy.optimize, optuna and seaborn.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "results" / "paper"
HEAVY = ("torch", "scipy.optimize", "optuna", "seaborn")


def _heavy_after(code: str, tmp_path: Path) -> tuple[list[str], str]:
    """Run ``code`` in a fresh interpreter; return the heavy modules it imported and its stderr."""
    script = tmp_path / "probe.py"
    script.write_text(code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={"OMP_NUM_THREADS": "1", "HPO_BENCH_CACHE_DIR": "off", "PATH": "/usr/bin:/bin",
                              "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


def _run_cli(*args: str) -> str:
    return ("import sys\nfrom hpo_bench.cli import main\n"
            f"sys.argv = ['hpo-bench', *{list(args)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n")


def test_importing_the_package_and_the_cli_imports_no_torch(tmp_path):
    heavy, _ = _heavy_after("import hpo_bench, hpo_bench.cli, hpo_bench.report.plot", tmp_path)
    assert heavy == []
    heavy, _ = _heavy_after(_run_cli("--help"), tmp_path)
    assert heavy == []


def test_public_names_still_import_from_the_package():
    import hpo_bench
    from hpo_bench import TASKS, Budget, Space, Task, get_task  # noqa: F401

    assert hpo_bench.Task is Task and hpo_bench.core.task.Task is Task and hpo_bench.core.space.Space is Space
    assert {"Task", "Budget", "TASKS", "get_task"} <= set(dir(hpo_bench))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hpo_bench.nope  # noqa: B018


@pytest.mark.skipif(not (PAPER / "records.parquet").is_file(), reason="results/paper is not in this checkout")
def test_plot_of_the_committed_paper_run_imports_no_torch_and_redraws_its_figure(tmp_path):
    out = tmp_path / "regret_vs_time.pdf"
    heavy, err = _heavy_after(_run_cli("plot", str(PAPER), "--metric", "regret", "--x", "time", "--width", "7",
                                       "--out", str(out)), tmp_path)
    assert heavy == [], err
    assert out.read_bytes() == (PAPER / "report" / "figures" / "regret_vs_time.pdf").read_bytes()


@pytest.mark.skipif(not (PAPER / "records.parquet").is_file(), reason="results/paper is not in this checkout")
def test_a_report_oracle_file_without_gaps_is_still_read(tmp_path):
    """used.json written before it carried each oracle's gap: read through the oracle's own class."""
    from hpo_bench.report.plot import REPORT_ORACLES, _report_optima, load_report_oracles, plot_records

    run = tmp_path / "paper"
    (run / "oracle" / "report").mkdir(parents=True)
    shutil.copy(PAPER / "records.parquet", run / "records.parquet")
    info = json.loads((PAPER / "oracle" / REPORT_ORACLES).read_text())
    for o in info["oracles"]:
        o.pop("gap")
    (run / "oracle" / REPORT_ORACLES).write_text(json.dumps(info))
    fast = plot_records([PAPER], metric="regret", x="time")
    slow = plot_records([run], metric="regret", x="time")
    assert _report_optima(run / "oracle", slow) is None and load_report_oracles(run / "oracle", slow) is not None
    cols = ["cell_id", "step", "incumbent_regret", "oracle_gap", "n_params", "cost_units"]
    pd.testing.assert_frame_equal(fast[cols], slow[cols])


@pytest.mark.skipif(not (PAPER / "records.parquet").is_file(), reason="results/paper is not in this checkout")
def test_plot_reads_only_the_columns_it_needs_but_errors_list_every_column():
    from hpo_bench.report.plot import PlotError, plot_records

    df = plot_records(PAPER, metric="validation", x="step")
    assert "hypergrad_cosine" not in df.columns and "val_loss" in df.columns  # a column the figure does not read
    assert "hypergrad_cosine" in pd.read_parquet(PAPER / "records.parquet").columns
    with pytest.raises(PlotError, match="numeric record columns: .*'hypergrad_cosine'"):
        plot_records(PAPER, metric="no_such_metric", x="step")
