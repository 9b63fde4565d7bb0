"""The gradient tuner and its ``seed_notebook`` preset.

One outer step::

    w      <- inner solver from w (warm start) or from task.init_params(), T steps at theta
    g      <- hypergradient method at (w, theta)         # unrolled methods run the T steps themselves;
                                                         # cg starts from the previous step's adjoint q
    record    (clock paused: losses, reference hypergradient, errors)
    theta  <- project(outer optimiser step on theta with gradient g)

With ``tol_schedule`` (HOAG, Pedregosa 2016) step ``k``'s inner solve and ``cg`` stop at a tolerance
``eps_k`` (``0.1 / k^2`` by default) instead of the reference accuracy: early steps, where the direction
matters less than its cost, take a few iterations; the error of step ``k`` is ``O(eps_k)``, summable.

``theta`` are the space's transformed coordinates (log λ for penalties), so the outer
optimiser never leaves the positive orthant; bounds are enforced by projection.

``outer = "lbfgs"`` hands the outer loop to scipy's L-BFGS-B (bounds native, steps by its
line search, default memory, stopping tests tightened to float64 precision: ``LBFGS_OPTIONS``). One function evaluation is one outer step of the loop above: the inner solve
(warm-started) at the point L-BFGS-B asks for, the hypergradient, one recorded row, and
``F = task.outer_loss(w)`` at the tuner's own ``w`` (what the line search sees). The run
ends the moment ``recorder.should_stop()`` holds or a row is not ``ok`` (a private
exception raised inside scipy's loop and caught around it). When L-BFGS-B stops on its own
(converged, line search failed, its iteration limit), it is restarted from the incumbent
(lowest ``F`` seen) with an empty memory, as long as the finished run lowered the
incumbent; a run that did not ends the cell with ``recorder.stop_reason`` =
``"lbfgs converged: <scipy's message>"``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from ..core._threads import blas_threads
from ..hypergrad import get_method
from ..hypergrad._implicit import power_step
from .inner import INNER_SOLVERS, InnerState, run_inner
from ..core.options import Option, OptionError, check_options
from ..core.registry import register_tuner
from ..core.tuner import Tuner, TunerParamError

__all__ = ["GradientTuner", "SeedNotebookTuner", "OUTER_OPTIMIZERS"]

OUTER_OPTIMIZERS = ("sgd", "adam", "rmsprop", "lbfgs")
#: ``outer_lr``'s default; ``lbfgs`` takes its steps from a line search, so any other value is an error there.
DEFAULT_OUTER_LR = 0.1


#: The gradient tuner's parameters and their rules (checked in the constructor, which suite validation runs).
GRADIENT_OPTIONS = {
    "method": Option(str), "method_opts": Option(dict),
    "inner": Option(str, choices=INNER_SOLVERS), "inner_steps": Option(int, low=1),
    "inner_lr": Option(float, low=0, low_open=True, optional=True), "warm_start": Option(bool),
    "outer": Option(str, choices=OUTER_OPTIMIZERS), "outer_lr": Option(float, low=0, low_open=True),
    "outer_momentum": Option(float, low=0, high=1, high_open=True),
    "tol_schedule": Option(str, choices=("none", "quadratic", "cubic", "exponential")),
    "tol_start": Option(float, low=0, high=1, low_open=True, high_open=True),
    "tol_min": Option(float, low=0, high=1, low_open=True, high_open=True),
}
#: HOAG's tolerance sequences (Pedregosa 2016, section 4): ``eps_k`` at outer step ``k = 1, 2, ...``, from
#: ``eps_1 = tol_start``; all summable, the condition of its convergence theorem.
TOL_SCHEDULES = {"quadratic": lambda start, k: start / k ** 2, "cubic": lambda start, k: start / k ** 3,
                 "exponential": lambda start, k: start * 0.9 ** (k - 1)}


#: a scheduled tolerance above this leaves the inner solve short of a reference solve (whose accuracy is
#: ~1e-12 relative on the tasks with an iterative route): the method's error bound then covers only its part
INEXACT_ABOVE = 1e-12


def scheduled_tolerance(schedule: str, start: float, floor: float, k: int) -> float:
    """The tolerance of outer step ``k`` (1-based): ``max(floor, TOL_SCHEDULES[schedule](start, k))``."""
    return max(floor, TOL_SCHEDULES[schedule](start, k))


#: Task tags each inner solver needs: per-example Adam draws single training examples; the proximal
#: solvers need a composite task's prox (tag ``"prox"``).
INNER_REQUIRES = {"adam_per_example": frozenset({"per-example"}), "ista": frozenset({"prox"}),
                  "fista": frozenset({"prox"}), "cd": frozenset({"prox"})}
#: Inner solvers that assume a smooth inner objective (gradient steps on it): refused on ``"non-smooth"`` tasks.
SMOOTH_ONLY_INNER = ("gd", "adam", "adam_per_example")


#: L-BFGS-B's settings: scipy's defaults (memory 10) except its stopping tests, which only decide when
#: a run ends, never its path: tight enough that the budget, not scipy's ``ftol``/``gtol``, ends a
#: cell (per-feature penalties have long plateaus that the defaults mistake for convergence).
LBFGS_OPTIONS = {"maxcor": 10, "ftol": 1e-15, "gtol": 1e-11, "maxiter": 1_000_000, "maxfun": 1_000_000}


def _gradient_requirements(inner: Any, method: Any, method_opts: Any) -> frozenset[str]:
    """Task tags an inner solver and a hypergradient method (with its options) need; unknown names need
    nothing here (the constructor refuses them)."""
    need = set(INNER_REQUIRES.get(inner, ())) if isinstance(inner, str) else set()
    if isinstance(method, str) and isinstance(method_opts, Mapping):
        from ..core.registry import METHODS

        if method in METHODS:
            need |= METHODS.get(method).info.required_tags(method_opts)
    return frozenset(need)


def _method_dense(method: Any) -> list[tuple[str, str]]:
    """``[(what, shape)]`` for a method declaring a dense matrix (``MethodInfo.dense``), else ``[]``."""
    from ..core.registry import METHODS

    if isinstance(method, str) and method in METHODS and METHODS.get(method).info.dense:
        return [(f"method = {method!r}", METHODS.get(method).info.dense)]
    return []


def _smooth_only_parts(inner: Any, method: Any, method_opts: Any) -> list[str]:
    """The parts of a gradient tuner that assume a smooth inner objective: a gradient-step inner solver
    (:data:`SMOOTH_ONLY_INNER`) or a method that does not declare the composite structure (tag ``"prox"``)."""
    parts = []
    if isinstance(inner, str) and inner in SMOOTH_ONLY_INNER:
        parts.append(f"inner = {inner!r}")
    if isinstance(method, str) and isinstance(method_opts, Mapping):
        from ..hypergrad._nonsmooth import handles_nonsmooth
        from ..core.registry import METHODS

        if method in METHODS and not handles_nonsmooth(METHODS.get(method), method_opts):
            parts.append(f"method = {method!r}")
    return parts


def _refusals(inner: Any, method: Any, method_opts: Any) -> dict[str, str]:
    parts = _smooth_only_parts(inner, method, method_opts)
    if not parts:
        return {}
    return {"non-smooth": f"{' and '.join(parts)} assume{'s' if len(parts) == 1 else ''} a smooth inner objective; "
            "a non-smooth task needs inner = 'ista', 'fista', 'cd' or 'exact' and a method declaring 'prox' "
            "(implicit_support, implicit_forward, prox_forward, prox_reverse)"}


class _StopLBFGS(Exception):
    """Ends scipy's L-BFGS-B loop from inside the objective (the recorder knows why)."""


