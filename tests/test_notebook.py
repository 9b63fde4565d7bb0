"""The seed notebook: its printed numbers, its algorithm as a preset, and the diagnosis."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.autograd import grad

from hpo_bench import TUNERS, get_task
from hpo_bench.hypergrad import exact, identity
from hpo_bench.analysis.notebook import PRINTED, diagnose, notebook_in101, replay
from hpo_bench.core.records import Budget, Recorder


class CapturingRecorder(Recorder):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.ws, self.grads = [], []

    def record(self, *, w, theta, hypergrad=None, **kw):
        self.ws.append(w.clone())
        self.grads.append(None if hypergrad is None else hypergrad.clone())
        return super().record(w=w, theta=theta, hypergrad=hypergrad, **kw)


def test_every_printed_number_is_reproduced():
    rows = replay()
    assert [r["quantity"] for r in rows] == list(PRINTED)
    for r in rows:
        assert r["match"], r


def test_our_copy_of_the_notebook_loop_matches_its_printed_trace():
    losses, *_ = notebook_in101(epochs=3, h_epochs=1)
    printed = PRINTED["In[101] per-example losses, first 3 epochs (lamb = 3)"]
    assert max(abs(a - b) for a, b in zip(losses, printed)) <= 0.5e-4 + 1e-6


def test_preset_is_the_notebook_algorithm():
    """Same float32 λ path, w path and hypergradients as the notebook's own loop, step for step."""
    epochs, steps = 5, 4
    losses, lambs, ws, hgrads = notebook_in101(epochs=epochs, h_epochs=steps)
    task = get_task("seed_toy", dtype="float32", lam0=3.0)
    rec = CapturingRecorder(task, Budget(steps=steps + 1))
    rec.start()
    TUNERS.get("seed_notebook")(epochs=epochs).run(task, rec)
    for k in range(steps):
        assert torch.allclose(rec.ws[k], ws[k], atol=1e-5, rtol=0)
        assert float(rec.grads[k]) == pytest.approx(hgrads[k], abs=1e-4, rel=1e-5)
        assert rec.rows[k + 1]["hp"][0] == pytest.approx(lambs[k], abs=1e-5)


def test_notebook_formula_is_the_identity_method():
    """-(1/n) sum_i d/dλ [grad_w L_i . v] == identity method, at any w (float64)."""
    task = get_task("seed_toy", lam0=0.7)
    theta = task.space.init_theta()
    w = torch.tensor([2.0, 0.5], dtype=torch.float64)
    lam = theta.clone().requires_grad_(True)
    v = task.outer_grad(w)
    total = torch.zeros(1, dtype=torch.float64)
    for i in range(task.n_train):
        wi = w.clone().requires_grad_(True)
        li = (task.x_train[i] @ wi - task.y_train[i]) ** 2 + lam * torch.sum(wi ** 2)
        (gi,) = grad(li, wi, create_graph=True)
        (dl,) = grad(gi @ v, lam)
        total -= dl
    total /= task.n_train
    assert float(total) == pytest.approx(float(identity(task, w, theta).grad), rel=1e-12)


def test_diagnosis_numbers():
    d = diagnose()
    by_lam = {r["lam"]: r for r in d["hypergradient"]}
    assert by_lam[3.0]["same_sign"] and by_lam[3.0]["ratio"] > 2  # right sign, magnitude several times too big
    assert not by_lam[0.1]["same_sign"]  # wrong sign just below the optimum
    lam_star = d["optimum_scalar"]["lam"]
    task = get_task("seed_toy")
    g = task.reference_hypergradient(torch.tensor([lam_star], dtype=torch.float64))
    assert abs(float(g)) <= 1e-6  # the optimum is stationary for the exact hypergradient
    assert d["optimum_scalar"]["val_loss"] <= min(r["F"] for r in d["hypergradient"])
    fp = d["notebook_fixed_point"]
    assert fp < 0 < lam_star  # the notebook's update heads below zero
    w = task.solve(torch.tensor([fp], dtype=torch.float64))
    assert abs(float(identity(task, w, torch.tensor([fp], dtype=torch.float64)).grad)) <= 1e-8
    for c in d["convention"]:
        assert c["diff_scaled"] <= 1e-12  # closed form at λ == SGD objective at λ / n
    assert d["convention"][1]["diff_same"] > 0.5
    pw = d["per_weight"]
    assert pw["notebook_loss_shape"] == [2] and "scalar outputs" in pw["notebook_backward_error"]
    assert pw["cosine"] < 0.999 and pw["rel_error"] > 1


@pytest.fixture(scope="module")
def diag():
    return diagnose()


