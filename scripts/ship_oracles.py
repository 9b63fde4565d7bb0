"""Copy the oracles of run folders into the package's shipped oracles (``hpo_bench/oracles/``).

Usage::

    .venv/bin/python scripts/ship_oracles.py RUN_DIR [RUN_DIR ...]

Takes each run folder's base oracles (``RUN_DIR/oracle/*.json``, written by ``hpo-bench report``;
not the run-specific polish in ``oracle/polish/``) that are complete (no wall-clock backstop) and
of this code's :data:`hpo_bench.analysis.oracle.ORACLE_VERSION`, checks each with
:func:`hpo_bench.analysis.oracle.verify_oracle`, copies it, and rewrites ``hpo_bench/oracles/README.md``
with the command, the runs and their commits. Nothing else is shipped: every entry is what an
``hpo-bench report`` of that run computed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hpo_bench.analysis.oracle import ORACLE_VERSION, SHIPPED_DIR, OracleResult, store_oracle, verify_oracle


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    SHIPPED_DIR.mkdir(exist_ok=True)
    runs = []
    for run in map(Path, argv):
        prov = json.loads((run / "provenance.json").read_text()) if (run / "provenance.json").is_file() else {}
        n = 0
        for path in sorted((run / "oracle").glob("*.json")):
            res = OracleResult(**json.loads(path.read_text()))
            if not res.complete or res.version != ORACLE_VERSION or res.source != "oracle":
                print(f"skip {path.name}: incomplete, another version or not an oracle", file=sys.stderr)
                continue
            why = verify_oracle(res)
            if why is not None:
                print(f"skip {path.name}: {why}", file=sys.stderr)
                continue
            store_oracle(res, SHIPPED_DIR)
            n += 1
        runs.append(f"- `{run.name}`: {n} oracles; suite `{prov.get('suite', '?')}`, command "
                    f"`{prov.get('command_line', '?')}`, commit `{str(prov.get('git_commit') or '?')[:12]}`")
        print(f"{run}: shipped {n} oracles", file=sys.stderr)
    names = sorted(p.name for p in SHIPPED_DIR.glob("*.json"))
    (SHIPPED_DIR / "README.md").write_text("\n".join([
        "# Shipped oracles",
        "",
        "Oracle results (`hpo_bench/analysis/oracle.py`, count budgets, default settings) for the task instances of",
        "the named suites, so that a first `hpo-bench report` on a new machine does not spend minutes on",
        "them. Each is used only after `verify_oracle` recomputes F at its two points with the running",
        "code (`docs/validity.md`, *Shipped oracles*). Written by:",
        "",
        "    .venv/bin/hpo-bench run quick --out RUN --workers 2 && .venv/bin/hpo-bench report RUN",
        "    .venv/bin/python scripts/ship_oracles.py RUN",
        "",
        "from these runs:",
        "",
        *runs,
        "",
        f"{len(names)} files.",
        "",
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
