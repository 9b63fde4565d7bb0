"""Hypergradient methods for non-smooth tasks: implicit on the support (exact), implicit-forward, and forward /
reverse mode through ISTA and CD iterations; each converges to the reference as its iterations grow."""

from __future__ import annotations

import pytest
import torch

from hpo_bench import METHODS
from hpo_bench.core.records import rel_error
from hpo_bench.core.registry import TASKS
from hpo_bench.core.tuner import TunerParamError
from hpo_bench.tuners.gradient import GradientTuner

from _util import theta_points

NONSMOOTH = ["lasso", "elastic_net", "weighted_lasso", "sparse_logreg"]

#: Below this relative error a method's error is rounding, not its approximation: float64 rounding
#: of the support solve and of hundreds of sweeps, which another BLAS kernel moves (Haswell and
#: Sandybridge kernels left 1.1e-12 where AVX-512 left less; the approximation errors the rates are
#: read from are 1e-2 to 1e-10). A rate is only asked of errors above it.
ROUNDING_FLOOR = 1e-10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(name, **kw):
    cls = TASKS.get(name)
    return cls(**{**cls.check_params, **kw})


def ista_map(task, theta, w0, steps, eta):
    """theta -> w_T of ISTA with a fixed step (what prox_forward / prox_reverse differentiate)."""
    w = w0
    for _ in range(steps):
        w = task.prox(w - eta * task.smooth_grad(w, theta), eta, theta)
    return w


def test_methods_declare_the_composite_structure():
    for name in ("implicit_support", "implicit_forward", "prox_forward", "prox_reverse"):
        fn = METHODS.get(name)
        assert fn.info.requires == frozenset({"prox"}), name
    assert METHODS.get("implicit_support").info.exact
    assert not any(METHODS.get(n).info.exact for n in ("implicit_forward", "prox_forward", "prox_reverse"))


@pytest.mark.parametrize("name", NONSMOOTH)
def test_implicit_support_is_exact(name):
    task = small(name)
    for theta in theta_points(task, 3, seed=4):
        w = task.solve(theta)
        hg = METHODS.get("implicit_support")(task, w, theta)
        assert rel_error(hg.grad, task.reference_hypergradient(theta)) <= 1e-10
        assert hg.stats["support_margin"] > 0 and hg.stats["stationarity"] <= 1e-12
        assert hg.stats["support_size"] == len(task.support(w))


@pytest.mark.parametrize("name", NONSMOOTH)
def test_implicit_forward_converges_geometrically(name):
    task = small(name)
    theta = theta_points(task, 2, seed=5)[1]
    w, ref = task.solve(theta), task.reference_hypergradient(theta)
    fn = METHODS.get("implicit_forward")
    errs = [rel_error(fn(task, w, theta, iterations=k, tol=0.0).grad, ref) for k in (5, 10, 20, 40)]
    assert all(b < a for a, b in zip(errs, errs[1:])) or errs[-1] <= ROUNDING_FLOOR, errs
    # Gauss-Seidel's linear rate rho: err(2k) / err(k) ~ rho^k, so the gain of a doubling never shrinks
    if errs[-1] > ROUNDING_FLOOR:
        assert errs[3] / errs[2] <= errs[2] / errs[1] * (1 + 1e-6), errs
    hg = fn(task, w, theta)
    assert hg.stats["converged"] and rel_error(hg.grad, ref) <= 1e-10


