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

A method that claims exactness (``info.exact``) fails beyond ``exact_tol``, or when its error
exceeds the error bound it reports (``stats["error_bound"]``); where it certifies nothing
(``stats["exactness"] == "uncertified"``, e.g. ``cg`` on a task with no certified
``lambda_min(H)`` bound) its verdict is ``"uncertified"``, not a pass; where it reports
``converged = False`` (its bound above its tolerance: float64 cannot do better at that point) it
is ``"unconverged"``, shown with its bound, not a pass and not a failure. The reference fails beyond
``fd_tol``, or where its certified error bound (:meth:`Task.reference`'s ``bound``, printed with its route
beside every reference) exceeds ``exact_tol`` relative; a point where the reference is undefined (the task's solve raises
``FloatingPointError``, e.g. a non-convex inner problem) is one ``"no-ref"`` row, counted, not
failed. Approximate methods are reported, never failed.

Non-smooth tasks (tag ``"non-smooth"``, e.g. the lasso): ``F`` has kinks where the support of
``w*`` changes. There the finite differences are taken by :func:`support_aware_difference`: a
direction whose step ``theta +- h u`` changes the support is retried with ``h / 10`` and ``h / 100``,
and if the support still changes it is dropped and reported (the note names the directions): a
difference is never averaged across a kink. Methods a task cannot run are ``"skipped"`` with the
reason: a method needing a tag the task lacks (the non-smooth methods need ``"prox"``), or a
smooth-only method (one not declaring ``"prox"``) on a ``"non-smooth"`` task.

Points (:func:`box_points`): the initial point, the two extreme corners, every corner when
there are at most three hyperparameters (else seeded random corners), then seeded uniform
points of the box in transformed coordinates; so ``check`` looks where it is hard, not only
near ``init``. Forward-mode unrolling costs ``m`` HVPs per step: above ``forward_max_dim``
hyperparameters it is skipped (a ``"skipped"`` row says so) unless named explicitly.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..core.records import cosine, rel_error
from ..core.registry import METHODS, TASKS
from ..core.task import Task

__all__ = ["CheckRow", "check_task", "fd_directions", "build_check_task", "check_points", "box_points",
           "finite_difference", "support_aware_difference", "sign_agreement", "reference_note", "worst_rows",
           "FORWARD_MAX_DIM"]

#: Slack of the bound comparison: the reference is itself computed in float64 (a few eps, relative).
_REF_SLACK = 64 * 2.0 ** -52

#: Above this many hyperparameters ``check`` skips forward-mode unrolling (m HVPs per step) unless asked for.
FORWARD_MAX_DIM = 16


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
    verdict: str  # "pass", "FAIL", "approx", "uncertified", "unconverged", "no-ref", "skipped"
    note: str = ""
    error_bound: float = math.nan  # the method's own certified relative error bound (NaN: none)

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


