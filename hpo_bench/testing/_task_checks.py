"""Conformance checks for tasks.

Each ``check_task_*(obj)`` builds the task from ``obj`` (a Task subclass with its small
``check_params``, ``(cls, params)``, or a factory; see :func:`task_factory`), tests one rule
of the task contract (:mod:`hpo_bench.core.task`) and raises :class:`ConformanceError` naming
the task, the check and the broken rule. They never modify the task's class.

Non-smooth tasks (tag ``"non-smooth"``, the composite contract of
:class:`hpo_bench.tasks._sparse_linear.CompositeTask`) have no ``grad_w inner = 0`` and no
Hessian of ``inner``; the smooth rules take their non-smooth form there. ``check_task_inner_stationary``
checks the prox fixed point (:func:`check_task_prox_fixed_point`), ``check_task_linearization`` the
linearisation on the support (:func:`check_task_support_linearization`), ``check_task_exact_methods``
runs the exact methods that declare ``"prox"`` (smooth-only ones are refused on such tasks), and
``check_task_reference_fd`` never differences across a support change
(:func:`hpo_bench.analysis.check.support_aware_difference`).
"""

from __future__ import annotations

import json
import math

import torch

from ..analysis.check import fd_directions, finite_difference, support_aware_difference
from ..core.records import rel_error
from ..core.registry import METHODS
from ..core.task import Linearization, Task
from ._common import fail, label_of, task_factory, tolerance

