"""The conformance kit over the registries, and proof that each check can fail.

``test_registered`` is parametrized from the registries at collection time: a new file in
tasks/ or baselines/ (or an entry-point plug-in) is checked without editing this file.
"""

from __future__ import annotations

import math

import pytest
import torch

from hpo_bench.core._threads import one_thread
from hpo_bench.core.options import Option
from hpo_bench.core.records import Budget
from hpo_bench.core.space import Block, Space
from hpo_bench.tasks.ridge import Ridge
from hpo_bench.testing import (
    ConformanceError, check_object, check_task_capabilities, check_task_declaration, check_tuner_requirements,
    check_task_deterministic, check_task_exact_methods,
    check_task_finite_losses, check_task_inner_stationary, check_task_linearization, check_task_per_example,
    check_task_reference_fd, check_task_space, check_tuner_bounds, check_tuner_budget, check_tuner_declaration,
    check_tuner_diverging, check_tuner_records, check_tuner_reproducible, check_tuner_stop_request, checks_for,
    parametrize_with_checks, registered_tasks, registered_tuners, run_tuner, conformance_task,
)
from hpo_bench.core.tuner import Tuner


@pytest.fixture(autouse=True)
def one_thread_here():  # many small dense ops: one thread is much faster on a busy 2-core machine
    with one_thread():
        yield


@parametrize_with_checks(registered_tasks() + registered_tuners())
def test_registered(obj, check):
    check(obj)


def test_registry_covers_the_family_and_the_baselines():
    names = {getattr(c, "name", "") for c in registered_tasks()}
    assert {"ridge", "kernel_ridge", "logistic_l2", "hyper_cleaning", "weight_decay_mlp"} <= names
    assert {"gradient", "seed_notebook"} <= {getattr(c, "name", "") for c in registered_tuners()}
    assert not {"my_task", "my_tuner"} & (names | {c.name for c in registered_tuners()})  # templates are skipped


def test_checks_follow_declared_tags():
    per_example = [c.__name__ for c in checks_for(Ridge)]
    assert "check_task_per_example" in per_example

    class NoExamples(Ridge):
        name = "no_examples"
        tags = frozenset({"closed-form"})

    assert "check_task_per_example" not in [c.__name__ for c in checks_for(NoExamples)]


# ------------------------------------------------------------- broken tasks
class _Base(Ridge):
    check_params = {"n": 40, "p": 3}


class WrongSignReference(_Base):
    name = "wrong_sign_reference"

    def reference_hypergradient(self, theta):
        return -super().reference_hypergradient(theta)


class LooseSolve(_Base):
    name = "loose_solve"

    def solve(self, theta):
        return super().solve(theta) + 1e-4


class Unseeded(_Base):
    name = "unseeded"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.y_val = self.y_val + torch.randn(self.y_val.shape[0], dtype=self.dtype)  # global RNG, not the seed


class BadLinearization(_Base):
    name = "bad_linearization"

    def linearize(self, w, theta):
        lin = super().linearize(w, theta)
        hvp = lin.hvp
        lin.hvp = lambda v: 1.01 * hvp(v)
        return lin


class BadBatch(_Base):
    name = "bad_batch"

    def inner_loss_batch(self, w, theta, idx):
        return 2 * super().inner_loss_batch(w, theta, idx)


class NanLoss(_Base):
    name = "nan_loss"

    def test_loss(self, w):
        return torch.tensor(float("nan"), dtype=self.dtype)


class BadBounds(_Base):
    name = "bad_bounds"

    def __init__(self, **kw):
        super().__init__(**kw)
        self._space = Space((Block("lam", low=1e-3, high=1e3, init=1.0),))
        object.__setattr__(self._space.blocks[0], "init", 1e4)  # breaks `low <= init <= high` after validation


class FalseDiagonal(_Base):
    name = "false_diagonal"

    def linearize(self, w, theta):
        lin = super().linearize(w, theta)
        lin.diagonal = lambda: None  # still tagged 'hessian-diagonal'
        return lin


class BadParams(_Base):
    name = "bad_params"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.params["callback"] = object()


