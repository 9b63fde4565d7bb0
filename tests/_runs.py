"""Shared helpers of the run tests (executors, resume, timeouts, validation): tiny suites and comparisons."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from hpo_bench import cli
from hpo_bench.core.records import VOLATILE_COLUMNS

#: 2 tasks x 2 tuners x 2 seeds = 8 cells of 3 steps: a fraction of a second each.
TINY = '''
name = "tiny"
seeds = [0, 1]
seed = 7
[budget]
steps = 3
[[task]]
name = "seed_toy"
label = "toy"
params = { transform = "log" }
[[task]]
name = "ridge"
label = "ridge"
params = { n = 40, p = 4 }
[[tuner]]
name = "gradient"
label = "exact"
params = { method = "exact", inner = "exact" }
[[tuner]]
name = "gradient"
label = "cg"
params = { method = "cg", inner = "gd", inner_steps = 20 }
'''


def write_suite(path, text=TINY):
    path.write_text(text)
    return path


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Records without the columns allowed to differ between runs (clocks, memory, placement)."""
    return df.drop(columns=[c for c in VOLATILE_COLUMNS if c in df.columns]).reset_index(drop=True)


def assert_same_records(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Bitwise-equal records: a determinism check, legitimate only along one numerical path.

    A torch thread count is a different path (reductions split differently), so both sides
    must have run every cell with the same count: that is checked first.
    """
    ta = a.groupby("cell_id", sort=True)["torch_threads"].first()
    tb = b.groupby("cell_id", sort=True)["torch_threads"].first()
    pd.testing.assert_series_equal(ta, tb, check_dtype=False, obj="torch threads per cell (pin them on both sides)")
    pd.testing.assert_frame_equal(comparable(a), comparable(b), check_exact=True)


def invoke(monkeypatch, capsys, *args):
    """Run the console entry point in this process; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["hpo-bench", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpo-bench: error: "), err
    assert "Traceback" not in err
    return lines[0]
