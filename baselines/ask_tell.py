"""The ask/tell base of the black-box tuners: any optuna sampler over a task's ``theta``.

Subclass :class:`OptunaTuner` and return a sampler from :meth:`~OptunaTuner.make_sampler`: that is a whole
tuner (``baselines/random_search.py`` is one in 25 lines). The generic ``optuna`` tuner
(:mod:`hpo_bench.baselines.optuna_sampler`) takes any sampler class by import path, with no code at all.

Lifecycle of one cell (:meth:`OptunaTuner.run`)::

    prepare(task, recorder)                      per-cell set-up (e.g. the grid the budget allows)
    study  <- optuna study with make_sampler(task, recorder, seed), seed from run(..., seed=...)
    repeat until recorder.should_stop() (or max_trials(task, recorder) proposals were made):
        trial  <- study.ask({name: FloatDistribution(low, high) per axis of search_axes(task)})
        theta  <- to_theta(task, the trial's values)   (transformed coordinates, inside the bounds)
        w      <- task.solve(theta)            (reference inner solve: 1 inner solve)
                  or T steps of gradient descent from task.init_params()  (inner = "gd")
        val    <- task.outer_loss(w)           (tuner time: the sampler needs it)
        recorder.record(w=w, theta=theta, val_loss=val, **row_info(task, recorder))   (clock paused)
        study.tell(trial, val)

Hooks a subclass may override: :meth:`~OptunaTuner.make_sampler` (required), and optionally
:meth:`~OptunaTuner.search_axes`, :meth:`~OptunaTuner.to_theta`, :meth:`~OptunaTuner.max_trials`,
:meth:`~OptunaTuner.row_info` and :meth:`~OptunaTuner.prepare`. A subclass with its own parameters declares
them as keyword-only ``__init__`` arguments and in ``options`` (``{**OptunaTuner.options, ...}``); the base
refuses any other keyword.

Everything between ``ask`` and ``tell`` except the recorder's measurements is tuner time.
Search axes are the entries of ``theta`` (``task.space.names``) with bounds
``task.space.theta_bounds()``, so log-penalties are searched log-uniformly and every
proposal is inside the bounds. A proposal where the inner problem has no minimiser
(``FloatingPointError`` from the solve, e.g. a negative raw λ) is told to optuna as a
failed trial, counts against the step budget, and is reported in the next row's
``extra.infeasible``; it is not a record (a record needs parameters ``w``).
"""

from __future__ import annotations

import inspect
import math
import warnings
from abc import abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import optuna
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo_bench.hypergrad import power_step
from hpo_bench.tuners.inner import InnerState, run_inner
from hpo_bench.core.options import Option
from hpo_bench.core.tuner import Tuner, TunerParamError

__all__ = ["OptunaTuner", "Evaluation", "evaluate", "INNER_MODES", "quiet_optuna", "sampler_seed"]

#: How a black-box evaluation solves the inner problem.
INNER_MODES = ("exact", "gd")


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence optuna's INFO logging (one line per trial) and its ``ExperimentalWarning`` (samplers such as
    ``QMCSampler`` and ``GPSampler`` warn on every construction) for the duration, then restore both."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


@dataclass
class Evaluation:
    """One black-box evaluation: the inner solution and its validation loss (``w is None``: infeasible)."""

    w: torch.Tensor | None
    val_loss: float
    message: str = ""


def evaluate(task, theta: torch.Tensor, recorder, *, inner: str = "exact", inner_steps: int = 100,
             inner_lr: float | None = None) -> Evaluation:
    """Solve the inner problem at ``theta`` and report its cost to ``recorder``.

    ``inner="exact"``: ``task.solve`` (one inner solve). ``inner="gd"``: ``inner_steps``
    gradient-descent steps from ``task.init_params()`` with step ``inner_lr`` or ``1/L``
    (power iteration at the starting point; its HVPs are counted).
    """
    theta = theta.detach()
    try:
        if inner == "exact":
            recorder.add_cost(inner_solves=1)
            w = task.solve(theta).detach()
        else:
            w0 = task.init_params()
            lr = inner_lr
            if lr is None:
                lin = task.linearize(w0, theta)
                lr = power_step(lin, w0.shape[0], iters=20)
                recorder.add_cost(hvps=lin.n_hvp)
            state = InnerState.fresh(w0)
            n_grad = run_inner(task, theta, state, solver="gd", steps=inner_steps, lr=lr)
            recorder.add_cost(inner_steps=inner_steps, grad_evals=n_grad)
            w = state.w.detach()
    except FloatingPointError as exc:
        return Evaluation(None, math.inf, str(exc))
    with torch.no_grad():
        val = float(task.outer_loss(w)) if bool(torch.isfinite(w).all()) else math.nan
    return Evaluation(w, val)


def sampler_seed(seed: int) -> int:
    """A 32-bit seed for optuna's samplers (numpy ``RandomState``) from any integer ``seed >= 0``.

    The harness may hand tuners 63-bit seeds; ``SeedSequence`` mixes all of their bits.
    """
    return int(np.random.SeedSequence(int(seed)).generate_state(1)[0])