@pytest.mark.parametrize("cls, check, match", [
    (WrongSignReference, check_task_reference_fd, "disagrees with finite differences"),
    (WrongSignReference, check_task_exact_methods, "exact method"),
    (LooseSolve, check_task_inner_stationary, "grad_w inner"),
    (Unseeded, check_task_deterministic, "differs between two builds"),
    (BadLinearization, check_task_linearization, "hvp differs from autograd"),
    (BadBatch, check_task_per_example, "inner_loss_batch"),
    (NanLoss, check_task_finite_losses, "test_loss"),
    (BadBounds, check_task_space, "initial point"),
    (FalseDiagonal, check_task_capabilities, "tagged 'hessian-diagonal' but linearize"),
    (BadParams, check_task_declaration, "JSON-serialisable"),
])
def test_task_checks_catch_broken_tasks(cls, check, match):
    check(_Base)  # the unbroken base passes the same check
    with pytest.raises(ConformanceError, match=match):
        check(cls)


def test_declared_tolerance_needs_a_reason():
    class Loose(WrongSignReference):
        name = "loose"
        check_tolerances = {"fd": 3.0}

    with pytest.raises(ConformanceError, match="reason"):
        check_task_reference_fd(Loose)

    class LooseWithReason(WrongSignReference):
        name = "loose_with_reason"
        check_tolerances = {"fd": 3.0, "reason": "demonstration: a declared, explained tolerance is honoured"}

    check_task_reference_fd(LooseWithReason)
    # `hpo-bench check` (hpo_bench.analysis.check) honours the same declaration and shows the reason
    from hpo_bench.analysis.check import check_task

    rows = check_task(LooseWithReason(**LooseWithReason.check_params), methods=["exact"], n_points=1)
    ref = [r for r in rows if r.method == "reference"][0]
    assert ref.verdict == "pass" and "a declared, explained tolerance" in ref.note
    with pytest.raises(ValueError, match="reason"):
        check_task(Loose(**Loose.check_params), methods=["exact"], n_points=1)


# ------------------------------------------------------------- broken tuners
class _GoodTuner(Tuner):
    """Evaluates the initial point, then walks theta down (a stand-in for a real tuner)."""

    name = "good_tuner"
    tags = frozenset({"black-box"})

    def __init__(self, *, step: float = 0.3) -> None:
        super().__init__(step=step)
        self.step = step

    def propose(self, task, k, gen):
        return task.space.project(task.space.init_theta(dtype=task.dtype) - self.step * k)

    def run(self, task, recorder, *, seed=0):
        gen = torch.Generator().manual_seed(seed)
        k = 0
        while not recorder.should_stop():
            theta = self.propose(task, k, gen)
            recorder.add_cost(inner_solves=1)
            w = task.solve(theta)
            if recorder.record(w=w, theta=theta, val_loss=float(task.outer_loss(w))) != "ok":
                return
            k += 1


class IgnoresStop(_GoodTuner):
    name = "ignores_stop"

    def run(self, task, recorder, *, seed=0):
        for k in range(6):  # ignores should_stop(): overruns budgets and stop requests, records after divergence
            theta = self.propose(task, k, None)
            w = task.solve(theta)
            recorder.record(w=w, theta=theta, val_loss=float(task.outer_loss(w)))


class LeavesBounds(_GoodTuner):
    name = "leaves_bounds"

    def propose(self, task, k, gen):
        return task.space.init_theta(dtype=task.dtype) + 5.0 * k  # never projected


class Unreproducible(_GoodTuner):
    name = "unreproducible"

    def propose(self, task, k, gen):
        fresh = torch.Generator()
        fresh.seed()  # a non-deterministic seed: ignores the run's seed
        return task.space.project(task.space.init_theta(dtype=task.dtype)
                                  + torch.randn(1, generator=fresh, dtype=task.dtype))


class RaisesOnNan(_GoodTuner):
    name = "raises_on_nan"

    def run(self, task, recorder, *, seed=0):
        w = task.solve(task.space.init_theta(dtype=task.dtype))
        val = float(task.outer_loss(w))
        if math.isnan(val):
            raise FloatingPointError("validation loss is NaN")
        super().run(task, recorder, seed=seed)


class HandMadeRows(_GoodTuner):
    name = "hand_made_rows"

    def run(self, task, recorder, *, seed=0):
        recorder.rows.append({"step": 0, "val_loss": 1.0})


class UsesExamples(_GoodTuner):
    """Reads per-example losses without declaring 'per-example'."""

    name = "uses_examples"

    def run(self, task, recorder, *, seed=0):
        task.inner_loss_batch(task.init_params(), task.space.init_theta(dtype=task.dtype), torch.tensor([0]))
        super().run(task, recorder, seed=seed)


