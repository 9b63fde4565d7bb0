"""Conformance checks for tasks.

Each ``check_task_*(obj)`` builds the task from ``obj`` (a Task subclass with its small
``check_params``, ``(cls, params)``, or a factory; see :func:`task_factory`), tests one rule
of the task contract (:mod:`hpo_bench.task`) and raises :class:`ConformanceError` naming
the task, the check and the broken rule. They never modify the task's class.
"""

from __future__ import annotations

import json
import math

import torch

from ..check import fd_directions, finite_difference
from ..records import rel_error
from ..registry import METHODS
from ..task import Linearization, Task
from ._common import fail, label_of, task_factory, tolerance

__all__ = [
    "check_task_declaration", "check_task_deterministic", "check_task_finite_losses", "check_task_space",
    "check_task_reference_fd", "check_task_inner_stationary", "check_task_linearization",
    "check_task_exact_methods", "check_task_per_example", "check_task_float32", "check_task_capabilities",
    "task_points", "TASK_CHECKS",
]


def _build(obj, seed: int = 0, dtype: str = "float64") -> Task:
    return task_factory(obj)(seed=seed, dtype=dtype)


def task_points(task: Task, n: int = 2, *, scale: float = 0.5, seed: int = 0) -> list[torch.Tensor]:
    """The space's initial point and ``n - 1`` seeded perturbations ``scale * N(0, I)`` in theta, projected."""
    gen = torch.Generator().manual_seed(seed)
    base = task.space.init_theta(dtype=task.dtype, device=task.device)
    out = [base]
    for _ in range(n - 1):
        step = scale * torch.randn(base.shape[0], generator=gen, dtype=task.dtype)
        out.append(task.space.project(base + step.to(task.device)))
    return out


