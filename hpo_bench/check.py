"""``hpo-bench check``: every hypergradient method vs the reference vs finite differences.

For a task instance and a few hyperparameter points, compares

* the task's reference hypergradient with central finite differences of the response
  ``F(theta) = outer(solve(theta))`` (every coordinate when there are at most
  ``fd_full_max`` hyperparameters, otherwise directional derivatives along seeded random
  unit vectors);
* every registered method with the reference and with the finite differences: relative
  error, cosine, fraction of coordinates whose sign agrees, HVPs and time. Implicit
  methods run at the reference solution ``w*``; unrolled ones from ``task.init_params()``
  with their default number of steps, so their error includes the unfinished inner solve.

A method that claims exactness (``info.exact``) fails beyond ``exact_tol``; the reference
fails beyond ``fd_tol``. Approximate methods are reported, never failed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .records import cosine, rel_error
from .registry import METHODS, TASKS
from .task import Task

__all__ = ["CheckRow", "check_task", "fd_directions", "build_check_task", "check_points", "finite_difference", "sign_agreement",
           "reference_note"]


@dataclass
class CheckRow:
    task: str
    point: int
    hp: list[float]
    method: str
    kind: str
    exact: bool
    rel_error_ref: float
    rel_error_fd: float
    cosine: float
    sign_agree: float
    hvp: int
    time_ms: float
    verdict: str  # "pass", "FAIL", "approx"
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_points(task: Task, n_points: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """The space's initial point and ``n_points - 1`` seeded perturbations (unit normal in theta)."""
    gen = torch.Generator().manual_seed(seed)
    base = task.space.init_theta(dtype=task.dtype, device=task.device)
    pts = [base]
    for _ in range(n_points - 1):
        step = torch.randn(base.shape[0], generator=gen, dtype=task.dtype).to(task.device)
        pts.append(task.space.project(base + step))
    return pts


