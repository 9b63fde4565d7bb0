"""Print issue 6's performance targets from saved pytest-benchmark JSON files.

Usage: .venv/bin/python scripts/bench_ratios.py results/benchmarks/core.json [results/benchmarks/baselines.json]

Every ratio compares minimum times (pytest-benchmark's ``min``) of benchmarks saved in the same
JSON file, i.e. measured side by side in one run. Exit status 0 always: this reports, it does
not judge a machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(paths: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for p in paths:
        for b in json.loads(Path(p).read_text())["benchmarks"]:
            out[b["name"]] = b
    return out


def _min(b: dict) -> float:
    return b["stats"]["min"]


def _ratio(num: dict, den: dict, digits: str = ".2f") -> tuple[float, str]:
    """``min(num) / min(den)`` and how it was computed."""
    r = _min(num) / _min(den)
    return r, f"{_min(num) * 1e3:.4g} ms / {_min(den) * 1e3:.3g} ms = {r:{digits}}x"


def targets(bench: dict[str, dict]) -> list[tuple[str, str, str, bool | None]]:
    """``(target, measured, rule, met)`` for every target whose benchmarks are present."""
    rows: list[tuple[str, str, str, bool | None]] = []

    def get(name: str) -> dict | None:
        return bench.get(name)

    for p in (1000, 50):
        cg = get(f"test_cg_against_direct_and_autograd[p{p}-cg]")
        direct = get(f"test_cg_against_direct_and_autograd[p{p}-direct-cholesky]")
        base = get(f"test_cg_against_direct_and_autograd[p{p}-autograd-cg-baseline]")
        plain = get(f"test_cg_against_direct_and_autograd[p{p}-cg-unpreconditioned]")
        if cg and direct:
            r, text = _ratio(cg, direct)
            rows.append((f"cg / direct Cholesky, p = {p}", f"{text} ({cg['extra_info'].get('iterations')} iterations)",
                         "<= 2x" if p == 1000 else "context", r <= 2 if p == 1000 else None))
        if cg and base:
            r, text = _ratio(base, cg, ".1f")
            rows.append((f"autograd CG / cg, p = {p}", text, ">= 5x" if p == 1000 else "context",
                         r >= 5 if p == 1000 else None))
        if cg and plain:
            rows.append((f"unpreconditioned cg, p = {p}", f"{_min(plain) * 1e3:.3g} ms "
                         f"({plain['extra_info'].get('iterations')} iterations)", "context", None))
        if cg and p == 50:
            rows.append(("cg per hypergradient, p = 50", f"{_min(cg) * 1e3:.3f} ms", "<= 0.5 ms", _min(cg) <= 5e-4))
    nb = get("test_seed_notebook_outer_step[notebook-loop]")
    pre = get("test_seed_notebook_outer_step[preset]")
    if nb and pre:
        r, text = _ratio(nb, pre, ".0f")
        rows.append(("notebook loop / seed_notebook preset (per outer step)", text, ">= 100x", r >= 100))
    for name, b in sorted(bench.items()):
        if name.startswith("test_harness_overhead_per_cell"):
            f = b["extra_info"]["harness_fraction"]
            rows.append((f"harness share of a cell: {name.split('[')[1].rstrip(']')}",
                         f"{f:.1%} of {b['extra_info']['wall_s'] * 1e3:.0f} ms", "< 5%", f < 0.05))
    eig = get("test_scalar_ridge_grid_eig")
    skl = get("test_scalar_ridge_grid_sklearn")
    if eig and skl:
        r, text = _ratio(skl, eig, ".0f")
        rows.append(("GridSearchCV / eigendecomposition grid (200 points)", text, ">= 1000x", r >= 1000))
    for name, b in sorted(bench.items()):
        info = b.get("extra_info", {})
        label = name.split("[")[-1].rstrip("]")
        if "ratio_to_scipy" in info and info.get("ratio_to_scipy") is not None:
            r = info["ratio_to_scipy"]
            target = label == "gradient-cg-lbfgs"  # the tuner the target names: cg at its defaults
            rows.append((f"time to 1e-3 of the gap / bare scipy L-BFGS-B: {label}", f"{r:.2f}x",
                         "<= 3x" if target else "context", r <= 3 if target else None))
        elif name.startswith("test_time_to_target_1e3") and info.get("best_gap_fraction") is not None:
            rows.append((f"best gap at the budget (fraction of the oracle gap): {label}",
                         f"{info['best_gap_fraction']:.3g} after {info.get('evals')} evaluations", "context", None))
    return rows


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    rows = targets(_load(argv))
    width = max((len(r[0]) for r in rows), default=10)
    for target, measured, rule, met in rows:
        mark = {True: "met", False: "NOT met", None: ""}[met]
        print(f"{target:<{width}}  {measured:<48}  {rule:<18} {mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