def _scalar_ok(x, task: Task, what: str, check: str, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 0:
        fail(what, check, f"{where} must be a 0-dim tensor, but got {type(x).__name__} "
             f"of shape {tuple(getattr(x, 'shape', ()))}")
    if x.dtype != task.dtype:
        fail(what, check, f"{where} must have the task's dtype {task.dtype}, but got {x.dtype}")
    if not bool(torch.isfinite(x)):
        fail(what, check, f"{where} must be finite, but got {float(x)}")


def check_task_declaration(obj) -> None:
    """Name, declared tags, JSON-serialisable ``params``, sizes and ``describe()``."""
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_declaration"
    if not isinstance(task.name, str) or not task.name:
        fail(what, check, "`name` must be a non-empty string")
    if not isinstance(task.tags, frozenset) or not all(isinstance(t, str) for t in task.tags):
        fail(what, check, f"`tags` must be a frozenset of strings, but got {task.tags!r}")
    if not isinstance(task.params, dict):
        fail(what, check, f"`params` must be a dict, but got {type(task.params).__name__}")
    try:
        json.dumps(task.params, sort_keys=True)
    except (TypeError, ValueError) as exc:
        fail(what, check, f"`params` must be JSON-serialisable ({exc})")
    if not isinstance(task.n_params, int) or task.n_params < 1:
        fail(what, check, f"`n_params` must be an integer >= 1, but got {task.n_params!r}")
    if task.space.dim < 1:
        fail(what, check, "the space needs at least one hyperparameter")
    desc = task.describe()
    for key in ("name", "params", "n_params", "n_hyper", "tags"):
        if key not in desc:
            fail(what, check, f"describe() lacks {key!r}")


def check_task_deterministic(obj) -> None:
    """Two builds with the same seed give identical data, starting point, losses and reference solve."""
    a, b = _build(obj, seed=3), _build(obj, seed=3)
    what, check = f"task {label_of(obj)!r}", "check_task_deterministic"
    th = a.space.init_theta(dtype=a.dtype, device=a.device)
    w0a, w0b = a.init_params(), b.init_params()
    if not torch.equal(w0a, w0b):
        fail(what, check, "init_params() differs between two builds with seed=3")
    if not torch.equal(a.init_params(), w0a):
        fail(what, check, "init_params() differs between two calls")
    for where, fa, fb in (("inner_loss(w0, theta0)", a.inner_loss(w0a, th), b.inner_loss(w0b, th)),
                          ("outer_loss(w0)", a.outer_loss(w0a), b.outer_loss(w0b)),
                          ("test_loss(w0)", a.test_loss(w0a), b.test_loss(w0b)),
                          ("response(theta0)", a.response(th), b.response(th))):
        if float(fa) != float(fb):
            fail(what, check, f"{where} differs between two builds with seed=3: {float(fa)!r} vs {float(fb)!r}")
    if a.params != b.params:
        fail(what, check, "params differ between two builds with the same arguments")


def check_task_finite_losses(obj) -> None:
    """Shapes, dtypes and finiteness of losses, gradients and the reference solution at the initial point."""
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_finite_losses"
    th = task.space.init_theta(dtype=task.dtype, device=task.device)
    w0 = task.init_params()
    if w0.shape != (task.n_params,) or w0.dtype != task.dtype:
        fail(what, check, f"init_params() must have shape ({task.n_params},) and dtype {task.dtype}, "
             f"but got {tuple(w0.shape)} {w0.dtype}")
    if w0.device.type != task.device.type:
        fail(what, check, f"init_params() must live on {task.device}, but is on {w0.device}")
    _scalar_ok(task.inner_loss(w0, th), task, what, check, "inner_loss(w0, theta0)")
    _scalar_ok(task.outer_loss(w0), task, what, check, "outer_loss(w0)")
    _scalar_ok(task.test_loss(w0), task, what, check, "test_loss(w0)")
    for where, g in (("inner_grad(w0, theta0)", task.inner_grad(w0, th)), ("outer_grad(w0)", task.outer_grad(w0))):
        if g.shape != (task.n_params,) or not bool(torch.isfinite(g).all()):
            fail(what, check, f"{where} must be finite with shape ({task.n_params},), got {tuple(g.shape)}")
    w = task.solve(th)
    if w.shape != (task.n_params,) or not bool(torch.isfinite(w).all()):
        fail(what, check, "solve(theta0) must be finite with shape (n_params,)")
    _scalar_ok(task.response(th), task, what, check, "response(theta0)")
    ref = task.reference_hypergradient(th)
    if ref.shape != (task.space.dim,) or not bool(torch.isfinite(ref).all()):
        fail(what, check, f"reference_hypergradient(theta0) must be finite with shape ({task.space.dim},)")


def check_task_space(obj) -> None:
    """Bounds are finite and ordered, the initial point is inside, ``project`` is idempotent, names match."""
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_space"
    sp = task.space
    lo, hi = sp.theta_bounds(dtype=task.dtype)
    if not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all()) or not bool((lo < hi).all()):
        fail(what, check, "theta bounds must be finite with low < high")
    th = sp.init_theta(dtype=task.dtype)
    if not sp.contains(th):
        fail(what, check, "the initial point must lie within the bounds")
    if not torch.equal(sp.project(th), th):
        fail(what, check, "project() must leave a point inside the bounds unchanged")
    far = sp.project(th + 1e6)
    if not sp.contains(far) or not torch.equal(sp.project(far), far):
        fail(what, check, "project() must map any point into the bounds and be idempotent")
    if len(sp.names) != sp.dim:
        fail(what, check, f"space.names has {len(sp.names)} entries for {sp.dim} hyperparameters")
    nat = sp.to_natural(th)
    for b, s in zip(sp.blocks, sp.slices().values()):
        v = nat[s]
        slack = 1e-9 * max(abs(b.low), abs(b.high))
        if not bool(((v >= b.low - slack) & (v <= b.high + slack)).all()):
            fail(what, check, f"natural values of block {b.name!r} at the initial point leave [{b.low}, {b.high}]")
    gen = torch.Generator().manual_seed(0)
    if not sp.contains(sp.sample(gen, dtype=task.dtype)):
        fail(what, check, "space.sample() must stay within the bounds")


def check_task_reference_fd(obj, *, n_points: int = 2, n_directions: int = 4, h: float = 1e-5,
                            scale: float = 0.3) -> None:
    """The reference hypergradient agrees with central finite differences of ``F = outer(solve(theta))``.

    At the initial point and one seeded perturbation (``scale * N(0, I)``): every coordinate when
    there are at most ``n_directions`` hyperparameters, else ``n_directions`` seeded random unit
    directions. Tolerance: ``check_tolerances["fd"]`` or 1e-6 (relative error), float64.
    """
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_reference_fd"
    tol = tolerance(task, "fd")
    gen = torch.Generator().manual_seed(1)
    for k, th in enumerate(task_points(task, n_points, scale=scale)):
        dirs = fd_directions(task, n_directions, n_directions, gen)
        ref = task.reference_hypergradient(th)
        fd = finite_difference(task, th, dirs, h)
        err = rel_error(dirs @ ref, fd)
        if not err <= tol:
            fail(what, check, f"at point {k} the reference disagrees with finite differences: rel. error "
                 f"{err:.2e} > {tol:g} (directional derivatives {(dirs @ ref).tolist()} vs {fd.tolist()})")