def finite_difference(task: Task, theta: torch.Tensor, directions: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """Central differences of ``F`` along each row of ``directions``: ``(F(t + h u) - F(t - h u)) / 2h``."""
    out = []
    for u in directions:
        fp = float(task.response(theta + h * u))
        fm = float(task.response(theta - h * u))
        out.append((fp - fm) / (2 * h))
    return torch.tensor(out, dtype=theta.dtype, device=theta.device)


def fd_directions(task: Task, full_max: int, n_random: int, gen: torch.Generator) -> torch.Tensor:
    """Rows to difference along: every coordinate when ``dim <= full_max``, else ``n_random`` seeded unit vectors."""
    m = task.space.dim
    if m <= full_max:
        return torch.eye(m, dtype=task.dtype, device=task.device)
    dirs = torch.randn(n_random, m, generator=gen, dtype=task.dtype).to(task.device)
    return dirs / torch.linalg.vector_norm(dirs, dim=1, keepdim=True)


def sign_agreement(est: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-6) -> float:
    """Fraction of coordinates where signs agree (coordinates with |ref| tiny count as agreeing)."""
    small = ref.abs() <= rtol * float(ref.abs().max()) if ref.numel() else ref.abs() >= 0
    agree = (torch.sign(est) == torch.sign(ref)) | small
    return float(agree.double().mean())


def reference_note(task: Task) -> str:
    """How the task's reference is computed, from its declared tags."""
    if "closed-form" in task.tags:
        return "closed form"
    if "reference:implicit-cg" in task.tags:
        return "implicit CG at tight solve"
    return "dense implicit at tight solve"


def check_task(task: Task, *, methods: list[str] | None = None, n_points: int = 3, seed: int = 0,
               exact_tol: float = 1e-8, fd_tol: float = 1e-6, fd_full_max: int = 32, fd_h: float = 1e-5,
               method_opts: dict[str, dict] | None = None) -> list[CheckRow]:
    """Rows for every (point, method) plus one ``reference`` row per point.

    A task may declare looser tolerances with a reason (``check_tolerances = {"fd": ...,
    "exact": ..., "reason": "..."}``, the same attribute the conformance kit reads); they
    replace ``fd_tol`` / ``exact_tol`` for that task and the reason is shown in the notes.
    """
    declared = getattr(task, "check_tolerances", {}) or {}
    if declared and not declared.get("reason"):
        raise ValueError(f"task {task.name!r}: `check_tolerances` must give a 'reason', but got {declared!r}")
    exact_tol = float(declared.get("exact", exact_tol))
    fd_tol = float(declared.get("fd", fd_tol))
    tol_note = f"; tolerances declared by the task: {declared['reason']}" if declared else ""
    names = methods if methods is not None else METHODS.names()
    fns = {n: METHODS.get(n) for n in names}
    method_opts = method_opts or {}
    rows: list[CheckRow] = []
    m = task.space.dim
    gen = torch.Generator().manual_seed(seed + 1)
    for k, theta in enumerate(check_points(task, n_points, seed)):
        hp = [float(v) for v in task.space.to_natural(theta).cpu()]
        dirs = fd_directions(task, fd_full_max, 8, gen)
        full = m <= fd_full_max
        try:
            fd = finite_difference(task, theta, dirs, fd_h)
            t0 = time.perf_counter()
            ref = task.reference_hypergradient(theta)
            t_ref = (time.perf_counter() - t0) * 1e3
            w_star = task.solve(theta)
        except FloatingPointError as exc:  # e.g. a non-convex task's solve fails here: a FAIL row, not a crash
            rows.append(CheckRow(task.name, k, hp, "reference", "reference", True, math.nan, math.nan, math.nan,
                                 math.nan, 0, math.nan, "FAIL", f"reference unavailable: {exc}"))
            continue
        ref_fd = rel_error(dirs @ ref, fd)
        rows.append(CheckRow(
            task=task.name, point=k, hp=hp, method="reference", kind="reference", exact=True,
            rel_error_ref=0.0, rel_error_fd=ref_fd, cosine=cosine(dirs @ ref, fd),
            sign_agree=sign_agreement(dirs @ ref, fd), hvp=0, time_ms=t_ref,
            verdict="pass" if ref_fd <= fd_tol else "FAIL",
            note=reference_note(task) + ("" if full else f"; FD on {dirs.shape[0]} random directions") + tol_note))
        w0 = task.init_params()
        for name, fn in fns.items():
            opts = dict(method_opts.get(name, {}))
            t0 = time.perf_counter()
            try:
                hg = fn(task, w_star if fn.info.kind == "implicit" else w0, theta, **opts)
            except Exception as exc:  # reported per method; one broken method must not hide the others
                rows.append(CheckRow(task.name, k, hp, name, fn.info.kind, fn.info.exact, math.nan, math.nan,
                                     math.nan, math.nan, 0, math.nan, "FAIL", f"{type(exc).__name__}: {exc}"))
                continue
            dt = (time.perf_counter() - t0) * 1e3
            g = hg.grad
            err = rel_error(g, ref)
            verdict = ("pass" if err <= exact_tol else "FAIL") if fn.info.exact else "approx"
            note = ""
            if fn.info.kind == "unrolled":
                note = f"T={hg.stats.get('iterations')} steps from w0"
            elif "converged" in hg.stats and not hg.stats["converged"]:
                note = f"not converged ({hg.stats.get('cg_status', '')})"
            rows.append(CheckRow(
                task=task.name, point=k, hp=hp, method=name, kind=fn.info.kind, exact=fn.info.exact,
                rel_error_ref=err, rel_error_fd=rel_error(dirs @ g, fd), cosine=cosine(g, ref),
                sign_agree=sign_agreement(g, ref), hvp=int(hg.stats.get("hvp", 0)), time_ms=dt,
                verdict=verdict, note=note))
    return rows


def build_check_task(name: str, params: dict[str, Any] | None = None, *, dtype: str = "float64",
                     device: str = "cpu", seed: int = 0) -> Task:
    """The task's small ``check_params`` instance, updated with ``params``.

    Raises:
        TaskParamError: a parameter the task does not take (the message lists those it does), or
            ``device`` names a device this machine does not have.
    """
    import inspect

    from .task import TaskParamError

    cls = TASKS.get(name)
    sig = inspect.signature(cls.__init__).parameters
    known = [p for p, v in sig.items() if p not in ("self", "seed", "dtype", "device")
             and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    takes_any = any(v.kind == v.VAR_KEYWORD for v in sig.values())
    unknown = [k for k in (params or {}) if k not in known] if not takes_any else []
    if unknown:
        raise TaskParamError(f"task {name!r}: `--param` keys must be parameters of the task ({', '.join(known)}), "
                             f"but got {', '.join(map(repr, unknown))}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TaskParamError(f"option --device must be a device this machine has, but got {device!r} (torch sees "
                             "no CUDA here); use --device cpu")
    kw = {**getattr(cls, "check_params", {}), **(params or {})}
    return cls(**kw, seed=seed, dtype=dtype, device=device)
