"""``check_hypergradient``: a gradcheck for users' own hypergradient code.

Like :func:`torch.autograd.gradcheck`, but for ``dF/dtheta`` of a bilevel task: the user's
function is run at several hyperparameter points and compared with the task's reference
hypergradient and with central finite differences of ``F(theta) = outer(solve(theta))``;
the report says whether it passes and, where it fails, *how*: wrong sign, wrong magnitude
(right direction), wrong direction, non-finite values or a wrong shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..analysis.check import check_points, finite_difference, sign_agreement
from ..analysis.check import fd_directions as _fd_directions
from ..core.records import cosine, rel_error
from ..core.task import Task

__all__ = ["check_hypergradient", "HypergradientReport", "PointResult", "HypergradientCheckError"]


class HypergradientCheckError(AssertionError):
    """Raised by :func:`check_hypergradient` (``raise_exception=True``) when the function fails."""


@dataclass
class PointResult:
    """The comparison at one hyperparameter point.

    Attributes:
        point: index of the point (0 is the space's initial point).
        hp: natural hyperparameter values (first few).
        rel_error_ref: ``||g - ref|| / ||ref||``.
        rel_error_fd: the same for directional derivatives against finite differences.
        reference_fd_error: the reference's own error against finite differences (trust in it).
        cosine: cosine between ``g`` and the reference.
        norm_ratio: ``||g|| / ||ref||``.
        sign_agree: fraction of coordinates whose sign agrees with the reference.
        worst: the coordinates with the largest absolute error: ``(name, g_i, ref_i)``.
        diagnosis: ``"ok"``, ``"wrong sign"``, ``"wrong magnitude"``, ``"wrong direction"``,
            ``"non-finite"`` or ``"wrong shape"``.
        passed: ``rel_error_ref <= rtol``.
    """

    point: int
    hp: list[float]
    rel_error_ref: float
    rel_error_fd: float
    reference_fd_error: float
    cosine: float
    norm_ratio: float
    sign_agree: float
    worst: list[tuple[str, float, float]]
    diagnosis: str
    passed: bool
    detail: str = ""


@dataclass
class HypergradientReport:
    """All points; truthy when every point passes. ``str(report)`` is a readable table."""

    function: str
    task: str
    rtol: float
    at: str
    points: list[PointResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.points) and all(p.passed for p in self.points)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[PointResult]:
        return [p for p in self.points if not p.passed]

    def summary(self) -> str:
        """One line: PASS, or FAIL with where and how."""
        if self.passed:
            worst = max(p.rel_error_ref for p in self.points)
            return (f"PASS: {self.function} on {self.task}: {len(self.points)} points, max rel. error vs reference "
                    f"{worst:.2e} <= {self.rtol:g}")
        parts = []
        for p in self.failures:
            parts.append(f"point {p.point} ({p.diagnosis}: {p.detail})")
        return f"FAIL: {self.function} on {self.task}: " + "; ".join(parts)

    def __str__(self) -> str:
        head = (f"check_hypergradient({self.function}, {self.task}) at {self.at}, rtol {self.rtol:g}\n"
                f"{'pt':>3} {'err vs ref':>11} {'err vs FD':>10} {'ref vs FD':>10} {'cosine':>8} {'|g|/|ref|':>10} "
                f"{'sign':>5}  verdict")
        lines = [head]
        for p in self.points:
            lines.append(f"{p.point:>3} {p.rel_error_ref:>11.2e} {p.rel_error_fd:>10.2e} {p.reference_fd_error:>10.2e} "
                         f"{p.cosine:>8.4f} {p.norm_ratio:>10.4g} {p.sign_agree:>5.2f}  "
                         + ("pass" if p.passed else f"FAIL: {p.diagnosis}: {p.detail}"))
            if not p.passed and p.worst:
                lines.append("      largest errors: " + ", ".join(
                    f"{n} = {g:.4g} (reference {r:.4g})" for n, g, r in p.worst))
        lines.append(self.summary())
        return "\n".join(lines)


def _as_grad(out: Any) -> torch.Tensor:
    g = out if isinstance(out, torch.Tensor) else getattr(out, "grad", None)
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"the hypergradient function must return a tensor or an object with `.grad`, "
                        f"but returned {type(out).__name__}")
    return g.detach()


def _diagnose(g: torch.Tensor, ref: torch.Tensor, err: float, rtol: float, cos: float, ratio: float,
              names: list[str]) -> tuple[str, str]:
    if err <= rtol:
        return "ok", ""
    if cos <= -1 + 1e-6:
        return "wrong sign", f"g = {-ratio:.4g} x reference (every coordinate flipped)"
    if cos >= 1 - 1e-6:
        return "wrong magnitude", f"right direction, but |g| = {ratio:.4g} x |reference|"
    flipped = [n for n, a, b in zip(names, g.tolist(), ref.tolist())
               if a * b < 0 and abs(b) > 1e-6 * float(ref.abs().max())]
    det = f"cosine {cos:.4f} with the reference, |g| = {ratio:.4g} x |reference|"
    if flipped:
        shown = ", ".join(flipped[:5]) + (f" and {len(flipped) - 5} more" if len(flipped) > 5 else "")
        det += f"; sign differs at {shown}"
    return "wrong direction", det


def check_hypergradient(fn: Callable[[Task, torch.Tensor, torch.Tensor], Any], task: Task, *, points: int = 3,
                        seed: int = 0, at: str = "solution", rtol: float = 1e-6, fd_h: float = 1e-5,
                        fd_directions: int = 8, fd_full_max: int = 16, raise_exception: bool = True,
                        ) -> HypergradientReport:
    """Check a user's hypergradient function against the task's reference and finite differences.

    Args:
        fn: ``fn(task, w, theta)`` returning ``dF/dtheta`` (a tensor of shape ``(space.dim,)``,
            or an object with ``.grad`` such as :class:`hpo_bench.hypergrad.Hypergradient`), the
            same signature as the registered hypergradient methods.
        task: any task (e.g. ``hpo_bench.get_task("ridge")`` or a
            :class:`hpo_bench.testing.ModelTask` around your own model). Use float64.
        points: hyperparameter points: the space's initial point and ``points - 1`` seeded
            perturbations (:func:`hpo_bench.analysis.check.check_points`).
        at: ``"solution"``: ``w = task.solve(theta)`` (tests the formula, without inner-solve
            error; right for implicit methods); ``"init"``: ``w = task.init_params()`` (for
            unrolled methods, which run the inner steps themselves).
        rtol: a point passes when ``||g - ref|| / ||ref|| <= rtol``.
        fd_h, fd_directions, fd_full_max: central differences with step ``fd_h`` on every
            coordinate when ``space.dim <= fd_full_max``, else on ``fd_directions`` seeded
            random unit directions.
        raise_exception: raise :class:`HypergradientCheckError` (an ``AssertionError``) with the
            report when a point fails, like ``torch.autograd.gradcheck``; else return the report.

    Returns:
        The :class:`HypergradientReport` (truthy when every point passes).
    """
    if at not in ("solution", "init"):
        raise ValueError(f"`at` must be 'solution' or 'init', but got {at!r}")
    if points < 1:
        raise ValueError(f"`points >= 1` must hold, but got points={points}")
    fname = getattr(fn, "method_name", None) or getattr(fn, "__name__", None) or type(fn).__name__
    report = HypergradientReport(function=fname, task=task.name, rtol=rtol, at=at)
    names = task.space.names
    gen = torch.Generator().manual_seed(seed + 1)
    for k, theta in enumerate(check_points(task, points, seed)):
        hp = [float(v) for v in task.space.to_natural(theta)[:4].cpu()]
        dirs = _fd_directions(task, fd_full_max, fd_directions, gen)
        ref = task.reference_hypergradient(theta)
        fd = finite_difference(task, theta, dirs, fd_h)
        ref_fd = rel_error(dirs @ ref, fd)
        w = task.solve(theta) if at == "solution" else task.init_params()
        g = _as_grad(fn(task, w.detach().clone(), theta.detach().clone()))
        nan = math.nan
        if g.shape != ref.shape:
            report.points.append(PointResult(k, hp, nan, nan, ref_fd, nan, nan, nan, [], "wrong shape", False,
                                             f"expected shape {tuple(ref.shape)}, got {tuple(g.shape)}"))
            continue
        g = g.to(dtype=ref.dtype, device=ref.device)
        if not bool(torch.isfinite(g).all()):
            bad = [names[i] for i in torch.nonzero(~torch.isfinite(g)).reshape(-1).tolist()[:5]]
            report.points.append(PointResult(k, hp, nan, nan, ref_fd, nan, nan, nan, [], "non-finite", False,
                                             f"non-finite entries at {', '.join(bad)}"))
            continue
        err = rel_error(g, ref)
        cos = cosine(g, ref)
        rn = float(torch.linalg.vector_norm(ref))
        ratio = float(torch.linalg.vector_norm(g)) / rn if rn > 0 else math.inf
        order = torch.argsort((g - ref).abs(), descending=True)[:3].tolist()
        worst = [(names[i], float(g[i]), float(ref[i])) for i in order]
        diagnosis, detail = _diagnose(g, ref, err, rtol, cos, ratio, names)
        report.points.append(PointResult(
            point=k, hp=hp, rel_error_ref=err, rel_error_fd=rel_error(dirs @ g, fd), reference_fd_error=ref_fd,
            cosine=cos, norm_ratio=ratio, sign_agree=sign_agreement(g, ref), worst=worst, diagnosis=diagnosis,
            passed=err <= rtol, detail=detail))
    if raise_exception and not report.passed:
        raise HypergradientCheckError(str(report))
    return report
