"""Template of a tuner: copy this file to ``baselines/<your_tuner>.py`` and edit it.

Files named ``template_*`` are skipped by discovery, so this one is never registered; your
copy is, under the ``name`` you give it. Then::

    hpo-bench list                                         # your tuner appears
    pytest tests/test_conformance.py -k my_tuner           # the conformance kit (hpo_bench.testing)
    hpo-bench run my_suite.toml --out results/mine         # a suite naming it (see docs)
    hpo-bench show results/mine

If an optuna sampler can do the searching, you need less: the ``optuna`` tuner takes any sampler class by
import path from a suite file (``params = { sampler = "optuna.samplers.QMCSampler" }``), and a subclass of
:class:`hpo_bench.OptunaTuner` that returns a sampler from ``make_sampler(task, recorder, seed)`` is a whole
tuner (``baselines/random_search.py``; docs/extending.md, "A tuner from any Optuna sampler").

The example is a complete black-box tuner, a (1+1) evolution strategy in the transformed
coordinates ``theta`` (log-penalties), with the 1/5th success rule for its step size
(Rechenberg 1973). What every tuner must do (checked by ``hpo_bench.testing``):

* keyword-only constructor parameters, validated (``self._fail`` gives the one-line error),
  stored in ``self.params`` (``super().__init__(**params)``) and nothing else;
* ``tags`` declare ``"black-box"`` or ``"gradient-based"`` (gradient tuners pass
  ``hypergrad=`` to ``recorder.record``);
* ``run`` loops ``while not recorder.should_stop()`` (budget, a stop request, or a
  non-``ok`` row), records one row per evaluation with ``recorder.record`` and returns when
  it says anything but ``"ok"`` (e.g. ``"diverged"``), and reports costs with
  ``recorder.add_cost``;
* every proposal stays inside the bounds (``task.space.project``);
* randomness only from ``seed`` (a private ``torch.Generator``), so a run is reproducible;
* what it needs from a task beyond the contract is declared as task tags by the classmethod
  ``required_tags(params)`` (e.g. ``frozenset({"per-example"})`` for a tuner that draws
  single training examples): suite validation refuses a task without them up front, and the
  kit runs the tuner on a task that withholds everything else. This one needs nothing.
"""

from __future__ import annotations

import math

import torch

from hpo_bench.core.registry import register_tuner
from hpo_bench.core.tuner import Tuner

__all__ = ["MyTuner"]


@register_tuner
class MyTuner(Tuner):
    """(1+1)-ES in theta with the 1/5th success rule (template: rename and edit).

    Args:
        sigma0: initial step size in theta units (> 0).
    """

    name = "my_tuner"  # the registry name: unique, [A-Za-z0-9_-]
    tags = frozenset({"black-box"})

    def __init__(self, *, sigma0: float = 0.5) -> None:
        super().__init__(sigma0=sigma0)
        if isinstance(sigma0, bool) or not isinstance(sigma0, (int, float)) or not sigma0 > 0:
            self._fail("sigma0", "a number > 0", sigma0)
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
        while not recorder.should_stop():
            step = torch.randn(space.dim, generator=gen, dtype=task.dtype).to(task.device)
            cand = space.project(theta + sigma * step)
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
