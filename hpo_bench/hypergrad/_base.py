"""The shared shape of hypergradient methods."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from ..core.options import Option, check_options
from ..core.registry import register_method

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
        adjoint: the solution ``q`` of the implicit methods' linear system ``H q = grad outer`` (detached),
            ``None`` where a method forms none; a method with :attr:`MethodInfo.warm_adjoint` takes it back
            as ``x0`` at the next call.
    """

    grad: torch.Tensor
    w: torch.Tensor
    stats: dict[str, Any] = field(default_factory=dict)
    adjoint: torch.Tensor | None = None


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
        options: the user-settable options (``method_opts``) and their rules
            (:class:`~hpo_bench.core.options.Option`); checked by suite validation and on every call.
        requires: task tags the method needs whatever its options (see :attr:`requires_if`).
        requires_if: ``{(option, value): tags}``: tags needed when an option has that value
            (e.g. ``cg`` with ``precond = "jacobi"`` needs ``"hessian-diagonal"``).
        dense: the dense matrix the method forms, by shape: ``"p x p"`` (``n_params`` squared, e.g.
            the Hessian) or ``"p x m"`` (``n_params x n_hyper``), with what it is after a colon
            (``"p x p: the Hessian and its Cholesky factor"``); ``None`` for a matrix-free method.
            Suite validation refuses it on tasks above :data:`hpo_bench.running.suite.DENSE_MAX_PARAMS`.
        warm_adjoint: the method takes ``x0=``, a starting point for its iterative solve of ``H q = v``
            (e.g. the previous outer step's :attr:`Hypergradient.adjoint`), and its stopping rule does not
            depend on it: a warm start changes the work, never the accuracy.
    """

    kind: str
    exact: bool
    knob: str | None
    summary: str
    options: Mapping[str, Option] = field(default_factory=dict)
    requires: frozenset[str] = frozenset()
    requires_if: Mapping[tuple[str, Any], frozenset[str]] = field(default_factory=dict)
    dense: str | None = None
    warm_adjoint: bool = False

    def required_tags(self, opts: Mapping[str, Any]) -> frozenset[str]:
        """The task tags this method needs with options ``opts``."""
        need = set(self.requires)
        for (key, value), tags in self.requires_if.items():
            if key in opts and opts[key] == value:
                need |= set(tags)
        return frozenset(need)


def hypergradient_method(name: str, *, kind: str, exact: bool, knob: str | None, summary: str,
                         options: Mapping[str, Option] | None = None, requires: frozenset[str] = frozenset(),
                         requires_if: Mapping[tuple[str, Any], frozenset[str]] | None = None,
                         dense: str | None = None, warm_adjoint: bool = False) -> Callable:
    """Register ``fn(task, w, theta, **opts) -> Hypergradient`` under ``name``.

    The registered function checks the declared ``options`` on every call (the same
    :func:`~hpo_bench.core.options.check_options` that suite validation runs), so a bad value is
    one clear error wherever it comes from. Keywords outside the schema (e.g. ``x0`` of
    ``cg``, or ``steps`` and ``lr`` that the gradient tuner passes to unrolled methods) are
    passed through unchecked: they are not user options.
    """
    if kind not in ("implicit", "unrolled"):
        raise ValueError(f"method kind must be 'implicit' or 'unrolled', but got {kind!r}")
    if dense is not None and str(dense).split(":")[0] not in ("p x p", "p x m"):
        raise ValueError(f"method `dense` must start with 'p x p' or 'p x m' (or be None), but got {dense!r}")
    schema = dict(options or {})
    owner = f"method {name!r}"

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def checked(task, w, theta, **opts):
            check_options(owner, schema, opts, allow_unknown=True)
            return fn(task, w, theta, **opts)

        checked.info = MethodInfo(kind=kind, exact=exact, knob=knob, summary=summary, options=schema,
                                  requires=frozenset(requires), requires_if=dict(requires_if or {}), dense=dense,
                                  warm_adjoint=warm_adjoint)
        checked.method_name = name
        register_method(checked, name=name)
        return checked

    return deco
