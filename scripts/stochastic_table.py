"""The time-to-target table of docs/stochastic.md: samples and tuner seconds each stochastic solver needs, at the best
point of a step-size grid, to reach ``||dF||^2 <= 1e-2, 1e-4, 1e-6`` on ``quadratic_bilevel`` (mu = 0.01).

Usage (the docs' table; about 12 minutes on one busy core)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/stochastic_table.py --json results/benchmarks/stochastic_table.json

Options: ``--samples N`` (the budget of one run, in samples; default 4e6, ~120 epochs of n + m), ``--seconds S``
(a tuner-time backstop per run, far above what a run of the default budget takes; default 120), ``--solvers a,b``,
``--mu``, ``--steps a,b,...`` and ``--ratios a,b,...`` (the grid; default :data:`STEPS` x :data:`RATIOS`),
``--csv PATH`` (every run of the grid), ``--json PATH`` (the settings, every run, each solver's best run and the
wall time).

The grid: ``step_size`` in {0.1, 0.3, 1, 3} x ``outer_ratio`` in {100, 300, 1000, 3000, 1e4}, half decades around
where this instance's solvers work (the outer step must be about 1000x below the inner one: ``w*(x)`` moves by
up to ``cross_norm / mu = 10`` per unit of ``x``, and ``w`` tracks it at rate ``step_size mu``). A winner on an
edge of the grid is marked in the table (``edge: ...``): the grid may then be too small for that solver.

Every run is one cell as ``hpo-bench run`` runs it (a :class:`~hpo_bench.core.records.Recorder`, the clock paused for
the measurements; one torch thread), on ``quadratic_bilevel``'s defaults (n = 32768, m = 1024, d_inner = 100,
d_outer = 10, L = 1, factored form) at ``mu``, seed 0, each solver's own defaults (batch 64) but for ``step_size``
and ``outer_ratio``, which run over the grid. A run stops at the budget, at the first row with
``||dF||^2 <= 1e-6``, or once ``||dF||^2`` is non-finite or 100 times its first value (diverged). A grid point's
score: the number of targets reached, then the fewest samples to the deepest one reached, then the lowest final
``||dF||^2``; the table shows each solver's best point.
"n.r.": not reached within the budget at any grid point. Samples are exact (the same on every machine); seconds
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time

import torch

from hpo_bench.core.records import Budget, Recorder
from hpo_bench.core.registry import TUNERS
from hpo_bench.tasks.quadratic_bilevel import QuadraticBilevel

TARGETS = (1e-2, 1e-4, 1e-6)
#: the grid (module docstring)
STEPS = (0.1, 0.3, 1.0, 3.0)
RATIOS = (100.0, 300.0, 1000.0, 3000.0, 1e4)
SOLVERS = ("soba", "saba", "srba", "stocbio", "amigo", "bsa", "ttsa", "mrbo", "vrbo", "f2sa")


class SamplesBudget(Recorder):
    """A recorder that also stops once ``max_samples`` are spent or the last target is reached."""

    def __init__(self, task, *, max_samples: int, seconds: float) -> None:
        super().__init__(task, Budget(steps=None, seconds=seconds), meta={})
        self.max_samples = max_samples

    def should_stop(self) -> bool:
        if super().should_stop():
            return True
        last = self.rows[-1] if self.rows else None
        if last is None:
            return False
        gn = last.get("grad_norm_sq", math.nan)
        if last.get("samples", 0) >= self.max_samples:
            self.stop_reason = "budget_samples"
            return True
        if not math.isfinite(gn) or gn > 100 * self.rows[0]["grad_norm_sq"]:
            self.stop_reason = "diverged"
            return True
        if gn <= TARGETS[-1]:
            self.stop_reason = "target"
            return True
        return False


def run_one(task, name: str, step: float, ratio: float, *, max_samples: int, seconds: float) -> dict:
    """One run: ``{"hits": [(samples, seconds) or None per target], "final": ||dF||^2, ...}``."""
    solver = TUNERS.get(name)(step_size=step, outer_ratio=ratio)
    rec = SamplesBudget(task, max_samples=max_samples, seconds=seconds)
    rec.start()
    solver.run(task, rec, seed=0)
    ok = [r for r in rec.rows if r["status"] == "ok"]
    hits = []
    for target in TARGETS:
        hit = next((r for r in ok if r["grad_norm_sq"] <= target), None)
        hits.append(None if hit is None else (int(hit["samples"]), float(hit["time_s"])))
    final = ok[-1]["grad_norm_sq"] if ok else math.nan
    return {"solver": name, "step_size": step, "outer_ratio": ratio, "hits": hits, "final": final,
            "samples": int(ok[-1]["samples"]) if ok else 0, "time_s": float(ok[-1]["time_s"]) if ok else 0.0,
            "stop": rec.stop_reason or rec.status}


def score(run: dict) -> tuple:
    reached = [h for h in run["hits"] if h is not None]
    final = run["final"] if math.isfinite(run["final"]) else math.inf
    return (len(reached), -(reached[-1][0] if reached else 0), -final)


def edge(run: dict, steps, ratios) -> str:
    """Which edges of the grid the run's point lies on ("" inside)."""
    out = []
    for key, grid in (("step_size", steps), ("outer_ratio", ratios)):
        if len(grid) > 1 and run[key] in (min(grid), max(grid)):
            out.append(f"{key} {run[key]:g} is the grid's {'lowest' if run[key] == min(grid) else 'highest'}")
    return "; ".join(out)


