#!/usr/bin/env bash
# The main job: set up (first time only), run the `quick` suite into a new run folder, then its report.
# Usage: bash scripts/quick.sh [RUN_DIR]     (default: results/quick-<date>-<time>)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-results/quick-$(date +%Y%m%d-%H%M%S)}
.venv/bin/hpo-bench run quick --out "$OUT" --workers auto   # one process per core, one torch thread each
# oracle: the default count budgets (the same F* on every machine), whose results for this suite ship with
# the package (hpo_bench/oracles/, recomputed at two points before use); then 200 evaluations of polish from
# each cell's best point (weight_decay_mlp, each evaluation a continuation solve: 4)
.venv/bin/hpo-bench report "$OUT" --oracle-polish-evals 200 --oracle-polish-evals weight_decay_mlp=4
