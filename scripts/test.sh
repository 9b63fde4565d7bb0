#!/usr/bin/env bash
# The tests: set up (first time only), then the whole test suite, benchmarks included with
# benchmarking disabled (each benchmark body runs once, so it is checked for correctness).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the tests use small problems: one intra-op thread avoids OpenMP spin-waits between tiny LAPACK calls
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# one pytest-xdist worker per logical CPU (HPO_BENCH_TEST_WORKERS=0 runs in this process); whole files go to one
# worker, so module fixtures are built once
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${HPO_BENCH_TEST_WORKERS:-logical}" --dist loadfile "$@"
