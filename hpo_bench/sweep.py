"""Sweeps: the accuracy-cost frontier of hypergradient methods, and tuner scaling with the number of hyperparameters.

Two pure functions return pandas DataFrames (usable from Python; ``hpo-bench sweep`` writes them out):

* :func:`frontier` -- one task at fixed hyperparameters ``theta``; every registered hypergradient
  method x a grid of its accuracy knob (``fn.info.knob``: CG ``max_iter``, Neumann / fixed-point
  ``iterations``, reverse / forward ``steps`` T, truncated ``truncate`` K at fixed T). Per point: the
  relative error and cosine against ``task.reference_hypergradient(theta)``, the time of the call
  (minimum over repeats, one thread), its HVP count (``stats["hvp"]``) and the **peak memory** of the
  call: on CUDA ``torch.cuda.max_memory_allocated`` (reset before the call, minus what was allocated
  before); on the CPU the running sum of the allocation and free events that ``torch.profiler``
  records with ``profile_memory=True`` during the call (a separate, profiled call: the timed calls are
  never profiled). Both are bytes held by torch's allocator beyond what existed before the call
  (the returned result included), not the process RSS.

  Calls are made the way :mod:`benchmarks.bench_core` makes them: implicit methods at
  ``w = task.solve(theta)``, unrolled methods from ``task.init_params()`` with ``steps`` and
  ``lr = 1/L``. Here ``L`` is the largest eigenvalue of the inner Hessian (dense ``eigvalsh`` up to
  :data:`DENSE_L_MAX` parameters, else power iteration), the larger of its values at
  ``task.init_params()`` and at ``w*``; the Neumann and fixed-point methods get the same step as
  ``alpha``, so no method spends HVPs on its own step-size estimate and ``hvp`` is the knob's cost.

* :func:`scaling` -- ``ridge_per_feature`` with ``p`` hyperparameters (one per feature) and
  ``n = n_factor * p`` training rows; per ``p`` the oracle (:func:`hpo_bench.oracle.oracle_for`,
  cached) and then every tuner configuration until its incumbent is within ``target`` of the
  oracle gap (:func:`hpo_bench.target.time_to_target`, TargetRecorder's rule) or its budget runs out.

Bad input raises :class:`SweepError` (the CLI prints it as one line, exit 2).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from ._threads import one_thread
from .records import Budget, cosine, rel_error
from .registry import METHODS, TASKS, TUNERS, UnknownNameError

__all__ = [
    "SweepError", "DENSE_L_MAX", "FORWARD_MAX_HYPER", "FORWARD_MAX_HVP", "one_two_five", "default_grids",
    "peak_memory", "min_time", "largest_eigenvalue", "build_task", "frontier_theta", "frontier",
    "FRONTIER_COLUMNS", "TunerConfig", "DEFAULT_TUNERS", "default_tuner_configs", "parse_tuner_spec",
    "load_tuner_file", "select_tuners", "scaling", "SCALING_COLUMNS", "oracle_options", "target_trace",
    "sweep_provenance", "write_records", "frontier_figure", "scaling_figure",
]

#: Up to this many inner parameters ``L`` comes from a dense ``eigvalsh``; above, from power iteration.
DENSE_L_MAX = 3000
#: Forward mode costs m HVPs per inner step and holds a p x m matrix: skipped above this many hyperparameters.
FORWARD_MAX_HYPER = 200
#: ... and its T grid is capped so that T * m stays at or below this many HVPs.
FORWARD_MAX_HVP = 100_000


class SweepError(ValueError):
    """Bad sweep input (names, grids, tuner configurations); the message names the option and the rule."""


# --------------------------------------------------------------------------- helpers
def one_two_five(hi: int, lo: int = 1) -> list[int]:
    """``1, 2, 5, 10, 20, 50, ...`` from ``lo`` up to the first value ``>= hi`` (inclusive)."""
    out: list[int] = []
    base = 1
    while True:
        for m in (1, 2, 5):
            v = m * base
            if v >= lo:
                out.append(v)
            if v >= hi:
                return out
        base *= 10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def min_time(call: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, list[float]]:
    """Minimum and all wall-clock times of ``repeats`` calls (synchronised on CUDA)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times), times


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (C++ logging that Python cannot silence)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. captured): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(call: Callable[[], Any], device: torch.device) -> tuple[Any, int, str]:
    """Run ``call`` once; return its result, the peak bytes torch's allocator held beyond the start, and how.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the bytes allocated
    before the call. CPU: ``torch.profiler`` with ``profile_memory=True`` records every allocation (+bytes)
    and free (-bytes) of the call; the peak is the maximum of their running sum in time order (0 if the call
    only frees). The result stays alive until the measurement ends, so it counts.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = call()
        torch.cuda.synchronize(device)
        return out, int(torch.cuda.max_memory_allocated(device) - base), "cuda.max_memory_allocated"
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # kineto writes a line to fd 2 when it starts and stops
        prof.start()
    try:
        out = call()
    finally:
        with _quiet_stderr():
            prof.stop()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError as exc:  # pragma: no cover - a torch without kineto results
        raise RuntimeError(f"torch {torch.__version__}: the profiler exposes no memory events ({exc})") from None
    mem = sorted(((e.start_ns(), e.nbytes()) for e in events
                  if e.name() == "[memory]" and e.device_type() == DeviceType.CPU), key=lambda t: t[0])
    running = peak = 0
    for _, nbytes in mem:
        running += int(nbytes)
        peak = max(peak, running)
    return out, int(peak), "profiler.cpu_memory"


def largest_eigenvalue(task, w: torch.Tensor, theta: torch.Tensor) -> tuple[float, str]:
    """``L``: the largest eigenvalue of the inner Hessian at ``(w, theta)`` and how it was found."""
    from .hypergrad import power_step

    lin = task.linearize(w.detach(), theta.detach())
    if w.shape[0] <= DENSE_L_MAX:
        return float(torch.linalg.eigvalsh(lin.hessian()).max()), "eigvalsh"
    return 1.0 / (1.05 * power_step(lin, w.shape[0], iters=100)), "power_iteration(100)"


def build_task(name: str, params: dict[str, Any] | None = None, *, seed: int = 0, device: str = "cpu",
               dtype: str = "float64"):
    """The registered task ``name`` with ``params`` (its own defaults otherwise)."""
    from .space import SpaceError
    from .task import TaskParamError

    cls = TASKS.get(name)
    try:
        return cls(**(params or {}), seed=seed, dtype=dtype, device=device)
    except TypeError as exc:
        import inspect

        known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "seed", "dtype",
                                                                                   "device")]
        raise SweepError(f"option --param: task {name!r} takes {', '.join(known)} ({exc})") from None
    except (TaskParamError, SpaceError):
        raise


def frontier_theta(task, theta: str = "init", seed: int = 0) -> torch.Tensor:
    """``"init"``: the space's init; ``"random"``: uniform in the bounds of theta (log-uniform in λ), from ``seed``."""
    if theta == "init":
        return task.space.init_theta(dtype=task.dtype, device=task.device)
    if theta == "random":
        gen = torch.Generator().manual_seed(int(seed))
        return task.space.sample(gen, dtype=task.dtype).to(task.device)
    raise SweepError(f"option --theta must be 'init' or 'random', but got {theta!r}")


