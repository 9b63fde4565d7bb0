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

* :func:`scaling` -- a suite generator: ``ridge_per_feature`` with ``p`` hyperparameters (one per feature)
  and ``n = n_factor * p`` training rows, one ``[[task]]`` per ``p`` and the tuner configurations as
  ``[[tuner]]`` tables (:func:`scaling_suite`), written to ``OUT/suite.toml`` and run by the harness
  (:func:`hpo_bench.running.harness.run_suite`, into ``OUT/run``: the cells, statuses, timeouts, resume and records
  of ``hpo-bench run``). Per ``p`` the oracle (:func:`hpo_bench.analysis.oracle.oracle_for`, cached); the time to
  ``target`` of the oracle gap is read from each cell's records by TargetRecorder's rule, and
  :func:`fit_exponents` fits its exponent in ``p``. Tuner configurations are suite ``[[tuner]]`` tables,
  validated by :meth:`hpo_bench.running.suite.Suite.from_dict`.

The frontier is not a harness run: it times single calls of each method at one ``theta`` in this process
(minimum of repeats, one thread, a profiled call for memory), a micro-benchmark of the methods rather than
tuner cells, so it writes a table and its provenance, not a run folder. Figures: :mod:`hpo_bench.report.sweep_figures`.

Bad input raises :class:`SweepError` (the CLI prints it as one line, exit 2).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from ..core._threads import one_thread
from ..core.records import Budget, cosine, rel_error
from ..core.registry import METHODS, TASKS