@pytest.mark.parametrize("name, solver, grid", [
    ("lasso", "ista", (100, 400, 1600)), ("elastic_net", "ista", (100, 400, 1600)),
    ("weighted_lasso", "ista", (50, 200, 800)), ("sparse_logreg", "ista", (100, 400, 1600)),
    ("lasso", "cd", (10, 40, 160)), ("weighted_lasso", "cd", (5, 20, 80)), ("sparse_logreg", "cd", (40, 160, 640)),
])
def test_forward_mode_converges_to_the_reference_as_iterations_grow(name, solver, grid):
    task = small(name)
    theta = theta_points(task, 2, seed=6)[1]
    ref = task.reference_hypergradient(theta)
    errs = [rel_error(METHODS.get("prox_forward")(task, task.init_params(), theta, steps=t, solver=solver).grad, ref)
            for t in grid]
    assert errs[0] > errs[1] > errs[2] or errs[2] <= ROUNDING_FLOOR, errs
    assert errs[-1] <= 1e-5, errs
    # geometric once the support is identified: the gain of quadrupling T does not shrink
    assert errs[2] / errs[1] <= errs[1] / errs[0] * (1 + 1e-6) or errs[2] <= ROUNDING_FLOOR, errs


@pytest.mark.parametrize("name", NONSMOOTH)
def test_reverse_and_forward_mode_differentiate_the_same_ista_map(name):
    task = small(name)
    theta = theta_points(task, 2, seed=7)[1]
    w0 = task.init_params()
    for steps in (7, 60):
        f = METHODS.get("prox_forward")(task, w0, theta, steps=steps)
        r = METHODS.get("prox_reverse")(task, w0, theta, steps=steps)
        assert rel_error(r.grad, f.grad) <= 1e-10
        assert torch.equal(r.w, f.w)


@pytest.mark.parametrize("name", ["lasso", "elastic_net", "sparse_logreg"])
def test_forward_mode_is_the_derivative_of_the_unrolled_map(name):
    """Central differences of theta -> outer(w_T(theta)) with the same fixed step, for ISTA and for CD."""
    task = small(name)
    theta = task.space.init_theta(dtype=task.dtype)
    w0 = task.init_params()
    eta = 1.0 / task.lipschitz(theta)
    h = 1e-6
    e = torch.zeros_like(theta)
    e[0] = h
    for solver, steps, unrolled in (
            ("ista", 30, lambda t: ista_map(task, t, w0, 30, eta)),
            ("cd", 4, lambda t: task.cd_epochs(w0, t, 4))):
        wp, wm = unrolled(theta + e), unrolled(theta - e)
        assert task.support(wp) == task.support(wm)  # no support change inside the step
        fd = (float(task.outer_loss(wp)) - float(task.outer_loss(wm))) / (2 * h)
        hg = METHODS.get("prox_forward")(task, w0, theta, steps=steps, lr=eta, solver=solver)
        assert torch.allclose(hg.w, unrolled(theta), rtol=0, atol=1e-13)  # the same iterates as the solver
        assert abs(float(hg.grad[0]) - fd) <= 1e-6 * max(abs(fd), 1e-8), (solver, float(hg.grad[0]), fd)


def test_methods_refuse_a_smooth_task_with_a_clear_error():
    ridge = TASKS.get("ridge")(n=20, p=3)
    theta = ridge.space.init_theta(dtype=ridge.dtype)
    with pytest.raises(ValueError, match="needs a composite task \\(tag 'prox'"):
        METHODS.get("implicit_support")(ridge, ridge.solve(theta), theta)


def test_gradient_tuner_pairs_unrolled_non_smooth_methods_with_their_iterations():
    GradientTuner(method="prox_forward", inner="cd")
    GradientTuner(method="prox_forward", inner="ista")
    with pytest.raises(TunerParamError, match=r"`inner` must be one of \['ista', 'cd'\]"):
        GradientTuner(method="prox_forward", inner="gd")
    with pytest.raises(TunerParamError, match="`method_opts` must be a table of options of 'prox_forward'"):
        GradientTuner(method="prox_forward", inner="cd", method_opts={"solver": "ista"})
    assert GradientTuner.required_tags({"method": "implicit_support", "inner": "cd"}) == frozenset({"prox"})
    assert GradientTuner.refused_tags({"method": "implicit_support", "inner": "cd"}) == {}
    assert set(GradientTuner.refused_tags({"method": "cg", "inner": "gd"})) == {"non-smooth"}