class OptunaTuner(Tuner):
    """Base of the optuna-driven tuners; a subclass provides :meth:`make_sampler` (module docstring).

    Args (shared by every subclass):
        inner: ``"exact"`` (reference inner solve per evaluation; default) or ``"gd"``
            (an inexact solve: ``inner_steps`` gradient-descent steps, recorded as such).
        inner_steps: T for ``inner = "gd"``.
        inner_lr: step size for ``inner = "gd"``; ``None``: ``1/L`` by power iteration.
    """

    tags = frozenset({"black-box"})
    #: shared by every subclass, which adds its own (``options = {**OptunaTuner.options, ...}``)
    options = {"inner": Option(str, choices=INNER_MODES), "inner_steps": Option(int, low=1),
               "inner_lr": Option(float, low=0, low_open=True, optional=True, doc="None: 1/L by power iteration")}
    _keywords: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kw: Any) -> None:
        """Collect the keyword-only parameters of every ``__init__`` up the hierarchy, once per class
        (at import, so cell processes forked after it do not pay ``inspect`` per construction)."""
        super().__init_subclass__(**kw)
        cls._keywords = frozenset(
            name for klass in cls.__mro__ if "__init__" in vars(klass)
            for name, par in inspect.signature(vars(klass)["__init__"]).parameters.items()
            if par.kind is inspect.Parameter.KEYWORD_ONLY)

    def __init__(self, *, inner: str = "exact", inner_steps: int = 100, inner_lr: float | None = None,
                 **params: Any) -> None:
        unknown = sorted(set(params) - self._keywords)
        if unknown:  # subclasses pass their own keywords through **params; anything else is a typo
            raise TunerParamError(f"tuner {self.name!r}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                                  f"{', '.join(map(repr, unknown))}; known parameters: "
                                  f"{', '.join(sorted(self._keywords))}")
        super().__init__(**params, inner=inner, inner_steps=inner_steps, inner_lr=inner_lr)  # checks `options`
        self.inner = inner
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr

    # ------------------------------------------------------------ validation
    def _int(self, key: str, value: Any, low: int, *, optional: bool = False) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self._fail(key, f"an integer >= {low}" + (" or omitted" if optional else ""), value)

    def _float(self, key: str, value: Any, *, optional: bool = False) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
            self._fail(key, "a finite number > 0" + (" or omitted" if optional else ""), value)

    # ------------------------------------------------------- search geometry
    def search_axes(self, task) -> tuple[list[str], list[tuple[float, float]]]:
        """Names and ``(low, high)`` of the search axes: one per entry of ``theta`` by default (override
        with :meth:`to_theta` to search fewer axes, as the grid's shared mode does)."""
        lo, hi = task.space.theta_bounds()
        return list(task.space.names), [(float(a), float(b)) for a, b in zip(lo, hi)]

    def to_theta(self, task, values: list[float]) -> torch.Tensor:
        """Map one proposal (values of the search axes, in order) onto ``theta``."""
        theta = torch.tensor(values, dtype=task.dtype, device=task.device)
        return task.space.project(theta)  # a float32 task may round a bound outwards

    @abstractmethod
    def make_sampler(self, task, recorder, seed: int) -> optuna.samplers.BaseSampler:
        """The optuna sampler for one cell, seeded from ``seed`` (a 32-bit integer derived from the cell's seed).

        Called once per cell, before the first proposal and after :meth:`prepare`."""

    def max_trials(self, task, recorder) -> int | None:
        """How many proposals the sampler can make (``None``: unlimited)."""
        return None

    def row_info(self, task, recorder) -> dict[str, Any]:
        """Constant facts recorded in every row's ``extra`` (e.g. the grid actually used)."""
        return {}

    # ------------------------------------------------------------------- run
    def run(self, task, recorder, *, seed: int = 0) -> None:
        with quiet_optuna():
            self._run(task, recorder, seed)

    def prepare(self, task, recorder) -> None:
        """Per-cell set-up before the first proposal (e.g. the grid the budget allows)."""

    def _run(self, task, recorder, seed: int) -> None:
        self.prepare(task, recorder)
        names, bounds = self.search_axes(task)
        dists = {n: FloatDistribution(lo, hi) for n, (lo, hi) in zip(names, bounds)}
        study = optuna.create_study(direction="minimize", sampler=self.make_sampler(task, recorder, sampler_seed(seed)))
        info = self.row_info(task, recorder)
        max_trials = self.max_trials(task, recorder)
        steps = recorder.budget.steps
        n_trials = 0
        infeasible: list[str] = []
        while not recorder.should_stop():
            if max_trials is not None and n_trials >= max_trials:
                recorder.request_stop("search space exhausted")
                break
            if steps is not None and n_trials >= steps:  # infeasible proposals count against the budget
                recorder.request_stop("budget_steps")
                break
            trial = study.ask(dists)
            n_trials += 1
            theta = self.to_theta(task, [trial.params[n] for n in names])
            ev = evaluate(task, theta, recorder, inner=self.inner, inner_steps=self.inner_steps,
                          inner_lr=self.inner_lr)
            if ev.w is None:
                study.tell(trial, state=TrialState.FAIL)
                infeasible.append(ev.message)
                continue
            extra = dict(info, trial=trial.number)
            if infeasible:
                extra["infeasible"] = len(infeasible)
            status = recorder.record(w=ev.w, theta=theta, val_loss=ev.val_loss, **extra)
            infeasible = []
            if status != "ok":
                study.tell(trial, state=TrialState.FAIL)
                return
            study.tell(trial, ev.val_loss)
        if not recorder.rows:
            # every proposal was infeasible: the cell still ends with one row saying so
            recorder.fail("diverged", f"{len(infeasible)} proposals, none with an inner solution: "
                          f"{infeasible[-1] if infeasible else 'no proposal made'}")
