"""HOAG's inexact solves: ``Task.solve_to`` and the gradient tuner's ``tol_schedule``.

The schedule trades accuracy for work at each outer step, so each piece is tested for what defines it:
``solve_to`` meets its relative tolerance and no tighter than needed (it is really inexact), never
replaces the cached reference solve, and the hypergradient it leads to is off by at most ``C eps`` with
``C`` computed from the task (Pedregosa 2016, the bound behind HOAG's convergence theorem). The tuner
hands the scheduled ``eps_k`` to both solves, and a run with a summable schedule ends where the exact run
ends.
"""

from __future__ import annotations

import math

import pytest
import torch

from hpo_bench import get_task
from hpo_bench.core.records import Budget, Recorder
from hpo_bench.core.registry import TUNERS
from hpo_bench.core.tuner import TunerParamError
from hpo_bench.hypergrad import get_method
from hpo_bench.tuners.gradient import TOL_SCHEDULES, scheduled_tolerance

TOLS = (1e-2, 1e-4, 1e-6, 1e-8)


def _ridge(reference: str = "matrix_free"):
    return get_task("ridge_per_feature", n=120, p=40, seed=5, reference=reference)


def _logistic(reference: str = "matrix_free"):
    return get_task("logistic_l2", n=90, p=14, seed=4, per_feature=True, reference=reference)