def box_points(task: Task, n_points: int = 8, seed: int = 0) -> list[torch.Tensor]:
    """``n_points`` points across the whole box (transformed coordinates), deterministic for a seed.

    In order: the initial point, the upper corner, the lower corner, then the other corners
    (all of them when ``dim <= 3``, else seeded random ones, at most ``n_points // 2``), then
    seeded uniform points (log-uniform for log blocks). Duplicates (e.g. of a one-dimensional box's
    corners) are dropped, so fewer points may come back on a tiny box only when corners repeat.
    """
    gen = torch.Generator().manual_seed(seed)
    lo, hi = task.space.theta_bounds(dtype=task.dtype)
    m = lo.shape[0]
    cands = [task.space.init_theta(dtype=task.dtype), hi.clone(), lo.clone()]
    if m <= 3:
        for bits in range(1, 2 ** m - 1):
            mask = torch.tensor([(bits >> j) & 1 == 1 for j in range(m)])
            cands.append(torch.where(mask, hi, lo))
    else:
        for _ in range(max(n_points // 2 - 3, 0)):
            mask = torch.rand(m, generator=gen) < 0.5
            cands.append(torch.where(mask, hi, lo))
    pts: list[torch.Tensor] = []
    for c in cands:
        if len(pts) >= n_points:
            break
        if not any(bool(torch.equal(c, q)) for q in pts):
            pts.append(c)
    while len(pts) < n_points:
        pts.append(lo + (hi - lo) * torch.rand(m, generator=gen, dtype=task.dtype))
    return [p.to(task.device) for p in pts]


def worst_rows(rows: list[CheckRow]) -> list[CheckRow]:
    """One row per (task, method): a ``FAIL`` row first if any, else the largest error vs the reference.

    ``no-ref`` rows (points where the reference is undefined) are kept apart: the ``reference``
    row shown is the worst finite-difference agreement among points that have one.
    """
    order = {"FAIL": 0}
    best: dict[tuple[str, str], CheckRow] = {}

    def key(r: CheckRow) -> tuple:
        err = r.rel_error_fd if r.method == "reference" else r.rel_error_ref
        return (order.get(r.verdict, 1), -(err if math.isfinite(err) else -1.0))

    for r in rows:
        if r.verdict == "no-ref":
            continue
        k = (r.task, r.method)
        if k not in best or key(r) < key(best[k]):
            best[k] = r
    return list(best.values())


def finite_difference(task: Task, theta: torch.Tensor, directions: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """Central differences of ``F`` along each row of ``directions``: ``(F(t + h u) - F(t - h u)) / 2h``."""
    out = []
    for u in directions:
        fp = float(task.response(theta + h * u))
        fm = float(task.response(theta - h * u))
        out.append((fp - fm) / (2 * h))
    return torch.tensor(out, dtype=theta.dtype, device=theta.device)


def support_aware_difference(task: Task, theta: torch.Tensor, directions: torch.Tensor, h: float = 1e-5,
                             shrink: tuple[float, ...] = (1.0, 0.1, 0.01)) -> tuple[torch.Tensor, list[int]]:
    """Central differences of ``F`` that never straddle a support change of ``w*`` (non-smooth tasks).

    Along each direction ``u``, the supports of ``solve(theta + h u)`` and ``solve(theta - h u)`` are
    compared with that of ``solve(theta)`` (``task.support(w)``); the first step of ``h * shrink``
    with the same support on both sides gives the difference. A direction where every step changes
    the support (a kink within ``h / 100`` of ``theta``) gets NaN, and its index is returned.

    Returns:
        ``(fd, kinks)``: one difference per row of ``directions`` (NaN at a kink) and the kink rows.
    """
    s0 = task.support(task.solve(theta))
    out, kinks = [], []
    for k, u in enumerate(directions):
        val = math.nan
        for f in shrink:
            step = h * f
            wp, wm = task.solve(theta + step * u), task.solve(theta - step * u)
            if task.support(wp) == s0 and task.support(wm) == s0:
                val = (float(task.outer_loss(wp)) - float(task.outer_loss(wm))) / (2 * step)
                break
        if math.isnan(val):
            kinks.append(k)
        out.append(val)
    return torch.tensor(out, dtype=theta.dtype, device=theta.device), kinks


def _margin_note(task: Task, theta: torch.Tensor) -> str:
    """For composite tasks: how far the support is from changing (``<= 0``: degenerate, one-sided)."""
    margin = getattr(task, "support_margin", None)
    if margin is None:
        return ""
    val = margin(theta)
    return f"; support margin {val:.1e}" + (" (DEGENERATE: one-sided derivative)" if val <= 0 else "")


def _applicable(task: Task, fn, opts: dict) -> str | None:
    """Why ``fn`` cannot run on ``task`` (a missing required tag; smooth-only on a non-smooth task), else None."""
    from ..hypergrad._nonsmooth import handles_nonsmooth

    missing = sorted(set(fn.info.required_tags(opts)) - set(task.tags))
    if missing:
        return f"needs task tag {missing[0]!r}, which task {task.name!r} does not have"
    if "non-smooth" in task.tags and not handles_nonsmooth(fn, opts):
        return "assumes a smooth inner objective (no 'prox' declared); the task is non-smooth"
    return None


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
    if "prox" in task.tags and "closed-form" in task.tags:
        return "closed form on the support"
    if "closed-form" in task.tags:
        return "closed form"
    if "reference:implicit-cg" in task.tags:
        return "implicit CG at tight solve"
    return "dense implicit at tight solve"


def _reference_bound(reference, tol: float) -> tuple[float, str]:
    """``(relative bound, note)`` of a :class:`~hpo_bench.core.task.Reference`: its certified bound over ``||grad||``
    and the route. A matrix-free reference (route ``"cg"``, ``"newton-cg"``) whose bound exceeds ``tol`` fails
    (the note starts with ``"; FAIL"``): the bound is its only guarantee, and the exact methods are judged
    against it at ``tol``. A dense factorisation above ``tol`` is noted, not failed: it is the suite's
    ground truth of record (checked against finite differences), and its bound, ``~ ||grad_w|| / mu^2``, is
    only an upper estimate where ``H`` is nearly singular (the box's small-penalty corners)."""
    gnorm = float(torch.linalg.vector_norm(reference.grad))
    b = float(reference.bound)
    if math.isnan(b):
        return math.nan, f"; route {reference.route}, no bound computed"
    rel = 0.0 if b == 0.0 else (b / gnorm if gnorm > 0 else math.inf)
    if rel > tol and reference.route not in ("dense", "task"):
        return rel, f"; FAIL: its certified bound {rel:.1e} (relative, route {reference.route}) exceeds tol {tol:g}"
    if rel > tol:
        return rel, f"; route {reference.route}, certified bound {rel:.1e} (relative) above tol {tol:g}: not failed"
    return rel, f"; route {reference.route}, certified bound {rel:.1e} (relative)"


def check_task(task: Task, *, methods: list[str] | None = None, n_points: int = 3, seed: int = 0,
               exact_tol: float = 1e-8, fd_tol: float = 1e-6, fd_full_max: int = 32, fd_h: float = 1e-5,
               method_opts: dict[str, dict] | None = None, box: bool = True,
               forward_max_dim: int = FORWARD_MAX_DIM) -> list[CheckRow]:
    """Rows for every (point, method) plus one ``reference`` row per point.

    ``box``: points across the whole box (:func:`box_points`, the default) or only near the
    initial point (:func:`check_points`). ``forward_max_dim``: forward mode is skipped above it
    unless ``methods`` names it.

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
    points = box_points(task, n_points, seed) if box else check_points(task, n_points, seed)
    for k, theta in enumerate(points):
        hp = [float(v) for v in task.space.to_natural(theta).cpu()]
        dirs = fd_directions(task, fd_full_max, 8, gen)
        full = m <= fd_full_max
        nonsmooth = "non-smooth" in task.tags
        kink_note = ""
        try:
            if nonsmooth:
                fd, kinks = support_aware_difference(task, theta, dirs, fd_h)
                if kinks:
                    keep = [i for i in range(dirs.shape[0]) if i not in kinks]
                    kink_note = (f"; the support of w* changes within the FD step along direction(s) {kinks}: a kink, "
                                 "not differenced" + ("" if keep else " (no direction left: FD not compared)"))
                    dirs, fd = dirs[keep], fd[keep]
            else:
                fd = finite_difference(task, theta, dirs, fd_h)
            t0 = time.perf_counter()
            reference = task.reference(theta)
            ref = reference.grad
            t_ref = (time.perf_counter() - t0) * 1e3
            w_star = reference.w
        except FloatingPointError as exc:  # e.g. a non-convex inner problem: counted, not a crash
            rows.append(CheckRow(task.name, k, hp, "reference", "reference", True, math.nan, math.nan, math.nan,
                                 math.nan, 0, math.nan, "no-ref", f"reference unavailable: {exc}"))
            continue
        no_fd = dirs.shape[0] == 0
        ref_fd = rel_error(dirs @ ref, fd) if not no_fd else math.nan
        fd_note = ""
        ok = ref_fd <= fd_tol
        if not ok and not no_fd:  # FD's own error: |fd(h) - fd(2h)| (truncation grows 4x, rounding halves)
            fd2 = support_aware_difference(task, theta, dirs, 2 * fd_h, (1.0,))[0] if nonsmooth else \
                finite_difference(task, theta, dirs, 2 * fd_h)
            noise = float(torch.linalg.vector_norm(fd - fd2))
            # plus the a-priori rounding floor of a central difference of F (F to 64 eps relative): the two
            # step sizes can round alike when F is flat
            noise += math.sqrt(dirs.shape[0]) * 64 * torch.finfo(theta.dtype).eps * abs(float(task.response(theta))) / fd_h
            scale = float(torch.linalg.vector_norm(fd))
            allowed = fd_tol + 2 * noise / scale if scale > 0 else math.inf
            ok = ref_fd <= allowed
            fd_note = f"; FD noise-limited here: (|fd(h) - fd(2h)| + rounding) / |fd| = {noise / scale if scale > 0 else math.inf:.1e}"
        ref_bound, bound_note = _reference_bound(reference, exact_tol)
        rows.append(CheckRow(
            task=task.name, point=k, hp=hp, method="reference", kind="reference", exact=True,
            rel_error_ref=0.0, rel_error_fd=ref_fd, cosine=cosine(dirs @ ref, fd) if not no_fd else math.nan,
            sign_agree=sign_agreement(dirs @ ref, fd) if not no_fd else math.nan, hvp=0, time_ms=t_ref,
            verdict="FAIL" if bound_note.startswith("; FAIL") else ("skipped" if no_fd else ("pass" if ok else "FAIL")),
            note=reference_note(task) + bound_note + ("" if full else f"; FD on {dirs.shape[0]} random directions")
            + fd_note + kink_note + _margin_note(task, theta) + tol_note, error_bound=ref_bound))
        w0 = task.init_params()
        for name, fn in fns.items():
            why = _applicable(task, fn, dict(method_opts.get(name, {})))
            if why is not None:
                rows.append(CheckRow(task.name, k, hp, name, fn.info.kind, fn.info.exact, math.nan, math.nan,
                                     math.nan, math.nan, 0, math.nan, "skipped", why))
                continue
            if name in ("forward", "prox_forward") and methods is None and m > forward_max_dim:
                rows.append(CheckRow(task.name, k, hp, name, fn.info.kind, fn.info.exact, math.nan, math.nan,
                                     math.nan, math.nan, 0, math.nan, "skipped",
                                     f"forward mode costs m = {m} HVPs per step: skipped above m > "
                                     f"{forward_max_dim} (name it with --method {name} to run it)"))
                continue
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
            bound = float(hg.stats.get("error_bound", math.nan))
            notes = []
            if fn.info.kind == "unrolled":
                notes.append(f"T={hg.stats.get('iterations')} steps from w0")
            elif "converged" in hg.stats and not hg.stats["converged"]:
                notes.append(f"not converged ({hg.stats.get('cg_status', '')})")
            if not fn.info.exact:
                verdict = "approx"
            elif hg.stats.get("exactness") == "uncertified":
                verdict = "uncertified"
                notes.append("no certified bound on lambda_min(H) here: not presented as exact")
            elif math.isfinite(bound) and err > bound + _REF_SLACK:
                verdict = "FAIL"
                notes.append(f"error {err:.2e} exceeds the method's own bound {bound:.2e}")
            elif hg.stats.get("support_margin", math.inf) <= 0:
                verdict = "pass" if err <= exact_tol else "FAIL"
                notes.append(f"degenerate support here (margin {hg.stats['support_margin']:.1e}: an inactive "
                             "|grad_j f| = alpha_j): the derivative of w's branch, one-sided")
            elif not hg.stats.get("converged", True):
                verdict = "unconverged"  # it says so itself, and its bound says how far: not a pass
                notes.append(f"its bound {bound:.2e} > tol: exactness not reached in float64 here")
            else:
                verdict = "pass" if err <= exact_tol else "FAIL"
            rows.append(CheckRow(
                task=task.name, point=k, hp=hp, method=name, kind=fn.info.kind, exact=fn.info.exact,
                rel_error_ref=err, rel_error_fd=rel_error(dirs @ g, fd) if not no_fd else math.nan,
                cosine=cosine(g, ref),
                sign_agree=sign_agreement(g, ref), hvp=int(hg.stats.get("hvp", 0)), time_ms=dt,
                verdict=verdict, note="; ".join(notes), error_bound=bound))
    return rows


def build_check_task(name: str, params: dict[str, Any] | None = None, *, dtype: str = "float64",
                     device: str = "cpu", seed: int = 0, quick: bool = True) -> Task:
    """The task's small ``check_params`` instance (``quick``) or its default-size one, updated with ``params``.

    Raises:
        TaskParamError: a parameter the task does not take (the message lists those it does), or
            ``device`` names a device this machine does not have.
    """
    import inspect

    from ..core.task import TaskParamError

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
    kw = {**(getattr(cls, "check_params", {}) if quick else {}), **(params or {})}
    return cls(**kw, seed=seed, dtype=dtype, device=device)
