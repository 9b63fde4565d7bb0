#!/usr/bin/env bash
# The tests: set up (first time only), then the whole test suite, benchmarks included with
# benchmarking disabled (each benchmark body runs once, so it is checked for correctness).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the tests use small problems: one intra-op thread avoids OpenMP spin-waits between tiny LAPACK calls
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