def _outer_optimizer(name: str, theta: torch.Tensor, lr: float, momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD([theta], lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam([theta], lr=lr)
    return torch.optim.RMSprop([theta], lr=lr, momentum=momentum)


@register_tuner
class GradientTuner(Tuner):
    """Hypergradient descent with any registered hypergradient method.

    Args:
        method: a registered hypergradient method (``hpo-bench list``).
        method_opts: options of that method (e.g. ``{tol = 1e-8}`` for ``cg``).
        inner: ``gd``, ``adam``, ``adam_per_example`` or ``exact``; unrolled methods need ``gd``. On
            composite tasks (tag ``"prox"``): ``ista``, ``fista`` or ``cd`` (``inner_steps`` CD sweeps);
            the unrolled ``prox_forward`` / ``prox_reverse`` differentiate through ``ista`` (both) or ``cd``
            (forward). Smooth-only solvers and methods are refused on ``"non-smooth"`` tasks.
        inner_steps: T, gradient steps (epochs for ``adam_per_example``) per outer step.
        inner_lr: inner step size; ``None`` for ``gd`` means ``1/L`` by power iteration at
            every outer step (its HVPs are counted).
        warm_start: start each inner solve from the previous one (optimiser moments too; ``inner = "exact"``:
            :meth:`Task.solve_from` the previous solution), and the adjoint solve of a method with
            ``warm_adjoint`` (``cg``) from the previous step's adjoint. Either start changes the work only.
        tol_schedule: ``"none"`` (default), or HOAG's inexact solves (Pedregosa 2016): at outer step ``k`` the
            inner solve stops at ``||grad_w h|| <= eps_k ||grad_w h(0)||`` (:meth:`Task.solve_to`) and the method
            at ``tol = eps_k``, with ``eps_k = max(tol_min, s(k))`` and ``s(k)`` = ``tol_start / k^2``
            (``"quadratic"``), ``tol_start / k^3`` (``"cubic"``) or ``tol_start 0.9^(k-1)`` (``"exponential"``).
            Needs ``inner = "exact"`` and a method with a ``tol`` option (``cg``), which ``method_opts`` then
            leaves unset. The row's ``hypergrad_error_bound`` is NaN while ``eps_k`` is above the inner
            solve's reference accuracy (the method's bound covers its linear solve only); the recorded error
            against the reference is the whole error. With ``outer = "lbfgs"`` the line search sees ``F`` at
            the inexact ``w``. Tasks whose inner solve is a factorisation (dense routes) solve exactly anyway.
        tol_start, tol_min: ``eps_1`` (default 0.1, HOAG's) and the floor (default 1e-10).
        outer: ``sgd``, ``adam`` or ``rmsprop`` on theta (``outer_lr``, ``outer_momentum``), or
            ``lbfgs``: scipy's L-BFGS-B with its default settings, bounds handled by L-BFGS-B, one
            row per function evaluation, restarted from the incumbent while that helps (module
            docstring). It takes no ``outer_lr`` (line search) and no ``outer_momentum``.
    """

    name = "gradient"
    tags = frozenset({"gradient-based"})
    options = GRADIENT_OPTIONS

    def __init__(self, *, method: str = "cg", method_opts: dict[str, Any] | None = None, inner: str = "gd",
                 inner_steps: int = 100, inner_lr: float | None = None, warm_start: bool = True,
                 outer: str = "adam", outer_lr: float = DEFAULT_OUTER_LR, outer_momentum: float = 0.0,
                 tol_schedule: str = "none", tol_start: float = 0.1, tol_min: float = 1e-10) -> None:
        if method_opts is not None and not isinstance(method_opts, dict):
            self._fail("method_opts", "a table of options (e.g. { tol = 1e-8 })", method_opts)
        super().__init__(method=method, method_opts=dict(method_opts or {}), inner=inner, inner_steps=inner_steps,
                         inner_lr=inner_lr, warm_start=warm_start, outer=outer, outer_lr=outer_lr,
                         outer_momentum=outer_momentum, tol_schedule=tol_schedule, tol_start=tol_start,
                         tol_min=tol_min)  # checks GRADIENT_OPTIONS
        self.method = get_method(method)
        self.method_opts = dict(method_opts or {})
        if outer == "lbfgs":
            if outer_lr != DEFAULT_OUTER_LR:
                self._fail("outer_lr", f"left at its default ({DEFAULT_OUTER_LR}) with outer='lbfgs' (L-BFGS-B "
                           "chooses its steps by line search)", outer_lr)
            if outer_momentum != 0:
                self._fail("outer_momentum", "0 with outer='lbfgs' (L-BFGS-B has no momentum)", outer_momentum)
        prox_unrolled = self.method.info.kind == "unrolled" and "prox" in self.method.info.required_tags(
            self.method_opts)
        if prox_unrolled:
            from ..hypergrad._nonsmooth import UNROLLED_SOLVERS
            from .inner import PROX_SOLVERS

            allowed = UNROLLED_SOLVERS.get(method, PROX_SOLVERS)
            if inner not in allowed:
                self._fail("inner", f"one of {list(allowed)} for the unrolled method {method!r} (it differentiates "
                           "through those iterations)", inner)
        elif self.method.info.kind == "unrolled":
            if inner != "gd":
                self._fail("inner", f"'gd' for the unrolled method {method!r} (it differentiates through "
                           "gradient-descent steps)", inner)
            for key in ("steps", "lr"):
                if key in self.method_opts:
                    self._fail("method_opts", f"free of {key!r} (set by inner_steps / inner_lr)", self.method_opts)
        accepted = list(self.method.info.options)  # the method's declared schema: what a user may set
        unknown = sorted(set(self.method_opts) - set(accepted))
        if unknown:
            self._fail("method_opts", f"a table of options of {method!r} ({accepted or 'none'})", self.method_opts)
        try:  # the same schema the method checks on every call
            check_options(f"method {method!r}", self.method.info.options, self.method_opts)
        except OptionError as exc:
            raise TunerParamError(f"tuner {self.name!r}: parameter `method_opts`: {exc}") from None
        if tol_schedule != "none":
            if inner != "exact":
                self._fail("inner", f"'exact' with tol_schedule={tol_schedule!r} (the schedule sets the tolerance "
                           "of the inner solve)", inner)
            if "tol" not in self.method.info.options:
                self._fail("method", f"a method with a `tol` option (e.g. 'cg') with tol_schedule={tol_schedule!r}",
                           method)
            if "tol" in self.method_opts:
                self._fail("method_opts", f"free of 'tol' with tol_schedule={tol_schedule!r} (the schedule sets it)",
                           self.method_opts)
            if tol_min > tol_start:
                self._fail("tol_min", f"at most tol_start ({tol_start:g})", tol_min)
        self.tol_schedule = tol_schedule
        self.tol_start = tol_start
        self.tol_min = tol_min
        self._k = 0  # outer steps taken (hypergradients computed): the schedule's k
        self.inner = inner
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.warm_start = warm_start
        self.outer = outer
        self.outer_lr = outer_lr
        self.outer_momentum = outer_momentum

    @classmethod
    def required_tags(cls, params: Mapping[str, Any]) -> frozenset[str]:
        """The inner solver's needs (``adam_per_example``: ``"per-example"``) and the method's with its
        options (``cg`` with ``precond = "jacobi"``: ``"hessian-diagonal"``)."""
        return _gradient_requirements(params.get("inner", "gd"), params.get("method", "cg"),
                                      params.get("method_opts") or {})

    @classmethod
    def dense_needs(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The method's dense matrix, where it declares one (``exact``: the p x p Hessian; ``forward``:
        a p x m tangent)."""
        return _method_dense(params.get("method", "cg"))

    @classmethod
    def refused_tags(cls, params: Mapping[str, Any]) -> dict[str, str]:
        """Task tags this tuner cannot run on, each with the reason: ``"non-smooth"`` when the inner solver
        or the method assumes a smooth inner objective (suite validation refuses the pair in one line)."""
        return _refusals(params.get("inner", "gd"), params.get("method", "cg"), params.get("method_opts") or {})

    # ------------------------------------------------------------------ steps
    def _lr(self, task, w: torch.Tensor, theta: torch.Tensor, recorder) -> float | None:
        if self.inner_lr is not None or self.inner not in ("gd",):
            return self.inner_lr
        lin = task.linearize(w, theta)
        lr = power_step(lin, w.shape[0], iters=20)
        recorder.add_cost(hvps=lin.n_hvp)
        return lr

    def _hypergradient(self, task, state: InnerState, theta: torch.Tensor, recorder):
        w_start = state.w if self.warm_start else task.init_params()
        if not self.warm_start:
            state = InnerState.fresh(w_start)
        lr = self._lr(task, w_start, theta, recorder)
        if self.method.info.kind == "unrolled":
            extra = {"solver": self.inner} if self.inner in ("ista", "fista", "cd") else {}
            hg = self.method(task, w_start, theta, steps=self.inner_steps, lr=lr, **extra, **self.method_opts)
            state.w = hg.w
            recorder.add_cost(inner_steps=self.inner_steps)
        else:
            eps = None
            if self.tol_schedule != "none":
                self._k += 1
                eps = scheduled_tolerance(self.tol_schedule, self.tol_start, self.tol_min, self._k)
            n_grad = run_inner(task, theta, state, solver=self.inner, steps=self.inner_steps,
                               lr=self.inner_lr if self.inner != "gd" else lr, tol=eps)
            recorder.add_cost(inner_steps=self.inner_steps if self.inner != "exact" else 0, grad_evals=n_grad,
                              inner_solves=1 if self.inner == "exact" else 0)
            opts = dict(self.method_opts)
            if eps is not None:
                opts["tol"] = eps
            if self.warm_start and self.method.info.warm_adjoint and state.q is not None:
                opts["x0"] = state.q  # the previous step's adjoint: less work, the same stopping rule
            if self.method.method_name in ("neumann", "fixed_point") and "alpha" not in opts and self.inner == "gd":
                opts["alpha"] = lr  # the inner step size is the natural Neumann step (Lorraine et al. 2020)
            hg = self.method(task, state.w, theta, **opts)
            state.q = hg.adjoint
            if eps is not None:
                hg.stats["inner_tol"] = eps
                if eps > INEXACT_ABOVE and "error_bound" in hg.stats:
                    # the method's bound is of its linear solve at w; w itself is off by up to eps here
                    hg.stats["linear_error_bound"] = hg.stats.pop("error_bound")
        recorder.add_cost(hvps=hg.stats.get("hvp", 0), grad_evals=hg.stats.get("grad_evals", 0))
        return hg, state

    def run(self, task, recorder, *, seed: int = 0) -> None:
        space = task.space
        theta = space.init_theta(dtype=task.dtype, device=task.device)
        state = InnerState.fresh(task.init_params())
        self._k = 0
        if self.outer == "lbfgs":
            self._run_lbfgs(task, recorder, theta, state)
            return
        theta.requires_grad_(True)
        lo, hi = space.theta_bounds(dtype=theta.dtype, device=theta.device)  # space.project's bounds, built once
        opt = _outer_optimizer(self.outer, theta, self.outer_lr, self.outer_momentum)
        while not recorder.should_stop():
            hg, state = self._hypergradient(task, state, theta.detach(), recorder)
            if recorder.record(w=hg.w, theta=theta, hypergrad=hg.grad, hypergrad_stats=hg.stats) != "ok":
                return
            opt.zero_grad(set_to_none=True)
            theta.grad = hg.grad.to(theta.dtype)
            opt.step()
            with torch.no_grad():
                theta.copy_(torch.minimum(torch.maximum(theta, lo), hi))

    def _run_lbfgs(self, task, recorder, theta0: torch.Tensor, state: InnerState) -> None:
        """scipy's L-BFGS-B on theta, restarted from the incumbent while a run lowers it."""
        from scipy.optimize import minimize  # scipy's import is ~0.1 s: only lbfgs runs pay it (the fork server
        # of `hpo-bench run` imports it beforehand)

        lo_t, hi_t = task.space.theta_bounds(dtype=task.dtype, device=task.device)
        bounds = list(zip(lo_t.tolist(), hi_t.tolist()))
        dtype, device = task.dtype, task.device
        cpu64 = dtype == torch.float64 and torch.device(device).type == "cpu"
        box = {"state": state, "best_f": math.inf, "best_x": np.clip(theta0.double().cpu().numpy(), lo_t.tolist(),
                                                                      hi_t.tolist())}

        def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
            # L-BFGS-B keeps x inside the bounds; clamping covers rounding to a float32 task
            theta = torch.from_numpy(x) if cpu64 else torch.as_tensor(x, dtype=dtype, device=device)
            theta = torch.minimum(torch.maximum(theta, lo_t), hi_t)
            hg, box["state"] = self._hypergradient(task, box["state"], theta, recorder)
            with torch.no_grad():
                f = float(task.outer_loss(hg.w))
            if recorder.record(w=hg.w, theta=theta, hypergrad=hg.grad, val_loss=f,
                               hypergrad_stats=hg.stats) != "ok" or recorder.should_stop():
                raise _StopLBFGS
            if f < box["best_f"]:
                box["best_f"], box["best_x"] = f, x.copy()
            g = hg.grad.detach()
            return f, (g.numpy() if cpu64 else g.to(torch.float64).cpu().numpy())

        while not recorder.should_stop():
            before = box["best_f"]
            try:
                # scipy's BLAS pool gets torch's thread budget: spinning idle threads cost ~3 ms per iteration
                with blas_threads(torch.get_num_threads()):
                    res = minimize(fg, box["best_x"], jac=True, method="L-BFGS-B", bounds=bounds,
                                   options=LBFGS_OPTIONS)
            except _StopLBFGS:
                return
            if not box["best_f"] < before:
                recorder.request_stop(f"lbfgs converged: {res.message}")
                return


@register_tuner
class SeedNotebookTuner(GradientTuner):
    """The seed notebook's algorithm (In[101]), reproduced faithfully as a preset.

    Per outer step: ``epochs`` passes of per-example Adam (lr 1e-3, state kept across
    outer steps: warm start), then the notebook's hypergradient ``-(d^2 L / dλ dw) grad_w val``,
    i.e. implicit differentiation with ``H^{-1} ~ I`` (method ``identity``), then one
    ``torch.optim.RMSprop`` step (defaults: lr 1e-2) on theta. On ``seed_toy`` with
    ``transform = "none"`` (its default) theta is raw λ, as in the notebook.
    ``method`` may be swapped (e.g. ``exact``) to see what the same loop does with a
    correct hypergradient.
    """

    name = "seed_notebook"
    #: small instance for the conformance kit (hpo_bench.testing): 1000 epochs per outer step is slow
    check_params = {"epochs": 2}

    options = {"epochs": Option(int, low=1), "inner_lr": Option(float, low=0, low_open=True),
               "outer_lr": Option(float, low=0, low_open=True), "method": Option(str), "method_opts": Option(dict)}

    def __init__(self, *, epochs: int = 1000, inner_lr: float = 1e-3, outer_lr: float = 1e-2,
                 method: str = "identity", method_opts: dict[str, Any] | None = None) -> None:
        # its own names first (`epochs`, not the gradient tuner's `inner_steps`), then the gradient tuner's rules
        check_options(f"tuner {self.name!r}", self.options, {"epochs": epochs, "inner_lr": inner_lr,
                      "outer_lr": outer_lr, "method": method}, word="parameter", error=TunerParamError)
        super().__init__(method=method, method_opts=method_opts, inner="adam_per_example", inner_steps=epochs,
                         inner_lr=inner_lr, warm_start=True, outer="rmsprop", outer_lr=outer_lr)
        self.params = {"epochs": epochs, "inner_lr": inner_lr, "outer_lr": outer_lr, "method": method,
                       "method_opts": dict(method_opts or {})}

    @classmethod
    def dense_needs(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _method_dense(params.get("method", "identity"))

    @classmethod
    def required_tags(cls, params: Mapping[str, Any]) -> frozenset[str]:
        """Per-example Adam (``"per-example"``) and the method's needs."""
        return _gradient_requirements("adam_per_example", params.get("method", "identity"),
                                      params.get("method_opts") or {})
