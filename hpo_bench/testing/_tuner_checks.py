"""Conformance checks for tuners.

Each ``check_tuner_*(obj)`` builds the tuner from ``obj`` (a Tuner subclass with its
``check_params`` class attribute if it has one, ``(cls, params)``, or a factory), runs it the
way the harness does (a :class:`~hpo_bench.core.records.Recorder`, the clock started,
``torch.manual_seed(seed)``, ``tuner.run(task, recorder, seed=seed)``) on a small ridge task
with tiny budgets, and raises :class:`ConformanceError` naming the tuner, the check and the
broken rule. The tasks are scalar-penalty ridge problems (tags ``closed-form``,
``quadratic``, ``per-example``), which every tuner of the contract can run.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from ..core.records import COLUMNS, STATUSES, Budget, Recorder
from ..core.tuner import Tuner
from ._common import fail, label_of, tuner_factory

__all__ = [
    "check_tuner_declaration", "check_tuner_budget", "check_tuner_bounds", "check_tuner_reproducible",
    "check_tuner_records", "check_tuner_stop_request", "check_tuner_diverging", "check_tuner_requirements",
    "run_tuner", "conformance_task", "diverging_task", "restricted_task", "CAPABILITY_TAGS", "TUNER_CHECKS",
]


def conformance_task(*, seed: int = 0, narrow: bool = False):
    """The small ridge task the tuner checks run on (``narrow``: λ bounds ``[0.5, 2]`` so tuners meet them)."""
    from hpo_bench.tasks.ridge import Ridge

    kw: dict[str, Any] = {"n": 60, "p": 6, "rho": 0.6}
    if narrow:
        kw.update(lam0=1.0, lam_low=0.5, lam_high=2.0)
    return Ridge(**kw, seed=seed)


def diverging_task(*, seed: int = 0):
    """A ridge task whose validation data hold a NaN: every validation loss is NaN (a diverging cell)."""
    task = conformance_task(seed=seed)
    task.x_val = task.x_val.clone()
    task.x_val[0, 0] = float("nan")
    task.params = {**task.params, "poisoned": "x_val[0, 0] = nan"}
    return task


def _meta(tuner: Tuner, task, seed: int, budget: Budget) -> dict[str, Any]:
    return {"suite": "conformance", "cell_id": f"{task.name}__{tuner.name}__seed{seed}", "task": task.name,
            "task_params": json.dumps({"name": task.name, **task.params}, sort_keys=True, default=str),
            "tuner": tuner.name, "tuner_label": tuner.name,
            "tuner_params": json.dumps(tuner.params, sort_keys=True, default=str), "seed": seed,
            "budget_steps": budget.steps, "budget_seconds": budget.seconds}


class _StopAfter(Recorder):
    """A recorder that requests a stop after ``after`` records (what a user's Ctrl-C handler would do)."""

    def __init__(self, *args: Any, after: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.after = after

    def record(self, **kw: Any) -> str:
        status = super().record(**kw)
        if len(self.rows) >= self.after:
            self.request_stop("conformance: stop requested")
        return status


def run_tuner(tuner: Tuner, task, budget: Budget, *, seed: int = 0, reference: bool = True,
              recorder_cls: type[Recorder] = Recorder, **recorder_kw: Any) -> Recorder:
    """Run ``tuner`` on ``task`` as the harness does and return the recorder (its ``rows``)."""
    rec = recorder_cls(task, budget, meta=_meta(tuner, task, seed, budget), reference=reference, **recorder_kw)
    torch.manual_seed(seed)
    rec.start()
    tuner.run(task, rec, seed=seed)
    return rec


def _what(obj) -> str:
    return f"tuner {label_of(obj)!r}"


def check_tuner_declaration(obj) -> None:
    """A name, declared capability tags (``gradient-based`` or ``black-box``), JSON-serialisable params, and an
    ``options`` schema (if any) about its own parameters."""
    tuner = tuner_factory(obj)()
    what, check = _what(obj), "check_tuner_declaration"
    if not isinstance(tuner, Tuner):
        fail(what, check, f"the factory must build a hpo_bench.core.tuner.Tuner, but built {type(tuner).__name__}")
    if not isinstance(tuner.name, str) or not tuner.name:
        fail(what, check, "`name` must be a non-empty string")
    if not isinstance(tuner.tags, frozenset) or not ({"gradient-based", "black-box"} & set(tuner.tags)):
        fail(what, check, f"`tags` must be a frozenset declaring 'gradient-based' or 'black-box', "
             f"but got {tuner.tags!r}")
    try:
        json.dumps(tuner.params, sort_keys=True)
    except (TypeError, ValueError) as exc:
        fail(what, check, f"`params` must be JSON-serialisable ({exc})")
    if tuner_factory(obj)().params != tuner.params:
        fail(what, check, "two builds with the same arguments have different params")
    stray = sorted(set(getattr(tuner, "options", {})) - set(tuner.params))
    if stray:  # a schema entry for a name the tuner does not take would never be checked
        fail(what, check, f"`options` declares rules for {stray}, which are not parameters of the tuner "
             f"(its params: {sorted(tuner.params)})")


def check_tuner_budget(obj) -> None:
    """At most ``budget.steps`` rows; with a (tiny) seconds budget, it stops at once (at most one row)."""
    what, check = _what(obj), "check_tuner_budget"
    rec = run_tuner(tuner_factory(obj)(), conformance_task(), Budget(steps=3))
    if not 1 <= len(rec.rows) <= 3:
        fail(what, check, f"a budget of 3 steps must give 1 to 3 records, but gave {len(rec.rows)}")
    bad = [r["status"] for r in rec.rows if r["status"] != "ok"]
    if bad:
        fail(what, check, f"a well-posed task must give status 'ok', but got {bad}: {rec.rows[-1]['message']}")
    rec = run_tuner(tuner_factory(obj)(), conformance_task(), Budget(steps=50, seconds=1e-9))
    if len(rec.rows) > 1:
        fail(what, check, f"a budget of 1e-9 tuner seconds must stop the tuner at its first check, but it "
             f"recorded {len(rec.rows)} rows")


def check_tuner_bounds(obj) -> None:
    """Every recorded ``theta`` lies within the space's bounds (task with narrow bounds)."""
    what, check = _what(obj), "check_tuner_bounds"
    task = conformance_task(narrow=True)
    rec = run_tuner(tuner_factory(obj)(), task, Budget(steps=5))
    for r in rec.rows:
        th = torch.tensor(r["theta"], dtype=task.dtype)
        if th.numel() != task.space.dim or not task.space.contains(th):
            fail(what, check, f"step {r['step']}: theta {r['theta']} leaves the bounds "
                 f"{[tuple(map(float, b)) for b in zip(*task.space.theta_bounds())]}")


def _trace(rows: list[dict]) -> list[tuple]:
    return [(r["theta"], r["val_loss"], r["status"]) for r in rows]


def check_tuner_reproducible(obj) -> None:
    """Two runs with the same seed record the same hyperparameters and losses."""
    what, check = _what(obj), "check_tuner_reproducible"
    a = run_tuner(tuner_factory(obj)(), conformance_task(), Budget(steps=4), seed=7)
    b = run_tuner(tuner_factory(obj)(), conformance_task(), Budget(steps=4), seed=7)
    ta, tb = _trace(a.rows), _trace(b.rows)
    if len(ta) != len(tb):
        fail(what, check, f"two runs with seed 7 recorded {len(ta)} and {len(tb)} rows")
    for k, (x, y) in enumerate(zip(ta, tb)):
        same_theta = all(math.isclose(u, v, rel_tol=1e-12, abs_tol=1e-12) for u, v in zip(x[0], y[0]))
        same_val = (x[1] == y[1]) or (math.isnan(x[1]) and math.isnan(y[1])) or math.isclose(x[1], y[1], rel_tol=1e-12)
        if not (same_theta and same_val and x[2] == y[2]):
            fail(what, check, f"two runs with seed 7 differ at step {k}: theta {x[0]} vs {y[0]}, "
                 f"val {x[1]} vs {y[1]}")


def check_tuner_records(obj) -> None:
    """Rows carry every documented column (:data:`hpo_bench.core.records.COLUMNS`) with consistent values.

    Every row has the columns the recorder writes (so it was made by ``recorder.record``); the
    harness's table (:func:`hpo_bench.running.run_folder.records_frame`) starts with ``COLUMNS`` in order
    (the harness fills its per-cell columns); steps count from 0; ``best_val_loss`` is the
    running minimum; costs and ``time_s`` never decrease; statuses are documented ones; a
    ``gradient-based`` tuner records its hypergradient (finite norm, error and cosine).
    """
    what, check = _what(obj), "check_tuner_records"
    tuner = tuner_factory(obj)()
    task = conformance_task()
    rec = run_tuner(tuner, task, Budget(steps=4))
    rows = rec.rows
    if not rows:
        fail(what, check, "no records")
    # the columns a row made by the recorder carries (meta included); the harness fills the per-cell rest
    scratch = Recorder(task, Budget(steps=1), meta=_meta(tuner, task, 0, Budget(steps=1)))
    scratch.start()
    scratch.record(w=task.init_params(), theta=task.space.init_theta(dtype=task.dtype, device=task.device))
    expected = set(scratch.rows[0]) - {"extra"}
    from ..running.run_folder import records_frame

    cols = list(records_frame(rows).columns)
    if cols[:len(COLUMNS)] != list(COLUMNS):
        fail(what, check, f"the records table must start with the documented columns {list(COLUMNS)}, "
             f"but starts with {cols[:len(COLUMNS)]}")
    best = math.inf
    prev: dict[str, Any] | None = None
    for k, r in enumerate(rows):
        missing = sorted(expected - set(r))
        if missing:
            fail(what, check, f"row {k} lacks the recorder's columns {missing} (record rows with recorder.record)")
        if r["step"] != k:
            fail(what, check, f"row {k} has step {r['step']} (steps count 0, 1, 2, ...)")
        if r["status"] not in STATUSES:
            fail(what, check, f"row {k} has status {r['status']!r}, not one of {STATUSES}")
        if len(r["theta"]) != task.space.dim or len(r["hp"]) != task.space.dim:
            fail(what, check, f"row {k}: theta/hp must have {task.space.dim} entries")
        if not (r["time_s"] >= 0 and math.isfinite(r["time_s"])):
            fail(what, check, f"row {k}: time_s must be finite and >= 0, but got {r['time_s']}")
        if math.isfinite(r["val_loss"]):
            best = min(best, r["val_loss"])
        if r["best_val_loss"] != best:
            fail(what, check, f"row {k}: best_val_loss {r['best_val_loss']} is not the running minimum {best}")
        if prev is not None:
            for c in ("time_s", "inner_steps", "grad_evals", "hvps", "inner_solves"):
                if r[c] < prev[c]:
                    fail(what, check, f"row {k}: cumulative {c} decreased ({prev[c]} -> {r[c]})")
        prev = r
        if "gradient-based" in tuner.tags and r["status"] == "ok":
            for c in ("hypergrad_norm", "hypergrad_rel_error", "hypergrad_cosine"):
                if not math.isfinite(r[c]):
                    fail(what, check, f"row {k}: a gradient-based tuner must record its hypergradient ({c} is "
                         f"{r[c]}); pass hypergrad= to recorder.record")


def check_tuner_stop_request(obj) -> None:
    """After ``recorder.request_stop()`` the tuner records nothing more (it checks ``should_stop()``)."""
    what, check = _what(obj), "check_tuner_stop_request"
    rec = run_tuner(tuner_factory(obj)(), conformance_task(), Budget(steps=20), recorder_cls=_StopAfter, after=2)
    if len(rec.rows) != 2:
        fail(what, check, f"a stop requested after 2 records must end the run at 2 records, but it made "
             f"{len(rec.rows)}")


def check_tuner_diverging(obj) -> None:
    """On a task whose losses are non-finite the run ends by status ``diverged``, without raising."""
    what, check = _what(obj), "check_tuner_diverging"
    try:
        rec = run_tuner(tuner_factory(obj)(), diverging_task(), Budget(steps=5))
    except Exception as exc:  # the harness would record 'error': the tuner should leave it to the recorder
        fail(what, check, f"raised {type(exc).__name__}: {exc} on a diverging task instead of letting the "
             "recorder mark the cell 'diverged'")
    if not rec.rows:
        fail(what, check, "no rows: a diverging cell must end with a row of status 'diverged'")
    statuses = [r["status"] for r in rec.rows]
    if statuses[-1] != "diverged":
        fail(what, check, f"the last row must have status 'diverged', but statuses were {statuses}")
    if "diverged" in statuses[:-1] or any(s != "ok" for s in statuses[:-1]):
        fail(what, check, f"the tuner kept recording after a non-ok row: statuses {statuses}")


#: Capabilities the conformance ridge task can withhold: a tuner declares which of them it needs
#: (:meth:`~hpo_bench.core.tuner.Tuner.required_tags`); :func:`check_tuner_requirements` hides the others.
CAPABILITY_TAGS = frozenset({"per-example", "hessian-diagonal", "gram-matrix", "scalar-hyperparameter", "quadratic"})


def _restricted_ridge():
    from hpo_bench.tasks.ridge import Ridge

    class RestrictedRidge(Ridge):
        """The conformance ridge task with the capabilities in ``hidden`` withheld: their tags are dropped,
        per-example losses raise ``NotImplementedError`` and the linearization has no diagonal."""

        hidden: frozenset[str] = frozenset()

        def _refuse(self) -> None:
            raise NotImplementedError(f"task {self.name!r} has no per-example training losses (withheld by "
                                      "the conformance kit: the tuner did not declare 'per-example')")

        @property
        def n_train(self) -> int:
            if "per-example" in self.hidden:
                self._refuse()
            return super().n_train

        def inner_loss_batch(self, w, theta, idx):
            if "per-example" in self.hidden:
                self._refuse()
            return super().inner_loss_batch(w, theta, idx)

        def example_grad_fn(self, theta):
            if "per-example" in self.hidden:
                self._refuse()
            return super().example_grad_fn(theta)

        def example_quadratic(self, theta):
            if "per-example" in self.hidden:
                self._refuse()
            return super().example_quadratic(theta)

        def linearize(self, w, theta):
            lin = super().linearize(w, theta)
            if "hessian-diagonal" in self.hidden:
                lin.diagonal = lambda: None
            return lin

    return RestrictedRidge


def restricted_task(offered: frozenset[str] | set[str], *, seed: int = 0):
    """The conformance ridge task offering, of :data:`CAPABILITY_TAGS`, only ``offered``."""
    task = _restricted_ridge()(**conformance_task().params, seed=seed)
    task.hidden = frozenset(CAPABILITY_TAGS - set(offered))
    task.tags = frozenset(set(task.tags) - task.hidden)
    return task


def check_tuner_requirements(obj) -> None:
    """Run on a task that offers exactly what the tuner declares it needs (``required_tags``), it does not fail.

    The task is the conformance ridge task with every other capability of :data:`CAPABILITY_TAGS`
    withheld (tags dropped; per-example losses raise; no Hessian diagonal). A tuner that fails
    there uses a capability it did not declare, so suite validation would let through cells
    that fail at run time. Requirements outside :data:`CAPABILITY_TAGS` cannot be offered by
    this task; such tuners are not run here.
    """
    what, check = _what(obj), "check_tuner_requirements"
    tuner = tuner_factory(obj)()
    try:
        required = frozenset(type(tuner).required_tags(tuner.params))
    except Exception as exc:  # noqa: BLE001 - any failure is the tuner's
        fail(what, check, f"required_tags({tuner.params!r}) raised {type(exc).__name__}: {exc}")
    if not isinstance(required, frozenset) or not all(isinstance(t, str) for t in required):
        fail(what, check, f"required_tags must return a frozenset of tag strings, but returned {required!r}")
    base = set(conformance_task().tags)
    if not required <= base:
        return  # needs something the ridge task cannot offer: checked on the tasks that do, by suite runs
    task = restricted_task(required)
    try:
        rec = run_tuner(tuner, task, Budget(steps=3))
    except Exception as exc:  # noqa: BLE001
        fail(what, check, f"on a task offering only its declared requirements {sorted(required)} (withheld: "
             f"{sorted(task.hidden)}) it raised {type(exc).__name__}: {exc}; declare what it needs in "
             "`required_tags`")
    bad = [r for r in rec.rows if r["status"] not in ("ok", "diverged")]
    if not rec.rows or bad:
        fail(what, check, f"on a task offering only its declared requirements {sorted(required)} it recorded "
             f"{'no rows' if not rec.rows else bad[0]['status'] + ' rows'}")


#: ``(check, required tag or None)``: a check runs when the tuner declares the tag.
TUNER_CHECKS = (
    (check_tuner_declaration, None),
    (check_tuner_budget, None),
    (check_tuner_bounds, None),
    (check_tuner_reproducible, None),
    (check_tuner_records, None),
    (check_tuner_stop_request, None),
    (check_tuner_diverging, None),
    (check_tuner_requirements, None),
)
