"""The stochastic bilevel solvers against their defining properties (float64, small quadratic_bilevel instances).

* Unbiasedness: at a fixed state, the mean of each solver's stochastic directions over 2000 batches
  equals the full-batch direction (written out here from the task's full-batch closed forms) within a
  99.9% confidence bound from the sample variance (Bonferroni over the coordinates).
* Full-batch limit: with batch = n (shuffled: a permutation of all examples), each solver's iterates
  are those of its deterministic counterpart, written out here.
* Convergence on quadratic_bilevel (mu = 0.1): the finite-sum variance-reduced solvers (SABA, SRBA, VRBO) reach
  ||dF||^2 <= 1e-10; MRBO's paper schedule brings its floor well below the constant-momentum one (STORM
  converges polynomially, not linearly); SOBA and TTSA settle at a noise floor that shrinks with the step size.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from hpo_bench.core.records import Budget, Recorder
from hpo_bench.core.registry import TUNERS
from hpo_bench.stochastic._oracle import generator
from hpo_bench.tasks.quadratic_bilevel import QuadraticBilevel

from hpo_bench.core._threads import one_thread

SOLVERS = ("soba", "saba", "srba", "stocbio", "amigo", "bsa", "ttsa", "mrbo", "vrbo", "f2sa")
N, M = 48, 24


@pytest.fixture(autouse=True, scope="module")
def one_thread_here():  # many small dense ops: one thread is much faster on a busy 2-core machine
    with one_thread():
        yield


@pytest.fixture(scope="module")
def task():
    return QuadraticBilevel(n=N, m=M, d_inner=5, d_outer=2, mu=0.1, noise=0.5, form="factored", seed=3)


# ------------------------------------------------------------- full-batch quantities, written out
def full(task, w, theta, v):
    """``(grad_w f, H v, J v, grad_w g)`` at the full data sets, from the full-batch closed forms."""
    lin = task.linearize(w, theta)
    return task.inner_grad(w, theta), lin.hvp(v), lin.cross_vjp(v), task.outer_grad(w)


def theta_grad(task, w, theta):
    th = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(task.inner_loss(w, th), th)
    return g


def neumann_full(task, w, theta, steps, lr, *, inclusive=True):
    """``lr sum_{q=0}^{steps} (I - lr H)^q grad g`` (``inclusive``) or ``sum_{q<steps}``."""
    lin = task.linearize(w, theta)
    r = task.outer_grad(w)
    acc = r.clone()
    for _ in range(steps if inclusive else steps - 1):
        r = r - lr * lin.hvp(r)
        acc = acc + r
    return lr * acc


def hyper_full(task, w, theta, steps, lr, inclusive=True):
    v = neumann_full(task, w, theta, steps, lr, inclusive=inclusive)
    return -task.linearize(w, theta).cross_vjp(v), v


# ------------------------------------------------------------- solvers at a fixed state
def build(name, task, **kw):
    params = {"batch_size": 8, "outer_batch_size": 6, "step_size": 0.2, "outer_ratio": 10.0}
    if name in ("stocbio", "bsa", "ttsa", "mrbo", "vrbo"):
        params.update(neumann_steps=2, neumann_lr=0.5)
    if name == "f2sa":
        params.update(penalty=10.0)
    params.update(kw)
    solver = TUNERS.get(name)(**params)
    solver.setup(task, seed=11)
    return solver


def perturbed_state(solver, task):
    """Move every state tensor off the initial point (so memories and previous points differ from the current)."""
    gen = torch.Generator().manual_seed(5)
    for t in solver.state_tensors():
        t.add_(0.3 * torch.randn(t.shape, generator=gen, dtype=t.dtype))
    torch.clamp(solver.theta, solver.lo, solver.hi, out=solver.theta)
    if hasattr(solver, "mem_in"):  # SAGA's invariant: the running mean is the weighted mean of the memories
        solver.mean_in.copy_(solver.wt_in @ solver.mem_in)
        solver.mean_out.copy_(solver.wt_out @ solver.mem_out)
    solver.iteration = 1  # mid-period for the recursive solvers


def directions(name, solver):
    """The stochastic directions the solver just computed, concatenated."""
    attrs = {"soba": ("d_w", "d_v", "d_theta"), "saba": ("d_in", "d_out"), "srba": ("d",),
             "stocbio": ("v", "d_theta"), "amigo": ("d_theta",), "bsa": ("v", "d_theta"),
             "ttsa": ("d_w", "v", "d_theta"), "mrbo": ("u", "d"), "vrbo": ("u", "d"),
             "f2sa": ("d_z", "d_y", "d_theta")}[name]
    return torch.cat([getattr(solver, a).reshape(-1) for a in attrs])


def expected(name, solver, task):
    """The full-batch direction at the solver's (fixed) state."""
    w, th, v = solver.w, solver.theta, solver.v
    g, hv, jv, go = full(task, w, th, v)
    if name == "soba":
        return torch.cat((g, hv - go, -jv))
    if name == "saba":
        return torch.cat((g, hv, jv, go))
    if name == "srba":
        gp, hvp, jvp, gop = full(task, solver.w_prev, solver.theta_prev, solver.v_prev)
        return solver.d + torch.cat((g, hv - go, -jv)) - torch.cat((gp, hvp - gop, -jvp))
    if name in ("stocbio", "bsa", "ttsa"):
        h, vv = hyper_full(task, w, th, solver.neumann_steps, solver.neumann_lr, inclusive=name == "stocbio")
        return torch.cat(((g,) if name == "ttsa" else ()) + (vv, h))
    if name == "amigo":
        return -jv
    if name in ("mrbo", "vrbo"):
        h, _ = hyper_full(task, w, th, solver.neumann_steps, solver.neumann_lr)
        hp, _ = hyper_full(task, solver.w_prev, solver.theta_prev, solver.neumann_steps, solver.neumann_lr)
        gp = task.inner_grad(solver.w_prev, solver.theta_prev)
        if name == "mrbo":
            m = solver.current_momentum  # the schedule's m_k at the solver's iteration
            return torch.cat((g + m * (solver.u - gp), h + m * (solver.d - hp)))
        return torch.cat((solver.u + g - gp, solver.d + h - hp))
    if name == "f2sa":
        y, lam = solver.y, solver.lam
        return torch.cat((g, task.inner_grad(y, th) + go_at(task, y) / lam,
                          lam * (theta_grad(task, y, th) - theta_grad(task, w, th))))
    raise AssertionError(name)


