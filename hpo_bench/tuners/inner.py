"""Inner solvers of the gradient tuner: ``gd``, ``adam``, ``adam_per_example``, ``exact``, and for
non-smooth (composite, tag ``"prox"``) tasks ``ista``, ``fista`` and ``cd`` (see :func:`run_prox_inner`).

Each solver advances an :class:`InnerState` (parameters plus optimiser moments, kept
across outer steps for a warm start) for a given ``theta`` and reports how many inner
gradient evaluations it used. ``adam`` and ``adam_per_example`` follow
``torch.optim.Adam``'s single-tensor update op for op, so float32 runs match it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.task import Task

__all__ = ["InnerState", "INNER_SOLVERS", "PROX_SOLVERS", "run_inner", "run_prox_inner", "adam_step", "SCALAR_MAX_P"]

INNER_SOLVERS = ("gd", "adam", "adam_per_example", "exact", "ista", "fista", "cd")
#: inner solvers for composite ``f + sum alpha_j |w_j|`` tasks (tag ``"prox"``): they need the task's prox
PROX_SOLVERS = ("ista", "fista", "cd")


@dataclass
class InnerState:
    w: torch.Tensor
    m: torch.Tensor | None = None
    v: torch.Tensor | None = None
    t: int = 0
    trace: list[float] | None = field(default=None)  # per-example losses, when asked for
    solved: bool = False  # w is an exact inner solution (of the previous theta): a warm start for the next
    q: torch.Tensor | None = None  # the previous step's adjoint solution, for methods that take a start (x0)

    @classmethod
    def fresh(cls, w: torch.Tensor) -> InnerState:
        return cls(w=w.detach().clone())


def adam_step(state: InnerState, g: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
    """One ``torch.optim.Adam`` step (defaults, no weight decay, no amsgrad) on ``state.w``."""
    if state.m is None:
        state.m = torch.zeros_like(state.w)
        state.v = torch.zeros_like(state.w)
    b1, b2 = betas
    state.t += 1
    state.m.lerp_(g, 1 - b1)
    state.v.mul_(b2).addcmul_(g, g, value=1 - b2)
    bc1 = 1 - b1 ** state.t
    bc2 = 1 - b2 ** state.t
    denom = (state.v.sqrt() / math.sqrt(bc2)).add_(eps)
    state.w = state.w.addcdiv(state.m, denom, value=-lr / bc1)


def run_inner(task: Task, theta: torch.Tensor, state: InnerState, *, solver: str, steps: int,
              lr: float | None, tol: float | None = None) -> int:
    """Advance ``state`` in place; return the number of inner gradient evaluations.

    ``steps`` counts gradient steps for ``gd``/``adam`` and *epochs* (passes over the
    training examples in order, one Adam step per example) for ``adam_per_example``.
    ``exact`` calls :meth:`Task.solve_from` (from ``state.w`` once it is a previous exact solution) and uses
    no gradients; with ``tol`` (an inexact-solve schedule) :meth:`Task.solve_to` to that relative tolerance.
    """
    theta = theta.detach()
    if solver == "exact":
        # from the previous exact solution (never from the init, which a task may solve better cold, e.g. by
        # homotopy): a warm start changes the work, never the accuracy
        w0 = state.w if state.solved else None
        state.w = (task.solve_from(theta, w0) if tol is None else task.solve_to(theta, w0, tol)).detach()
        state.solved = True
        return 0
    if solver == "gd":
        for _ in range(steps):
            state.w = state.w - lr * task.inner_grad(state.w, theta)
        return steps
    if solver == "adam":
        for _ in range(steps):
            adam_step(state, task.inner_grad(state.w, theta), lr)
        return steps
    if solver in PROX_SOLVERS:
        return run_prox_inner(task, theta, state, solver=solver, steps=steps, lr=lr)
    if solver == "adam_per_example":
        n = task.n_train
        if _adam_per_example_scalar(task, theta, state, epochs=steps, lr=lr):
            return steps * n
        example = task.example_grad_fn(theta)
        for _ in range(steps):
            for i in range(n):
                loss, g = example(state.w, i)
                if state.trace is not None:
                    state.trace.append(float(loss))
                adam_step(state, g, lr)
        return steps * n
    raise ValueError(f"unknown inner solver {solver!r}; known inner solvers: {', '.join(INNER_SOLVERS)}")


def run_prox_inner(task: Task, theta: torch.Tensor, state: InnerState, *, solver: str, steps: int,
                   lr: float | None) -> int:
    """Proximal inner solvers on a composite task (``inner = f + sum alpha_j |w_j|``, tag ``"prox"``).

    * ``ista``: ``w <- prox_{eta g}(w - eta grad f(w))``, ``eta = lr`` or ``1 / task.lipschitz(theta)``;
    * ``fista``: the same step at Nesterov's extrapolated point (Beck & Teboulle 2009), momentum restarted
      at every call (theta has moved since the last one);
    * ``cd``: ``steps`` sweeps of cyclic coordinate descent (:meth:`CompositeTask.cd_epochs`), no step size.

    Every iterate has exact zeros off its support. Returns the gradient evaluations used (``steps``
    full gradients; a CD sweep counts as one).
    """
    if solver == "cd":
        state.w = task.cd_epochs(state.w, theta, steps)
        return steps
    eta = float(lr) if lr is not None else 1.0 / task.lipschitz(theta)
    w = state.w
    if solver == "ista":
        for _ in range(steps):
            w = task.prox(w - eta * task.smooth_grad(w, theta), eta, theta)
    else:
        y, t = w, 1.0
        for _ in range(steps):
            w_next = task.prox(y - eta * task.smooth_grad(y, theta), eta, theta)
            t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            y = w_next + ((t - 1.0) / t_next) * (w_next - w)
            w, t = w_next, t_next
    state.w = w
    return steps


#: per-example Adam runs on Python scalars up to this many parameters (see _adam_per_example_scalar)
SCALAR_MAX_P = 16
_SCALAR_TYPES = {torch.float32: np.float32, torch.float64: float}


def _adam_per_example_scalar(task: Task, theta: torch.Tensor, state: InnerState, *, epochs: int,
                             lr: float) -> bool:
    """Per-example Adam on a tiny quadratic model, on scalars; ``False`` where it does not apply.

    At a handful of parameters a step is ~40 scalar operations, and torch's ~1 µs per-op
    dispatch dominates. Tasks whose per-example loss is ``a (x_i . w - y_i)^2 + sum_j d_j w_j^2``
    say so through ``example_quadratic(theta)``; this loop then runs the same operations as
    the tensor path (:func:`adam_step` and the closed-form example gradient) in the task's
    precision: ``numpy.float32`` scalars round every operation to float32 as torch's float32
    kernels do (float64 uses Python floats). Results agree with the tensor path to rounding.
    """
    spec = getattr(task, "example_quadratic", None)
    if spec is None or state.w.device.type != "cpu" or state.w.dtype not in _SCALAR_TYPES:
        return False
    p = state.w.shape[0]
    if p > SCALAR_MAX_P:
        return False
    q = spec(theta)
    if q is None:
        return False
    T = _SCALAR_TYPES[state.w.dtype]
    rows = [tuple(T(v) for v in row) + (T(y),) for row, y in zip(q["x"].tolist(), q["y"].tolist())]
    d = [T(v) for v in q["d"].tolist()]
    consts = {"a": T(q["a"]), "a2": T(2 * q["a"]), "l1": T(1 - 0.9), "b2t": T(0.999), "c2": T(1 - 0.999),
              "eps": T(1e-8), "sqrt": np.sqrt if T is np.float32 else math.sqrt, "zero": T(0)}
    consts.update({f"d{j}": d[j] for j in range(p)})
    consts.update({f"e{j}": T(2) * d[j] for j in range(p)})
    zero = [T(0)] * p
    w = [T(v) for v in state.w.tolist()]
    m = zero if state.m is None else [T(v) for v in state.m.tolist()]
    v = zero if state.v is None else [T(v) for v in state.v.tolist()]
    epoch = _scalar_epoch(p)
    n, t, lr = len(rows), state.t, float(lr)
    npt = np.float32 if T is np.float32 else np.float64
    scalars = list if T is np.float32 else np.ndarray.tolist  # numpy float32 scalars, or Python floats
    chunk = max(1, 4096 // n)  # epochs per call: bias corrections are computed for a chunk at once
    done = 0
    while done < epochs:
        k = min(chunk, epochs - done)
        ks = np.arange(t + 1, t + k * n + 1, dtype=np.float64)
        # adam_step's bias corrections (float64), cast to the task's precision as torch casts scalars
        bc2s = scalars(np.sqrt(1.0 - 0.999 ** ks).astype(npt))
        steps = scalars((-lr / (1.0 - 0.9 ** ks)).astype(npt))
        w, m, v = epoch(rows * k, bc2s, steps, w, m, v, state.trace, **consts)
        t += k * n
        done += k
    dev, dt = state.w.device, state.w.dtype
    state.w = torch.tensor([float(x) for x in w], dtype=dt, device=dev)
    state.m = torch.tensor([float(x) for x in m], dtype=dt, device=dev)
    state.v = torch.tensor([float(x) for x in v], dtype=dt, device=dev)
    state.t = t
    return True


@functools.lru_cache(maxsize=None)
def _scalar_epoch(p: int):
    """Per-example Adam over ``rows`` for ``p`` parameters, unrolled over them (generated once per ``p``).

    Per row ``(x_0, ..., x_{p-1}, y)``, in this order, as the tensor path does::

        r = x . w - y;  g_j = (2a r) x_j + (2 d_j) w_j
        m_j += (1 - b1) (g_j - m_j);  v_j = v_j b2 + (1 - b2) g_j g_j
        w_j += step_t m_j / (sqrt(v_j) / sqrt(bc2_t) + eps)
    """
    J = range(p)
    ws, ms, vs = (", ".join(f"{c}{j}" for j in J) + "," for c in "wmv")
    body = [
        f"def epoch(rows, bc2s, steps, w, m, v, trace, *, a, a2, l1, b2t, c2, eps, sqrt, zero, "
        f"{', '.join(f'd{j}, e{j}' for j in J)}):",
        f"    {ws} = w", f"    {ms} = m", f"    {vs} = v",
        "    for (" + ", ".join(f"x{j}" for j in J) + ", y), bc, st in zip(rows, bc2s, steps):",
        "        r = " + " + ".join(f"x{j} * w{j}" for j in J) + " - y",
        "        if trace is not None:",
        "            trace.append(float(a * r * r + (zero + " + " + ".join(f"d{j} * (w{j} * w{j})" for j in J) + ")))",
        "        ar = a2 * r",
    ]
    for j in J:
        body += [f"        g = ar * x{j} + e{j} * w{j}",
                 f"        m{j} = m{j} + l1 * (g - m{j})",
                 f"        v{j} = v{j} * b2t + c2 * g * g",
                 f"        w{j} = w{j} + st * m{j} / (sqrt(v{j}) / bc + eps)"]
    body.append(f"    return [{ws}], [{ms}], [{vs}]")
    scope: dict = {}
    exec("\n".join(body), scope)  # noqa: S102 - source built above from integers only
    return scope["epoch"]