def test_diagnosis_per_weight_direction_is_right_and_magnitude_wrong(diag):
    """Issue 12 item 6: at λ = (3, 3) the notebook's formula is ~9.6° off the exact hypergradient."""
    pw = diag["per_weight"]
    assert pw["cosine"] == pytest.approx(0.9859, abs=1e-4)  # printed as 0.9859 (README)
    assert pw["angle_deg"] == pytest.approx(math.degrees(math.acos(pw["cosine"])), rel=1e-12)
    assert 9.5 < pw["angle_deg"] < 9.7 and pw["norm_ratio"] > 5  # the direction is right, the magnitude is not
    norm = lambda v: math.sqrt(sum(x * x for x in v))  # noqa: E731
    assert pw["norm_ratio"] == pytest.approx(norm(pw["notebook"]) / norm(pw["exact"]), rel=1e-12)


def test_diagnosis_shows_the_test_cost_of_the_per_weight_validation_gain(diag):
    """Issue 12 item 6: per-weight λ fits the 2 validation points, and the test loss pays for it."""
    d = diag
    scalar, bounded, raw = d["overfitting"]["rows"]
    assert scalar["val_loss"] == pytest.approx(3.5656, abs=1e-4) and scalar["test_loss"] == pytest.approx(1.2198,
                                                                                                        abs=1e-4)
    assert bounded["val_loss"] == pytest.approx(0.5780, abs=1e-4) and bounded["test_loss"] > 4 * scalar["test_loss"]
    assert bounded["test_loss"] == pytest.approx(d["per_weight"]["optimum_test_loss"], rel=1e-12)
    assert bounded["overfit_vs_scalar"] and raw["overfit_vs_scalar"] and not scalar["overfit_vs_scalar"]
    for r in (scalar, bounded, raw):
        assert r["val_test_gap"] == pytest.approx(r["test_loss"] - r["val_loss"], rel=1e-12)
    # raw per-weight λ: w*(λ) interpolates both validation points (val 0) and is the inner minimiser there
    task = get_task("seed_toy", per_weight=True)
    lam = torch.tensor(raw["lam"], dtype=torch.float64)
    w = task.solve(lam)
    assert raw["inner_minimum"] and float(task.outer_loss(w)) <= 1e-20
    assert float(task.test_loss(w)) == pytest.approx(raw["test_loss"], rel=1e-9)
    assert raw["lam"][1] < 0 and raw["test_loss"] > 3 * scalar["test_loss"]


def test_notebook_command_prints_validation_and_test_side_by_side(diag):
    from rich.console import Console

    from hpo_bench.analysis.notebook import render

    buf = io.StringIO()
    render(Console(file=buf, width=300), [], diag)
    text = buf.getvalue()
    assert "Overfitting the validation split" in text and "val–test gap" in text and "test loss" in text
    assert "overfits" in text and "9.6° off" in text and "points the wrong way" not in text


def test_exact_method_in_the_notebook_loop_converges_to_the_optimum():
    """Swap the hypergradient in the same loop (float64, closed-form inner): it heads to λ*."""
    task = get_task("seed_toy", lam0=1.0)
    rec = Recorder(task, Budget(steps=300))
    rec.start()
    TUNERS.get("gradient")(method="exact", inner="exact", outer="rmsprop", outer_lr=0.01).run(task, rec)
    lam_star = diagnose()["optimum_scalar"]["lam"]
    assert rec.rows[-1]["hp"][0] == pytest.approx(lam_star, abs=0.02)
    one = torch.tensor([1.0], dtype=torch.float64)
    assert float(exact(task, task.solve(one), one).grad) > 0  # above λ*, the exact hypergradient says "lower λ"


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-6)])
def test_scalar_per_example_adam_is_the_tensor_path(dtype, tol):
    """The scalar fast path of per-example Adam (tiny quadratic models) runs the tensor path's operations."""
    from hpo_bench.tuners.inner import InnerState, run_inner

    fast_task = get_task("seed_toy", dtype=dtype, per_weight=True, lam0=0.3)
    slow_task = get_task("seed_toy", dtype=dtype, per_weight=True, lam0=0.3)
    slow_task.example_quadratic = None  # no structure declared: the generic tensor loop
    theta = fast_task.space.init_theta(dtype=fast_task.dtype) * torch.tensor([1.0, 2.0], dtype=fast_task.dtype)
    states = []
    for task in (fast_task, slow_task):
        st = InnerState.fresh(task.init_params())
        st.trace = []
        for k in range(3):  # warm restarts keep the moments and the step count
            assert run_inner(task, theta, st, solver="adam_per_example", steps=40, lr=1e-2) == 40 * 8
        states.append(st)
    fast, slow = states
    assert fast.t == slow.t == 3 * 40 * 8
    for a, b in ((fast.w, slow.w), (fast.m, slow.m), (fast.v, slow.v)):
        assert a.dtype == b.dtype and torch.allclose(a, b, rtol=tol, atol=tol)
    assert len(fast.trace) == len(slow.trace) == fast.t
    assert max(abs(x - y) for x, y in zip(fast.trace, slow.trace)) <= 10 * tol
    assert not torch.equal(fast.w, fast_task.init_params())  # it moved