def go_at(task, w):
    return task.outer_grad(w)


@pytest.mark.parametrize("name", SOLVERS)
def test_direction_is_unbiased(task, name):
    """Mean of 2000 stochastic directions at one state vs the full-batch direction: 99.9% bound (Bonferroni)."""
    solver = build(name, task)
    perturbed_state(solver, task)
    _assert_unbiased(name, solver, task)


def test_mrbo_paper_schedule_direction_is_unbiased(task):
    """With the paper's schedule at iteration 50 the STORM weight is m_50 = 1 - 0.1 (10 / 60)^(2/3), not 0.9."""
    solver = build("mrbo", task, schedule="paper", schedule_offset=10.0, momentum=0.9)
    perturbed_state(solver, task)
    solver.iteration = 50
    assert math.isclose(solver.current_momentum, 1 - 0.1 * (10 / 60) ** (2 / 3), rel_tol=1e-14)
    _assert_unbiased("mrbo", solver, task)


def _assert_unbiased(name, solver, task):
    state = [t.clone() for t in solver.state_tensors()]
    target = expected(name, solver, task)
    reps = 2000
    draws = torch.empty(reps, target.shape[0], dtype=torch.float64)
    for r in range(reps):
        for dst, src in zip(solver.state_tensors(), state):
            dst.copy_(src)
        solver.estimate()
        draws[r] = directions(name, solver)
    mean, sd = draws.mean(0), draws.std(0)
    z = norm.ppf(1 - 0.001 / (2 * target.shape[0]))
    bound = z * sd / math.sqrt(reps) + 1e-12 * (1 + target.abs())
    assert bool((sd > 0).any()), "the directions must be random at batch < n"
    worst = float(((mean - target).abs() / bound).max())
    assert worst <= 1.0, f"{name}: the mean direction misses the full-batch one by {worst:.2f} x the 99.9% bound"