# --------------------------------------------------------------------------- frontier
#: Columns of the frontier table, in order (docs/sweeps.md explains each).
FRONTIER_COLUMNS = (
    "task", "method", "kind", "exact", "knob", "knob_value", "steps", "rel_error", "cosine", "time_s",
    "time_s_all", "hvp", "grad_evals", "iterations", "converged", "peak_mem_bytes", "peak_mem_mb",
    "mem_measure", "lr", "n_params", "n_hyper", "device", "status", "note",
)


def default_grids(methods: list[str], n_params: int, n_hyper: int, *, max_iters: int = 1000,
                  forward_max_hyper: int = FORWARD_MAX_HYPER, forward_max_hvp: int = FORWARD_MAX_HVP,
                  ) -> tuple[dict[str, list[int] | None], list[str]]:
    """Default knob grid per method (``None``: a knob-less method, one point) and notes on what was capped.

    ``cg``: 1-2-5 up to ``2 p + 10`` (its default ``max_iter``: CG is exact after p steps in exact
    arithmetic). Neumann / fixed point / reverse / truncated (K at T fixed) and unknown knobs:
    1-2-5 up to ``max_iters``. ``forward``: skipped when m > ``forward_max_hyper``; else T capped at
    ``forward_max_hvp / m`` (each step costs m HVPs).
    """
    grids: dict[str, list[int] | None] = {}
    notes: list[str] = []
    for name in methods:
        fn = METHODS.get(name)
        knob = fn.info.knob
        if knob is None:
            grids[name] = None
        elif name == "cg":
            grids[name] = one_two_five(2 * n_params + 10)
        elif name == "forward":
            if n_hyper > forward_max_hyper:
                notes.append(f"forward skipped: m = {n_hyper} hyperparameters > {forward_max_hyper} (it costs m HVPs "
                             f"per inner step and holds a p x m matrix); raise forward_max_hyper to include it")
                continue
            cap = max(1, forward_max_hvp // max(n_hyper, 1))
            g = [v for v in one_two_five(max_iters) if v <= cap]
            if len(g) < len(one_two_five(max_iters)):
                notes.append(f"forward capped at T <= {cap} (m = {n_hyper} HVPs per step, at most "
                             f"{forward_max_hvp} HVPs per call)")
            grids[name] = g or [1]
        else:
            grids[name] = one_two_five(max_iters)
    return grids, notes


def _check_grid(name: str, values: Any) -> list[int]:
    if not isinstance(values, (list, tuple)) or not values:
        raise SweepError(f"option --grid: method {name!r} needs a non-empty list of integers >= 1, but got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise SweepError(f"option --grid: values of {name!r} must be integers >= 1, but got {v!r}")
        out.append(int(v))
    return sorted(set(out))


def frontier(task, *, theta: torch.Tensor | None = None, methods: list[str] | None = None,
             grids: dict[str, list[int]] | None = None, repeats: int = 3, truncated_steps: int | None = None,
             max_iters: int = 1000, forward_max_hyper: int = FORWARD_MAX_HYPER, forward_max_hvp: int = FORWARD_MAX_HVP,
             memory: bool = True, stop_when_converged: bool = True,
             progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The accuracy-cost frontier of hypergradient methods on ``task`` at ``theta`` (default: the space's init).

    Args:
        methods: registered method names (default: all).
        grids: knob values per method, overriding :func:`default_grids`.
        repeats: timed calls per point (the time is their minimum; one torch thread).
        truncated_steps: T of ``truncated`` (default: the largest T of the ``reverse`` grid, else ``max_iters``).
        memory: measure the peak memory (one extra, profiled call per point).
        stop_when_converged: stop a method's grid once a point reports ``converged`` with fewer
            iterations than its knob (larger values repeat the same computation, e.g. CG at ``tol``).

    Returns:
        ``(table, info)``: one row per point (:data:`FRONTIER_COLUMNS`) and ``info`` (``theta``, ``lr``,
        ``L``, the grids and ``notes`` on what was skipped or capped).
    """
    if repeats < 1:
        raise SweepError(f"option --repeats must be an integer >= 1, but got {repeats}")
    # by default the methods the task can run: declared tags it has (the non-smooth methods need "prox")
    methods = list(methods) if methods else [m for m in METHODS.names()
                                             if METHODS.get(m).info.required_tags({}) <= set(task.tags)]
    for m in methods:
        METHODS.get(m)
    theta = frontier_theta(task) if theta is None else theta.detach().to(device=task.device, dtype=task.dtype)
    task.space.check_shape(theta)
    dev = task.device
    n_params, n_hyper = int(task.n_params), int(task.space.dim)
    grids_used, notes = default_grids(methods, n_params, n_hyper, max_iters=max_iters,
                                      forward_max_hyper=forward_max_hyper, forward_max_hvp=forward_max_hvp)
    for name, vals in (grids or {}).items():
        if name not in methods:
            raise SweepError(f"option --grid: method {name!r} is not swept (swept: {', '.join(methods)})")
        fn = METHODS.get(name)
        if fn.info.knob is None:
            raise SweepError(f"option --grid: method {name!r} has no accuracy knob (one point); methods with a "
                             f"knob: {', '.join(m for m in methods if METHODS.get(m).info.knob)}")
        grids_used[name] = _check_grid(name, vals)
        notes[:] = [n for n in notes if not n.startswith(f"{name} ")]
    if "reverse" in grids_used and grids_used["reverse"]:
        t_fixed = truncated_steps or max(grids_used["reverse"])
    else:
        t_fixed = truncated_steps or max_iters
    if "truncated" in grids_used and grids_used["truncated"]:
        too_big = [k for k in grids_used["truncated"] if k > t_fixed]
        if too_big and grids and "truncated" in grids:
            raise SweepError(f"option --grid: truncated K must be <= T = {t_fixed} (--truncated-steps), "
                             f"but got {too_big}")
        grids_used["truncated"] = [k for k in grids_used["truncated"] if k <= t_fixed]

    with one_thread():
        ref = task.reference_hypergradient(theta).detach()
        w_star = task.solve(theta).detach()
        w0 = task.init_params().detach()
        l_star, how = largest_eigenvalue(task, w_star, theta)
        l_init, _ = largest_eigenvalue(task, w0, theta)
        big_l = max(l_star, l_init)
        lr = 1.0 / big_l
        rows: list[dict[str, Any]] = []
        for name in methods:
            if name not in grids_used:
                continue  # skipped (noted)
            fn = METHODS.get(name)
            kind, knob = fn.info.kind, fn.info.knob
            values: list[int | None] = list(grids_used[name]) if grids_used[name] is not None else [None]
            for v in values:
                opts: dict[str, Any] = {}
                steps = None
                if kind == "unrolled":
                    opts["lr"] = lr
                    steps = v if knob == "steps" else t_fixed
                    opts["steps"] = steps
                    if knob is not None and knob != "steps":
                        opts[knob] = v
                    w_in = w0
                else:
                    w_in = w_star
                    if knob is not None:
                        opts[knob] = v
                    if name in ("neumann", "fixed_point"):
                        opts["alpha"] = lr
                if progress is not None:
                    progress(f"{name} {knob}={v}" if knob else name)

                def call(fn=fn, w_in=w_in, opts=opts):
                    return fn(task, w_in, theta, **opts)

                row: dict[str, Any] = {
                    "task": task.name, "method": name, "kind": kind, "exact": bool(fn.info.exact), "knob": knob or "",
                    "knob_value": float(v) if v is not None else math.nan,
                    "steps": float(steps) if steps is not None else math.nan, "lr": lr if kind == "unrolled" or
                    name in ("neumann", "fixed_point") else math.nan, "n_params": n_params, "n_hyper": n_hyper,
                    "device": str(dev), "status": "ok", "note": ""}
                try:
                    t_min, t_all = min_time(call, repeats, dev)
                    if memory:
                        hg, peak, how_mem = peak_memory(call, dev)
                    else:
                        hg, peak, how_mem = call(), -1, "off"
                except (ValueError, FloatingPointError, RuntimeError) as exc:
                    row.update(rel_error=math.nan, cosine=math.nan, time_s=math.nan, time_s_all="", hvp=math.nan,
                               grad_evals=math.nan, iterations=math.nan, converged=None, peak_mem_bytes=math.nan,
                               peak_mem_mb=math.nan, mem_measure="", status="error",
                               note=str(exc).splitlines()[0][:200])
                    rows.append(row)
                    continue
                g = hg.grad.detach()
                finite = bool(torch.isfinite(g).all())
                st = hg.stats
                row.update(
                    rel_error=rel_error(g, ref) if finite else math.nan, cosine=cosine(g, ref) if finite else math.nan,
                    time_s=t_min, time_s_all=" ".join(f"{t:.6g}" for t in t_all),
                    hvp=float(st.get("hvp", math.nan)), grad_evals=float(st.get("grad_evals", math.nan)),
                    iterations=float(st["iterations"]) if "iterations" in st else math.nan,
                    converged=st.get("converged"), peak_mem_bytes=float(peak),
                    peak_mem_mb=peak / 2 ** 20 if peak >= 0 else math.nan, mem_measure=how_mem)
                if not finite:
                    row.update(status="non-finite", note="the estimate has non-finite entries")
                if st.get("cg_status") not in (None, "converged", "max_iter"):
                    row["note"] = f"cg stopped: {st['cg_status']}"
                rows.append(row)
                if (stop_when_converged and v is not None and st.get("converged") is True
                        and "iterations" in st and int(st["iterations"]) < v and v != values[-1]):
                    notes.append(f"{name} converged at {knob}={v} ({int(st['iterations'])} iterations, "
                                 f"residual {st.get('residual', float('nan')):.1e}): larger {knob} values repeat "
                                 "the same computation and are not run")
                    break
    table = pd.DataFrame(rows, columns=list(FRONTIER_COLUMNS))
    info = {"theta": [float(x) for x in theta.cpu()], "hp": [float(x) for x in task.space.to_natural(theta).cpu()],
            "L": big_l, "L_at_w_star": l_star, "L_at_init": l_init, "L_method": how, "lr": lr,
            "truncated_steps": t_fixed if "truncated" in grids_used else None,
            "grids": {k: v for k, v in grids_used.items()}, "repeats": repeats, "notes": notes,
            "reference_norm": float(torch.linalg.vector_norm(ref))}
    return table, info


# --------------------------------------------------------------------------- scaling: tuner configurations
@dataclass
class TunerConfig:
    """One tuner configuration of the scaling sweep: a label, a registered tuner and its parameters."""

    label: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self):
        return TUNERS.get(self.name)(**self.params)


#: Default configurations. The gradient tuner with CG or exact hypergradients at the exact inner solve
#: (so they differ only in the hypergradient's cost), and with CG after 100 warm-started gradient-descent
#: inner steps (matrix-free throughout: the paper suite's tuned setting), all with Adam on log λ at lr 0.05;
#: TPE and random search with a reference inner solve per evaluation.
DEFAULT_TUNERS: tuple[TunerConfig, ...] = (
    TunerConfig("gradient-cg", "gradient", {"method": "cg", "inner": "exact", "outer": "adam", "outer_lr": 0.05}),
    TunerConfig("gradient-exact", "gradient", {"method": "exact", "inner": "exact", "outer": "adam",
                                               "outer_lr": 0.05}),
    TunerConfig("gradient-cg-gd", "gradient", {"method": "cg", "inner": "gd", "inner_steps": 100, "outer": "adam",
                                               "outer_lr": 0.05}),
    TunerConfig("tpe", "tpe", {}),
    TunerConfig("random", "random", {}),
)
#: Added to the defaults when the gradient tuner offers ``outer = "lbfgs"``.
LBFGS_CONFIG = TunerConfig("gradient-cg-lbfgs", "gradient", {"method": "cg", "inner": "exact", "outer": "lbfgs"})


def default_tuner_configs() -> list[TunerConfig]:
    """:data:`DEFAULT_TUNERS`, plus ``gradient-cg-lbfgs`` when the gradient tuner offers ``outer = "lbfgs"``."""
    from .tuners.gradient import OUTER_OPTIMIZERS

    out = [TunerConfig(c.label, c.name, dict(c.params)) for c in DEFAULT_TUNERS]
    if "lbfgs" in OUTER_OPTIMIZERS:
        out.insert(1, TunerConfig(LBFGS_CONFIG.label, LBFGS_CONFIG.name, dict(LBFGS_CONFIG.params)))
    return out


_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets, braces and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _toml_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string


def _tuner_keywords(cls) -> set[str]:
    """Named keyword parameters of ``cls.__init__`` and of every tuner class above it (not the generic
    :class:`~hpo_bench.tuner.Tuner` base, whose ``**params`` only stores): some baselines pass ``**kwargs``
    up to it, so a misspelt key would otherwise be accepted silently."""
    import inspect

    from .tuner import Tuner

    out: set[str] = set()
    for klass in cls.__mro__:
        if klass in (Tuner, object) or "__init__" not in vars(klass):
            continue
        for prm in inspect.signature(klass.__init__).parameters.values():
            if prm.name != "self" and prm.kind in (prm.KEYWORD_ONLY, prm.POSITIONAL_OR_KEYWORD):
                out.add(prm.name)
    return out


def _validate_config(cfg: TunerConfig, where: str) -> TunerConfig:
    from .tuner import TunerParamError

    if not isinstance(cfg.label, str) or not _LABEL.match(cfg.label):
        raise SweepError(f"{where}: a label must be a non-empty [A-Za-z0-9_.+-] string, but got {cfg.label!r}")
    if not isinstance(cfg.params, dict):
        raise SweepError(f"{where}: params must be a table, but got {cfg.params!r}")
    cls = TUNERS.get(cfg.name)  # unknown names list the known tuners
    known = _tuner_keywords(cls)
    unknown = sorted(set(cfg.params) - known)
    if unknown:
        raise SweepError(f"{where}: parameters of tuner {cfg.name!r} are {', '.join(sorted(known)) or '(none)'}, "
                         f"but got {', '.join(unknown)}")
    try:
        cls(**cfg.params)
    except TypeError as exc:
        raise SweepError(f"{where}: parameters of tuner {cfg.name!r} ({exc})") from None
    except (TunerParamError, UnknownNameError, ValueError) as exc:
        raise SweepError(f"{where}: {exc}") from None
    return cfg


def parse_tuner_spec(spec: str) -> TunerConfig:
    """``LABEL=NAME[:KEY=VALUE[,KEY=VALUE...]]`` (values are TOML: ``method_opts={tol=1e-8}``)."""
    where = f"option --tuner {spec!r}"
    if "=" not in spec:
        raise SweepError(f"{where} must look like LABEL=NAME[:KEY=VALUE,...], e.g. "
                         "'cg50=gradient:method=\"cg\",inner_steps=50'")
    label, rest = spec.split("=", 1)
    name, _, kv = rest.partition(":")
    params: dict[str, Any] = {}
    for item in (_split_top(kv, ",") if kv.strip() else []):
        if "=" not in item:
            raise SweepError(f"{where}: parameter {item!r} must look like KEY=VALUE")
        k, val = item.split("=", 1)
        k = k.strip()
        if not k:
            raise SweepError(f"{where}: parameter {item!r} has an empty key")
        if k in params:
            raise SweepError(f"{where}: parameter {k!r} is given twice")
        params[k] = _toml_value(val.strip())
    return _validate_config(TunerConfig(label.strip(), name.strip(), params), where)


def load_tuner_file(path: str | Path) -> list[TunerConfig]:
    """A TOML file of ``[[tuner]]`` tables with ``label``, ``name`` and an optional ``params`` table."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise SweepError(f"option --tuners-file {str(p)!r}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"option --tuners-file {str(p)!r}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"tuner"})
    if unknown:
        raise SweepError(f"tuners file {str(p)!r}: only [[tuner]] tables are allowed, but got keys {unknown}")
    tables = data.get("tuner")
    if not isinstance(tables, list) or not tables:
        raise SweepError(f"tuners file {str(p)!r}: needs at least one [[tuner]] table (label, name, params)")
    out = []
    for i, t in enumerate(tables):
        where = f"tuners file {str(p)!r}: tuner[{i}]"
        extra = sorted(set(t) - {"label", "name", "params"})
        if extra:
            raise SweepError(f"{where}: keys must be label, name, params, but got {extra}")
        if "name" not in t:
            raise SweepError(f"{where}: key `name` (a registered tuner) is missing")
        out.append(_validate_config(TunerConfig(t.get("label", t["name"]), t["name"], t.get("params", {})), where))
    return out


def select_tuners(labels: list[str] | None, custom: list[TunerConfig]) -> list[TunerConfig]:
    """Default configurations named by ``labels`` (all when ``None`` and no ``custom``), then ``custom``."""
    defaults = default_tuner_configs()
    by_label = {c.label: c for c in defaults}
    if labels is None:
        chosen = [] if custom else defaults
    else:
        chosen = []
        for lab in labels:
            if lab not in by_label:
                raise SweepError(f"option --tuners: unknown configuration {lab!r}; known: {', '.join(by_label)} "
                                 "(or add one with --tuner LABEL=NAME:KEY=VALUE,...)")
            chosen.append(by_label[lab])
    out = chosen + list(custom)
    seen: set[str] = set()
    for c in out:
        if c.label in seen:
            raise SweepError(f"tuner label {c.label!r} is used twice; labels must be unique")
        seen.add(c.label)
    if not out:
        raise SweepError("no tuner configuration to run (give --tuners and/or --tuner)")
    return out


# --------------------------------------------------------------------------- scaling
#: Columns of the scaling table, in order (docs/sweeps.md explains each).
SCALING_COLUMNS = (
    "p", "n", "n_val", "label", "tuner", "tuner_params", "target", "reached", "time_to_target_s",
    "evals_to_target", "cost_to_target", "evals", "tuner_seconds", "wall_s", "cost", "stop_reason", "status",
    "final_gap", "final_gap_frac", "best_ref_gap_frac", "oracle_val_loss", "oracle_init_val_loss", "oracle_gap",
    "threshold", "oracle_method", "oracle_starts", "oracle_evals", "oracle_seconds", "oracle_notes", "message",
)


def oracle_options(p: int, max_seconds: float | None, max_evals: int | None = None) -> dict[str, Any]:
    """L-BFGS-B starts: 6 up to p = 100, 1 above (the init; the centre of the bounds is the init here);
    ``max_evals`` the count budget (default :data:`hpo_bench.oracle.MAX_EVALS`), ``max_seconds`` only
    the wall-clock backstop (an oracle it cuts short says INCOMPLETE in its notes)."""
    return {"starts": 6 if p <= 100 else 1, "max_evals": max_evals, "max_seconds": max_seconds}


def target_trace(rows: list[dict[str, Any]], f_star: float, threshold: float) -> dict[str, Any]:
    """TargetRecorder's rule replayed on recorded rows: the first new incumbent (strictly lower finite
    ``val_loss``) whose ``val_loss_ref - f_star <= threshold``, and the final incumbent's gap."""
    inc = math.inf
    inc_ref = math.nan
    reached_at = None
    for r in rows:
        v = r["val_loss"]
        if math.isfinite(v) and v < inc:
            inc, inc_ref = v, r["val_loss_ref"]
            if reached_at is None and inc_ref - f_star <= threshold:
                reached_at = r
    return {"reached_at": reached_at, "final_gap": inc_ref - f_star if math.isfinite(inc) else math.nan}


def _cost(row: dict[str, Any], n_params: int) -> float:
    return float(row["grad_evals"] + row["hvps"] + n_params * row["inner_solves"])


def scaling(ps: list[int], configs: list[TunerConfig], *, target: float = 1e-3, seconds: float | None = 20.0,
            steps: int | None = None, n_factor: int = 5, seed: int = 0, task_params: dict[str, Any] | None = None,
            oracle_seconds: float | None = 1800.0, oracle_cache: str | Path | None = None, trace: str = "incumbents",
            oracle_evals: int | None = None,
            warmup: bool = True, progress: Callable[[str], None] | None = None,
            ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Time-to-target of each tuner configuration on ``ridge_per_feature`` for every ``p`` in ``ps``.

    The task: ``ridge_per_feature(n = n_factor * p, p = p, **task_params)`` at ``seed`` (float64, CPU),
    validation rows its default ``max(n // 2, 10)``. Per ``p``: the oracle
    (:func:`hpo_bench.oracle.oracle_for`, :func:`oracle_options`, cached in ``oracle_cache``), then each
    configuration through :func:`hpo_bench.target.time_to_target` with ``Budget(steps, seconds)``.

    ``warmup``: before the first ``p``, every configuration runs two steps on a tiny instance (``p = 2``,
    not recorded), so one-time costs (lazy imports, first optimizer steps) land in no measurement.

    Returns:
        ``(table, trace, info)``: one row per ``p`` x configuration (:data:`SCALING_COLUMNS`); the recorded
        rows of every run (``p``, ``label``, ``step``, ``time_s``, ``val_loss``, ``val_loss_ref``, costs,
        ``status``, ``incumbent``): with ``trace="incumbents"`` only the rows that set a new incumbent (the
        only rows TargetRecorder's rule looks at) and each run's last row, with ``"all"`` every row;
        ``info`` with the oracles and notes.
    """
    from .oracle import oracle_for
    from .target import time_to_target

    if not ps:
        raise SweepError("option --p needs at least one size")
    for p in ps:
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise SweepError(f"option --p: sizes must be integers >= 1, but got {p!r}")
    if not (0 < target < 1):
        raise SweepError(f"option --target must be a fraction of the oracle gap in (0, 1), but got {target}")
    if isinstance(n_factor, bool) or not isinstance(n_factor, int) or n_factor < 1:
        raise SweepError(f"option --n-factor must be an integer >= 1, but got {n_factor}")
    try:
        budget = Budget(steps=steps, seconds=seconds)
    except ValueError as exc:
        raise SweepError(f"options --steps/--seconds: {exc}") from None
    if trace not in ("incumbents", "all"):
        raise SweepError(f"trace must be 'incumbents' or 'all', but got {trace!r}")
    extra = dict(task_params or {})
    for k in ("n", "p", "seed", "dtype", "device"):
        if k in extra:
            raise SweepError(f"option --param: `{k}` is set by the sweep (n = n_factor * p), not by --param")
    rows: list[dict[str, Any]] = []
    trace_rows: list[dict[str, Any]] = []
    oracles: dict[int, dict[str, Any]] = {}
    notes: list[str] = []
    with one_thread():
        if warmup:
            from .target import TargetRecorder

            tiny = build_task("ridge_per_feature", {"n": 10, "p": 2, **extra}, seed=seed)
            for cfg in configs:
                rec = TargetRecorder(tiny, Budget(steps=2), meta={}, f_star=-math.inf, threshold=0.0)
                rec.start()
                try:
                    cfg.build().run(tiny, rec, seed=seed)
                except Exception:  # noqa: BLE001 - the measured run reports it
                    pass
        for p in ps:
            params = {"n": n_factor * p, "p": p, **extra}
            task = build_task("ridge_per_feature", params, seed=seed)
            opts = oracle_options(p, oracle_seconds, oracle_evals)
            if progress is not None:
                progress(f"p={p}: oracle (starts={opts['starts']})")
            orc = oracle_for({"name": "ridge_per_feature", **params}, seed, oracle_cache, **opts)
            oracles[p] = asdict(orc)
            thr = target * orc.gap
            for cfg in configs:
                if progress is not None:
                    progress(f"p={p}: {cfg.label}")
                tuner = cfg.build()
                t0 = time.perf_counter()
                status, message = "ok", ""
                try:
                    rec = time_to_target(task, orc, tuner, budget, frac=target, seed=seed)
                except MemoryError as exc:
                    rec, status, message = None, "oom", f"MemoryError: {exc}"
                except Exception as exc:  # a failing tuner is a record, not the end of the sweep
                    rec, status, message = None, "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                wall = time.perf_counter() - t0
                recs = rec.rows if rec is not None else []
                if recs and recs[-1]["status"] != "ok":
                    status, message = recs[-1]["status"], str(recs[-1].get("message", "")).splitlines()[0][:200]
                replay = target_trace(recs, orc.val_loss, thr)
                hit = rec.reached_at if rec is not None else None
                refs = [r["val_loss_ref"] for r in recs if math.isfinite(r["val_loss_ref"])]
                last = recs[-1] if recs else None
                rows.append({
                    "p": p, "n": params["n"], "n_val": int(task.x_val.shape[0]), "label": cfg.label, "tuner": cfg.name,
                    "tuner_params": json.dumps(cfg.params, sort_keys=True), "target": target,
                    "reached": hit is not None, "time_to_target_s": float(hit["time_s"]) if hit else math.nan,
                    "evals_to_target": int(hit["step"]) + 1 if hit else math.nan,
                    "cost_to_target": _cost(hit, task.n_params) if hit else math.nan,
                    "evals": len(recs), "tuner_seconds": rec.time_s if rec is not None else math.nan, "wall_s": wall,
                    "cost": _cost(last, task.n_params) if last else math.nan,
                    "stop_reason": (rec.stop_reason or "") if rec is not None else status, "status": status,
                    "final_gap": replay["final_gap"], "final_gap_frac": replay["final_gap"] / orc.gap,
                    "best_ref_gap_frac": (min(refs) - orc.val_loss) / orc.gap if refs else math.nan,
                    "oracle_val_loss": orc.val_loss, "oracle_init_val_loss": orc.init_val_loss, "oracle_gap": orc.gap,
                    "threshold": thr, "oracle_method": orc.method, "oracle_starts": orc.starts,
                    "oracle_evals": orc.n_evals, "oracle_seconds": orc.seconds, "oracle_notes": "; ".join(orc.notes),
                    "message": message})
                inc = math.inf
                for i, r in enumerate(recs):
                    new_inc = math.isfinite(r["val_loss"]) and r["val_loss"] < inc
                    inc = r["val_loss"] if new_inc else inc
                    if trace == "all" or new_inc or i == len(recs) - 1:
                        trace_rows.append({
                            "p": p, "label": cfg.label, "step": r["step"], "time_s": r["time_s"],
                            "val_loss": r["val_loss"], "val_loss_ref": r["val_loss_ref"], "incumbent": new_inc,
                            "grad_evals": r["grad_evals"], "hvps": r["hvps"], "inner_solves": r["inner_solves"],
                            "hypergrad_rel_error": r["hypergrad_rel_error"], "status": r["status"]})
                if refs and min(refs) < orc.val_loss - 1e-12 * abs(orc.val_loss):
                    notes.append(f"p={p}: {cfg.label} reached F = {min(refs):.10g} below the oracle's "
                                 f"F* = {orc.val_loss:.10g} (the oracle is a best-known value, not a proven optimum)")
    table = pd.DataFrame(rows, columns=list(SCALING_COLUMNS))
    info = {"oracles": {str(k): v for k, v in oracles.items()}, "notes": notes, "budget": asdict(budget),
            "target": target, "n_factor": n_factor, "seed": seed, "task": "ridge_per_feature", "task_params": extra,
            "configs": [asdict(c) for c in configs]}
    return table, pd.DataFrame(trace_rows), info


# --------------------------------------------------------------------------- output
def sweep_provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Versions, git state, host, CPU and threads (:func:`hpo_bench.harness.provenance`) plus the load average."""
    from .harness import provenance

    info = provenance(argv=argv)
    try:
        info["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        info["loadavg_1_5_15"] = None
    info["machine"] = platform.machine()
    info["torch"] = torch.__version__
    return info


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating,)):
        return _jsonable(float(x))
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def check_out_folder(out: Path) -> None:
    """Raise :class:`SweepError` unless ``out`` is a folder or can become one (checked before the sweep runs)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"option --out must be a folder, but got {str(out)!r}, which is a file; choose another --out")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise SweepError(f"option --out must be a folder, but got {str(out)!r}, which lies under the file "
                                 f"{str(parent)!r}; choose another --out")
            return


def write_records(out: Path, stem: str, table: pd.DataFrame, meta: dict[str, Any]) -> list[Path]:
    """``<stem>.csv`` (the table) and ``<stem>.json`` (``meta`` plus ``rows``; NaN as null)."""
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{stem}.csv"
    table.to_csv(csv, index=False, float_format="%.6g")
    js = out / f"{stem}.json"
    doc = {**meta, "rows": table.to_dict(orient="records")}
    js.write_text(json.dumps(_jsonable(doc), indent=1, default=str) + "\n")
    return [csv, js]


def _fig_style():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .report.figures import RC

    return plt, sns, RC


def save_figure(fig, out: Path, name: str) -> list[Path]:
    from .report.figures import save_figure as save  # matplotlib is imported only when a figure is drawn

    return save(fig, out, name)


ERR_FLOOR = 1e-16


def _has_knob(g: pd.DataFrame) -> bool:
    k = g["knob"].iloc[0]
    return isinstance(k, str) and bool(k)  # a table read back from CSV has NaN for no knob


def frontier_figure(table: pd.DataFrame, out: Path, *, title: str = "", name: str = "frontier") -> list[Path]:
    """Relative error vs time and vs peak memory (log-log), one line per method, points labelled by knob."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from .report.figures import palette_for

    plt, sns, rc = _fig_style()
    d = table[table["status"] == "ok"].copy()
    d["err"] = d["rel_error"].clip(lower=ERR_FLOOR)
    d["mem_mib"] = (d["peak_mem_bytes"] / 2 ** 20).clip(lower=2 ** -20)
    methods = list(pd.unique(d["method"]))
    every = sorted(set(METHODS.names()) | set(methods))
    palette = {m: c for m, c in palette_for(every).items() if m in methods}  # one colour per method in every figure
    with sns.axes_style("whitegrid"), plt.rc_context(rc):
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.3))
        fig.subplots_adjust(left=0.09, right=0.99, top=0.9 if title else 0.95, bottom=0.3, wspace=0.25)
        for ax, x, xlabel in ((axes[0], "time_s", "time per call (s, min of repeats, 1 thread)"),
                              (axes[1], "mem_mib", "peak memory of the call (MiB)")):
            for m in methods:
                g = d[d["method"] == m].sort_values("knob_value")
                if g.empty:
                    continue
                marker = "o" if _has_knob(g) else "s"
                ax.plot(g[x], g["err"], marker=marker, markersize=3.2 if len(g) > 1 else 5, color=palette[m],
                        linestyle="-" if g["kind"].iloc[0] == "implicit" else "--", linewidth=1.0)
                for _, r in g.iterrows():
                    if math.isfinite(r["knob_value"]):
                        ax.annotate(f"{int(r['knob_value'])}", (r[x], r["err"]), textcoords="offset points",
                                    xytext=(2, 2), fontsize=4.5, color=palette[m])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow log range would label every minor tick
            xs = d[x][d[x] > 0]
            if len(xs) and xs.max() / xs.min() < 30:  # less than ~1.5 decades: label 1..9 x 10^k, plainly
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"rel. error vs reference (0 at {ERR_FLOOR:g})")
        handles = []
        for m in methods:
            g = d[d["method"] == m]
            lab = f"{m} ({g['knob'].iloc[0]})" if _has_knob(g) else m
            handles.append(Line2D([], [], color=palette[m], marker="o" if _has_knob(g) else "s", markersize=3.5,
                                  linestyle="-" if g["kind"].iloc[0] == "implicit" else "--", label=lab))
        fig.legend(handles=handles, loc="lower center", ncol=min(4, max(len(handles), 1)), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        if title:
            fig.suptitle(title, fontsize=8)
        return save_figure(fig, out, name)


def scaling_figure(table: pd.DataFrame, out: Path, *, title: str = "", name: str = "scaling") -> list[Path]:
    """Time-to-target (and cost-to-target) vs p, log-log, one line per tuner; unreached points as open
    triangles at the tuner time (cost) spent when the budget ran out, labelled with the gap fraction left."""
    from matplotlib.lines import Line2D

    from .report.figures import palette_for

    plt, sns, rc = _fig_style()
    labels = list(pd.unique(table["label"]))
    palette = palette_for(labels)
    with sns.axes_style("whitegrid"), plt.rc_context(rc):
        fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.2))
        fig.subplots_adjust(left=0.09, right=0.99, top=0.9 if title else 0.95, bottom=0.3, wspace=0.25)
        n_miss: dict[tuple[Any, int], int] = {}
        for ax, y, spent, ylabel in ((axes[0], "time_to_target_s", "tuner_seconds", "tuner time to target (s)"),
                                     (axes[1], "cost_to_target", "cost", "cost units to target")):
            for lab in labels:
                g = table[table["label"] == lab].sort_values("p")
                hit = g[g["reached"]]
                ax.plot(hit["p"], hit[y].clip(lower=1e-6), marker="o", markersize=3.5, color=palette[lab],
                        linewidth=1.1)
                miss = g[~g["reached"].astype(bool)]
                if not miss.empty:
                    ax.plot(miss["p"], miss[spent].clip(lower=1e-6), marker="^", markersize=5, linestyle="",
                            markerfacecolor="none", color=palette[lab])
                    for _, r in miss.iterrows():
                        if math.isfinite(r["final_gap_frac"]):
                            k = n_miss.get((ax, r["p"]), 0)  # stagger the labels of misses at the same p
                            n_miss[(ax, r["p"])] = k + 1
                            ax.annotate(f"{r['final_gap_frac']:.0e}", (r["p"], max(r[spent], 1e-6)),
                                        textcoords="offset points", xytext=(4, 2 - 6 * k), fontsize=4.5,
                                        color=palette[lab])
            if len(table):
                ax.set_xlim(table["p"].min() / 1.6, table["p"].max() * 2.5)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("p (hyperparameters = features; n = %d p)" % int(table["n"].iloc[0] / table["p"].iloc[0])
                          if len(table) else "p")
            ax.set_ylabel(ylabel)
        handles = [Line2D([], [], color=palette[lab], marker="o", markersize=3.5, label=lab) for lab in labels]
        handles.append(Line2D([], [], color="0.3", marker="^", markerfacecolor="none", linestyle="",
                              label="not reached: budget spent (gap fraction left)"))
        fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        if title:
            fig.suptitle(title, fontsize=8)
        return save_figure(fig, out, name)