__all__ = [
    "SweepError", "DENSE_L_MAX", "FORWARD_MAX_HYPER", "FORWARD_MAX_HVP", "one_two_five", "default_grids",
    "peak_memory", "min_time", "largest_eigenvalue", "build_task", "frontier_theta", "frontier",
    "FRONTIER_COLUMNS", "TunerConfig", "DEFAULT_TUNERS", "TUNER_TABLE_KEYS", "default_tuner_configs",
    "tuner_configs", "parse_tuner_option", "load_tuner_file", "select_tuners", "SCALING_TASK", "SPARSE_PARAMS",
    "suite_toml",
    "scaling_suite", "scaling", "ScalingResult", "SCALING_COLUMNS", "FIT_COLUMNS", "oracle_options", "target_trace",
    "scaling_table", "fit_exponents", "sweep_provenance", "write_records",
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
    from ..hypergrad import power_step

    lin = task.linearize(w.detach(), theta.detach())
    if w.shape[0] <= DENSE_L_MAX:
        return float(torch.linalg.eigvalsh(lin.hessian()).max()), "eigvalsh"
    return 1.0 / (1.05 * power_step(lin, w.shape[0], iters=100)), "power_iteration(100)"


def build_task(name: str, params: dict[str, Any] | None = None, *, seed: int = 0, device: str = "cpu",
               dtype: str = "float64"):
    """The registered task ``name`` with ``params`` (its own defaults otherwise)."""
    from ..core.space import SpaceError
    from ..core.task import TaskParamError

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
    """One tuner configuration of the scaling sweep: a suite ``[[tuner]]`` table (a label, a registered tuner,
    its parameters and, in ``extra``, an optional ``budget`` / ``timeout`` of its own)."""

    label: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> dict[str, Any]:
        """The ``[[tuner]]`` table of the generated suite."""
        return {"name": self.name, "label": self.label, "params": json.loads(json.dumps(self.params)),
                **json.loads(json.dumps(self.extra))}


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

#: The keys of a suite ``[[tuner]]`` table that a sweep configuration may have (``tasks`` and ``tune`` are the
#: sweep's business: every configuration runs at every p, and the sweep has no tune step).
TUNER_TABLE_KEYS = ("name", "label", "params", "budget", "timeout")
TUNER_EXAMPLE = '{label = "cg50", name = "gradient", params = {method = "cg"}}'


def default_tuner_configs() -> list[TunerConfig]:
    """:data:`DEFAULT_TUNERS`, plus ``gradient-cg-lbfgs`` when the gradient tuner offers ``outer = "lbfgs"``."""
    from ..tuners.gradient import OUTER_OPTIMIZERS

    out = [TunerConfig(c.label, c.name, dict(c.params)) for c in DEFAULT_TUNERS]
    if "lbfgs" in OUTER_OPTIMIZERS:
        out.insert(1, TunerConfig(LBFGS_CONFIG.label, LBFGS_CONFIG.name, dict(LBFGS_CONFIG.params)))
    return out


def _probe_suite(tables: list[dict[str, Any]], task_params: dict[str, Any] | None) -> dict[str, Any]:
    """A one-task suite (a tiny instance of the sweep's task) around ``tables``: suite validation then checks
    the tuners exactly as it checks a suite file's (names, labels, keywords and values, duplicates, the tags
    a tuner needs or refuses)."""
    return {"seeds": [0], "budget": {"steps": 1},
            "task": [{"name": SCALING_TASK, "label": "probe", "params": {"n": 10, "p": 2, **(task_params or {})}}],
            "tuner": tables}


def tuner_configs(tables: Any, what: str, *, task_params: dict[str, Any] | None = None) -> list[TunerConfig]:
    """Suite ``[[tuner]]`` tables as configurations, validated by :meth:`hpo_bench.running.suite.Suite.from_dict` (the
    suite file's checks; messages start with ``what``, e.g. ``option --tuners-file 'f.toml'``)."""
    from ..running.suite import Suite, SuiteError

    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise SweepError(f"{what}: needs at least one [[tuner]] table (name, label, params), but got {tables!r}")
    for i, t in enumerate(tables):
        extra = sorted(set(t) - set(TUNER_TABLE_KEYS))
        if extra:
            raise SweepError(f"{what}: key `tuner[{i}].{extra[0]}` must be one of the keys a sweep takes "
                             f"({', '.join(TUNER_TABLE_KEYS)}): every configuration runs at every p, and the sweep "
                             "has no tune step")
    source = "<sweep tuners>"
    try:
        suite = Suite.from_dict(_probe_suite(tables, task_params), source=source)
    except SuiteError as exc:
        msg = str(exc).removeprefix(f"suite file {source!r}: ")
        raise SweepError(f"{what}: {msg}") from None
    return [TunerConfig(e.label, e.name, dict(e.params), {k: t[k] for k in ("budget", "timeout") if k in t})
            for e, t in zip(suite.tuners, tables)]


def parse_tuner_option(text: str, *, task_params: dict[str, Any] | None = None) -> TunerConfig:
    """One ``--tuner`` value: a TOML inline table with the keys of a suite ``[[tuner]]`` table, e.g.
    ``{label = "cg50", name = "gradient", params = {method = "cg"}}`` (read by ``tomllib``)."""
    what = f"option --tuner {text!r}"
    try:
        doc = tomllib.loads(f"tuner = {text}")
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{what} must be a TOML inline table like '{TUNER_EXAMPLE}' ({exc})") from None
    if set(doc) != {"tuner"} or not isinstance(doc["tuner"], dict):
        raise SweepError(f"{what} must be one TOML inline table like '{TUNER_EXAMPLE}'")
    return tuner_configs([doc["tuner"]], what, task_params=task_params)[0]


def load_tuner_file(path: str | Path, *, task_params: dict[str, Any] | None = None) -> list[TunerConfig]:
    """A TOML file of ``[[tuner]]`` tables in the suite file's format (``name``, ``label``, ``params``, and
    optionally ``budget`` and ``timeout``), validated by the suite file's checks."""
    p = Path(path)
    what = f"option --tuners-file {str(p)!r}"
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise SweepError(f"{what}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SweepError(f"{what}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"tuner"})
    if unknown:
        raise SweepError(f"{what}: key `{unknown[0]}` must be absent: a tuners file holds only [[tuner]] tables")
    return tuner_configs(data.get("tuner"), what, task_params=task_params)


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
                                 f"(or add one with --tuner '{TUNER_EXAMPLE}')")
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


# --------------------------------------------------------------------------- scaling: the suite
#: The scaling sweep's task.
SCALING_TASK = "ridge_per_feature"
#: Task parameters of the sizes above ``--sparse-above``: sparse text-like rows (Zipf word frequencies, 0.1%
#: non-zeros, :func:`hpo_bench.data.text_like`), held as CSR and never densified.
SPARSE_PARAMS: dict[str, Any] = {"dataset": "text-like", "density": 1e-3}


