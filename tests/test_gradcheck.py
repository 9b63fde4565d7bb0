"""``hpo_bench.testing.check_hypergradient`` (gradcheck for hypergradients) and ``ModelTask``."""

from __future__ import annotations

import pytest
import torch

from hpo_bench import get_task
from hpo_bench.core._threads import one_thread
from hpo_bench.hypergrad import cg, exact, identity, reverse
from hpo_bench.core.space import Block, Space
from hpo_bench.testing import (
    HypergradientCheckError, ModelTask, check_hypergradient, check_task_declaration, check_task_deterministic,
    check_task_exact_methods, check_task_float32, check_task_inner_stationary, check_task_linearization,
    check_task_reference_fd,
)


@pytest.fixture(autouse=True)
def one_thread_here():  # many small dense ops: one thread is much faster on a busy 2-core machine
    with one_thread():
        yield


def test_exact_method_passes_and_returns_a_truthy_report():
    report = check_hypergradient(exact, get_task("ridge_per_feature", n=60, p=6, seed=1))
    assert report and report.passed and len(report.points) == 3
    assert all(p.diagnosis == "ok" and p.rel_error_ref < 1e-10 and p.reference_fd_error < 1e-6 for p in report.points)
    assert str(report).splitlines()[-1].startswith("PASS")


def test_notebook_formula_is_caught_as_wrong_magnitude():
    """The documented example: the seed notebook's H^-1 ~ I on its own problem (raw λ = 3)."""
    task = get_task("seed_toy")
    with pytest.raises(HypergradientCheckError) as info:
        check_hypergradient(identity, task)
    assert "FAIL: identity on seed_toy" in str(info.value) and "wrong magnitude" in str(info.value)
    report = check_hypergradient(identity, task, raise_exception=False)
    assert not report and len(report.failures) == 3
    p0 = report.points[0]
    assert p0.diagnosis == "wrong magnitude" and p0.cosine == pytest.approx(1.0)
    assert p0.norm_ratio == pytest.approx(8.6, rel=1e-2)  # 8.6 x too large at λ = 3
    assert p0.reference_fd_error < 1e-6  # the reference itself is trustworthy
    assert "largest errors: lam = " in str(report)


def test_wrong_sign_and_wrong_direction_are_told_apart():
    task = get_task("ridge_per_feature", n=60, p=6, seed=1)

    def flipped(task, w, theta):
        return -exact(task, w, theta).grad

    rep = check_hypergradient(flipped, task, raise_exception=False, points=2)
    assert [p.diagnosis for p in rep.points] == ["wrong sign", "wrong sign"]
    assert "every coordinate flipped" in rep.summary()

    def scaled(task, w, theta):
        return 2 * exact(task, w, theta).grad

    rep = check_hypergradient(scaled, task, raise_exception=False, points=1)
    assert rep.points[0].diagnosis == "wrong magnitude" and rep.points[0].norm_ratio == pytest.approx(2.0)

    rep = check_hypergradient(identity, task, raise_exception=False)
    assert all(p.diagnosis == "wrong direction" for p in rep.points)
    assert any("sign differs at lam[" in p.detail for p in rep.points)

    def one_coordinate_off(task, w, theta):
        g = exact(task, w, theta).grad.clone()
        g[2] = -g[2]
        return g

    rep = check_hypergradient(one_coordinate_off, task, raise_exception=False, points=1)
    assert rep.points[0].diagnosis == "wrong direction" and "lam[2]" in rep.points[0].detail
    assert rep.points[0].worst[0][0] == "lam[2]"


def test_shape_and_non_finite_failures():
    task = get_task("ridge_per_feature", n=60, p=6, seed=1)
    rep = check_hypergradient(lambda t, w, th: torch.zeros(3, dtype=torch.float64), task, raise_exception=False,
                              points=1)
    assert rep.points[0].diagnosis == "wrong shape" and "(6,)" in rep.points[0].detail
    rep = check_hypergradient(lambda t, w, th: torch.full((6,), float("nan"), dtype=torch.float64), task,
                              raise_exception=False, points=1)
    assert rep.points[0].diagnosis == "non-finite"
    with pytest.raises(ValueError, match="`at`"):
        check_hypergradient(exact, task, at="somewhere")


def test_unrolled_method_checked_from_init():
    """at="init": an unrolled method runs its own inner steps; long enough, it converges to the truth."""
    task = get_task("ridge", n=60, p=6, rho=0.6, seed=3)
    rep = check_hypergradient(lambda t, w, th: reverse(t, w, th, steps=3000), task, at="init", rtol=1e-6, points=2)
    assert rep.passed
    short = check_hypergradient(lambda t, w, th: reverse(t, w, th, steps=5), task, at="init",
                                raise_exception=False, points=1)
    assert not short.passed


# ------------------------------------------------------------------ ModelTask
def make_model_task(seed=0, dtype="float64", nonlinear=False):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.3 * torch.randn(50, generator=gen,
                                                                                      dtype=torch.float64)

    def model():
        if nonlinear:
            return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        return torch.nn.Linear(3, 1)

    def inner_loss(m, hp):
        xt, yt = x[:30].to(m.flat.dtype), y[:30].to(m.flat.dtype)
        return ((m(xt).squeeze(-1) - yt) ** 2).mean() + 0.5 * (hp["lam"] * m.flat ** 2).sum()

    def outer_loss(m):
        xv, yv = x[30:].to(m.flat.dtype), y[30:].to(m.flat.dtype)
        return ((m(xv).squeeze(-1) - yv) ** 2).mean()

    n_w = 4 if not nonlinear else 3 * 4 + 4 + 4 + 1
    space = Space((Block("lam", kind="per_weight", size=n_w, low=1e-4, high=1e2, init=0.1),))
    return ModelTask(model=model, inner_loss=inner_loss, outer_loss=outer_loss, space=space, name="user_ridge",
                     seed=seed, dtype=dtype)


def test_model_task_from_a_torch_model_and_two_losses():
    task = make_model_task()
    assert task.name == "user_ridge" and task.n_params == 4 and task.space.dim == 4
    assert check_hypergradient(cg, task).passed
    rep = check_hypergradient(identity, task, raise_exception=False)
    assert not rep.passed and rep.points[0].reference_fd_error < 1e-6
    # the bound model is the user's module with parameters from w
    w = task.solve(task.space.init_theta())
    m = task.bind(w)
    assert set(m.params) == {"weight", "bias"} and m.params["weight"].shape == (1, 3)


def test_model_task_passes_the_kit():
    for check in (check_task_declaration, check_task_deterministic, check_task_reference_fd,
                  check_task_inner_stationary, check_task_linearization, check_task_exact_methods,
                  check_task_float32):
        check(make_model_task)


def test_nonlinear_model_task_reference_matches_fd():
    task = make_model_task(nonlinear=True)
    assert task.n_params == 21
    rep = check_hypergradient(exact, task, points=2)
    assert rep.passed and all(p.reference_fd_error < 1e-6 for p in rep.points)


def test_model_task_validates_its_arguments():
    space = Space((Block("lam"),))
    with pytest.raises(TypeError, match="`model`"):
        ModelTask(model=3, inner_loss=lambda m, hp: 0, outer_loss=lambda m: 0, space=space)
    with pytest.raises(TypeError, match="`space`"):
        ModelTask(model=torch.nn.Linear(2, 1), inner_loss=lambda m, hp: 0, outer_loss=lambda m: 0, space=None)
    with pytest.raises(TypeError, match="`outer_loss`"):
        ModelTask(model=torch.nn.Linear(2, 1), inner_loss=lambda m, hp: 0, outer_loss=None, space=space)
