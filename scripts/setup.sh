#!/usr/bin/env bash
# Create .venv (if missing) and install hpo-bench with its dev extra.
# torch==2.13.0 goes in first: on these machines it is a CPU wheel on disk, while a bare
# `torch` requirement would pull a multi-GB CUDA build. The project itself asks for torch>=2.2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.hpo-bench-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip show torch >/dev/null 2>&1 || .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".[dev]"
    touch "$stamp"
fi
