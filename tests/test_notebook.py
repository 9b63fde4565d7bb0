"""The seed notebook: its printed numbers, its algorithm as a preset, and the diagnosis."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import grad

from hpo_bench import TUNERS, get_task
from hpo_bench.hypergrad import exact, identity
from hpo_bench.notebook import PRINTED, diagnose, replay
from hpo_bench.records import Budget, Recorder


def notebook_in101(epochs: int, h_epochs: int):
    """A faithful copy of the notebook's In[101] loop (scalar λ = 3), prints removed."""
    torch.manual_seed(1)
    x = torch.randn((10, 2))
    true_w = torch.tensor([[3.], [1.]])
    y = torch.matmul(x, true_w) + torch.randn((10, 1))
    x_train, y_train, x_valid, y_valid = x[:8, ], y[:8, ], x[8:, ], y[8:, ]
    w = torch.tensor([[2.5], [1.3]], requires_grad=True)
    lamb = torch.tensor([3.], requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.001)
    h_optimizer = torch.optim.RMSprop([lamb])
    losses, lambs, ws, hgrads = [], [], [], []
    for hep in range(h_epochs):
        for ep in range(epochs):
            for i in range(len(x_train)):
                optimizer.zero_grad()
                y_predicted = torch.matmul(x_train[i], w)
                train_loss = torch.nn.functional.mse_loss(y_predicted, y_train[i]) + lamb * torch.sum(w ** 2)
                losses.append(float(train_loss.detach()))
                train_loss.backward(create_graph=True)
                optimizer.step()
        total_d_val_loss_d_lamb = torch.zeros(lamb.size())
        d_valid_loss_d_w = torch.zeros(w.size())
        for i in range(len(x_valid)):
            w.grad.zero_()
            y_predicted = torch.matmul(x_valid[i], w)
            valid_loss = torch.nn.functional.mse_loss(y_predicted, y_valid[i])
            valid_loss_grad = grad(valid_loss, w)
            d_valid_loss_d_w += valid_loss_grad[0]
        d_valid_loss_d_w /= len(x_valid)
        for i in range(len(x_train)):
            y_predicted = torch.matmul(x_train[i], w)
            train_loss = torch.nn.functional.mse_loss(y_predicted, y_train[i]) + lamb * torch.sum(w ** 2)
            w.grad.zero_(), h_optimizer.zero_grad()
            d_train_loss_d_w = grad(train_loss, w, create_graph=True)
            w.grad.zero_(), h_optimizer.zero_grad()
            d_train_loss_d_w[0].backward(d_valid_loss_d_w)
            if lamb.grad is not None:
                total_d_val_loss_d_lamb -= lamb.grad
        total_d_val_loss_d_lamb /= len(x_train)
        ws.append(w.detach().reshape(-1).clone())
        hgrads.append(float(total_d_val_loss_d_lamb))
        lamb.grad = total_d_val_loss_d_lamb
        h_optimizer.step()
        w.grad.zero_(), h_optimizer.zero_grad()
        lambs.append(float(lamb))
    return losses, lambs, ws, hgrads


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
