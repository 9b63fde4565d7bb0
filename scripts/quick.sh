#!/usr/bin/env bash
# The main job: set up (first time only), run the `quick` suite into a new run folder, then its report.
# Usage: bash scripts/quick.sh [RUN_DIR]     (default: results/quick-<date>-<time>)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-results/quick-$(date +%Y%m%d-%H%M%S)}
.venv/bin/hpo-bench run quick --out "$OUT" --workers auto   # one process per core, one torch thread each
# oracle: count budgets (the same F* on every machine): 20000 evaluations per task instance, 200 per polish
# from each cell's best point; weight_decay_mlp (each evaluation a continuation solve): 20 and 4
.venv/bin/hpo-bench report "$OUT" --oracle-evals 20000 --oracle-evals weight_decay_mlp=20 \
    --oracle-polish-evals 200 --oracle-polish-evals weight_decay_mlp=4
