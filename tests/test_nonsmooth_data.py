"""Non-smooth tasks on registered data and on sparse CSR designs: references (duality gap, finite differences
away from support changes), sparse-vs-dense agreement within a tolerance derived from the support system's
conditioning, inner solvers and methods on CSR data, and the one-line refusals of the ``dataset`` rules."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hpo_bench import METHODS
from hpo_bench.analysis.check import support_aware_difference
from hpo_bench.tuners.inner import InnerState, run_inner
from hpo_bench.core.records import rel_error
from hpo_bench.core.registry import TASKS
from hpo_bench.core.task import TaskParamError
from hpo_bench.tasks import _sparse_linear

from _util import theta_points

EPS = float(np.finfo(np.float64).eps)

#: small text-like (sparse CSR) instances of every non-smooth task: 5% density, informative words that occur
TEXT = {
    "lasso": {"n": 80, "p": 60, "density": 0.05, "n_informative": 6, "lam0": 0.05},
    "elastic_net": {"n": 80, "p": 60, "density": 0.05, "n_informative": 6, "lam0": 0.05},
    "weighted_lasso": {"n": 80, "p": 30, "density": 0.1, "n_informative": 4, "lam0": 0.1},
    "sparse_logreg": {"n": 120, "p": 60, "density": 0.05, "n_informative": 6, "lam0": 0.05},
}
NONSMOOTH = list(TEXT)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def text_task(name, **kw):
    return TASKS.get(name)(dataset="text-like", **{**TEXT[name], **kw})


def dense_twin(name, monkeypatch, **kw):
    """The same text-like draw with ``X`` densified before the task sees it (the dense code paths)."""
    real = _sparse_linear.text_like_split

    def densified(*a, **k):
        x, y, sizes = real(*a, **k)
        return x.toarray(), y, sizes

    monkeypatch.setattr(_sparse_linear, "text_like_split", densified)
    try:
        return text_task(name, **kw)
    finally:
        monkeypatch.setattr(_sparse_linear, "text_like_split", real)


def fd_check(task, thetas, dims=6):
    for theta in thetas:
        w = task.solve(theta)
        assert task.duality_gap(w, theta) <= 1e-12
        assert task.support_margin(theta) > 0
        dirs = torch.eye(task.space.dim, dtype=task.dtype)[:dims]
        fd, kinks = support_aware_difference(task, theta, dirs, 1e-5)
        assert kinks == []
        assert rel_error(task.reference_hypergradient(theta)[:dims], fd) <= 1e-6


# ---------------------------------------------------------------------------------- sparse designs
@pytest.mark.parametrize("name", NONSMOOTH)
def test_text_like_tasks_hold_x_as_csr_and_keep_no_gram_matrix(name):
    task = text_task(name)
    assert task.sparse and sp.issparse(task._np[0])
    for x in (task.x_train, task.x_val, task.x_test):
        assert x.layout == torch.sparse_csr
    assert getattr(task, "gram", None) is None  # no p x p matrix for sparse data
    w = task.solve(task.space.init_theta(dtype=task.dtype))
    assert 0 < len(task.support(w)) < task.n_params


@pytest.mark.parametrize("name", NONSMOOTH)
def test_sparse_references_match_finite_differences_away_from_kinks(name):
    task = text_task(name)
    fd_check(task, theta_points(task, 3, seed=4))


@pytest.mark.parametrize("name", NONSMOOTH)
def test_sparse_and_dense_designs_agree_within_the_support_systems_rounding(name, monkeypatch):
    """Both routes solve the same problem to a rounding-level gap on the same support; the support system
    ``H_SS q = grad_S outer`` moves their hypergradients apart by about ``cond(H_SS) eps`` relative (the
    products are summed in another order), so ``100 cond(H_SS) eps`` bounds the difference."""
    sparse = text_task(name)
    dense = dense_twin(name, monkeypatch)
    assert not dense.sparse and sparse.sparse
    for theta in theta_points(sparse, 3, seed=5):
        ws, wd = sparse.solve(theta), dense.solve(theta)
        assert sparse.support(ws) == dense.support(wd)
        lin = sparse.linearize_support(ws, theta)
        cond = float(torch.linalg.cond(lin.hessian()))
        tol = 100 * cond * EPS
        assert rel_error(ws, wd) <= tol
        assert rel_error(sparse.reference_hypergradient(theta), dense.reference_hypergradient(theta)) <= tol
        assert abs(float(sparse.outer_loss(ws)) - float(dense.outer_loss(wd))) <= tol * float(dense.outer_loss(wd))
        g = torch.randn(sparse.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        # the smooth part's gradient and Hessian products: the same maths through CSR and dense products
        scale = float(torch.linalg.vector_norm(dense.smooth_hvp(wd, theta, g))) + 1.0
        assert float(torch.linalg.vector_norm(sparse.smooth_hvp(ws, theta, g) - dense.smooth_hvp(wd, theta, g))) \
            <= 1e3 * EPS * scale


@pytest.mark.parametrize("name", ["lasso", "sparse_logreg"])
def test_inner_solvers_converge_on_a_sparse_design(name):
    task = text_task(name)
    theta = task.space.init_theta(dtype=task.dtype)
    ref = task.solve(theta)
    for solver, steps in (("ista", 20000), ("fista", 10000), ("cd", 400)):
        state = InnerState.fresh(task.init_params())
        run_inner(task, theta, state, solver=solver, steps=steps, lr=None)
        assert float(torch.linalg.vector_norm(state.w - ref)) <= 1e-8 * max(1.0, float(ref.abs().max())), solver


@pytest.mark.parametrize("name", NONSMOOTH)
def test_nonsmooth_methods_on_a_sparse_design_match_the_dense_twin_and_the_reference(name, monkeypatch):
    """implicit_support is exact at w*; prox_forward through CD and ISTA differentiates the same iterations on
    CSR and on dense X (the CSR CD keeps X w and X J instead of the Gram matrix's products)."""
    sparse, dense = text_task(name), dense_twin(name, monkeypatch)
    theta = theta_points(sparse, 2, seed=6)[1]
    ws = sparse.solve(theta)
    ref = sparse.reference_hypergradient(theta)
    assert rel_error(METHODS.get("implicit_support")(sparse, ws, theta).grad, ref) <= 1e-10
    w0 = 0.5 * ws
    for solver, steps in (("cd", 30), ("ista", 200)):
        a = METHODS.get("prox_forward")(sparse, w0, theta, steps=steps, solver=solver, lr=None)
        b = METHODS.get("prox_forward")(dense, w0, theta, steps=steps, solver=solver,
                                        lr=1.0 / sparse.lipschitz(theta))
        assert rel_error(a.grad, b.grad) <= 1e-8, solver
    errs = [float(rel_error(METHODS.get("prox_forward")(sparse, ws, theta, steps=s, solver="cd").grad, ref))
            for s in (50, 1500)]  # from w*: the Jacobian recursion converges linearly to the implicit one
    assert errs[-1] <= 1e-6 and (errs[0] > errs[1] or errs[1] <= 1e-12), errs


def test_sparse_lipschitz_constant_bounds_the_spectrum_tightly():
    task = text_task("lasso", p=40)
    x = task._np[0].toarray()
    top = float(np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1])
    assert top <= task.data_lipschitz() <= top * (1 + 1e-6)