def check_task_inner_stationary(obj, *, n_points: int = 2) -> None:
    """``solve(theta)`` is stationary: ``||grad_w inner|| <= tol * max(1, ||grad_w inner(w0)||)``."""
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_inner_stationary"
    tol = tolerance(task, "stationary")
    w0 = task.init_params()
    for k, th in enumerate(task_points(task, n_points)):
        g = float(torch.linalg.vector_norm(task.inner_grad(task.solve(th), th)))
        scale = max(1.0, float(torch.linalg.vector_norm(task.inner_grad(w0, th))))
        if not g <= tol * scale:
            fail(what, check, f"at point {k} ||grad_w inner(solve(theta))|| = {g:.2e} > {tol:g} x {scale:.3g}")


def check_task_linearization(obj, *, n_points: int = 2, dense_max: int = 400) -> None:
    """``task.linearize`` (which may exploit structure) agrees with the generic autograd :class:`Linearization`.

    Gradient, HVPs (single and batched), cross-derivative products and the cross-Jacobian on
    seeded random vectors, and the dense Hessian when ``n_params <= dense_max``, at the
    reference solution and at ``init_params()``.
    """
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_linearization"
    tol = tolerance(task, "structure")
    gen = torch.Generator().manual_seed(2)
    p = task.n_params
    for k, th in enumerate(task_points(task, n_points)):
        for where, w in (("solve(theta)", task.solve(th)), ("init_params()", task.init_params())):
            mine, ref = task.linearize(w, th), Linearization(task, w, th)
            gscale = max(float(torch.linalg.vector_norm(ref.grad)), 1e-300)
            gerr = float(torch.linalg.vector_norm(mine.grad - ref.grad)) / gscale
            if float(torch.linalg.vector_norm(ref.grad)) > 1e-10 and not gerr <= tol:
                fail(what, check, f"point {k}, {where}: grad differs from autograd by rel. {gerr:.2e}")
            v = torch.randn(p, generator=gen, dtype=task.dtype).to(task.device)
            for name, a, b in (("hvp", mine.hvp(v), ref.hvp(v)), ("cross_vjp", mine.cross_vjp(v), ref.cross_vjp(v))):
                err = rel_error(a, b)
                if float(torch.linalg.vector_norm(b)) > 0 and not err <= tol:
                    fail(what, check, f"point {k}, {where}: {name} differs from autograd by rel. {err:.2e} > {tol:g}")
            vb = torch.randn(p, 3, generator=gen, dtype=task.dtype).to(task.device)
            for name, a, b in (("hvp_batch", lambda: mine.hvp_batch(vb), lambda: ref.hvp_batch(vb)),
                               ("cross_jacobian", mine.cross_jacobian, ref.cross_jacobian)):
                err = rel_error(a().reshape(-1), b().reshape(-1))
                if not err <= tol:
                    fail(what, check, f"point {k}, {where}: {name} differs from autograd by rel. {err:.2e} > {tol:g}")
            if p <= dense_max:
                err = rel_error(mine.hessian().reshape(-1), ref.hessian().reshape(-1))
                if not err <= tol:
                    fail(what, check, f"point {k}, {where}: hessian() differs from autograd by rel. {err:.2e}")


def check_task_exact_methods(obj, *, n_points: int = 2) -> None:
    """Every registered hypergradient method declared exact matches the reference at ``solve(theta)``."""
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_exact_methods"
    tol = tolerance(task, "exact")
    exact = [(n, f) for n, f in METHODS.items() if f.info.exact and f.info.kind == "implicit"]
    for k, th in enumerate(task_points(task, n_points)):
        ref = task.reference_hypergradient(th)
        w = task.solve(th)
        for name, fn in exact:
            err = rel_error(fn(task, w, th).grad, ref)
            if not err <= tol:
                fail(what, check, f"point {k}: exact method {name!r} vs reference rel. error {err:.2e} > {tol:g}")