# ------------------------------------------------------------- full-batch limit
def deterministic(name, solver, task, iters, *, offset=None):
    """The deterministic counterpart of ``solver`` (same knobs), ``iters`` iterations from the initial point;
    ``offset``: MRBO's paper schedule, steps times ``(offset / (offset + k))^(1/3)`` at iteration ``k``."""
    rho, gamma = solver.inner_lr, solver.outer_lr
    lo, hi = solver.lo, solver.hi
    w, th, v = task.init_params(), task.space.init_theta(dtype=task.dtype), torch.zeros(task.n_params,
                                                                                       dtype=task.dtype)
    proj = lambda x: torch.minimum(torch.maximum(x, lo), hi)  # noqa: E731
    trunc = generator(11, "truncation")
    if name in ("soba", "saba", "srba", "amigo"):
        v = task.outer_grad(w)  # v0 = grad g(w0)
    lam = getattr(solver, "penalty", None)
    y = w - rho / lam * task.outer_grad(w) if name == "f2sa" else None
    out = []
    for k in range(iters):
        if name in ("soba", "saba", "srba"):
            g, hv, jv, go = full(task, w, th, v)
            w, v, th = w - rho * g, v - rho * (hv - go), proj(th + gamma * jv)
        elif name in ("stocbio", "bsa", "amigo"):
            for _ in range(solver.inner_steps):
                w = w - rho * task.inner_grad(w, th)
            if name == "stocbio":
                h, v = hyper_full(task, w, th, solver.neumann_steps, solver.neumann_lr)
            elif name == "bsa":
                p = int(torch.randint(solver.neumann_steps, (1,), generator=trunc))
                lin = task.linearize(w, th)
                r = task.outer_grad(w)
                for _ in range(p):
                    r = r - solver.neumann_lr * lin.hvp(r)
                v = solver.neumann_steps * solver.neumann_lr * r
                h = -lin.cross_vjp(v)
            else:
                lin = task.linearize(w, th)
                for _ in range(solver.v_steps):
                    v = v - solver.v_lr * (lin.hvp(v) - task.outer_grad(w))
                h = -lin.cross_vjp(v)
            th = proj(th - gamma * h)
        elif name == "ttsa":
            p = int(torch.randint(solver.neumann_steps, (1,), generator=trunc))
            lin = task.linearize(w, th)
            r = task.outer_grad(w)
            for _ in range(p):
                r = r - solver.neumann_lr * lin.hvp(r)
            v = solver.neumann_steps * solver.neumann_lr * r
            w, th = w - rho * task.inner_grad(w, th), proj(th + gamma * lin.cross_vjp(v))
        elif name in ("mrbo", "vrbo"):
            h, v = hyper_full(task, w, th, solver.neumann_steps, solver.neumann_lr)
            s = 1.0 if offset is None else (offset / (offset + k)) ** (1 / 3)
            w, th = w - s * rho * task.inner_grad(w, th), proj(th - s * gamma * h)
        elif name == "f2sa":
            dz = task.inner_grad(w, th)
            dy = task.inner_grad(y, th) + task.outer_grad(y) / lam
            h = lam * (theta_grad(task, y, th) - theta_grad(task, w, th))
            w, y, th = w - rho * dz, y - rho * dy, proj(th - gamma * h)
        out.append((w.clone(), th.clone()))
    return out


@pytest.mark.parametrize("name", [*SOLVERS, "mrbo-paper"])
def test_full_batch_limit_is_the_deterministic_iteration(task, name):
    kw = {"batch_size": N, "outer_batch_size": M}
    if name in ("stocbio", "bsa", "amigo"):
        kw.update(inner_steps=3)
    if name == "amigo":
        kw.update(v_steps=3)
    offset = None
    if name == "mrbo":
        kw.update(schedule="constant")
    if name == "mrbo-paper":  # decreasing steps (the STORM weight is irrelevant at batch = n: u_k = grad f)
        name, offset = "mrbo", 4.0
        kw.update(schedule="paper", schedule_offset=offset)
    solver = build(name, task, **kw)
    ref = deterministic(name, solver, task, 25, offset=offset)
    for k, (w_ref, th_ref) in enumerate(ref):
        solver.compute()
        solver.apply()
        solver.iteration += 1
        scale = 1 + float(w_ref.abs().max())
        assert float((solver.w - w_ref).abs().max()) <= 1e-10 * scale, f"{name}: w differs at iteration {k}"
        assert float((solver.theta - th_ref).abs().max()) <= 1e-10 * (1 + float(th_ref.abs().max())), \
            f"{name}: theta differs at iteration {k}"


