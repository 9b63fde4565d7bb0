"""One small reported run shared by the plot, LaTeX-table and HTML tests (made once per test process).

Labels are as long as the paper suite's (``ridge_pf-synth200``, ``neumann20-gd100``), so table
widths are tested on realistic names; oracle budgets are small counts, so it takes seconds.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

SUITE = """
name = "plotfix"
seeds = [0, 1]
[budget]
steps = 5
[[task]]
name = "ridge"
label = "ridge-synth100"
params = { n = 40, p = 4 }
[[task]]
name = "ridge_per_feature"
label = "ridge_pf-synth200"
params = { n = 40, p = 4 }
[[tuner]]
name = "gradient"
label = "neumann20-gd100"
params = { method = "neumann", method_opts = { iterations = 20 }, inner = "gd", inner_steps = 20, outer_lr = 0.3 }
[[tuner]]
name = "gradient"
label = "cg"
params = { method = "cg", inner = "gd", inner_steps = 20, outer_lr = 0.3 }
[[tuner]]
name = "tpe"
label = "tpe-mv"
params = { n_startup_trials = 2 }
[[tuner]]
name = "random"
"""

_MADE: dict[str, Path] = {}


def reported_run(tmp_path_factory) -> Path:
    """A run folder with its report (oracle cached in ``RUN/oracle``), made once per process."""
    if "run" in _MADE:
        return _MADE["run"]
    import torch

    from hpo_bench.core._threads import one_thread
    from hpo_bench.running.harness import run_suite
    from hpo_bench.report import make_report
    from hpo_bench.running.suite import load_suite

    root = tmp_path_factory.mktemp("plotfix")
    (root / "suite.toml").write_text(SUITE)
    with one_thread(), contextlib.redirect_stdout(io.StringIO()):
        run_suite(load_suite(str(root / "suite.toml")), root / "run")
        make_report(root / "run", oracle_evals=300, oracle_polish_evals=20)
    assert torch.get_num_threads() >= 1
    _MADE["run"] = root / "run"
    return root / "run"
