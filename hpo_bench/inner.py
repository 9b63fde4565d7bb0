"""Inner solvers of the gradient tuner: ``gd``, ``adam``, ``adam_per_example``, ``exact``.

Each solver advances an :class:`InnerState` (parameters plus optimiser moments, kept
across outer steps for a warm start) for a given ``theta`` and reports how many inner
gradient evaluations it used. ``adam`` and ``adam_per_example`` follow
``torch.optim.Adam``'s single-tensor update op for op, so float32 runs match it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .task import Task

__all__ = ["InnerState", "INNER_SOLVERS", "run_inner", "adam_step", "SCALAR_MAX_P"]

INNER_SOLVERS = ("gd", "adam", "adam_per_example", "exact")


@dataclass
class InnerState:
    w: torch.Tensor
    m: torch.Tensor | None = None
    v: torch.Tensor | None = None
    t: int = 0
    trace: list[float] | None = field(default=None)  # per-example losses, when asked for

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
              lr: float | None) -> int:
    """Advance ``state`` in place; return the number of inner gradient evaluations.

    ``steps`` counts gradient steps for ``gd``/``adam`` and *epochs* (passes over the
    training examples in order, one Adam step per example) for ``adam_per_example``.
    ``exact`` calls :meth:`Task.solve` and uses no gradients.
    """
    theta = theta.detach()
    if solver == "exact":
        state.w = task.solve(theta).detach()
        return 0
    if solver == "gd":
        for _ in range(steps):
            state.w = state.w - lr * task.inner_grad(state.w, theta)
        return steps
    if solver == "adam":
        for _ in range(steps):
            adam_step(state, task.inner_grad(state.w, theta), lr)
        return steps
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
    xs = [[T(v) for v in row] for row in q["x"].tolist()]
    ys = [T(v) for v in q["y"].tolist()]
    d = [T(v) for v in q["d"].tolist()]
    d2 = [T(2) * v for v in d]
    a, a2 = T(q["a"]), T(2 * q["a"])
    w = [T(v) for v in state.w.tolist()]
    m = [T(0)] * p if state.m is None else [T(v) for v in state.m.tolist()]
    v = [T(0)] * p if state.v is None else [T(v) for v in state.v.tolist()]
    b1, b2 = 0.9, 0.999
    w1, b2t, c2, eps = T(1 - b1), T(b2), T(1 - b2), T(1e-8)
    sqrt = np.sqrt if T is np.float32 else math.sqrt
    t = state.t
    trace = state.trace
    js = range(p)
    for _ in range(epochs):
        for xi, yi in zip(xs, ys):
            r = T(0)
            for j in js:
                r = r + xi[j] * w[j]
            r = r - yi
            if trace is not None:
                pen = T(0)
                for j in js:
                    pen = pen + d[j] * (w[j] * w[j])
                trace.append(float(a * r * r + pen))
            ar = a2 * r
            t += 1
            bc2s = T(math.sqrt(1 - b2 ** t))
            step = T(-lr / (1 - b1 ** t))
            for j in js:  # grad, then torch.optim.Adam's single-tensor update, op for op
                g = ar * xi[j] + d2[j] * w[j]
                m[j] = m[j] + w1 * (g - m[j])
                v[j] = v[j] * b2t + c2 * g * g
                w[j] = w[j] + step * m[j] / (sqrt(v[j]) / bc2s + eps)
    dev, dt = state.w.device, state.w.dtype
    state.w = torch.tensor([float(x) for x in w], dtype=dt, device=dev)
    state.m = torch.tensor([float(x) for x in m], dtype=dt, device=dev)
    state.v = torch.tensor([float(x) for x in v], dtype=dt, device=dev)
    state.t = t
    return True
