"""The shared shape of hypergradient methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..registry import register_method

__all__ = ["Hypergradient", "hypergradient_method", "MethodInfo"]


@dataclass
class Hypergradient:
    """What every method returns.

    Attributes:
        grad: ``dF/dtheta`` estimate, shape ``(space.dim,)``, detached.
        w: the inner point the estimate refers to (the given ``w`` for implicit methods,
            the last unrolled iterate ``w_T`` for unrolled ones), detached.
        stats: cost and convergence counters: ``hvp`` (Hessian- or Jacobian-vector
            products of the inner gradient), ``grad_evals`` (inner-gradient evaluations),
            ``outer_grad_evals``, and method specifics (``iterations``, ``residual``,
            ``converged``).
    """

    grad: torch.Tensor
    w: torch.Tensor
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodInfo:
    """Declared capabilities of a method (never inferred from its name).

    Attributes:
        kind: ``"implicit"`` (``w`` is an inner solution) or ``"unrolled"`` (``w`` is the
            inner starting point; the method runs the inner gradient-descent steps itself).
        exact: whether the method is exact in theory at a converged inner solution
            (``hpo-bench check`` fails it beyond tolerance).
        knob: the option that trades accuracy for cost (for sweeps), or ``None``.
        summary: one line for ``hpo-bench list``.
    """

    kind: str
    exact: bool
    knob: str | None
    summary: str


def hypergradient_method(name: str, *, kind: str, exact: bool, knob: str | None, summary: str) -> Callable:
    """Register ``fn(task, w, theta, **opts) -> Hypergradient`` under ``name``."""
    if kind not in ("implicit", "unrolled"):
        raise ValueError(f"method kind must be 'implicit' or 'unrolled', but got {kind!r}")

    def deco(fn: Callable) -> Callable:
        fn.info = MethodInfo(kind=kind, exact=exact, knob=knob, summary=summary)
        fn.method_name = name
        register_method(fn, name=name)
        return fn

    return deco