def suite_toml(d: dict[str, Any], header: str = "") -> str:
    """``d`` (the suite file's schema) as suite-file text, written by ``tomli_w``, after ``header`` as ``#``
    comment lines. :func:`scaling` checks that ``tomllib`` reads the text back to ``d``."""
    import tomli_w

    lines = [f"# {ln}" if ln else "#" for ln in header.splitlines()]
    try:
        body = tomli_w.dumps(d)
    except TypeError as exc:
        raise SweepError(f"cannot write the suite to a suite file ({exc})") from None
    return "\n".join(lines) + ("\n\n" if lines else "") + body


def scaling_suite(ps: list[int], configs: list[TunerConfig], *, seconds: float | None = 20.0,
                  steps: int | None = None, n_factor: int = 5, seeds: list[int] | tuple[int, ...] = (0,),
                  task_params: dict[str, Any] | None = None, sparse_above: int | None = None,
                  sparse_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The scaling sweep as a suite (a dict with the suite file's schema): one ``[[task]]`` per ``p``
    (label ``p<p>``: ``ridge_per_feature`` with ``n = n_factor * p``, ``p`` and ``task_params``; above
    ``sparse_above``, also ``sparse_params``, default :data:`SPARSE_PARAMS`), the configurations as
    ``[[tuner]]`` tables, the budget (``seconds``, ``steps``) and the ``seeds``."""
    budget: dict[str, Any] = {}
    if steps is not None:
        budget["steps"] = int(steps)
    if seconds is not None:
        budget["seconds"] = float(seconds)
    tasks = []
    for p in ps:
        params = {"n": n_factor * p, "p": p, **(task_params or {})}
        if sparse_above is not None and p > sparse_above:
            params.update(SPARSE_PARAMS if sparse_params is None else sparse_params)
        tasks.append({"name": SCALING_TASK, "label": f"p{p}", "params": params})
    return {"name": "scaling", "description": f"sweep scaling: {SCALING_TASK}, n = {n_factor} p, "
            f"p = {', '.join(map(str, ps))}", "seeds": list(seeds), "budget": budget, "task": tasks,
            "tuner": [c.table() for c in configs]}


# --------------------------------------------------------------------------- scaling: measures
#: Columns of the scaling table, in order (docs/sweeps.md explains each).
SCALING_COLUMNS = (
    "p", "n", "seed", "label", "tuner", "tuner_params", "cell_id", "target", "reached", "time_to_target_s",
    "evals_to_target", "cost_to_target", "evals", "tuner_seconds", "measure_s", "wall_s", "cost", "stop_reason",
    "status", "final_gap", "final_gap_frac", "best_ref_gap_frac", "oracle_val_loss", "oracle_init_val_loss",
    "oracle_gap", "threshold", "oracle_method", "oracle_starts", "oracle_evals", "oracle_seconds", "oracle_notes",
    "message",
)
#: Columns of the exponent fits (one row per configuration).
FIT_COLUMNS = ("label", "tuner", "exponent_time", "exponent_cost", "fit_p_min", "fit_p_max", "fit_points",
               "reached_ps", "missed_ps", "stops_from_p", "note")


def oracle_options(p: int, max_seconds: float | None, max_evals: int | None = None) -> dict[str, Any]:
    """L-BFGS-B starts: 6 up to p = 100, 1 above (the init; the centre of the bounds is the init here);
    ``max_evals`` the count budget (default :data:`hpo_bench.analysis.oracle.MAX_EVALS`), ``max_seconds`` only
    the wall-clock backstop (an oracle it cuts short says INCOMPLETE in its notes)."""
    return {"starts": 6 if p <= 100 else 1, "max_evals": max_evals, "max_seconds": max_seconds}


def target_trace(rows: list[dict[str, Any]], f_star: float, threshold: float) -> dict[str, Any]:
    """TargetRecorder's rule (:class:`hpo_bench.running.target.TargetRecorder`) replayed on a cell's recorded rows:
    the first new incumbent (strictly lower finite ``val_loss``) whose ``val_loss_ref - f_star <= threshold``
    (``reached_at``, ``None`` if none), and the final incumbent's gap ``final_gap``."""
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


def _stop_reason(last: dict[str, Any], budget) -> str:
    """Why a cell ended, from its last row: its status if not ``ok``, else the recorder's budget rule
    (``budget_steps`` before ``budget_seconds``, as :meth:`Recorder.should_stop` checks them), else the
    tuner ended on its own (``tuner``: e.g. L-BFGS-B converged)."""
    if last["status"] != "ok":
        return str(last["status"])
    if budget.steps is not None and int(last["step"]) + 1 >= budget.steps:
        return "budget_steps"
    if budget.seconds is not None and float(last["time_s"]) >= budget.seconds:
        return "budget_seconds"
    return "tuner"


def polish_from_cells(frame: pd.DataFrame, suite, oracles: dict[tuple[str, int], Any], cache: Path, *,
                      max_seconds: float | None = None, progress: Callable[[str], None] | None = None
                      ) -> dict[tuple[str, int], Any]:
    """Each oracle polished from every cell's best point (:func:`hpo_bench.analysis.oracle.polished_oracle_for`, cached in
    ``cache/polish``), as ``hpo-bench report`` does: F* is then never above a point a tuner reached, and when a
    tuner's incumbent leads L-BFGS-B to a lower basin the oracle's ``notes``/``winner`` say so."""
    from .oracle import polished_oracle_for
    from ..report.metrics import _incumbent_starts

    label_col = "task_label" if "task_label" in frame.columns else "task"
    out = dict(oracles)
    for t in suite.tasks:
        for s in suite.seeds:
            rows = frame[(frame[label_col].astype(str) == t.label) & (frame["seed"].astype(int) == int(s))]
            starts = [st for group in _incumbent_starts(rows).values() for st in group]
            if not starts:
                continue
            if progress is not None:
                progress(f"{t.label} seed {s}: oracle polish from {len(starts)} cell incumbent(s)")
            with one_thread():
                out[(t.label, s)] = polished_oracle_for({"name": t.name, **t.params}, s, oracles[(t.label, s)],
                                                        starts, cache, max_seconds=max_seconds)
    return out


def scaling_table(frame: pd.DataFrame, suite, oracles: dict[tuple[str, int], Any], target: float
                  ) -> tuple[pd.DataFrame, list[str]]:
    """One row per cell of ``suite`` (:data:`SCALING_COLUMNS`) from the run's records ``frame``, with
    TargetRecorder's rule (:func:`target_trace`) against ``oracles[(task label, seed)]``; and notes on
    tuners that went below an oracle's F*."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    by_cell = {cid: g.sort_values("step") for cid, g in frame.groupby("cell_id", sort=False)}
    for cell in suite.cells():
        g = by_cell.get(cell.cell_id)
        recs = g.to_dict("records") if g is not None else []
        orc = oracles[(cell.task.label, cell.seed)]
        p = int(cell.task.params["p"])
        thr = target * orc.gap
        replay = target_trace(recs, orc.val_loss, thr)
        hit = replay["reached_at"]
        refs = [r["val_loss_ref"] for r in recs if math.isfinite(r["val_loss_ref"])]
        last = recs[-1] if recs else None
        rows.append({
            "p": p, "n": int(cell.task.params["n"]), "seed": cell.seed, "label": cell.tuner.label,
            "tuner": cell.tuner.name, "tuner_params": json.dumps(cell.tuner.params, sort_keys=True),
            "cell_id": cell.cell_id, "target": target, "reached": hit is not None,
            "time_to_target_s": float(hit["time_s"]) if hit else math.nan,
            "evals_to_target": int(hit["step"]) + 1 if hit else math.nan,
            "cost_to_target": _cost(hit, orc.n_params) if hit else math.nan,
            "evals": len(recs),
            "tuner_seconds": float(last["time_s"]) if last else math.nan,
            "measure_s": float(last["measure_s"]) if last else math.nan,
            "wall_s": float(last["wall_s"]) if last else math.nan,
            "cost": _cost(last, orc.n_params) if last else math.nan,
            "stop_reason": _stop_reason(last, cell.budget) if last else "missing",
            "status": str(last["status"]) if last else "missing",
            "final_gap": replay["final_gap"], "final_gap_frac": replay["final_gap"] / orc.gap,
            "best_ref_gap_frac": (min(refs) - orc.val_loss) / orc.gap if refs else math.nan,
            "oracle_val_loss": orc.val_loss, "oracle_init_val_loss": orc.init_val_loss, "oracle_gap": orc.gap,
            "threshold": thr, "oracle_method": orc.method, "oracle_starts": orc.starts, "oracle_evals": orc.n_evals,
            "oracle_seconds": orc.seconds, "oracle_notes": "; ".join(orc.notes),
            "message": str(last.get("message") or "").splitlines()[0][:200] if last and last["status"] != "ok"
            else ""})
        if refs and min(refs) < orc.val_loss - 1e-12 * abs(orc.val_loss):
            notes.append(f"p={p}: {cell.tuner.label} reached F = {min(refs):.10g} below the oracle's "
                         f"F* = {orc.val_loss:.10g} (the oracle is a best-known value, not a proven optimum)")
    return pd.DataFrame(rows, columns=list(SCALING_COLUMNS)), notes


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log10 y on log10 x (NaN with fewer than two distinct x or a non-positive y)."""
    if len(set(x.tolist())) < 2 or not (y > 0).all():
        return math.nan
    return float(np.polyfit(np.log10(x), np.log10(y), 1)[0])


def fit_exponents(table: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the exponent of time-to-target (and cost-to-target) in p, the least-squares slope on
    log-log over every cell that reached the target (every seed a point), and where it stops reaching it.

    ``fit_p_min`` / ``fit_p_max``: the range of p of the fitted points; ``reached_ps``: the p where every seed
    reached the target; ``missed_ps``: where some seed did not; ``stops_from_p``: the smallest p from which
    no larger p of the sweep is reached (NaN when the largest p is reached). Fewer than two sizes reached: no
    exponent (NaN, with a note)."""
    out = []
    for lab in pd.unique(table["label"]):
        g = table[table["label"] == lab]
        hit = g[g["reached"].astype(bool)]
        ps = sorted(int(p) for p in pd.unique(g["p"]))
        all_hit = {p: bool(g[g["p"] == p]["reached"].astype(bool).all()) for p in ps}
        stops = math.nan
        for p in reversed(ps):
            if all_hit[p]:
                break
            stops = p
        x = hit["p"].to_numpy(float)
        exp_t = _slope(x, hit["time_to_target_s"].to_numpy(float))
        exp_c = _slope(x, hit["cost_to_target"].to_numpy(float))
        n_sizes = len(set(x.tolist()))
        note = "" if n_sizes >= 2 else f"reached the target at {n_sizes} size{'s' if n_sizes != 1 else ''}: " \
            "no exponent"
        out.append({"label": lab, "tuner": g["tuner"].iloc[0], "exponent_time": exp_t, "exponent_cost": exp_c,
                    "fit_p_min": int(x.min()) if len(x) else math.nan,
                    "fit_p_max": int(x.max()) if len(x) else math.nan,
                    "fit_points": int(len(x)), "reached_ps": ",".join(str(p) for p in ps if all_hit[p]),
                    "missed_ps": ",".join(str(p) for p in ps if not all_hit[p]), "stops_from_p": stops,
                    "note": note})
    return pd.DataFrame(out, columns=list(FIT_COLUMNS))


# --------------------------------------------------------------------------- scaling: the sweep
@dataclass
class ScalingResult:
    """What :func:`scaling` returns: the table (one row per cell), the exponent fits, ``info`` (oracles, budget,
    configurations, notes, the run's provenance), the generated suite file and the harness's result."""

    table: pd.DataFrame
    fits: pd.DataFrame
    info: dict[str, Any]
    suite_path: Path
    run: Any


def _check_scaling_args(ps, target, n_factor, seeds, seconds, steps, sparse_above, task_params=None) -> None:
    if not ps:
        raise SweepError("option --p needs at least one size")
    for p in ps:
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise SweepError(f"option --p: sizes must be integers >= 1, but got {p!r}")
    if len(set(ps)) != len(ps):
        raise SweepError(f"option --p: sizes must be distinct, but got {list(ps)}")
    if not (0 < target < 1):
        raise SweepError(f"option --target must be a fraction of the oracle gap in (0, 1), but got {target}")
    if isinstance(n_factor, bool) or not isinstance(n_factor, int) or n_factor < 1:
        raise SweepError(f"option --n-factor must be an integer >= 1, but got {n_factor}")
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise SweepError(f"option --seed must be distinct integers >= 0, but got {list(seeds)}")
    try:
        Budget(steps=steps, seconds=seconds)
    except ValueError as exc:
        raise SweepError(f"options --steps/--seconds: {exc}") from None
    if sparse_above is not None and (isinstance(sparse_above, bool) or not isinstance(sparse_above, int)
                                     or sparse_above < 0):
        raise SweepError(f"option --sparse-above must be an integer >= 0, but got {sparse_above!r}")
    if sparse_above is not None:
        for k in SPARSE_PARAMS:
            if k in (task_params or {}):
                raise SweepError(f"option --param: `{k}` is set by --sparse-above for p > {sparse_above} "
                                 f"({k} = {SPARSE_PARAMS[k]!r}), not by --param; drop one of them")


def scaling(ps: list[int], configs: list[TunerConfig], out: str | Path, *, target: float = 1e-3,
            seconds: float | None = 20.0, steps: int | None = None, n_factor: int = 5,
            seeds: list[int] | tuple[int, ...] = (0,), task_params: dict[str, Any] | None = None,
            oracle_seconds: float | None = 1800.0, oracle_evals: int | None = None,
            oracle_cache: str | Path | None = None, workers: int = 1, threads: int | None = None,
            timeout: float | None = None, resume: bool = False, force: bool = False, retry_failed: bool = False,
            sparse_above: int | None = None, sparse_params: dict[str, Any] | None = None,
            argv: list[str] | None = None, reporter: Any = None,
            progress: Callable[[str], None] | None = None) -> ScalingResult:
    """Time-to-target of each configuration on ``ridge_per_feature`` for every ``p`` in ``ps``, run by the harness.

    The sweep is a suite (:func:`scaling_suite`), written to ``OUT/suite.toml`` (``hpo-bench run OUT/suite.toml``
    runs the same cells) and run by :func:`hpo_bench.running.harness.run_suite` into ``OUT/run`` on ``workers`` cell
    processes (the cells, statuses, hard timeouts, ``resume`` and records of ``hpo-bench run``). Per ``p`` and
    seed the oracle (:func:`hpo_bench.analysis.oracle.oracle_for`, :func:`oracle_options`) is computed first, in this
    process, and cached in ``oracle_cache`` (default ``OUT/oracles``). Every cell runs its whole budget; the time
    to target is then read from its records by TargetRecorder's rule (:func:`target_trace`), and
    :func:`fit_exponents` fits the exponent in p. With ``sparse_above``, the sizes ``p > sparse_above`` run on
    sparse data (``sparse_params``, default :data:`SPARSE_PARAMS`: text-like CSR rows, density 1e-3; same
    ``n = n_factor * p``), where the references are matrix-free and certified.

    Raises:
        SweepError: bad input, or a folder ``OUT/run`` that cannot take this run (the message says why).
    """
    from dataclasses import replace

    from ..running.executors import ProcessPool
    from ..running.harness import RunFolderError, check_run_folder, run_suite
    from .oracle import oracle_for
    from ..running.suite import Suite, SuiteError, load_suite

    ps = list(ps)
    seeds = list(seeds)
    _check_scaling_args(ps, target, n_factor, seeds, seconds, steps, sparse_above, task_params)
    extra = dict(task_params or {})
    for k in ("n", "p", "seed", "dtype", "device"):
        if k in extra:
            raise SweepError(f"option --param: `{k}` is set by the sweep (n = n_factor * p), not by --param")
    out = Path(out)
    check_out_folder(out)
    suite_file = out / "suite.toml"
    d = scaling_suite(ps, configs, seconds=seconds, steps=steps, n_factor=n_factor, seeds=seeds, task_params=extra,
                      sparse_above=sparse_above, sparse_params=sparse_params)
    text = suite_toml(d, header="Written by `hpo-bench sweep scaling` (hpo_bench.analysis.sweep.scaling_suite). From this "
                      "folder,\n  hpo-bench run suite.toml --out run --workers 1 --resume\nruns (or continues) "
                      "the same cells.")
    if tomllib.loads(text) != d:  # pragma: no cover - the writer's own guarantee
        raise RuntimeError("suite_toml wrote a file that does not read back to the suite")
    if progress is not None:
        progress("validating the suite (builds each task once)")
    try:
        checked = Suite.from_dict(d, source=str(suite_file))
    except SuiteError as exc:
        raise SweepError(str(exc)) from None
    checked = replace(checked, path=str(suite_file), sha256=hashlib.sha256(text.encode()).hexdigest())
    run_dir = out / "run"
    try:
        check_run_folder(run_dir, checked, resume=resume, force=force)
    except RunFolderError as exc:
        raise SweepError(str(exc).replace("--out", "--out (its run/ folder)")) from None
    out.mkdir(parents=True, exist_ok=True)
    old = suite_file.read_text() if suite_file.is_file() else None
    if old != text:
        suite_file.write_text(text)
    suite = load_suite(str(suite_file), validate=False)  # what runs is what the file says
    if [c.config_hash() for c in suite.cells()] != [c.config_hash() for c in checked.cells()]:  # pragma: no cover
        raise RuntimeError(f"{suite_file} does not reproduce the sweep's cells")

    cache = Path(oracle_cache) if oracle_cache is not None else out / "oracles"
    oracles: dict[tuple[str, int], Any] = {}
    for t in suite.tasks:
        p = int(t.params["p"])
        opts = oracle_options(p, oracle_seconds, oracle_evals)
        for s in suite.seeds:
            if progress is not None:
                progress(f"{t.label} seed {s}: oracle (starts={opts['starts']})")
            with one_thread():
                oracles[(t.label, s)] = oracle_for({"name": t.name, **t.params}, s, cache, **opts)

    executor = ProcessPool(int(workers))
    try:
        res = run_suite(suite, run_dir, argv=argv, executor=executor, resume=resume, force=force,
                        retry_failed=retry_failed, timeout=timeout, threads=threads, reporter=reporter)
    finally:
        executor.shutdown(wait=True)
    oracles = polish_from_cells(res.frame, suite, oracles, cache, max_seconds=oracle_seconds, progress=progress)
    table, notes = scaling_table(res.frame, suite, oracles, target)
    fits = fit_exponents(table)
    prov = json.loads(Path(res.provenance_path).read_text())
    try:
        prov["loadavg_1_5_15_end"] = list(os.getloadavg())
    except OSError:
        prov["loadavg_1_5_15_end"] = None
    info = {"task": SCALING_TASK, "task_params": extra, "ps": ps, "n_factor": n_factor, "seeds": seeds,
            "target": target, "budget": {"steps": steps, "seconds": seconds}, "sparse_above": sparse_above,
            "sparse_params": (SPARSE_PARAMS if sparse_params is None else sparse_params)
            if sparse_above is not None else None,
            "configs": [c.table() for c in configs], "suite": suite_file.name, "run": run_dir.name,
            "oracle_cache": str(cache),
            "oracles": {f"{lab}/seed{s}": asdict(o) for (lab, s), o in oracles.items()},
            "fits": fits.to_dict(orient="records"), "notes": notes, "statuses": res.statuses,
            "provenance": prov}
    return ScalingResult(table, fits, info, suite_file, res)


# --------------------------------------------------------------------------- output
def sweep_provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Versions, git state, host, CPU and threads (:func:`hpo_bench.running.harness.provenance`) plus the load average.

    Used by the frontier, which times calls in this process and writes no run folder (so no run's
    ``provenance.json``), and whose times depend on the machine's load at the end; the scaling sweep uses
    its run folder's ``provenance.json`` (written by the harness) instead."""
    from ..running.harness import provenance

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
