#!/usr/bin/env bash
# The tests: set up (first time only), then the whole test suite, benchmarks included with
# benchmarking disabled (each benchmark body runs once, so it is checked for correctness).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
