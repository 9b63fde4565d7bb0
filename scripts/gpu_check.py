"""One prepared GPU check (run on a lent GPU machine; writes JSON to $OUT or ./gpu_out).

1. ``hpo-bench check`` on CUDA (float64): exact methods must still match the references.
2. A small suite with ``device = "cuda"`` end to end: every cell must finish ``ok``.
3. ``weight_decay_mlp`` at about a million hyperparameters (one decay per weight, float32):
   time of Neumann-5 and CG-10 hypergradients as a multiple of one training step (a full-batch
   inner gradient step), and peak CUDA memory of unrolled reverse mode (T = 10, 50) vs implicit.

Usage: python scripts/gpu_check.py [--hidden 1024 1024] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch


def timed(fn, device, repeat=5):
    fn()  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return out, times[len(times) // 2]


def peak_mb(fn, device):
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--hidden", type=int, nargs="*", default=[1024, 1024])
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args()
    out_dir = Path(os.environ.get("OUT", "gpu_out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    result: dict = {"device": args.device, "torch": torch.__version__}
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)

    exe = [sys.executable, "-m", "hpo_bench.cli"]
    if not args.skip_cli:
        chk = subprocess.run([*exe, "check", "--task", "ridge_per_feature", "--task", "seed_toy", "--points", "2",
                              "--device", args.device, "--json"], capture_output=True, text=True)
        rows = json.loads(chk.stdout)["rows"] if chk.stdout.strip().startswith("{") else []
        result["check"] = {"returncode": chk.returncode, "failed": sum(r["verdict"] == "FAIL" for r in rows),
                           "max_exact_rel_error": max((r["rel_error_ref"] for r in rows if r["method"] in
                                                       ("exact", "cg")), default=None),
                           "stderr_tail": chk.stderr[-500:]}
        suite = out_dir / "cuda_suite.toml"
        suite.write_text(f'''name = "cuda"
seeds = [0]
device = "{args.device}"
[budget]
steps = 10
[[task]]
name = "ridge_per_feature"
params = {{ n = 400, p = 40 }}
[[task]]
name = "seed_toy"
params = {{ transform = "log" }}
[[tuner]]
name = "gradient"
label = "cg"
params = {{ method = "cg", inner = "gd", inner_steps = 50 }}
[[tuner]]
name = "gradient"
label = "reverse"
params = {{ method = "reverse", inner = "gd", inner_steps = 50 }}
''')
        run_dir = Path("/tmp/hpo_cuda_run")
        res = subprocess.run([*exe, "run", str(suite), "--out", str(run_dir), "--quiet"], capture_output=True,
                             text=True)
        statuses = {}
        if (run_dir / "records.parquet").exists():
            import pandas as pd

            df = pd.read_parquet(run_dir / "records.parquet")
            statuses = df.groupby("cell_id")["status"].last().to_dict()
        result["cuda_suite"] = {"returncode": res.returncode, "statuses": statuses, "stderr_tail": res.stderr[-500:]}

    from hpo_bench import get_task
    from hpo_bench.hypergrad import cg, neumann, reverse, truncated

    task = get_task("weight_decay_mlp", n_train=args.n_train, n_val=400, n_test=200, pool=1, hidden=args.hidden,
                    dtype="float32", device=args.device, seed=0)
    theta = task.space.init_theta(dtype=task.dtype, device=task.device)
    w = task.init_params()
    lr = 0.5
    for _ in range(200):  # an approximately trained network to measure at
        w = w - lr * task.inner_grad(w, theta)
    result["mlp"] = {"n_params": task.n_params, "n_hyper": task.space.dim, "hidden": args.hidden,
                     "n_train": args.n_train, "train_loss": float(task.inner_loss(w, theta))}

    def train_step():
        return w - lr * task.inner_grad(w, theta)

    _, t_step = timed(train_step, device)
    runs = {
        "neumann5": lambda: neumann(task, w, theta, iterations=5, alpha=lr),
        "cg10": lambda: cg(task, w, theta, max_iter=10, tol=0.0),
        "reverse_T10": lambda: reverse(task, w, theta, steps=10, lr=lr),
        "reverse_T50": lambda: reverse(task, w, theta, steps=50, lr=lr),
        "truncated_T50_K10": lambda: truncated(task, w, theta, steps=50, truncate=10, lr=lr),
    }
    result["mlp"]["train_step_ms"] = t_step * 1e3
    result["mlp"]["train_step_peak_mb"] = peak_mb(train_step, device)
    for name, fn in runs.items():
        hg, t = timed(fn, device, repeat=3)
        result["mlp"][name] = {"ms": t * 1e3, "x_train_step": t / t_step, "peak_mb": peak_mb(fn, device),
                               "hvp": hg.stats.get("hvp"), "finite": bool(torch.isfinite(hg.grad).all())}
    text = json.dumps(result, indent=2, default=str)
    (out_dir / "gpu_check.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
