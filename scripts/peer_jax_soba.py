"""Per-iteration cost of SOBA: hpo-bench's solver vs a JAX implementation in the style of benchopt's
benchmark_bilevel, on the same dense quadratic problem (one d x d matrix per example), side by side.

The peer's design is reproduced, not its code: each example ``i`` of the inner (outer) level holds a dense
quadratic ``1/2 z'A_i z + 1/2 x'C_i x + x'B_i z + a_i'z + c_i'x`` in the inner variable ``z`` (d_inner) and
the outer variable ``x`` (d_outer); a minibatch is a contiguous slice (``lax.dynamic_slice``) of a shuffled
batch order; gradients come from ``jax.grad`` and the HVP and cross product from ``jax.vjp`` of the inner
gradient; ``eval_every`` iterations run inside one jitted ``lax.scan``. SOBA's update (Dagreou et al. 2022,
Alg. 1) at constant steps::

    z <- z - rho grad_z g_B(z, x)
    v <- v - rho (d2_zz g_B v + grad_z f_B'(z, x))
    x <- x - gamma (d2_xz g_B v + grad_x f_B'(z, x))

Run (two virtual environments: JAX is not a dependency of hpo-bench)::

    bash scripts/peer_jax.sh            # writes results/benchmarks/peer_jax_soba.json

or by hand, ``python scripts/peer_jax_soba.py jax`` in an environment with jax and
``.venv/bin/python scripts/peer_jax_soba.py hpo`` here. Each prints one JSON line: seconds per iteration
(the minimum over ``--rounds`` rounds of ``--iters`` iterations, after a warm-up round that includes JAX's
compilation), float64 by default on both sides, one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("impl", choices=["jax", "hpo"])
    ap.add_argument("--n", type=int, default=4096, help="inner examples (an iteration's cost does not depend on n)")
    ap.add_argument("--m", type=int, default=1024, help="outer examples")
    ap.add_argument("--d-inner", type=int, default=100)
    ap.add_argument("--d-outer", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=256, help="iterations per round (the peer's eval_freq is 128)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--form", choices=["dense", "factored"], default="dense",
                    help="hpo only: quadratic_bilevel's per-example storage (jax: always dense, as the peer)")
    return ap.parse_args(argv)


def run_jax(a) -> dict:
    import jax

    if a.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    dt = jnp.float64 if a.dtype == "float64" else jnp.float32
    d, q, b = a.d_inner, a.d_outer, a.batch
    key = jax.random.PRNGKey(0)

    def level(key, n, mu):
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        u = jax.random.normal(k1, (n, d, 4), dt) / jnp.sqrt(4.0 * d)
        hz = mu * jnp.eye(d, dtype=dt)[None] + u @ jnp.swapaxes(u, 1, 2)   # PSD, eigenvalues in [mu, ~1]
        w = jax.random.normal(k2, (n, q, 2), dt) / jnp.sqrt(2.0 * q)
        hx = 0.1 * jnp.eye(q, dtype=dt)[None] + w @ jnp.swapaxes(w, 1, 2)
        cross = 0.1 * jax.random.normal(k3, (n, q, d), dt) / jnp.sqrt(d)
        return hz, hx, cross, jax.random.normal(k4, (n, d), dt), jax.random.normal(k5, (n, q), dt)

    k_in, k_out, k_s = jax.random.split(key, 3)
    inner, outer = level(k_in, a.n, 0.01), level(k_out, a.m, 0.01)

    def batch_loss(data, start, z, x):
        sl = [jax.lax.dynamic_slice_in_dim(t, start, b, axis=0) for t in data]
        hz, hx, cross, lz, lx = sl
        val = (0.5 * jnp.einsum("i,bij,j->b", z, hz, z) + 0.5 * jnp.einsum("i,bij,j->b", x, hx, x)
               + jnp.einsum("i,bij,j->b", x, cross, z) + lz @ z + lx @ x)
        return jnp.mean(val)

    g_inner = jax.grad(lambda z, x, s: batch_loss(inner, s, z, x), argnums=0)
    g_outer = jax.grad(lambda z, x, s: batch_loss(outer, s, z, x), argnums=(0, 1))
    n_in, n_out = a.n // b, a.m // b
    rho, gamma = 0.1, 0.01

    def step(carry, _):
        z, x, v, key = carry
        key, k1, k2 = jax.random.split(key, 3)
        s_in = jax.random.randint(k1, (), 0, n_in) * b
        s_out = jax.random.randint(k2, (), 0, n_out) * b
        gz, vjp = jax.vjp(lambda z_, x_: g_inner(z_, x_, s_in), z, x)
        hv, cv = vjp(v)
        fz, fx = g_outer(z, x, s_out)
        return (z - rho * gz, x - gamma * (cv + fx), v - rho * (hv + fz), key), None

    @jax.jit
    def epoch(carry):
        return jax.lax.scan(step, carry, None, length=a.iters)[0]

    carry = (jnp.zeros(d, dt), jnp.zeros(q, dt), jnp.zeros(d, dt), k_s)
    jax.block_until_ready(epoch(carry))  # compile
    times = []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        carry = jax.block_until_ready(epoch(carry))
        times.append(time.perf_counter() - t0)
    z = carry[0]
    if not bool(jnp.all(jnp.isfinite(z))):
        raise SystemExit("jax SOBA diverged")
    return {"impl": "jax", "version": jax.__version__, "s_per_iter": min(times) / a.iters,
            "rounds_s": times}


def run_hpo(a) -> dict:
    import torch

    from hpo_bench.core._threads import one_thread
    from hpo_bench.core.registry import TUNERS
    from hpo_bench.tasks.quadratic_bilevel import QuadraticBilevel

    with one_thread():
        task = QuadraticBilevel(n=a.n, m=a.m, d_inner=a.d_inner, d_outer=a.d_outer, mu=0.01, form=a.form,
                                seed=0, dtype=a.dtype)
        solver = TUNERS.get("soba")(batch_size=a.batch, step_size=0.1, outer_ratio=10.0)
        solver.setup(task, seed=0)

        def rnd():
            for _ in range(a.iters):
                solver.compute()
                solver.apply()
                solver.iteration += 1

        rnd()  # warm-up
        times = []
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            rnd()
            times.append(time.perf_counter() - t0)
        if not bool(torch.isfinite(solver.w).all()):
            raise SystemExit("hpo-bench SOBA diverged")
    return {"impl": "hpo-bench", "version": torch.__version__, "s_per_iter": min(times) / a.iters,
            "rounds_s": times}


def main(argv=None) -> None:
    a = _args(argv if argv is not None else sys.argv[1:])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = run_jax(a) if a.impl == "jax" else run_hpo(a)
    out.update({k: getattr(a, k) for k in ("n", "m", "d_inner", "d_outer", "batch", "iters", "rounds", "dtype")})
    out["form"] = "dense" if a.impl == "jax" else a.form
    print(json.dumps(out))


if __name__ == "__main__":
    main()
