"""Ridge, ridge_per_feature and seed_toy: data, closed forms and references (float64)."""

from __future__ import annotations

import pytest
import torch

from _util import fd_grad, rel, theta_points
from hpo_bench import TASKS, get_task
from hpo_bench.core.task import Linearization, TaskParamError, implicit_reference

CORE = ("ridge", "ridge_per_feature", "seed_toy")


def small(name, **kw):
    return TASKS.get(name)(**{**TASKS.get(name).check_params, **kw})


@pytest.mark.parametrize("name", CORE)
def test_deterministic_by_seed(name):
    a, b, c = small(name, seed=1), small(name, seed=1), small(name, seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    if name != "seed_toy":  # the toy's data are the notebook's, whatever the seed
        assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("name", CORE)
def test_solve_is_stationary_and_reference_matches_fd(name):
    task = small(name, seed=4)
    for theta in theta_points(task):
        w = task.solve(theta)
        g = task.inner_grad(w, theta)
        assert float(g.norm()) <= 1e-10 * max(1.0, float(task.inner_grad(torch.zeros_like(w), theta).norm()))
        ref = task.reference_hypergradient(theta)
        fd = fd_grad(task.response, theta)
        assert rel(ref, fd) <= 1e-6


@pytest.mark.parametrize("name", CORE)
def test_closed_form_equals_autograd_implicit_reference(name):
    """Independent path: generic autograd Linearization (double backward) + dense solve."""
    task = small(name, seed=5)
    for theta in theta_points(task):
        w = task.solve(theta)
        lin = Linearization(task, w, theta)  # the generic one, not the task's structured override
        q = torch.linalg.solve(lin.hessian(), task.outer_grad(w))
        generic = -lin.cross_vjp(q)
        assert rel(task.reference_hypergradient(theta), generic) <= 1e-10
        assert rel(implicit_reference(task, theta), generic) <= 1e-10


@pytest.mark.parametrize("name", CORE)
def test_structured_linearization_matches_autograd(name):
    task = small(name, seed=6)
    theta = theta_points(task)[1]
    w = task.solve(theta) + 0.1
    fast, slow = task.linearize(w, theta), Linearization(task, w, theta)
    v = torch.randn(task.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert rel(fast.hvp(v), slow.hvp(v)) <= 1e-12
    assert rel(fast.cross_vjp(v), slow.cross_vjp(v)) <= 1e-12
    assert rel(fast.grad, slow.grad) <= 1e-12
    assert rel(fast.hessian(), slow.hessian()) <= 1e-12
    assert rel(task.inner_grad(w, theta), slow.grad) <= 1e-12


def test_inner_loss_batch_averages_to_inner_loss(ridge):
    theta = ridge.space.init_theta()
    w = torch.randn(ridge.n_params, dtype=torch.float64)
    per = torch.stack([ridge.inner_loss_batch(w, theta, torch.tensor([i])) for i in range(ridge.n_train)])
    assert float(per.mean()) == pytest.approx(float(ridge.inner_loss(w, theta)), rel=1e-12)


def test_seed_toy_reproduces_notebook_data_exactly():
    torch.manual_seed(1)  # the notebook's own global-RNG draw, for comparison
    x = torch.randn((10, 2))
    y = torch.matmul(x, torch.tensor([[3.0], [1.0]])) + torch.randn((10, 1))
    task = get_task("seed_toy", dtype="float32")
    assert torch.equal(task.x_train, x[:8]) and torch.equal(task.x_val, x[8:])
    assert torch.equal(task.y_train, y[:8, 0]) and torch.equal(task.y_val, y[8:, 0])
    assert task.x_test.shape == (100, 2)
    assert not torch.equal(task.x_test[:2], x[:2])  # the test split is a separate stream


def test_seed_toy_objective_is_the_notebooks():
    task = get_task("seed_toy", lam0=3.0)
    w = torch.tensor([2.5, 1.3], dtype=torch.float64)
    theta = task.space.init_theta()
    per_example = [(task.x_train[i] @ w - task.y_train[i]) ** 2 + 3.0 * torch.sum(w ** 2) for i in range(8)]
    assert float(task.inner_loss(w, theta)) == pytest.approx(float(torch.stack(per_example).mean()), rel=1e-14)


def test_diabetes_loads_offline_and_standardised():
    task = get_task("ridge_per_feature", dataset="diabetes")
    assert task.n_params == 10 and task.space.dim == 10
    assert abs(float(task.x_train.mean())) < 1e-12
    assert float(task.y_train.std(unbiased=False)) == pytest.approx(1.0)
    assert task.x_val.shape[0] + task.x_test.shape[0] + task.n_train == 442


def test_float32_and_device_option():
    task = get_task("ridge", n=40, p=4, dtype="float32", device="cpu")
    assert task.x_train.dtype == torch.float32 and task.x_train.device.type == "cpu"
    g = task.reference_hypergradient(task.space.init_theta(dtype=torch.float32))
    assert g.dtype == torch.float32 and torch.isfinite(g).all()


@pytest.mark.parametrize("kw, fragment", [
    (dict(p=0), "parameter `p` must be an integer >= 1"),
    (dict(rho=1.0), "parameter `rho`"),
    (dict(noise=-1.0), "parameter `noise`"),
    (dict(n_informative=99, p=5), "parameter `n_informative`"),
    (dict(dataset="mnist"), "parameter `dataset` must be one of ['synthetic', 'diabetes', 'text-like']"),
])
def test_bad_task_params(kw, fragment):
    with pytest.raises(TaskParamError) as exc:
        get_task("ridge", **kw)
    assert "task 'ridge'" in str(exc.value) and fragment in str(exc.value)


def test_non_convex_raw_lambda_is_reported_not_silently_wrong():
    task = get_task("seed_toy")  # raw λ, convex only for λ > -min eig(X^T X / n)
    with pytest.raises(FloatingPointError, match="not strictly convex"):
        task.solve(torch.tensor([-5.0], dtype=torch.float64))


@pytest.mark.parametrize("name", CORE)
def test_batched_products_match_single_ones(name):
    task = small(name, seed=7)
    theta = theta_points(task)[1]
    w = task.solve(theta) - 0.2
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(task.n_params, 3, dtype=torch.float64, generator=gen)
    for lin in (task.linearize(w, theta), Linearization(task, w, theta)):
        hv = lin.hvp_batch(v)
        for j in range(3):
            assert rel(hv[:, j], lin.hvp(v[:, j])) <= 1e-12
        jac = lin.cross_jacobian()
        assert jac.shape == (task.n_params, task.space.dim)
        u = v[:, 0]
        assert rel(jac.T @ u, lin.cross_vjp(u)) <= 1e-12