def table(runs: dict[str, dict], initial: float, steps, ratios) -> str:
    lines = ["| solver | step_size, outer_ratio | " + " | ".join(f"‖∇F‖² ≤ {t:g}" for t in TARGETS)
             + " | final ‖∇F‖² | samples run |", "|---|---|" + "---|" * (len(TARGETS) + 2)]
    for name, r in runs.items():
        cells = [f"{h[0]:,} samples, {h[1]:.2f} s" if h else "n.r." for h in r["hits"]]
        where = edge(r, steps, ratios)
        point = f"{r['step_size']:g}, {r['outer_ratio']:g}" + (f" (edge: {where})" if where else "")
        lines.append(f"| {name} | {point} | " + " | ".join(cells) + f" | {r['final']:.1e} | {r['samples']:,} |")
    lines.append(f"\n(initial ‖∇F‖² = {initial:.2e})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=float, default=4e6)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--solvers", default=",".join(SOLVERS))
    ap.add_argument("--mu", type=float, default=0.01)
    ap.add_argument("--steps", default=",".join(f"{x:g}" for x in STEPS))
    ap.add_argument("--ratios", default=",".join(f"{x:g}" for x in RATIOS))
    ap.add_argument("--csv", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.solvers.split(",") if s.strip()]
    unknown = [n for n in names if n not in SOLVERS]
    if unknown:
        print(f"stochastic_table: unknown solvers {unknown}; known: {list(SOLVERS)}", file=sys.stderr)
        return 2
    try:
        steps = [float(x) for x in args.steps.split(",")]
        ratios = [float(x) for x in args.ratios.split(",")]
    except ValueError:
        print(f"stochastic_table: --steps and --ratios take comma-separated numbers, got {args.steps!r}, "
              f"{args.ratios!r}", file=sys.stderr)
        return 2
    if not all(x > 0 and math.isfinite(x) for x in steps + ratios):
        print("stochastic_table: --steps and --ratios must be positive", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    t0 = time.time()
    task = QuadraticBilevel(mu=args.mu, seed=0)
    g0 = task.reference_hypergradient(task.space.init_theta(dtype=task.dtype))
    best: dict[str, dict] = {}
    every: list[dict] = []
    for name in names:
        for step in steps:
            for ratio in ratios:
                r = run_one(task, name, float(step), float(ratio), max_samples=int(args.samples),
                            seconds=args.seconds)
                every.append(r)
                print(f"{name} step {step:g} ratio {ratio:g}: final {r['final']:.2e} after {r['samples']:,} samples, "
                      f"{r['time_s']:.1f} s ({r['stop']}); hits {r['hits']}", file=sys.stderr, flush=True)
                if name not in best or score(r) > score(best[name]):
                    best[name] = r
    print(table(best, float(g0 @ g0), steps, ratios))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["solver", "step_size", "outer_ratio", "final", "samples", "time_s", "stop"]
                        + [f"samples_to_{t:g}" for t in TARGETS] + [f"seconds_to_{t:g}" for t in TARGETS])
            for r in every:
                wr.writerow([r["solver"], r["step_size"], r["outer_ratio"], f"{r['final']:.6g}", r["samples"],
                             f"{r['time_s']:.3f}", r["stop"]] + [h[0] if h else "" for h in r["hits"]]
                            + [f"{h[1]:.3f}" if h else "" for h in r["hits"]])
    wall = time.time() - t0
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"command": "OMP_NUM_THREADS=1 .venv/bin/python scripts/stochastic_table.py " + " ".join(
                argv if argv is not None else sys.argv[1:]), "task": dict(task.params, seed=0),
                "targets": list(TARGETS), "steps": steps, "ratios": ratios, "max_samples": int(args.samples),
                "seconds_backstop": args.seconds, "initial_grad_norm_sq": float(g0 @ g0), "wall_s": round(wall, 1),
                "best": best, "runs": every}, fh, indent=1)
    print(f"({wall:.0f} s wall)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