# --------------------------------------------------------------------------------- registered sets
@pytest.mark.parametrize("name,dataset", [("lasso", "diabetes"), ("elastic_net", "diabetes"),
                                          ("weighted_lasso", "diabetes"), ("lasso", "breast_cancer"),
                                          ("sparse_logreg", "breast_cancer")])
def test_registered_dense_sets_have_checked_references(name, dataset):
    task = TASKS.get(name)(dataset=dataset, lam0=0.05)
    assert not task.sparse and task.w_true is None
    assert task.params["dataset"] == dataset
    assert task.describe()["dataset_label"]  # tables name the set
    fd_check(task, theta_points(task, 2, seed=7), dims=4)


def test_binary_labels_are_plus_minus_one_targets_for_the_least_squares_tasks():
    task = TASKS.get("lasso")(dataset="breast_cancer")
    for y in (task.y_train, task.y_val, task.y_test):
        assert set(torch.unique(y).tolist()) == {-1.0, 1.0}
    x = task._np[0]
    assert np.allclose(x.mean(0), 0.0, atol=1e-12)  # dense sets are standardised with training statistics


def test_synthetic_instances_keep_their_parameters():
    """Instances on the synthetic generator record the same params as before datasets existed (their oracles)."""
    task = TASKS.get("lasso")()
    assert "dataset" not in task.params and task.w_true is not None


@pytest.mark.parametrize("name,kw,needle", [
    ("sparse_logreg", {"dataset": "diabetes"}, "`dataset`"),
    ("lasso", {"dataset": "iris"}, "`dataset`"),
    ("lasso", {"density": 0.1}, "`density`"),
    ("lasso", {"max_train": 50}, "`max_train`"),
    ("weighted_lasso", {"dataset": "text-like", "max_train": 50}, "`max_train`"),
])
def test_bad_dataset_parameters_are_refused_in_one_line(name, kw, needle):
    with pytest.raises(TaskParamError) as err:
        TASKS.get(name)(**kw)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg
