#!/usr/bin/env bash
# SOBA per iteration: hpo-bench vs a JAX implementation in benchmark_bilevel's style (scripts/peer_jax_soba.py),
# side by side, one thread each, interleaved 3 times; writes results/benchmarks/peer_jax_soba.json.
# JAX is not a dependency of hpo-bench: it goes into its own environment, .venv-jax (pip install jax jaxlib).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
[ -x .venv-jax/bin/python ] || { "$PY" -m venv .venv-jax && .venv-jax/bin/python -m pip install -q jax jaxlib; }
export OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
out=${1:-results/benchmarks/peer_jax_soba.json}
tmp=$(mktemp)
for rep in 1 2 3; do
    for dtype in float64 float32; do
        .venv-jax/bin/python scripts/peer_jax_soba.py jax --dtype "$dtype" >> "$tmp"
        .venv/bin/python scripts/peer_jax_soba.py hpo --dtype "$dtype" --form dense >> "$tmp"
        .venv/bin/python scripts/peer_jax_soba.py hpo --dtype "$dtype" --form factored >> "$tmp"
    done
done
.venv/bin/python - "$tmp" "$out" <<'PY'
import json, platform, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
best = {}
for r in rows:
    k = (r["impl"], r["form"], r["dtype"])
    best[k] = min(best.get(k, float("inf")), r["s_per_iter"])
summary = [{"impl": i, "form": f, "dtype": d, "ms_per_iter": round(s * 1e3, 4)} for (i, f, d), s in sorted(best.items())]
for d in ("float64", "float32"):
    j = best[("jax", "dense", d)]
    for f in ("dense", "factored"):
        print(f"{d}: jax dense {j*1e3:.3f} ms/iter, hpo-bench {f} {best[('hpo-bench', f, d)]*1e3:.3f} ms/iter: "
              f"jax / hpo-bench = {j / best[('hpo-bench', f, d)]:.2f}")
json.dump({"machine": platform.processor() or platform.machine(), "runs": rows, "best": summary},
          open(sys.argv[2], "w"), indent=1)
PY
rm -f "$tmp"