class DeclaresExamples(UsesExamples):
    name = "declares_examples"

    @classmethod
    def required_tags(cls, params):
        return frozenset({"per-example"})


class StraySchema(_GoodTuner):
    name = "stray_schema"
    options = {"stpe": Option(float, low=0)}  # a typo: `step` is the parameter


class Undeclared(_GoodTuner):
    name = "undeclared"
    tags = frozenset()


class ClaimsGradients(_GoodTuner):
    name = "claims_gradients"
    tags = frozenset({"gradient-based"})


@pytest.mark.parametrize("cls, check, match", [
    (IgnoresStop, check_tuner_budget, "budget of 3 steps"),
    (IgnoresStop, check_tuner_stop_request, "stop requested after 2"),
    (IgnoresStop, check_tuner_diverging, "kept recording"),
    (LeavesBounds, check_tuner_bounds, "leaves the bounds"),
    (Unreproducible, check_tuner_reproducible, "differ"),
    (RaisesOnNan, check_tuner_diverging, "raised FloatingPointError"),
    (HandMadeRows, check_tuner_records, "lacks the recorder's columns"),
    (Undeclared, check_tuner_declaration, "declaring 'gradient-based' or 'black-box'"),
    (StraySchema, check_tuner_declaration, r"`options` declares rules for \['stpe'\]"),
    (ClaimsGradients, check_tuner_records, "must record its hypergradient"),
    (UsesExamples, check_tuner_requirements, "raised NotImplementedError: task 'ridge' has no per-example"),
])
def test_tuner_checks_catch_broken_tuners(cls, check, match):
    check(_GoodTuner)  # the unbroken base passes the same check
    with pytest.raises(ConformanceError, match=match):
        check(cls)


def test_declared_requirements_are_offered_and_the_rest_withheld(monkeypatch):
    check_tuner_requirements(DeclaresExamples)  # declared: the task offers per-example losses
    from hpo_bench.tuners import gradient

    # the gradient tuner's parameter-dependent requirements are what its runs need...
    per_example = (gradient.GradientTuner, {"inner": "adam_per_example", "inner_steps": 1, "inner_lr": 0.01})
    jacobi = (gradient.GradientTuner, {"method_opts": {"precond": "jacobi"}, "inner_steps": 5})
    check_tuner_requirements(per_example)
    check_tuner_requirements(jacobi)
    # ...and each fails the check once its declaration is taken away
    monkeypatch.setattr(gradient, "INNER_REQUIRES", {})
    with pytest.raises(ConformanceError, match="no per-example training losses"):
        check_tuner_requirements(per_example)
    monkeypatch.setattr(gradient.GradientTuner, "required_tags", classmethod(lambda cls, params: frozenset()))
    with pytest.raises(ConformanceError, match="needs a Hessian diagonal"):
        check_tuner_requirements(jacobi)


def test_good_tuner_passes_everything():
    assert all(res == "pass" for _, res in check_object(_GoodTuner))


# ------------------------------------------------------------- declared known failures
class KnownSlowToStop(IgnoresStop):
    name = "known_slow_to_stop"
    xfail_checks = {"check_tuner_stop_request": "demonstration: finishes its current sweep before stopping"}


@parametrize_with_checks([KnownSlowToStop])
def test_declared_xfail_is_marked(obj, check):
    if check.__name__ == "check_tuner_stop_request":
        check(obj)  # fails, and is reported as xfail with the declared reason


def test_xfail_marks_and_check_object():
    mark = parametrize_with_checks([KnownSlowToStop])
    params = {p.id: p for p in mark.args[1]}
    stop = params["known_slow_to_stop-check_tuner_stop_request"]
    assert [m.name for m in stop.marks] == ["xfail"]
    assert "finishes its current sweep" in stop.marks[0].kwargs["reason"]
    assert not params["known_slow_to_stop-check_tuner_declaration"].marks
    with pytest.raises(ConformanceError):  # undeclared failures still fail
        check_object(IgnoresStop)

    class Blank(KnownSlowToStop):
        xfail_checks = {"check_tuner_stop_request": ""}

    with pytest.raises(ConformanceError, match="reason"):
        parametrize_with_checks([Blank])


def test_run_tuner_matches_the_harness_shape():
    rec = run_tuner(_GoodTuner(), conformance_task(), Budget(steps=3))
    assert [r["step"] for r in rec.rows] == [0, 1, 2]
    assert rec.rows[0]["suite"] == "conformance" and rec.rows[0]["tuner"] == "good_tuner"
