"""Template of a tuner: rename the class and its ``name``, then replace the search.

``hpo-bench init DIR`` copies this file to ``DIR/my_tuner.py`` in a folder of your own (a plug-in
folder); inside the repository, copy it to ``baselines/<your_tuner>.py``. Files named ``template_*``
are skipped by discovery, so this one is never registered; your copy is, under the ``name`` you give
it. Then, in a plug-in folder::

    hpo-bench list --plugins .                             # your tuner appears
    pytest --hpo-bench-plugins .                           # the conformance kit (hpo_bench.testing)
    hpo-bench run suite.toml --out run                     # a suite naming it (`plugins = ["."]`)
    hpo-bench report run

(in the repository: ``pytest tests/test_conformance.py -k my_tuner`` runs the kit on it).

If an optuna sampler can do the searching, you need less: the ``optuna`` tuner takes any sampler class by
import path from a suite file (``params = { sampler = "optuna.samplers.QMCSampler" }``), and a subclass of
:class:`hpo_bench.OptunaTuner` that returns a sampler from ``make_sampler(task, recorder, seed)`` is a whole
tuner (``baselines/random_search.py``; docs/extending.md, "A tuner from any Optuna sampler").

The example is a complete black-box tuner, a (1+1) evolution strategy in the transformed
coordinates ``theta`` (log-penalties), with the 1/5th success rule for its step size
(Rechenberg 1973). What every tuner must do (checked by ``hpo_bench.testing``):

* keyword-only constructor parameters, stored in ``self.params`` (``super().__init__(**params)``)
  and nothing else; their rules declared in ``options`` (:class:`hpo_bench.Option`: type, bounds,
  choices), which ``Tuner.__init__`` checks, so a bad value in a suite is one line before anything
  runs (``self._fail`` gives that line for a rule a schema cannot say);
* ``tags`` declare ``"black-box"`` or ``"gradient-based"`` (gradient tuners pass
  ``hypergrad=`` to ``recorder.record``);
* ``run`` loops ``while not recorder.should_stop()`` (budget, a stop request, or a
  non-``ok`` row), records one row per evaluation with ``recorder.record`` and returns when
  it says anything but ``"ok"`` (e.g. ``"diverged"``), and reports costs with
  ``recorder.add_cost``;
* every proposal stays inside the bounds: ``task.space.theta_bounds(dtype=, device=)`` is the box
  ``(lo, hi)`` of ``theta`` (one entry per coordinate), ``task.space.project`` clips into it;
* a proposal without an inner solution (``FloatingPointError`` from ``task.solve``) is not a
  record, but it counts against the step budget (``recorder.budget.steps``), as in
  :class:`hpo_bench.OptunaTuner`: a tuner stuck in an infeasible region must still end;
* randomness only from ``seed`` (a private ``torch.Generator``), so a run is reproducible;
* what it needs from a task beyond the contract is declared as task tags by the classmethod
  ``required_tags(params)`` (e.g. ``frozenset({"per-example"})`` for a tuner that draws
  single training examples): suite validation refuses a task without them up front, and the
  kit runs the tuner on a task that withholds everything else. This one needs nothing.
"""

from __future__ import annotations

import math

import torch

from hpo_bench import Option, Tuner, register_tuner

__all__ = ["MyTuner"]


@register_tuner
class MyTuner(Tuner):
    """(1+1)-ES in theta with the 1/5th success rule (template: rename and edit).

    Args:
        sigma0: initial step size in theta units (> 0).
    """

    name = "my_tuner"  # the registry name: unique, [A-Za-z0-9_-]
    tags = frozenset({"black-box"})
    options = {"sigma0": Option(float, low=0, low_open=True)}

    def __init__(self, *, sigma0: float = 0.5) -> None:
        super().__init__(sigma0=sigma0)  # checks `options`: sigma0 is a number > 0
        self.sigma0 = float(sigma0)

    def _evaluate(self, task, theta: torch.Tensor, recorder):
        """The inner solve at ``theta`` (tuner time) and its validation loss; ``None`` if it has no solution."""
        recorder.add_cost(inner_solves=1)
        try:
            w = task.solve(theta)
        except FloatingPointError:  # no inner minimiser here: a failed proposal, not a record
            return None, math.inf
        return w, float(task.outer_loss(w))

    def run(self, task, recorder, *, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        space = task.space
        theta = space.init_theta(dtype=task.dtype, device=task.device)
        best_w, best_val = self._evaluate(task, theta, recorder)
        if best_w is None:
            recorder.fail("diverged", "no inner solution at the initial hyperparameters", theta)
            return
        if recorder.record(w=best_w, theta=theta, val_loss=best_val) != "ok":
            return
        sigma = self.sigma0
        steps, proposals = recorder.budget.steps, 1
        while not recorder.should_stop():
            if steps is not None and proposals >= steps:  # infeasible proposals count against the budget
                recorder.request_stop("budget_steps")
                return
            step = torch.randn(space.dim, generator=gen, dtype=task.dtype).to(task.device)
            cand = space.project(theta + sigma * step)
            proposals += 1
            w, val = self._evaluate(task, cand, recorder)
            if w is None:
                sigma *= 0.5
                continue
            if recorder.record(w=w, theta=cand, val_loss=val) != "ok":
                return
            if val < best_val:  # success: move and widen the step (1/5th rule)
                theta, best_val = cand, val
                sigma *= math.exp(0.8)
            else:
                sigma *= math.exp(-0.2)
