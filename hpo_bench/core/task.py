"""The task contract: a bilevel problem with a ground-truth hypergradient.

A task is the bilevel problem::

    min_theta  F(theta) = outer_loss(w*(theta))
    s.t.       w*(theta) = argmin_w inner_loss(w, theta)

with parameters ``w`` a flat 1-D tensor and hyperparameters ``theta`` a flat 1-D tensor
in the *transformed* coordinates of :attr:`Task.space` (see :mod:`hpo_bench.core.space`).

Lifecycle: a task is built from keyword-only parameters and a ``seed``; the data are
generated or loaded deterministically at construction and never change afterwards.
Every method is then a pure function of its arguments (no ``.grad`` side effects).

Ground truth. ``reference_hypergradient(theta)`` is dF/dtheta at the *exact* inner
solution: a closed form where one exists (tag ``"closed-form"``), otherwise implicit
differentiation with the dense Hessian at a tight solve (:func:`implicit_reference`).
By the implicit function theorem, at a stationary point (``grad_w inner = 0``)::

    dF/dtheta = - (d^2 inner / dtheta dw) H^{-1} grad_w outer,    H = d^2 inner / dw^2
"""

from __future__ import annotations

import functools
import json
import math
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from .options import is_type, type_rule
from .space import Space

__all__ = ["Task", "Linearization", "Reference", "TaskParamError", "implicit_reference", "require",
           "resolve_dtype"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "double": torch.float64, "float": torch.float32}


class TaskParamError(ValueError):
    """A task parameter breaks its rule."""


def require(cond: bool, task: str, key: str, rule: str, value: Any) -> None:
    """Raise :class:`TaskParamError` naming the task, the parameter, the rule and the value."""
    if not cond:
        raise TaskParamError(f"task {task!r}: parameter `{key}` must be {rule}, but got {value!r}")


_NONE = type(None)


def _describe(annot: Any) -> str | None:
    """Words for an annotation (``"an integer"``, ``"a number or omitted"``), ``None`` where it is not checked."""
    origin = typing.get_origin(annot)
    if origin in (typing.Union, types.UnionType):
        words = []
        for arm in typing.get_args(annot):
            w = "omitted" if arm is _NONE else _describe(arm)
            if w is None:
                return None
            words.append(w)
        return " or ".join(words)
    base = origin or annot
    if base in (int, float, bool, str):
        return type_rule(base)
    if base in (list, tuple):
        return "a list"
    if base is dict:
        return "a table"
    return None  # other classes (a torch Module, a dtype), Any, Callable...: the task's own checks decide


def _matches(value: Any, annot: Any) -> bool:
    """Whether ``value`` fits the annotation (strict: a bool is not an int, a str is not a number)."""
    origin = typing.get_origin(annot)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in typing.get_args(annot))
    if annot is _NONE:
        return value is None
    base = origin or annot
    if base in (int, float, bool, str):
        return is_type(value, base)
    if base in (list, tuple):  # TOML has arrays only: a tuple parameter takes a list
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(annot)
        if base is list and len(args) == 1:
            return all(_matches(v, args[0]) for v in value)
        if base is tuple and args and Ellipsis not in args:
            return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
        return True
    if base is dict:
        return isinstance(value, dict)
    return True


def _type_checked(init: Callable, owner: type) -> Callable:
    """Wrap a task's ``__init__`` so that its annotated keywords are type-checked before it runs.

    A task's own checks compare values (``n >= 1``); given ``n = "ten"`` such a comparison raises
    ``'>=' not supported between instances of 'str' and 'int'`` and names no parameter. The
    annotations (``n: int``, ``noise: float``, ``n_val: int | None``) say the type, so the
    wrapper raises :class:`TaskParamError` naming the task, the parameter, the expected type
    and the value first. Only the types a suite file can hold are checked (``int``, ``float``,
    ``bool``, ``str``, lists, tables, ``None``, and unions of them); unannotated keywords and other
    annotations (a torch module, a callable) are left to the task's own checks.
    """
    hints: dict[str, Any] | None = None

    @functools.wraps(init)
    def checked(self, *args: Any, **kwargs: Any) -> None:
        nonlocal hints
        if hints is None:
            try:
                hints = typing.get_type_hints(init)
            except Exception:  # an annotation that does not resolve: check nothing rather than fail
                hints = {}
            hints.pop("return", None)
        for key, value in kwargs.items():
            annot = hints.get(key)
            if annot is None or _matches(value, annot):
                continue
            words = _describe(annot)
            if words is None:
                continue
            shown = getattr(annot, "__name__", None) if typing.get_origin(annot) is None else None
            kind = shown or str(annot).replace("typing.", "")
            raise TaskParamError(f"task {getattr(self, 'name', '') or owner.__name__!r}: parameter `{key}` must be "
                                 f"{words} ({kind}), but got {value!r}")
        init(self, *args, **kwargs)

    checked._type_checked = True  # type: ignore[attr-defined]
    return checked


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"`dtype` must be one of {sorted(_DTYPES)}, but got {dtype!r}") from None