__all__ = [
    "check_task_declaration", "check_task_deterministic", "check_task_finite_losses", "check_task_space",
    "check_task_reference_fd", "check_task_inner_stationary", "check_task_linearization",
    "check_task_exact_methods", "check_task_per_example", "check_task_float32", "check_task_capabilities",
    "check_task_prox_fixed_point", "check_task_support_linearization", "task_points", "TASK_CHECKS",
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
        if "non-smooth" in task.tags:  # never difference across a support change (a kink of F)
            fd, kinks = support_aware_difference(task, th, dirs, h)
            keep = [i for i in range(dirs.shape[0]) if i not in kinks]
            if not keep:
                continue
            dirs, fd = dirs[keep], fd[keep]
        else:
            fd = finite_difference(task, th, dirs, h)
        err = rel_error(dirs @ ref, fd)
        if not err <= tol:
            fail(what, check, f"at point {k} the reference disagrees with finite differences: rel. error "
                 f"{err:.2e} > {tol:g} (directional derivatives {(dirs @ ref).tolist()} vs {fd.tolist()})")


def check_task_inner_stationary(obj, *, n_points: int = 2) -> None:
    """``solve(theta)`` is stationary: ``||grad_w inner|| <= tol * max(1, ||grad_w inner(w0)||)``.

    On a ``"non-smooth"`` task ``grad_w inner`` does not exist at the solution's zeros: the rule is the
    prox fixed point instead (:func:`check_task_prox_fixed_point`).
    """
    task = _build(obj)
    if "non-smooth" in task.tags:
        check_task_prox_fixed_point(obj, n_points=n_points)
        return
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

    On a ``"non-smooth"`` task the Hessian of ``inner`` is not defined on the support's boundary: the
    linearisation on the support is checked instead (:func:`check_task_support_linearization`).
    """
    task = _build(obj)
    if "non-smooth" in task.tags:
        check_task_support_linearization(obj, n_points=n_points)
        return
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
    """Every registered hypergradient method declared exact matches the reference at ``solve(theta)``.

    Only the methods the task can run: those whose declared tags it has, and on a ``"non-smooth"``
    task only those declaring ``"prox"`` (the smooth-only ones are refused there by suite validation).
    """
    from ..hypergrad._nonsmooth import handles_nonsmooth

    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_exact_methods"
    tol = tolerance(task, "exact")
    nonsmooth = "non-smooth" in task.tags
    exact = [(n, f) for n, f in METHODS.items() if f.info.exact and f.info.kind == "implicit"
             and f.info.required_tags({}) <= set(task.tags) and (handles_nonsmooth(f) or not nonsmooth)]
    for k, th in enumerate(task_points(task, n_points)):
        ref = task.reference_hypergradient(th)
        w = task.solve(th)
        for name, fn in exact:
            err = rel_error(fn(task, w, th).grad, ref)
            if not err <= tol:
                fail(what, check, f"point {k}: exact method {name!r} vs reference rel. error {err:.2e} > {tol:g}")


def check_task_prox_fixed_point(obj, *, n_points: int = 2) -> None:
    """Non-smooth tasks: ``solve(theta)`` is a fixed point of the proximal-gradient map.

    ``||w - prox(w - eta grad f(w))|| / eta <= tol * max(1, same at w0)`` with ``eta = 1 / lipschitz``
    (``stationary`` tolerance), and the same for a step ``eta / 3`` (a fixed point for one step is one
    for all); the duality gap is ``<= 1e-12``. A wrong prox agrees with the reference solver at neither.
    """
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_prox_fixed_point"
    tol = tolerance(task, "stationary")
    w0 = task.init_params()
    for k, th in enumerate(task_points(task, n_points)):
        w = task.solve(th)
        eta = 1.0 / task.lipschitz(th)
        scale = max(1.0, task.prox_residual(w0, th))
        for step in (eta, eta / 3):
            res = task.prox_residual(w, th, step)
            if not res <= tol * scale:
                fail(what, check, f"at point {k} the reference solution is not a prox fixed point: "
                     f"||w - prox(w - eta grad f)|| / eta = {res:.2e} > {tol:g} x {scale:.3g} (eta = {step:.3g})")
        gap = task.duality_gap(w, th)
        if not gap <= 1e-12:
            fail(what, check, f"at point {k} the reference solution's duality gap is {gap:.2e} > 1e-12")


def check_task_support_linearization(obj, *, n_points: int = 2) -> None:
    """Non-smooth tasks: the linearisation on the support agrees with autograd of the face problem.

    On the support ``S`` with signs ``s`` of ``w = solve(theta)``, ``phi(u, theta) = f(w + P_S u, theta)
    + sum_S alpha_j(theta) s_j (w_j + u_j)`` is smooth; at ``u = 0`` its gradient is the restricted
    optimality condition (zero up to the ``stationary`` tolerance), and its Hessian ``H_SS`` and cross
    derivative ``B`` must match :meth:`linearize_support`'s ``hvp``, ``hessian``, ``cross_vjp`` and
    ``cross_jacobian`` on seeded vectors (``structure`` tolerance). The support must be exactly the
    non-zero entries of ``w``.
    """
    task = _build(obj)
    what, check = f"task {label_of(obj)!r}", "check_task_support_linearization"
    tol, stol = tolerance(task, "structure"), tolerance(task, "stationary")
    gen = torch.Generator().manual_seed(2)
    for k, th in enumerate(task_points(task, n_points)):
        th = th.detach()
        w = task.solve(th)
        lin = task.linearize_support(w, th)
        sup = lin.support
        if lin.size == 0:
            continue
        if not torch.equal(sup, torch.nonzero(w != 0).reshape(-1)):
            fail(what, check, f"point {k}: the support is not the non-zero entries of w")
        signs = torch.sign(w[sup])

        def phi(u, t):
            wu = w.index_put((sup,), w[sup] + u)
            alpha, _ = task.penalties(t)
            return task.smooth_loss(wu, t) + torch.sum(alpha[sup] * signs * (w[sup] + u))

        u0 = torch.zeros(lin.size, dtype=task.dtype, device=task.device)
        v = torch.randn(lin.size, generator=gen, dtype=task.dtype).to(task.device)
        with torch.enable_grad():
            u_ = u0.clone().requires_grad_(True)
            t_ = th.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(phi(u_, t_), u_, create_graph=True)
            gnorm = float(g.detach().abs().max())
            (hv,) = torch.autograd.grad(g, u_, v, retain_graph=True)
            (cv,) = torch.autograd.grad(g, t_, v, retain_graph=True)
            eye = torch.eye(lin.size, dtype=task.dtype, device=task.device)
            (hrows,) = torch.autograd.grad(g, u_, eye, retain_graph=True, is_grads_batched=True)
            (brows,) = torch.autograd.grad(g, t_, eye, retain_graph=True, is_grads_batched=True)
        scale = max(1.0, float(task.smooth_grad(task.init_params(), th).abs().max()))
        if not gnorm <= stol * scale:
            fail(what, check, f"point {k}: the face problem's gradient at the solution is {gnorm:.2e}, not 0 "
                 f"(> {stol:g} x {scale:.3g}): the optimality condition on the support fails")
        for name, a, b in (("hvp", lin.hvp(v), hv), ("cross_vjp", lin.cross_vjp(v), cv),
                           ("hessian", lin.hessian().reshape(-1), hrows.reshape(-1)),
                           ("cross_jacobian", lin.cross_jacobian().reshape(-1), brows.reshape(-1))):
            err = rel_error(a, b)
            if float(torch.linalg.vector_norm(b)) > 0 and not err <= tol:
                fail(what, check, f"point {k}: {name} on the support differs from autograd by rel. {err:.2e} "
                     f"> {tol:g}")


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
