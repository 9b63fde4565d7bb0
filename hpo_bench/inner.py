"""Inner solvers of the gradient tuner: ``gd``, ``adam``, ``adam_per_example``, ``exact``.

Each solver advances an :class:`InnerState` (parameters plus optimiser moments, kept
across outer steps for a warm start) for a given ``theta`` and reports how many inner
gradient evaluations it used. ``adam`` and ``adam_per_example`` follow
``torch.optim.Adam``'s single-tensor update op for op, so float32 runs match it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .task import Task

__all__ = ["InnerState", "INNER_SOLVERS", "run_inner", "adam_step"]

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
        example = task.example_grad_fn(theta)
        for _ in range(steps):
            for i in range(n):
                loss, g = example(state.w, i)
                if state.trace is not None:
                    state.trace.append(float(loss))
                adam_step(state, g, lr)
        return steps * n
    raise ValueError(f"unknown inner solver {solver!r}; known inner solvers: {', '.join(INNER_SOLVERS)}")