@dataclass(frozen=True)
class Reference:
    """One ground-truth evaluation at ``theta``: what :meth:`Task.reference` returns.

    Attributes:
        value: ``F(theta) = outer_loss(w*(theta))``.
        grad: ``dF/dtheta`` (shape of ``theta``).
        w: the inner solution the reference used (``w*(theta)`` to the solver's accuracy).
        bound: a computed upper bound on ``||grad - true dF/dtheta||_2`` (in exact arithmetic, with the
            stated rounding margins); ``math.nan`` where none is computed (a dense factorisation at a
            tight solve: accurate to rounding, but no bound is derived).
        route: how it was computed: ``"dense"`` (a factorisation), ``"cg"`` (certified matrix-free
            conjugate gradients), ``"newton-cg"`` (matrix-free Newton inner solve plus CG), or
            ``"task"`` (the default: :meth:`Task.solve` plus :meth:`Task.reference_hypergradient`).
        warm: opaque state a next call may start from (e.g. ``(w, q)``), passed back as
            ``reference(theta, warm=...)``; ``None`` where unused.
    """

    value: float
    grad: torch.Tensor
    w: torch.Tensor
    bound: float
    route: str
    warm: Any = None


class Linearization:
    """Matrix-free second-order information of ``inner_loss`` at one point ``(w, theta)``.

    Built once per hypergradient; every call reuses one autograd graph of
    ``grad_w inner(w, theta)`` (double backward), so one HVP costs one backward pass.
    Tasks with structure (e.g. a cached Gram matrix) may subclass it.

    Attributes:
        grad: ``grad_w inner`` at the point (detached), shape ``(p,)``.
        n_hvp: Hessian-vector products computed so far.
        n_cross: cross-derivative products computed so far.
    """

    def __init__(self, task: Task, w: torch.Tensor, theta: torch.Tensor) -> None:
        self.task = task
        self._w = w.detach().requires_grad_(True)
        self._theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = task.inner_loss(self._w, self._theta)
            (g,) = torch.autograd.grad(loss, self._w, create_graph=True)
        self._g = g
        self.grad = g.detach()
        self.n_hvp = 0
        self.n_cross = 0

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` with ``H = d^2 inner / dw^2``."""
        self.n_hvp += 1
        (hv,) = torch.autograd.grad(self._g, self._w, v, retain_graph=True)
        return hv

    def diagonal(self) -> torch.Tensor | None:
        """``diag(H)`` where the task has it at no more than a few HVPs' cost, else ``None``.

        Used as a preconditioner (CG's ``precond``); generic tasks have none (it would cost p HVPs).
        """
        return None

    def dense(self) -> torch.Tensor | None:
        """``H`` itself where the task already holds it (or builds it for about one HVP's cost), else ``None``.

        Iterative solvers use it to skip per-product overhead; generic tasks have none.
        """
        return None

    def strong_convexity_bound(self) -> float:
        """A certified lower bound ``mu > 0`` on ``lambda_min(H)``, or NaN where the task has none.

        With ``H >= mu I`` and any ``q``, the residual ``r = H q - v`` bounds the solve error:
        ``||q - H^{-1} v|| <= ||r|| / mu``; exact methods stop on that bound
        (:func:`hpo_bench.hypergrad.cg`). Tasks override it where a bound is cheap (from a
        penalty, a closed form); "certified" means it holds in exact arithmetic up to the stated
        rounding margin, never that it is an estimate. Generic tasks have none (NaN).
        """
        return math.nan

    def cross_norm_bound(self) -> float:
        """An upper bound on ``||J||_2``, ``J = d^2 inner / dw dtheta`` (shape ``(p, m)``).

        Default: the Frobenius norm of :meth:`cross_jacobian` (``||J||_2 <= ||J||_F``; p batched
        products). Tasks with structure override it (e.g. a diagonal ``J``: its largest entry).
        """
        return float(torch.linalg.matrix_norm(self.cross_jacobian()))

    def cross_vjp(self, v: torch.Tensor) -> torch.Tensor:
        """``(d^2 inner / dtheta dw) v``: how ``grad_w inner`` moves with ``theta``, applied to ``v``."""
        self.n_cross += 1
        (cv,) = torch.autograd.grad(self._g, self._theta, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(self._theta) if cv is None else cv

    def hvp_batch(self, v: torch.Tensor) -> torch.Tensor:
        """``H V`` for the columns of ``V`` (shape ``(p, k)``), batched."""
        self.n_hvp += v.shape[1]
        (hv,) = torch.autograd.grad(self._g, self._w, v.T.contiguous(), retain_graph=True, is_grads_batched=True)
        return hv.T

    def cross_jacobian(self) -> torch.Tensor:
        """``d(grad_w inner) / dtheta``, shape ``(p, m)`` (p batched vector-Jacobian products)."""
        p = self._w.shape[0]
        eye = torch.eye(p, dtype=self._w.dtype, device=self._w.device)
        (jac,) = torch.autograd.grad(self._g, self._theta, eye, retain_graph=True, is_grads_batched=True,
                                     allow_unused=True)
        self.n_cross += p
        return torch.zeros(p, self._theta.shape[0], dtype=self._w.dtype, device=self._w.device) if jac is None else jac

    def hessian(self) -> torch.Tensor:
        """Dense ``H`` (p HVPs' worth of work), for small problems and references."""
        p = self._w.shape[0]
        eye = torch.eye(p, dtype=self._w.dtype, device=self._w.device)
        rows = torch.autograd.grad(self._g, self._w, eye, retain_graph=True, is_grads_batched=True)[0]
        self.n_hvp += p
        return 0.5 * (rows + rows.T)


class Task(ABC):
    """Base class of every task. Subclasses set :attr:`name` and implement the abstract methods.

    Constructors take keyword-only parameters only and must store them in
    ``self.params`` (JSON-serialisable) so records can name the exact instance.

    Class attributes:
        name: registry name.
        tags: declared capabilities, e.g. ``{"closed-form", "quadratic", "per-example"}``.
        check_params: small parameters used by ``hpo-bench check`` and the test kit.

    Ground truth comes in two forms: :meth:`response` (``F``) and :meth:`reference_hypergradient`
    (``dF/dtheta``) separately, or both at once from :meth:`reference`, which returns a
    :class:`Reference` (value, gradient, ``w*``, a computed error bound, the route taken and a
    warm-start state for the next call). Override :meth:`reference` where value and gradient can
    share one factorisation or one matrix-free solve.
    """

    name: ClassVar[str] = ""
    tags: ClassVar[frozenset[str]] = frozenset()
    check_params: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        """Type-check the annotated keywords of every subclass's ``__init__`` before it runs (:func:`_type_checked`)."""
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_type_checked", False):
            cls.__init__ = _type_checked(init, cls)

    def __init__(self, *, seed: int = 0, dtype: str | torch.dtype = "float64", device: str = "cpu") -> None:
        self.seed = int(seed)
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.params: dict[str, Any] = {}

    # -------------------------------------------------------------- contract
    @property
    @abstractmethod
    def space(self) -> Space:
        """The hyperparameter space."""

    @property
    @abstractmethod
    def n_params(self) -> int:
        """Length of the flat parameter vector ``w``."""

    @abstractmethod
    def init_params(self) -> torch.Tensor:
        """Deterministic starting point of inner solvers, shape ``(n_params,)``."""

    @abstractmethod
    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Training objective (data term + penalty), a scalar differentiable in ``w`` and ``theta``."""

    @abstractmethod
    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        """Validation loss, a scalar differentiable in ``w``."""

    @abstractmethod
    def test_loss(self, w: torch.Tensor) -> torch.Tensor:
        """Held-out test loss (never seen by tuners)."""

    def extra_metrics(self, w: torch.Tensor, theta: torch.Tensor) -> dict[str, float]:
        """Task-specific measurements of a recorded point, e.g. ``{"test_accuracy": 0.93}``.

        The recorder calls it with the clock paused, at every row with a finite ``w``, and stores
        each entry as a column of that name (NaN on rows without it); ``hpo-bench plot --metric
        NAME`` and the report read them. Names must not be record columns (:data:`hpo_bench.core.records.COLUMNS`).
        Default: none.
        """
        return {}

    @abstractmethod
    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """Reference inner solution ``w*(theta)`` (closed form, or converged to ~1e-12)."""

    def solve_from(self, theta: torch.Tensor, w0: torch.Tensor | None) -> torch.Tensor:
        """:meth:`solve`'s ``w*(theta)``, with the iterative solve started from ``w0`` where the task has one.

        The same accuracy as :meth:`solve` (a warm start changes the work, never the stopping rule);
        ``w0 = None`` starts cold. The gradient tuner's ``inner = "exact"`` calls it with the previous outer
        step's solution. Default: :meth:`solve` (``w0`` unused), right for closed forms and factorisations.
        """
        return self.solve(theta)

    def solve_to(self, theta: torch.Tensor, w0: torch.Tensor | None, tol: float) -> torch.Tensor:
        """An inner solution to relative tolerance ``tol``: ``||grad_w h(w, theta)|| <= tol ||grad_w h(0, theta)||``.

        What an inexact-solve schedule (the gradient tuner's ``tol_schedule``, HOAG) asks for: a loose
        ``tol`` costs less than :meth:`solve`. Started from ``w0`` where the task has an iterative solve
        (``None``: cold). An inexact solution is never cached as the reference (:meth:`reference` still
        solves to its own accuracy at the same ``theta``). Default: :meth:`solve_from`, the reference solve,
        which meets any ``tol`` (no saving); tasks with an iterative route override it.
        """
        return self.solve_from(theta, w0)

    def reference_hypergradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Ground-truth ``dF/dtheta``; default: dense implicit differentiation at :meth:`solve`."""
        return implicit_reference(self, theta)

    def reference(self, theta: torch.Tensor, warm: Any = None) -> Reference:
        """``F(theta)``, ``dF/dtheta`` and ``w*(theta)`` in one call, with an error bound (:class:`Reference`).

        Callers that need both the value and the gradient (the oracle, the recorder) use this:
        tasks override it so that both share ONE factorisation or ONE matrix-free solve, and so
        that a solve can start from ``warm`` (the ``warm`` of a previous call's result; any
        other value, or ``None``, starts cold; a warm start changes the work, never the
        accuracy promised). Default: one :meth:`solve`, :meth:`outer_loss` at it and
        :meth:`reference_hypergradient`; ``bound`` NaN, ``route`` ``"task"``, ``warm`` ``None``.
        """
        theta = theta.detach()
        w = self.solve(theta).detach()
        grad = self.reference_hypergradient(theta).detach()
        return Reference(value=float(self.outer_loss(w)), grad=grad, w=w, bound=math.nan, route="task")

    # -------------------------------------------------------------- optional
    @property
    def n_train(self) -> int:
        raise NotImplementedError(f"task {self.name!r} has no per-example training losses")

    def inner_loss_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Training objective on the examples ``idx`` (data term averaged over them + penalty).

        Averaging over all examples gives :meth:`inner_loss`. Tasks tagged ``"per-example"``
        implement it; stochastic inner solvers need it.
        """
        raise NotImplementedError(f"task {self.name!r} has no per-example training losses")

    def example_grad_fn(self, theta: torch.Tensor):
        """``f(w, i) -> (loss_i, grad_w loss_i)`` for one training example at fixed ``theta``.

        Used by per-example stochastic inner solvers; the default differentiates
        :meth:`inner_loss_batch` with autograd. Tasks may return a faster closed form.
        """
        theta = theta.detach()
        idx = [torch.tensor([i], device=self.device) for i in range(self.n_train)]

        def f(w: torch.Tensor, i: int):
            with torch.enable_grad():
                w_ = w.detach().requires_grad_(True)
                loss = self.inner_loss_batch(w_, theta, idx[i])
                (g,) = torch.autograd.grad(loss, w_)
            return loss.detach(), g

        return f

    # ------------------------------------------------- minibatch oracles (tag "minibatch")
    # Stochastic bilevel solvers (hpo_bench.stochastic) sample both levels. A task tagged "minibatch"
    # implements ``n_val`` and ``outer_loss_batch`` beside ``n_train`` and ``inner_loss_batch``; every
    # derivative below then has an autograd default, and tasks with closed forms override them (above
    # all the fused ``inner_oracle_batch``: at batch 64, per-operation overhead, not flops, is the cost).
    # ``idx`` is a 1-D long tensor of example indices (repeats allowed); every batch quantity averages
    # over it, so its expectation under uniform sampling is the full-batch quantity.
    @property
    def n_val(self) -> int:
        """Number of validation examples (tasks tagged ``"minibatch"``)."""
        raise NotImplementedError(f"task {self.name!r} has no per-example validation losses")

    def outer_loss_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Validation loss averaged over the validation examples ``idx``; over all of them it is :meth:`outer_loss`."""
        raise NotImplementedError(f"task {self.name!r} has no per-example validation losses")

    def _batch_grads(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor, create_graph: bool = False):
        w_ = w.detach().requires_grad_(True)
        th_ = theta.detach().requires_grad_(True)
        loss = self.inner_loss_batch(w_, th_, idx)
        (g,) = torch.autograd.grad(loss, w_, create_graph=create_graph)
        return w_, th_, g

    def inner_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``grad_w`` of :meth:`inner_loss_batch` (no graph kept)."""
        with torch.enable_grad():
            return self._batch_grads(w, theta, idx)[2]

    def outer_grad_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``grad_w`` of :meth:`outer_loss_batch` (no graph kept)."""
        with torch.enable_grad():
            w_ = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.outer_loss_batch(w_, idx), w_)
        return g

    def inner_theta_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``grad_theta`` of :meth:`inner_loss_batch` (first-order solvers, e.g. F2SA)."""
        with torch.enable_grad():
            th_ = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.inner_loss_batch(w.detach(), th_, idx), th_, allow_unused=True)
        return torch.zeros_like(theta) if g is None else g

    def inner_hvp_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                        v: torch.Tensor) -> torch.Tensor:
        """``H_B v`` with ``H_B = d^2 inner_B / dw^2`` at ``(w, theta)``."""
        return self.inner_oracle_batch(w, theta, idx, v)[1]

    def inner_cross_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                          v: torch.Tensor) -> torch.Tensor:
        """``J_B v = (d^2 inner_B / dtheta dw) v`` at ``(w, theta)`` (shape of ``theta``)."""
        return self.inner_oracle_batch(w, theta, idx, v)[2]

    def inner_oracle_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                           v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fused oracle ``(grad_w inner_B, H_B v, J_B v)`` at one batch, in one call.

        Default: one autograd graph of ``grad_w inner_B`` and one backward pass of ``<grad, v>`` to
        ``(w, theta)``. Tasks with closed forms override it (tag ``"fused-oracle"``).
        """
        with torch.enable_grad():
            w_, th_, g = self._batch_grads(w, theta, idx, create_graph=True)
            hv, cv = torch.autograd.grad(g, (w_, th_), v.detach(), allow_unused=True)
        hv = torch.zeros_like(w) if hv is None else hv
        return g.detach(), hv, torch.zeros_like(theta) if cv is None else cv

    def reference_adjoint(self, theta: torch.Tensor) -> torch.Tensor:
        """``H^{-1} grad_w outer`` at ``w*(theta)``: the vector ``v`` stochastic solvers estimate.

        Default: the dense Hessian at :meth:`solve`, Cholesky (LU where it is not positive definite).
        """
        w = self.solve(theta).detach()
        h = self.linearize(w, theta.detach()).hessian()
        g = self.outer_grad(w)
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            return torch.cholesky_solve(g.unsqueeze(1), chol).squeeze(1)
        return torch.linalg.solve(h, g)

    def linearize(self, w: torch.Tensor, theta: torch.Tensor) -> Linearization:
        """Second-order oracle at ``(w, theta)``; override to exploit structure."""
        return Linearization(self, w, theta)

    def inner_grad(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``grad_w inner(w, theta)`` (no graph kept)."""
        with torch.enable_grad():
            w_ = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.inner_loss(w_, theta.detach()), w_)
        return g

    def outer_grad(self, w: torch.Tensor) -> torch.Tensor:
        """``grad_w outer(w)`` (no graph kept)."""
        with torch.enable_grad():
            w_ = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.outer_loss(w_), w_)
        return g

    def response(self, theta: torch.Tensor) -> torch.Tensor:
        """``F(theta) = outer_loss(solve(theta))``: the function tuners minimise."""
        return self.outer_loss(self.solve(theta))

    def tensor(self, data, **kw) -> torch.Tensor:
        return torch.as_tensor(data, dtype=self.dtype, device=self.device, **kw)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "seed": self.seed,
                "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device),
                "n_params": self.n_params, "n_hyper": self.space.dim, "tags": sorted(self.tags)}

    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, default=str)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args}, seed={self.seed})"


def implicit_reference(task: Task, theta: torch.Tensor) -> torch.Tensor:
    """Implicit differentiation with the dense Hessian at the task's reference solve.

    Exact up to the accuracy of :meth:`Task.solve`; the fallback reference for tasks with
    no closed form. Solves with Cholesky where ``H`` is positive definite, else LU.
    """
    w = task.solve(theta).detach()
    lin = task.linearize(w, theta)
    h = lin.hessian()
    v = task.outer_grad(w)
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) == 0:
        q = torch.cholesky_solve(v.unsqueeze(1), chol).squeeze(1)
    else:
        q = torch.linalg.solve(h, v)
    return -lin.cross_vjp(q)
