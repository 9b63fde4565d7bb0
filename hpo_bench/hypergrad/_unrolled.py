"""Hypergradients by differentiating through unrolled inner gradient descent.

The inner dynamics are ``w_{t+1} = w_t - eta grad_w inner(w_t, theta)`` for ``t < T`` from
``w_0`` (treated as a constant: a warm start is not differentiated through). With
``H_t``, ``C_t = d^2 inner / dtheta dw`` at ``w_t``, the exact derivative of
``outer(w_T)`` is (reverse mode, Franceschi et al. 2017)::

    a_T = grad outer(w_T);   for t = T-1 .. 0:  g += -eta C_t a_{t+1};  a_t = a_{t+1} - eta H_t a_{t+1}

* ``reverse``: all ``T`` steps (stores the ``T`` iterates, recomputes each step's
  linearisation on the way back: memory ``O(T p)``, ``T`` HVPs).
* ``truncated``: only the last ``K`` steps (Shaban et al. 2019). On a converged inner run
  (``w_t = w*``) it equals ``fixed_point(K, alpha=eta)``.
* ``forward``: forward mode, ``Z_{t+1} = Z_t - eta (H_t Z_t + C_t^T)``, ``g = Z_T^T grad outer``;
  ``m`` Hessian-vector products per step (batched) for ``m`` hyperparameters, memory ``O(p m)``,
  independent of ``T``.

These methods run the inner steps themselves: ``w`` is the starting point and the
returned :attr:`Hypergradient.w` is ``w_T``.
"""

from __future__ import annotations

import torch

from ..core.options import Option
from ..core.task import Task
from ._base import Hypergradient, hypergradient_method

__all__ = ["reverse", "truncated", "forward", "default_inner_lr"]


#: User options of the unrolled methods: none beyond ``truncate``; ``steps`` and ``lr`` are set by the
#: gradient tuner (``inner_steps`` / ``inner_lr``, checked there) and checked by :func:`_check` on every call.
UNROLLED_OPTIONS: dict[str, Option] = {}


def default_inner_lr(task: Task, w: torch.Tensor, theta: torch.Tensor) -> float:
    """``1/L`` at ``(w, theta)`` by power iteration: a stable gradient-descent step."""
    from ._implicit import power_step

    lin = task.linearize(w, theta)
    return power_step(lin, w.shape[0])


def _check(steps: int, lr: float) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps >= 1` must hold, but got steps={steps!r}")
    if not lr > 0:
        raise ValueError(f"`lr > 0` must hold, but got lr={lr!r}")


def _adjoint(task: Task, iterates: list[torch.Tensor], theta: torch.Tensor, w_final: torch.Tensor,
             lr: float) -> tuple[torch.Tensor, int]:
    """Reverse pass over the stored ``iterates`` (the inputs of the differentiated steps)."""
    a = task.outer_grad(w_final)
    g = torch.zeros_like(theta)
    n_hvp = 0
    for w_t in reversed(iterates):
        lin = task.linearize(w_t, theta)
        g = g - lr * lin.cross_vjp(a)
        a = a - lr * lin.hvp(a)
        n_hvp += 1
    return g, n_hvp


def _unroll(task: Task, w: torch.Tensor, theta: torch.Tensor, steps: int, lr: float, keep_last: int):
    iterates = []
    w_t = w.detach()
    for t in range(steps):
        if t >= steps - keep_last:
            iterates.append(w_t)
        w_t = w_t - lr * task.inner_grad(w_t, theta)
    return w_t, iterates


@hypergradient_method("reverse", kind="unrolled", exact=False, knob="steps",
                      summary="backprop through all T inner gradient steps; memory O(T p)", options=UNROLLED_OPTIONS)
def reverse(task: Task, w: torch.Tensor, theta: torch.Tensor, *, steps: int = 100,
            lr: float | None = None) -> Hypergradient:
    theta = theta.detach()
    lr = default_inner_lr(task, w, theta) if lr is None else float(lr)
    _check(steps, lr)
    w_final, iterates = _unroll(task, w, theta, steps, lr, keep_last=steps)
    g, n_hvp = _adjoint(task, iterates, theta, w_final, lr)
    return Hypergradient(grad=g, w=w_final, stats={"hvp": n_hvp, "grad_evals": steps, "outer_grad_evals": 1,
                                                   "iterations": steps, "lr": lr})


@hypergradient_method("truncated", kind="unrolled", exact=False, knob="truncate",
                      summary="backprop through the last K of T inner steps; memory O(K p)",
                      options={**UNROLLED_OPTIONS, "truncate": Option(int, low=1)})
def truncated(task: Task, w: torch.Tensor, theta: torch.Tensor, *, steps: int = 100, truncate: int = 10,
              lr: float | None = None) -> Hypergradient:
    theta = theta.detach()
    lr = default_inner_lr(task, w, theta) if lr is None else float(lr)
    _check(steps, lr)
    if not isinstance(truncate, int) or not 1 <= truncate <= steps:
        raise ValueError(f"`1 <= truncate <= steps` must hold, but got truncate={truncate!r}, steps={steps}")
    w_final, iterates = _unroll(task, w, theta, steps, lr, keep_last=truncate)
    g, n_hvp = _adjoint(task, iterates, theta, w_final, lr)
    return Hypergradient(grad=g, w=w_final, stats={"hvp": n_hvp, "grad_evals": steps, "outer_grad_evals": 1,
                                                   "iterations": steps, "truncate": truncate, "lr": lr})


@hypergradient_method("forward", kind="unrolled", exact=False, knob="steps",
                      summary="forward-mode through T inner steps; m JVPs per step (few hyperparameters)",
                      options=UNROLLED_OPTIONS, dense="p x m: the tangent of the iterates and the cross Jacobian")
def forward(task: Task, w: torch.Tensor, theta: torch.Tensor, *, steps: int = 100,
            lr: float | None = None) -> Hypergradient:
    theta = theta.detach()
    lr = default_inner_lr(task, w, theta) if lr is None else float(lr)
    _check(steps, lr)
    m = theta.shape[0]
    w_t = w.detach()
    z = torch.zeros(w_t.shape[0], m, dtype=w_t.dtype, device=w_t.device)
    for _ in range(steps):
        lin = task.linearize(w_t, theta)  # d/dtheta of one step: Z <- Z - lr (H Z + C^T)
        z = z - lr * (lin.hvp_batch(z) + lin.cross_jacobian())
        w_t = w_t - lr * lin.grad
    g = z.T @ task.outer_grad(w_t)
    return Hypergradient(grad=g, w=w_t, stats={"hvp": steps * m, "grad_evals": steps, "outer_grad_evals": 1,
                                               "iterations": steps, "lr": lr})
