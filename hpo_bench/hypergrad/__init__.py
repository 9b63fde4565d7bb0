"""Hypergradient methods: one signature, ``fn(task, w, theta, **opts) -> Hypergradient``.

Implicit methods (``w`` is an inner solution): ``exact``, ``cg``, ``neumann``,
``fixed_point``, ``identity``. Unrolled methods (``w`` is the inner starting point; they
run ``steps`` gradient-descent steps with step ``lr`` themselves): ``reverse``,
``truncated``, ``forward``. For non-smooth composite tasks (tag ``"prox"``): ``implicit_support``,
``implicit_forward`` (implicit) and ``prox_forward``, ``prox_reverse`` (unrolled through ISTA/CD).
Each function carries ``fn.info`` (:class:`MethodInfo`).
"""

from __future__ import annotations

from ..core.registry import METHODS
from ._base import Hypergradient, MethodInfo, hypergradient_method
from ._implicit import conjugate_gradient, cg, exact, fixed_point, identity, neumann, power_step
from ._nonsmooth import handles_nonsmooth, implicit_forward, implicit_support, prox_forward, prox_reverse
from ._unrolled import default_inner_lr, forward, reverse, truncated

__all__ = [
    "Hypergradient", "MethodInfo", "hypergradient_method", "get_method", "conjugate_gradient", "power_step",
    "default_inner_lr", "exact", "cg", "neumann", "fixed_point", "identity", "reverse", "truncated", "forward",
    "implicit_support", "implicit_forward", "prox_forward", "prox_reverse", "handles_nonsmooth",
]


def get_method(name: str):
    """The registered method ``name`` (error lists the known ones)."""
    return METHODS.get(name)
