"""No dense copy of a sparse design is ever made: a task on a CSR matrix whose dense form would need 16 GB builds,
computes its certified reference and takes gradient steps in a process whose address space is capped far below that.

The child process sets ``RLIMIT_AS`` before importing torch, so any dense ``n x p`` (or ``p x p``) float64 array,
anywhere (torch, numpy, scipy), fails to allocate; the child also checks that the cap is in force by asking for the
dense size itself. Linux only (``RLIMIT_AS`` is not enforced on macOS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

N, P, DENSITY = 20_000, 100_000, 1e-4  # dense float64 X: 16 GB; p x p Gram matrix: 80 GB
CAP_GIB = 6.0  # address-space cap of the child: torch's import and the CSR data fit with wide room (a CI machine with more cores maps more), and the 16 GB dense copy cannot

CHILD = textwrap.dedent("""
    import json, math, resource, sys
    cap = int(float(sys.argv[1]) * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch
    from hpo_bench import get_task
    from hpo_bench.core.registry import METHODS

    n, p, density = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    out = {}
    try:
        torch.empty(n * p, dtype=torch.float64)
        out["cap_works"] = False
    except RuntimeError:
        out["cap_works"] = True
    for name in ("ridge_per_feature", "logistic_l2"):
        task = get_task(name, dataset="text-like", n=n, p=p, density=density, seed=0)
        theta = task.space.init_theta(dtype=task.dtype)
        rows = []
        warm = None
        for step in range(3):  # gradient steps on theta: reference (warm-started), then the cg hypergradient at w*
            ref = task.reference(theta, warm)
            warm = ref.warm
            hg = METHODS.get("cg")(task, ref.w, theta, tol=1e-10)
            gnorm = float(ref.grad.norm())
            rows.append({"rel_err": float((hg.grad - ref.grad).norm()) / gnorm,
                         "cg_bound": float(hg.stats.get("error_bound", math.nan)),
                         "ref_bound": float(ref.bound) / gnorm, "route": ref.route,
                         "finite": bool(torch.isfinite(hg.grad).all())})
            theta = task.space.project(theta - 0.5 * hg.grad / max(gnorm, 1e-300))  # a unit step in theta
        out[name] = {"sparse": bool(task.sparse), "layout": str(task.design_train.mat.layout), "steps": rows}
    out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux only")
def test_a_design_too_large_to_densify_is_never_densified(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(CAP_GIB), str(N), str(P), str(DENSITY)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cap_works"], "the address-space cap did not stop a dense allocation: the test would prove nothing"
    for name in ("ridge_per_feature", "logistic_l2"):
        res = out[name]
        assert res["sparse"] and res["layout"] == "torch.sparse_csr", res
        for row in res["steps"]:
            assert row["finite"] and row["route"] in ("cg", "newton-cg"), row
            # two certified paths agree to within the sum of their bounds (plus a few eps of the comparison)
            assert row["rel_err"] <= row["cg_bound"] + row["ref_bound"] + 1e-14, row
    assert out["maxrss_mib"] < 1024 * CAP_GIB
