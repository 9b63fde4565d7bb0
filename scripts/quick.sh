#!/usr/bin/env bash
# The main job: set up (first time only), run the `quick` suite into a new run folder, then its report.
# Usage: bash scripts/quick.sh [RUN_DIR]     (default: results/quick-<date>-<time>)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-results/quick-$(date +%Y%m%d-%H%M%S)}
.venv/bin/hpo-bench run quick --out "$OUT" --workers auto   # one process per core, one torch thread each
.venv/bin/hpo-bench report "$OUT" --oracle-seconds 15   # oracle: at most 15 s per task instance