def check_task_per_example(obj) -> None:
    """Tasks tagged ``"per-example"``: ``inner_loss_batch`` over all examples (or averaged over single ones)
    equals ``inner_loss``."""
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_per_example"
    n = task.n_train
    if not isinstance(n, int) or n < 1:
        fail(what, check, f"n_train must be an integer >= 1, but got {n!r}")
    th = task_points(task, 2)[1]
    w = task.init_params() + 0.1 * torch.randn(task.n_params, generator=torch.Generator().manual_seed(4),
                                               dtype=task.dtype).to(task.device)
    full = float(task.inner_loss(w, th))
    allidx = torch.arange(n, device=task.device)
    batch = float(task.inner_loss_batch(w, th, allidx))
    singles = sum(float(task.inner_loss_batch(w, th, allidx[i:i + 1])) for i in range(n)) / n
    for where, val in (("inner_loss_batch(all)", batch), ("mean of inner_loss_batch([i])", singles)):
        if not math.isclose(val, full, rel_tol=1e-10, abs_tol=1e-12):
            fail(what, check, f"{where} = {val!r} but inner_loss = {full!r}")


def check_task_float32(obj) -> None:
    """The task builds in float32 and its losses, gradients and solve stay float32 and finite."""
    task = _build(obj, dtype="float32")
    what, check = f"task {label_of(obj)!r}", "check_task_float32"
    th = task.space.init_theta(dtype=task.dtype, device=task.device)
    w0 = task.init_params()
    if w0.dtype != torch.float32:
        fail(what, check, f"init_params() must be float32 for dtype='float32', but got {w0.dtype}")
    _scalar_ok(task.inner_loss(w0, th), task, what, check, "inner_loss(w0, theta0)")
    _scalar_ok(task.outer_loss(w0), task, what, check, "outer_loss(w0)")
    g = task.inner_grad(w0, th)
    if g.dtype != torch.float32 or not bool(torch.isfinite(g).all()):
        fail(what, check, "inner_grad must be finite float32")


def check_task_capabilities(obj) -> None:
    """The capability tags a tuner may require (``Tuner.required_tags``) hold on the built instance.

    ``"hessian-diagonal"``: ``linearize(w, theta).diagonal()`` is ``diag(H)`` of the generic autograd
    linearization (relative ``structure`` tolerance); ``"gram-matrix"``: the task keeps ``gram``
    (``p x p``), ``xty``, ``a``, ``b``, ``x_val`` and ``y_val``; ``"scalar-hyperparameter"``: one
    hyperparameter. Suite validation trusts these tags, so a false one fails a cell at run time.
    """
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_capabilities"
    tags = set(task.tags)
    if "scalar-hyperparameter" in tags and task.space.dim != 1:
        fail(what, check, f"tagged 'scalar-hyperparameter' but its space has {task.space.dim} entries")
    if "gram-matrix" in tags:
        missing = [a for a in ("gram", "xty", "a", "b", "x_val", "y_val") if not hasattr(task, a)]
        if missing:
            fail(what, check, f"tagged 'gram-matrix' but has no {', '.join(missing)}")
        if tuple(task.gram.shape) != (task.n_params, task.n_params):
            fail(what, check, f"`gram` must have shape (p, p) = {(task.n_params,) * 2}, "
                 f"but has {tuple(task.gram.shape)}")
    if "hessian-diagonal" in tags:
        tol = tolerance(task, "structure")
        for k, th in enumerate(task_points(task, 2)):
            w = task.solve(th).detach()
            d = task.linearize(w, th).diagonal()
            if d is None:
                fail(what, check, f"tagged 'hessian-diagonal' but linearize(...).diagonal() returned None at point {k}")
            ref = torch.diagonal(Linearization(task, w, th).hessian())
            err = rel_error(d, ref)
            if not err <= tol:
                fail(what, check, f"point {k}: diagonal() vs diag(H) rel. error {err:.2e} > {tol:g}")


#: ``(check, required tag or None)``: a check runs when the task declares the tag.
TASK_CHECKS = (
    (check_task_declaration, None),
    (check_task_deterministic, None),
    (check_task_finite_losses, None),
    (check_task_space, None),
    (check_task_reference_fd, None),
    (check_task_inner_stationary, None),
    (check_task_linearization, None),
    (check_task_exact_methods, None),
    (check_task_per_example, "per-example"),
    (check_task_float32, None),
    (check_task_capabilities, None),
)
