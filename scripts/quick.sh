#!/usr/bin/env bash
# The main job: set up (first time only), run the `quick` suite, summarise it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-results/quick}
.venv/bin/hpo-bench run quick --out "$OUT"