def _theta(task, shift: float = 0.3) -> torch.Tensor:
    th = task.space.init_theta(dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    return th + shift * torch.randn(th.shape, generator=gen, dtype=torch.float64)


def _rel_grad(task, w, theta) -> float:
    g0 = float(task.inner_grad(torch.zeros_like(w), theta).norm())
    return float(task.inner_grad(w, theta).norm()) / g0


@pytest.mark.parametrize("make", [_ridge, _logistic], ids=["ridge_per_feature", "logistic_l2"])
def test_solve_to_meets_its_tolerance_and_is_really_inexact(make):
    task = make()
    assert task.reference_route() != "dense"
    th = _theta(task)
    rel = [_rel_grad(task, task.solve_to(th, None, tol), th) for tol in TOLS]
    for tol, r in zip(TOLS, rel):
        assert r <= tol * (1 + 1e-6), (tol, r)  # the stopping rule is on this very residual
    # a loose tolerance stops early: the residual is far above the reference solve's ~1e-12
    assert rel[0] > 1e-9 and rel[0] > 100 * rel[-1]
    # from a nearby answer (a warm start) the same rule holds
    w_near = task.solve_to(th, None, 1e-3)
    assert _rel_grad(task, task.solve_to(th, w_near, 1e-7), th) <= 1e-7 * (1 + 1e-6)


@pytest.mark.parametrize("make", [_ridge, _logistic], ids=["ridge_per_feature", "logistic_l2"])
def test_an_inexact_solve_never_becomes_the_reference(make):
    task, fresh = make(), make()
    th = _theta(task)
    loose = task.solve_to(th, None, 1e-2)
    ref, ref_fresh = task.reference(th), fresh.reference(th)
    assert float((loose - ref.w).norm()) > 1e-6 * float(ref.w.norm())
    # the reference at the same theta is the one a fresh instance computes (the same path)
    assert float((ref.w - ref_fresh.w).norm()) <= 1e-12 * float(ref_fresh.w.norm())
    assert float((ref.grad - ref_fresh.grad).norm()) <= 1e-12 * float(ref_fresh.grad.norm())


def test_solve_to_at_reference_accuracy_or_on_the_dense_route_is_the_reference_solve():
    mf, dense = _ridge(), _ridge("dense")
    th = _theta(mf)
    assert torch.equal(mf.solve_to(th, None, 1e-13), _ridge().solve(th))  # the same path: bitwise
    assert torch.equal(dense.solve_to(th, None, 1e-2), dense.solve(th))  # a factorisation has no tolerance


class _Constants:
    """What bounds the hypergradient error of an inexact step at ``theta`` on the dense twin of a ridge task.

    ``g = -J(w)^T q``, ``J(w) = d/dtheta grad_w h`` (linear in ``w`` for ridge: ``||J(w) - J(w*)|| <= c_J
    ||w - w*||``), ``q(w) = H^{-1} v(w)`` with ``||v(w) - v(w*)|| <= L_v ||w - w*||``. cg certifies ``||g -
    g(w)|| <= eps ||g(w)||``; ``||g(w) - g*|| <= ||w - w*|| (||J(w)|| L_v / mu + c_J ||q*||)``, and an inner
    residual ``eps ||b||`` gives ``||w - w*|| <= eps ||b|| / mu``.
    """

    def __init__(self, dense, th):
        self.dense, self.th = dense, th
        h = dense.hessian(th)
        self.mu = float(torch.linalg.eigvalsh(h)[0])
        self.w_star = dense.solve(th)
        self.g_star = dense.reference(th).grad
        self.b_norm = float((2 * dense.a * dense.xty).norm())
        v_hess = torch.autograd.functional.hessian(lambda w: dense.outer_loss(w), self.w_star)
        self.l_v = float(torch.linalg.matrix_norm(v_hess, 2))
        probe = torch.randn(self.w_star.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        self.c_j = float(torch.linalg.matrix_norm(self.jac(self.w_star + probe) - self.jac(self.w_star), 2)) / float(
            probe.norm())
        self.q_norm = float(torch.linalg.solve(h, dense.outer_grad(self.w_star)).norm())

    def jac(self, w):  # d/dtheta grad_w h(w, theta): p x p
        return torch.autograd.functional.jacobian(lambda t: self.dense.inner_grad(w, t), self.th)

    def dw(self, eps: float) -> float:
        return eps * self.b_norm / self.mu

    def bound(self, eps: float) -> float:
        """The bound on ``||g - g*||`` at tolerance ``eps``, from ``w*`` alone (``||J(w)|| <= ||J(w*)|| + c_J dw``),
        solved for ``||g||`` inside the cg term."""
        dw = self.dw(eps)
        j_norm = float(torch.linalg.matrix_norm(self.jac(self.w_star), 2)) + self.c_j * dw
        lin = eps * (1 + 2 * eps)
        return (lin * float(self.g_star.norm()) + dw * (j_norm * self.l_v / self.mu + self.c_j * self.q_norm)) / (
            1 - lin) * (1 + 1e-6) + 1e-12


def test_hypergradient_error_is_at_most_c_eps_with_c_from_the_task():
    mf, dense = _ridge(), _ridge("dense")
    th = _theta(mf)
    c = _Constants(dense, th)
    cg = get_method("cg")
    errs = []
    for eps in TOLS:
        w = mf.solve_to(th, None, eps)
        assert float((w - c.w_star).norm()) <= c.dw(eps) * (1 + 1e-6)
        hg = cg(mf, w, th, tol=eps)
        assert hg.stats["converged"] and hg.stats["error_bound"] <= eps
        err = float((hg.grad - c.g_star).norm())
        assert err <= c.bound(eps), eps
        errs.append(err)
    # the tolerance is what sets the error: it falls with eps (by orders of magnitude over 1e-2 .. 1e-8)
    assert errs[0] > 1e3 * errs[-1]


def test_the_schedules_are_hoags_sequences():
    assert [scheduled_tolerance("quadratic", 0.1, 1e-10, k) for k in (1, 2, 10)] == pytest.approx([0.1, 0.025,
                                                                                                  1e-3], rel=1e-15)
    assert scheduled_tolerance("cubic", 0.1, 1e-10, 10) == pytest.approx(1e-4, rel=1e-15)
    assert scheduled_tolerance("exponential", 0.2, 1e-10, 3) == pytest.approx(0.2 * 0.81, rel=1e-15)
    assert scheduled_tolerance("exponential", 0.1, 1e-10, 10_000) == 1e-10  # the floor
    for name, s in TOL_SCHEDULES.items():  # summable (HOAG's convergence condition): the tail is small
        assert sum(s(0.1, k) for k in range(1, 20_001)) - sum(s(0.1, k) for k in range(1, 10_001)) < 2e-5, name


def _run(schedule: str, steps: int, outer: str = "adam", lr: float = 0.05):
    task = _ridge()
    seen: dict[str, list] = {"solve_tol": [], "method_tol": []}
    solve_to = task.solve_to

    def spy_solve_to(theta, w0, tol):
        seen["solve_tol"].append(tol)
        return solve_to(theta, w0, tol)

    task.solve_to = spy_solve_to
    tuner = TUNERS.get("gradient")(method="cg", inner="exact", outer=outer, outer_lr=lr, tol_schedule=schedule)
    method = tuner.method

    def spy_method(task_, w, theta, **opts):
        seen["method_tol"].append(opts.get("tol"))
        return method(task_, w, theta, **opts)

    spy_method.info, spy_method.method_name = method.info, method.method_name
    tuner.method = spy_method
    rec = Recorder(task, Budget(steps=steps))
    tuner.run(task, rec)
    return rec.rows, seen


def test_the_tuner_hands_eps_k_to_both_solves_and_reports_what_its_bound_covers():
    rows, seen = _run("quadratic", 6)
    want = [scheduled_tolerance("quadratic", 0.1, 1e-10, k) for k in range(1, 7)]
    assert seen["solve_tol"] == want and seen["method_tol"] == want
    # w is off by up to eps_k: the linear solve's bound is not the row's bound, and the true error is recorded
    assert all(math.isnan(r["hypergrad_error_bound"]) for r in rows)
    assert all(math.isfinite(r["hypergrad_rel_error"]) for r in rows)
    rows_again, seen_again = _run("quadratic", 6)  # a second run starts the schedule at k = 1 again
    assert seen_again["solve_tol"] == want


def test_a_summable_schedule_keeps_every_step_within_c_eps_k_and_closes_on_the_exact_run():
    """HOAG's convergence argument: step ``k``'s hypergradient is off by at most ``C eps_k`` (checked at three
    recorded points with ``C`` computed there), so the errors are summable and the run closes in on the
    exact-solve run: their gap in ``F`` shrinks as the schedule tightens (0.1 / k^2)."""
    exact, _ = _run("none", 300)
    hoag, _ = _run("quadratic", 300)
    dense = _ridge("dense")
    for k in (0, 99, 299):
        th = torch.tensor(hoag[k]["theta"], dtype=torch.float64)
        c = _Constants(dense, th)
        err = hoag[k]["hypergrad_rel_error"] * float(c.g_star.norm())
        assert err <= c.bound(scheduled_tolerance("quadratic", 0.1, 1e-10, k + 1)), k
    gap = [abs(exact[k]["val_loss_ref"] - hoag[k]["val_loss_ref"]) for k in (50, 299)]
    assert gap[1] < 0.25 * gap[0]


@pytest.mark.parametrize("params, key", [
    ({"inner": "gd"}, "inner"),
    ({"inner": "exact", "method": "neumann"}, "method"),
    ({"inner": "exact", "method_opts": {"tol": 1e-8}}, "method_opts"),
    ({"inner": "exact", "tol_start": 1e-3, "tol_min": 1e-2}, "tol_min"),
    ({"inner": "exact", "tol_start": 1.5}, "tol_start"),
])
def test_a_schedule_the_tuner_cannot_honour_is_refused_in_one_line(params, key):
    with pytest.raises(TunerParamError, match=f"`{key}`") as exc:
        TUNERS.get("gradient")(tol_schedule="quadratic", **params)
    assert "\n" not in str(exc.value)