# ------------------------------------------------------------- convergence
@pytest.fixture(scope="module")
def conv_task():
    """mu = 0.1, L = 1; a small cross term keeps the value function's curvature (0.59) below the inner one, so the
    outer step need not be tiny."""
    return QuadraticBilevel(n=32, m=16, d_inner=4, d_outer=1, mu=0.1, noise=0.5, cross_norm=0.2, form="dense",
                            seed=1)


def grad_norms_sq(task, name, rows, **params):
    solver = TUNERS.get(name)(**params)
    rec = Recorder(task, Budget(steps=rows), meta={})
    rec.start()
    solver.run(task, rec, seed=0)
    assert all(r["status"] == "ok" for r in rec.rows), rec.rows[-1]["message"]
    return [r["grad_norm_sq"] for r in rec.rows]


@pytest.mark.parametrize("name, rows, extra", [
    ("saba", 12, {}),
    ("srba", 12, {}),
    pytest.param("vrbo", 6, {"neumann_steps": 120, "neumann_lr": 1.0}, marks=pytest.mark.slow),
])
def test_variance_reduced_solvers_converge(conv_task, name, rows, extra):
    """Constant steps, batch 4 of 32: ||dF||^2 <= 1e-10 (VRBO: its Neumann bias 0.9^121 is below that)."""
    gn = grad_norms_sq(conv_task, name, rows, batch_size=4, eval_every=250, step_size=0.3, outer_ratio=10.0, **extra)
    assert gn[-1] <= 1e-10, f"{name}: ||dF||^2 = {gn[-1]:.2e} after {len(gn)} rows ({gn[::3]})"


@pytest.mark.slow
def test_mrbo_paper_schedule_lowers_the_constant_momentum_floor(conv_task):
    """MRBO is variance-reduced by STORM, which is not a finite-sum method: its error decays as k^(-2/3) under the
    paper's schedule and never linearly, so ||dF||^2 <= 1e-10 is out of reach of a test (mrbo's module docstring).
    What the schedule guarantees is checked instead: at the same knobs, 4000 iterations, the mean ||dF||^2 over
    the last 6 of 16 rows falls below 0.3 x the constant-momentum floor (measured: 0.09-0.12 over 3 seeds).
    Neumann bias 0.9^61 ~ 2e-3 (relative, in v): below both floors."""
    floors = {}
    for schedule in ("constant", "paper"):
        gn = grad_norms_sq(conv_task, "mrbo", 16, batch_size=4, eval_every=250, step_size=0.3, outer_ratio=10.0,
                           neumann_steps=60, neumann_lr=1.0, momentum=0.9, schedule=schedule, schedule_offset=10.0)
        floors[schedule] = sum(gn[-6:]) / 6
    assert floors["paper"] < 0.3 * floors["constant"], floors


@pytest.mark.parametrize("name, extra", [
    ("soba", {}),
    pytest.param("ttsa", {"neumann_steps": 60, "neumann_lr": 1.0}, marks=pytest.mark.slow),
])
def test_sgd_solvers_noise_floor_shrinks_with_the_step(conv_task, name, extra):
    """The mean ||dF||^2 over the last 8 of 24 rows (6000 iterations) at steps 0.3 and 0.05."""
    floors = []
    for step in (0.3, 0.05):
        gn = grad_norms_sq(conv_task, name, 24, batch_size=4, eval_every=250, step_size=step, outer_ratio=10.0,
                           **extra)
        floors.append(sum(gn[-8:]) / 8)
    assert floors[1] < 0.3 * floors[0], f"{name}: floors {floors} (steps 0.3, 0.05)"
