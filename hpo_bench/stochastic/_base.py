"""The base class of the stochastic bilevel solvers: the loop, the samplers, the counters, the records.

Lifecycle of one cell (:meth:`StochasticTuner.run`)::

    w <- task.init_params();  theta <- space.init_theta();  v <- 0 (or grad_w g_B'(w), v_from_outer_grad)
    init_state()                                   # the solver's buffers and memories
    for k = 0, 1, 2, ...:
        compute()                                  # the directions at the current state (and inner loops)
        if k % eval_every == 0:                    # benchopt's eval_freq convention
            record(w, theta, direction d_theta, v, samples, epochs)     # clock paused
        apply()                                    # the updates: w, v, theta (projected on the box)

A row therefore pairs the state ``(w_k, theta_k, v_k)`` with the direction ``d_theta`` the solver is
about to follow from it, so ``hypergrad_rel_error`` / ``hypergrad_cosine`` compare that *stochastic*
direction with the reference hypergradient at the same ``theta``; the recorder adds
``inner_rel_distance``, ``v_rel_error`` and ``grad_norm_sq`` (:data:`hpo_bench.core.records.STOCHASTIC_COLUMNS`).
A budget of ``steps`` is a number of rows, so a cell runs ``steps * eval_every`` iterations at most.

Conventions shared by every solver: ``v`` estimates ``H^{-1} grad_w outer`` at ``w*(theta)`` (so the
hypergradient is ``-J v``, ``J = d^2 inner / dtheta dw``); the inner step size is ``step_size`` (also
the step of ``v``), the outer one ``step_size / outer_ratio`` (benchmark_bilevel's parametrisation);
``samples`` counts the examples of every oracle call (a fused call on ``b`` examples counts ``b``),
``epochs`` is ``samples / (n_train + n_val)``. Costs: ``grad_evals`` counts batch gradients (inner
or outer), ``hvps`` batch Hessian-vector products (a fused call counts one of each), ``inner_steps``
updates of ``w``. Updates are in place on preallocated tensors: at batch 64 the per-operation
overhead, not the flops, is what an iteration costs.

Randomness: the inner and outer samplers and any other draw (random truncations) come from
generators seeded by the cell's seed and a stream name (:func:`hpo_bench.stochastic._oracle.generator`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..core.options import Option, check_options
from ..core.tuner import Tuner, TunerParamError
from ._oracle import MINIBATCH_TAG, SAMPLING_MODES, Sampler, generator, require_minibatch

__all__ = ["StochasticTuner", "BASE_OPTIONS", "BASE_DEFAULTS"]

#: The knobs every stochastic solver has.
BASE_OPTIONS = {
    "step_size": Option(float, low=0, low_open=True, doc="inner (and v) step size"),
    "outer_ratio": Option(float, low=0, low_open=True, doc="outer step = step_size / outer_ratio"),
    "batch_size": Option(int, low=1, doc="inner minibatch size"),
    "outer_batch_size": Option(int, low=1, optional=True, doc="outer minibatch size (default: batch_size)"),
    "eval_every": Option(int, low=1, doc="iterations between two recorded rows"),
    "sampling": Option(str, choices=SAMPLING_MODES),
}
BASE_DEFAULTS: dict[str, Any] = {"step_size": 0.1, "outer_ratio": 10.0, "batch_size": 64, "outer_batch_size": None,
                                 "eval_every": 64, "sampling": "shuffle"}

_KIT_REASON = ("needs minibatch oracles on both levels (task tag 'minibatch'); the conformance kit's ridge task "
               "has none, so tests/test_stochastic.py runs this check on a quadratic_bilevel task")


class StochasticTuner(Tuner):
    """Base of the stochastic bilevel solvers (module docstring: the loop and the conventions).

    Subclasses set :attr:`name`, extend :attr:`options` / :attr:`defaults` with their own knobs, and
    implement :meth:`estimate` (the directions at the current state, no move of ``w`` or ``theta``),
    :meth:`apply` (the updates) and, where they need buffers, :meth:`init_state`; double-loop solvers
    override :meth:`compute` (inner loops, then :meth:`estimate`). Oracles are called through the
    counting helpers (:meth:`fused`, :meth:`grad_inner`, ...), never on the task directly.

    Class attributes:
        defaults: the solver's defaults (over :data:`BASE_DEFAULTS`), chosen to work on the shipped suite.
        tune_grid: a grid to tune with, step size x outer ratio as the literature tunes them (the suite's
            points lie within its range; ``scripts/stochastic_table.py`` refines it around the quadratic's optimum).
        has_v: whether the solver keeps an estimate of ``H^{-1} grad outer`` (``v_rel_error``).
        paper: the reference whose update rule the solver implements.
    """

    tags = frozenset({"gradient-based", "stochastic"})
    options: ClassVar[dict[str, Option]] = BASE_OPTIONS
    defaults: ClassVar[dict[str, Any]] = {}
    #: decades of both knobs, wide enough for the shipped problems: the simulated quadratic wants the outer step
    #: ~1000x below the inner one (outer_ratio 300-3000), the data tasks want it above (outer_ratio ~0.03)
    tune_grid: ClassVar[dict[str, list[float]]] = {"step_size": [0.01, 0.03, 0.1, 0.3, 1.0],
                                                    "outer_ratio": [0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4]}
    has_v: ClassVar[bool] = True
    #: start ``v`` at ``grad_w g_B'(w0)`` instead of 0 (solvers whose direction is ``-J v`` with ``v`` a state)
    v_from_outer_grad: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    xfail_checks = {c: _KIT_REASON for c in ("check_tuner_budget", "check_tuner_bounds", "check_tuner_records",
                                             "check_tuner_stop_request", "check_tuner_diverging")}

    def __init__(self, **params: Any) -> None:
        values = {**BASE_DEFAULTS, **type(self).defaults, **params}
        check_options(f"tuner {self.name!r}", type(self).options, values, word="parameter", error=TunerParamError)
        super().__init__(**values)
        self.step_size = float(values["step_size"])
        self.outer_ratio = float(values["outer_ratio"])
        self.batch_size = int(values["batch_size"])
        self.outer_batch_size = int(values["outer_batch_size"] or values["batch_size"])
        self.eval_every = int(values["eval_every"])
        self.sampling = values["sampling"]

    @classmethod
    def required_tags(cls, params) -> frozenset[str]:
        """``{"minibatch"}``: minibatch oracles on both levels."""
        return frozenset({MINIBATCH_TAG})

    # ------------------------------------------------------------- counting oracles
    def fused(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor, v: torch.Tensor):
        """``(grad_w f_B, H_B v, J_B v)``: one gradient and one HVP, ``len(idx)`` samples."""
        self.samples += idx.shape[0]
        self.n_grad += 1
        self.n_hvp += 1
        return self.task.inner_oracle_batch(w, theta, idx, v)

    def grad_inner(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self.samples += idx.shape[0]
        self.n_grad += 1
        return self.task.inner_grad_batch(w, theta, idx)

    def grad_outer(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self.samples += idx.shape[0]
        self.n_grad += 1
        return self.task.outer_grad_batch(w, idx)

    def hvp(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.samples += idx.shape[0]
        self.n_hvp += 1
        return self.task.inner_hvp_batch(w, theta, idx, v)

    def cross(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.samples += idx.shape[0]
        return self.task.inner_cross_batch(w, theta, idx, v)

    def grad_theta(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self.samples += idx.shape[0]
        self.n_grad += 1
        return self.task.inner_theta_grad_batch(w, theta, idx)

    def neumann(self, points: list[tuple[torch.Tensor, torch.Tensor]], r0: list[torch.Tensor], steps: int,
                lr: float, *, truncation: int | None = None, draw=None) -> list[torch.Tensor]:
        """Stochastic Neumann series for ``H^{-1} r0`` at each ``(w, theta)`` of ``points``, one fresh batch per
        term shared by every point (SARAH/STORM estimators difference two points on the same samples).

        ``truncation is None`` (StocBiO, Ji et al. 2021, eq. (4)): ``lr sum_{q=0}^{steps} prod_{j<=q} (I - lr
        H_{B_j}) r0``, unbiased for ``lr sum_{q=0}^{steps} (I - lr H)^q r0``. ``truncation = p`` (BSA,
        Ghadimi & Wang 2018, eq. (3.9); p uniform on ``{0, ..., steps - 1}``): ``steps lr prod_{j<=p} (I - lr
        H_{B_j}) r0``, unbiased for ``lr sum_{q<steps} (I - lr H)^q r0``. ``draw``: where the batches come
        from (default: the inner sampler).
        """
        draw = draw or self.inner_sampler.draw
        rs = [r.clone() for r in r0]
        if truncation is None:
            accs = [r.clone() for r in r0]
            for _ in range(steps):
                idx = draw()
                for (w, th), r, acc in zip(points, rs, accs):
                    r.sub_(self.hvp(w, th, idx, r), alpha=lr)
                    acc.add_(r)
            return [acc.mul_(lr) for acc in accs]
        for _ in range(truncation):
            idx = draw()
            for (w, th), r in zip(points, rs):
                r.sub_(self.hvp(w, th, idx, r), alpha=lr)
        return [r.mul_(steps * lr) for r in rs]

    # ------------------------------------------------------------- updates
    def step_w(self, d: torch.Tensor, lr: float) -> None:
        """``w <- w - lr d`` in place (one inner step)."""
        self.w.sub_(d, alpha=lr)
        self.n_inner += 1

    def step_theta(self, d: torch.Tensor, lr: float) -> None:
        """``theta <- clip(theta - lr d)`` in place (the box of the space)."""
        self.theta.sub_(d, alpha=lr)
        torch.clamp(self.theta, self.lo, self.hi, out=self.theta)

    # ------------------------------------------------------------- hooks
    def init_state(self) -> None:
        """Allocate the solver's buffers (``self.w``, ``self.theta``, ``self.v`` and the samplers exist)."""

    def estimate(self) -> None:
        """Set ``self.d_theta`` (and the solver's other directions) at the current state; moves neither ``w``
        nor ``theta``."""
        raise NotImplementedError

    def compute(self) -> None:
        """What happens before a row: by default :meth:`estimate`; double-loop solvers run their inner loops first."""
        self.estimate()

    def apply(self) -> None:
        """The updates from the directions of :meth:`compute`."""
        raise NotImplementedError

    def v_estimate(self) -> torch.Tensor | None:
        """The solver's estimate of ``H^{-1} grad outer`` (``None`` where it keeps none)."""
        return self.v if self.has_v else None

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor of the solver's state (the tests copy them to evaluate :meth:`estimate` at a fixed state)."""
        return [self.w, self.theta, self.v]

    # ------------------------------------------------------------- the loop
    @property
    def inner_lr(self) -> float:
        return self.step_size

    @property
    def outer_lr(self) -> float:
        return self.step_size / self.outer_ratio

    def setup(self, task, *, seed: int = 0) -> None:
        """Build the state for ``task`` (what :meth:`run` does before its loop; tests call it directly)."""
        require_minibatch(task, self.name)
        self.task = task
        dev = task.device
        self.inner_sampler = Sampler(task.n_train, self.batch_size, mode=self.sampling, gen=generator(seed, "inner"),
                                     device=dev)
        self.outer_sampler = Sampler(task.n_val, self.outer_batch_size, mode=self.sampling,
                                     gen=generator(seed, "outer"), device=dev)
        self.cell_seed = seed
        self.w = task.init_params().detach().clone()
        self.theta = task.space.init_theta(dtype=task.dtype, device=dev).clone()
        self.lo, self.hi = task.space.theta_bounds(dtype=task.dtype, device=dev)
        self.v = torch.zeros_like(self.w)
        self.d_theta = torch.zeros_like(self.theta)
        self.samples = self.n_grad = self.n_hvp = self.n_inner = 0
        if self.v_from_outer_grad:  # v0 = grad_w g_B'(w0) (H ~ I): the first direction -J v0 is not 0
            self.v.copy_(self.grad_outer(self.w, self.outer_sampler.draw()))
        self.iteration = 0
        self.init_state()

    def run(self, task, recorder, *, seed: int = 0) -> None:
        """Run the loop of the module docstring until ``recorder.should_stop()``.

        A task without the ``"minibatch"`` tag (which suite validation refuses up front) ends the cell
        with one ``error`` row saying so.
        """
        try:
            require_minibatch(task, self.name)
        except ValueError as exc:
            recorder.fail("error", str(exc))
            return
        self.setup(task, seed=seed)
        n_total = task.n_train + task.n_val
        flushed = {"grad_evals": 0, "hvps": 0, "inner_steps": 0}
        every = self.eval_every
        while True:
            self.compute()
            if self.iteration % every == 0:
                if recorder.should_stop():
                    return
                now = {"grad_evals": self.n_grad, "hvps": self.n_hvp, "inner_steps": self.n_inner}
                recorder.add_cost(**{k: now[k] - flushed[k] for k in now})
                flushed = now
                status = recorder.record(w=self.w, theta=self.theta, hypergrad=self.d_theta, v=self.v_estimate(),
                                         samples=self.samples, epochs=self.samples / n_total)
                if status != "ok" or recorder.should_stop():
                    return
            self.apply()
            self.iteration += 1

    def _fail_rule(self, key: str, rule: str, value: Any) -> None:
        raise TunerParamError(f"tuner {self.name!r}: parameter `{key}` must be {rule}, but got {value!r}")


#: Options of the randomly truncated Neumann estimator shared by BSA and TTSA.
TRUNCATED_NEUMANN_OPTIONS = {"neumann_steps": Option(int, low=1),
                             "neumann_lr": Option(float, low=0, low_open=True, optional=True),
                             "decay": Option(bool)}


class TruncatedNeumann:
    """The randomly truncated Neumann hypergradient of BSA and TTSA, for a :class:`StochasticTuner`.

    ``neumann_steps`` Q, ``neumann_lr`` (default: ``step_size``) and ``decay``; each estimate truncates
    the series after ``q ~ U{0, ..., Q-1}`` terms, drawn from the cell seed's own ``"truncation"``
    stream (so the truncations do not depend on the batch draws).
    """

    def _init_truncated_neumann(self) -> None:
        self.neumann_steps = int(self.params["neumann_steps"])
        self.neumann_lr = float(self.params["neumann_lr"] or self.step_size)
        self.decay = bool(self.params["decay"])

    def init_state(self) -> None:
        self.trunc_rng = generator(self.cell_seed, "truncation")

    def draw_truncation(self) -> int:
        return int(torch.randint(self.neumann_steps, (1,), generator=self.trunc_rng))

