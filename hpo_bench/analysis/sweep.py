"""Sweeps as suite generators: the accuracy-cost frontier of hypergradient methods, and tuner scaling with the
number of hyperparameters. Each sweep writes a suite file and runs it with the harness
(:func:`hpo_bench.running.harness.run_suite`: the cells, statuses, hard timeouts, resume, records and
``provenance.json`` of ``hpo-bench run``), then reads its table from the run's records.

* :func:`frontier` -- one task at fixed hyperparameters ``theta``; every registered hypergradient
  method x a grid of its accuracy knob (``fn.info.knob``: CG ``max_iter``, Neumann / fixed-point
  ``iterations``, reverse / forward ``steps`` T, truncated ``truncate`` K at fixed T). One cell per method
  (:func:`frontier_suite`): the probe tuner :class:`hpo_bench.tuners.frontier_probe.FrontierProbe` with the
  knob grid in its ``values`` (a cell process per method, not per point: each costs about a second to
  start). Per point (:func:`frontier_table`): the recorder's relative error and cosine against the task's
  reference hypergradient, the time of the call (minimum over repeats, one thread), its HVP count
  (``stats["hvp"]``) and the **peak memory** of the call (:func:`peak_memory`): on CUDA
  ``torch.cuda.max_memory_allocated`` (reset before the call, minus what was allocated before); on the CPU
  the running sum of the allocation and free events that ``torch.profiler`` records with
  ``profile_memory=True`` during the call (a separate, profiled call: the timed calls are never profiled).
  Both are bytes held by torch's allocator beyond what existed before the call (the returned result
  included), not the process RSS.

  Calls are made the way :mod:`benchmarks.bench_core` makes them: implicit methods at
  ``w = task.solve(theta)``, unrolled methods from ``task.init_params()`` with ``steps`` and
  ``lr = 1/L``. Here ``L`` is the largest eigenvalue of the inner Hessian (dense ``eigvalsh`` up to
  :data:`DENSE_L_MAX` parameters, else power iteration), the larger of its values at
  ``task.init_params()`` and at ``w*``, found once by the sweep; the Neumann and fixed-point methods get the
  same step as ``alpha``, so no method spends HVPs on its own step-size estimate and ``hvp`` is the knob's cost.

* :func:`scaling` -- ``ridge_per_feature`` with ``p`` hyperparameters (one per feature) and
  ``n = n_factor * p`` training rows, one ``[[task]]`` per ``p`` and the tuner configurations as
  ``[[tuner]]`` tables (:func:`scaling_suite`), written to ``OUT/suite.toml`` and run into ``OUT/run``.
  Per ``p`` the oracle (:func:`hpo_bench.analysis.oracle.oracle_for`, cached); the time to ``target`` of
  the oracle gap is read from each cell's records by TargetRecorder's rule, and :func:`fit_exponents` fits
  its exponent in ``p``. Tuner configurations are suite ``[[tuner]]`` tables, validated by
  :meth:`hpo_bench.running.suite.Suite.from_dict`.

Suite files are written by ``tomli_w`` (:func:`suite_toml`). Figures: :mod:`hpo_bench.report.sweep_figures`.
Bad input raises :class:`SweepError` (the CLI prints it as one line, exit 2).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..core._threads import one_thread
from ..core.records import Budget
from ..core.registry import METHODS, TASKS
from ..tuners.frontier_probe import DENSE_L_MAX, largest_eigenvalue, min_time, peak_memory

__all__ = [
    "SweepError", "DENSE_L_MAX", "FORWARD_MAX_HYPER", "FORWARD_MAX_HVP", "one_two_five", "default_grids",
    "peak_memory", "min_time", "largest_eigenvalue", "build_task", "frontier_theta", "frontier_suite",
    "frontier_table", "frontier", "FrontierResult", "PROBE", "FRONTIER_COLUMNS", "TunerConfig", "DEFAULT_TUNERS", "TUNER_TABLE_KEYS", "default_tuner_configs",
    "tuner_configs", "parse_tuner_option", "load_tuner_file", "select_tuners", "SCALING_TASK", "SPARSE_PARAMS",
    "suite_toml",
    "scaling_suite", "scaling", "ScalingResult", "SCALING_COLUMNS", "FIT_COLUMNS", "oracle_options", "target_trace",
    "scaling_table", "fit_exponents", "check_out_folder", "write_records",
]

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
#: The tuner of every frontier cell (:class:`hpo_bench.tuners.frontier_probe.FrontierProbe`).
PROBE = "frontier_probe"


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


def frontier_suite(task, *, task_params: dict[str, Any] | None = None, theta: torch.Tensor | None = None,
                   theta_mode: str = "init", methods: list[str] | None = None,
                   grids: dict[str, list[int]] | None = None, repeats: int = 3, truncated_steps: int | None = None,
                   max_iters: int = 1000, forward_max_hyper: int = FORWARD_MAX_HYPER,
                   forward_max_hvp: int = FORWARD_MAX_HVP, memory: bool = True, stop_when_converged: bool = True,
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The frontier on the built ``task`` as a suite (a dict in the suite file's schema) and its information.

    One ``[[task]]`` (``task.name`` with ``task_params``, the seed and device of ``task``) and one ``[[tuner]]``
    per method: the probe (:class:`hpo_bench.tuners.frontier_probe.FrontierProbe`, label = the method) with
    the method's knob grid in ``values``, ``theta`` (``"init"`` when ``theta_mode`` is ``"init"``, else the
    point), ``lr = 1/L`` where the method takes a step, and a budget of one step per value. ``L`` is found
    here once (at ``task.init_params()`` and ``w*``), so every cell gets the same step.

    Returns:
        ``(suite, info)``: ``info`` holds ``theta``, ``hp``, ``L``, ``lr``, the grids, ``notes`` on what was
        skipped or capped, and ``reference_norm``.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise SweepError(f"option --repeats must be an integer >= 1, but got {repeats}")
    # by default the methods the task can run: declared tags it has (the non-smooth methods need "prox")
    methods = list(methods) if methods else [m for m in METHODS.names()
                                             if METHODS.get(m).info.required_tags({}) <= set(task.tags)]
    for m in methods:
        METHODS.get(m)
    if theta is None:
        theta = frontier_theta(task, theta_mode)
    theta = theta.detach().to(device=task.device, dtype=task.dtype)
    task.space.check_shape(theta)
    n_params, n_hyper = int(task.n_params), int(task.space.dim)
    grids_used, notes = default_grids(methods, n_params, n_hyper, max_iters=max_iters,
                                      forward_max_hyper=forward_max_hyper, forward_max_hvp=forward_max_hvp)
    for name, vals in (grids or {}).items():
        if name not in methods:
            raise SweepError(f"option --grid: method {name!r} is not swept (swept: {', '.join(methods)})")
        if METHODS.get(name).info.knob is None:
            raise SweepError(f"option --grid: method {name!r} has no accuracy knob (one point); methods with a "
                             f"knob: {', '.join(m for m in methods if METHODS.get(m).info.knob)}")
        grids_used[name] = _check_grid(name, vals)
        notes[:] = [n for n in notes if not n.startswith(f"{name} ")]
    if grids_used.get("reverse"):
        t_fixed = truncated_steps or max(grids_used["reverse"])
    else:
        t_fixed = truncated_steps or max_iters
    if grids_used.get("truncated"):
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
    theta_param: Any = "init" if theta_mode == "init" else [float(x) for x in theta.cpu()]
    tables = []
    for name in methods:
        if name not in grids_used:
            continue  # skipped (noted)
        info = METHODS.get(name).info
        values = list(grids_used[name] or [])
        params: dict[str, Any] = {"method": name, "values": values, "repeats": int(repeats), "theta": theta_param,
                                  "memory": bool(memory), "stop_when_converged": bool(stop_when_converged)}
        if info.kind == "unrolled" or "alpha" in info.options:
            params["lr"] = lr
        if info.kind == "unrolled" and info.knob != "steps":
            params["steps"] = int(t_fixed)
        tables.append({"name": PROBE, "label": name, "params": params, "budget": {"steps": max(1, len(values))}})
    if not tables:
        raise SweepError("no method to sweep: every method was skipped (see the notes: " + "; ".join(notes) + ")")
    suite = {"name": "frontier", "description": f"sweep frontier: {task.name}, every method x its knob at one theta",
             "seeds": [int(task.seed)], "device": str(task.device), "budget": {"steps": 1},
             "task": [{"name": task.name, "label": task.name, "params": dict(task_params or {})}], "tuner": tables}
    info = {"theta_mode": theta_mode, "theta": [float(x) for x in theta.cpu()],
            "hp": [float(x) for x in task.space.to_natural(theta).cpu()],
            "L": big_l, "L_at_w_star": l_star, "L_at_init": l_init, "L_method": how, "lr": lr,
            "truncated_steps": t_fixed if "truncated" in grids_used else None,
            "grids": {k: v for k, v in grids_used.items()}, "repeats": repeats, "notes": notes,
            "reference_norm": float(torch.linalg.vector_norm(ref)), "n_params": n_params, "n_hyper": n_hyper}
    return suite, info


def _extra_of(row: dict[str, Any]) -> dict[str, Any]:
    text = row.get("extra")
    return json.loads(text) if isinstance(text, str) and text else {}


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def frontier_table(frame: pd.DataFrame, suite, *, n_params: int, n_hyper: int) -> tuple[pd.DataFrame, list[str]]:
    """One row per recorded point of the probe cells of ``suite`` (:data:`FRONTIER_COLUMNS`), from the run's
    records ``frame``, and notes on methods whose grid ended early (converged, or a point not ``ok``).

    The error and cosine are the recorder's (``hypergrad_rel_error`` / ``hypergrad_cosine`` against the
    task's reference); time, per-call counts and peak memory come from the row's ``extra``; a row the harness
    wrote for a failed cell (``error``, ``timeout``, ``oom``) gets the knob value of the point that failed."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    by_cell = {cid: g.sort_values("step") for cid, g in frame.groupby("cell_id", sort=False)}
    for cell in suite.cells():
        if cell.tuner.name != PROBE:
            continue
        name = cell.tuner.params["method"]
        info = METHODS.get(name).info
        values = list(cell.tuner.params.get("values") or [])
        g = by_cell.get(cell.cell_id)
        recs = g.to_dict("records") if g is not None else []
        for r in recs:
            ex = _extra_of(r)
            step = int(r["step"])
            v = ex.get("knob_value", values[step] if step < len(values) else None)
            ok_row = bool(ex)
            status = str(r["status"])
            note = str(r.get("message") or "").splitlines()[0][:200] if status != "ok" and r.get("message") else ""
            if ex.get("cg_status") not in (None, "converged", "max_iter"):
                note = f"cg stopped: {ex['cg_status']}"
            peak = _num(ex.get("peak_mem_bytes")) if ok_row else math.nan
            rows.append({
                "task": cell.task.name, "method": name, "kind": info.kind, "exact": bool(info.exact),
                "knob": info.knob or "", "knob_value": _num(v), "steps": _num(ex.get("steps")),
                "rel_error": float(r["hypergrad_rel_error"]), "cosine": float(r["hypergrad_cosine"]),
                "time_s": _num(ex.get("time_s_min")),
                "time_s_all": " ".join(f"{t:.6g}" for t in ex.get("time_s_all", [])),
                "hvp": _num(ex.get("hvp")), "grad_evals": _num(ex.get("grad_evals")),
                "iterations": _num(ex.get("iterations")), "converged": ex.get("converged"),
                "peak_mem_bytes": peak if ok_row and peak >= 0 else math.nan,
                "peak_mem_mb": peak / 2 ** 20 if ok_row and peak >= 0 else math.nan,
                "mem_measure": ex.get("mem_measure", ""), "lr": _num(ex.get("lr")), "n_params": n_params,
                "n_hyper": n_hyper, "device": cell.device, "status": status, "note": note})
        if not recs or len(recs) >= len(values):
            continue
        last, ex = recs[-1], _extra_of(recs[-1])
        v = ex.get("knob_value", values[len(recs) - 1] if len(recs) <= len(values) else None)
        if last["status"] == "ok" and ex.get("converged") is True:
            res = ex.get("residual")
            notes.append(f"{name} converged at {info.knob}={v} ({int(ex['iterations'])} iterations, residual "
                         f"{float('nan') if res is None else res:.1e}): larger {info.knob} values repeat the same "
                         "computation and are not run")
        elif last["status"] != "ok":
            notes.append(f"{name} ended with status {last['status']!r} at {info.knob}={v}: larger {info.knob} "
                         "values are not run")
    return pd.DataFrame(rows, columns=list(FRONTIER_COLUMNS)), notes


@dataclass
class FrontierResult:
    """What :func:`frontier` returns: the table (one row per point), ``info`` (the task, theta, L, lr, grids,
    notes, the run's provenance), the generated suite file and the harness's result."""

    table: pd.DataFrame
    info: dict[str, Any]
    suite_path: Path
    run: Any


def frontier(task: str, out: str | Path, *, params: dict[str, Any] | None = None, seed: int = 0,
             theta: str | torch.Tensor = "init", methods: list[str] | None = None,
             grids: dict[str, list[int]] | None = None, repeats: int = 3, truncated_steps: int | None = None,
             max_iters: int = 1000, forward_max_hyper: int = FORWARD_MAX_HYPER, forward_max_hvp: int = FORWARD_MAX_HVP,
             memory: bool = True, stop_when_converged: bool = True, device: str = "cpu", name: str = "frontier",
             workers: int = 1, threads: int | None = None, timeout: float | None = None, resume: bool = False,
             force: bool = False, retry_failed: bool = False, argv: list[str] | None = None, reporter: Any = None,
             progress: Callable[[str], None] | None = None) -> FrontierResult:
    """The accuracy-cost frontier of hypergradient methods on the registered ``task`` at one ``theta``, run by
    the harness.

    The task (``params``, ``seed``, ``device``) is built here once, for the grids (its sizes), ``L`` and the
    point (``theta``: ``"init"``, ``"random"`` from ``seed``, or a tensor). The sweep is a suite
    (:func:`frontier_suite`: one probe cell per method), written to ``OUT/<name>.suite.toml`` and run by
    :func:`hpo_bench.running.harness.run_suite` into ``OUT/<name>.run`` on ``workers`` cell processes (the
    statuses, hard timeouts, ``resume`` and ``provenance.json`` of ``hpo-bench run``); the table is read from
    its records (:func:`frontier_table`).

    Args:
        methods: registered method names (default: every method the task's tags allow).
        grids: knob values per method, overriding :func:`default_grids`.
        repeats: timed calls per point (the time is their minimum; the cell's torch threads, default one).
        truncated_steps: T of ``truncated`` (default: the largest T of the ``reverse`` grid, else ``max_iters``).
        memory: measure the peak memory (one extra, profiled call per point).
        stop_when_converged: end a method's grid once a point reports ``converged`` with fewer
            iterations than its knob (larger values repeat the same computation, e.g. CG at ``tol``).

    Raises:
        SweepError: bad input, or a run folder that cannot take this run (the message says why).
    """
    out = Path(out)
    check_out_folder(out)
    t = build_task(task, params, seed=seed, device=device)
    if isinstance(theta, str):
        mode, th = theta, frontier_theta(t, theta, seed)
    else:
        mode, th = "given", theta
    d, info = frontier_suite(t, task_params=params, theta=th, theta_mode=mode, methods=methods, grids=grids,
                             repeats=repeats, truncated_steps=truncated_steps, max_iters=max_iters,
                             forward_max_hyper=forward_max_hyper, forward_max_hvp=forward_max_hvp, memory=memory,
                             stop_when_converged=stop_when_converged)
    suite_file, run_dir = out / f"{name}.suite.toml", out / f"{name}.run"
    header = (f"Written by `hpo-bench sweep frontier` (hpo_bench.analysis.sweep.frontier_suite). From this folder,\n"
              f"  hpo-bench run {suite_file.name} --out {run_dir.name} --workers 1 --resume\n"
              "runs (or continues) the same cells.")
    suite = _write_suite(d, suite_file, run_dir, header, resume=resume, force=force, progress=progress)
    res = _run_cells(suite, run_dir, workers=workers, threads=threads, timeout=timeout, resume=resume, force=force,
                     retry_failed=retry_failed, argv=argv, reporter=reporter)
    table, run_notes = frontier_table(res.frame, suite, n_params=info["n_params"], n_hyper=info["n_hyper"])
    info = {"task": t.describe(), "task_params": dict(params or {}), "seed": seed, **info,
            "notes": info["notes"] + run_notes, "suite": suite_file.name, "run": run_dir.name,
            "statuses": res.statuses, "provenance": _run_provenance(res)}
    return FrontierResult(table, info, suite_file, res)


# --------------------------------------------------------------------------- generated suites
def _write_suite(d: dict[str, Any], suite_file: Path, run_dir: Path, header: str, *, resume: bool, force: bool,
                 progress: Callable[[str], None] | None = None):
    """Validate the suite ``d``, check that ``run_dir`` can take its run, write it to ``suite_file`` (with
    ``header`` as comments; unchanged text is not rewritten) and return the suite read back from that file
    (what runs is what the file says). The plug-in folders loaded in this process become its ``plugins``."""
    from dataclasses import replace

    from ..running.harness import RunFolderError, check_run_folder
    from ..running.suite import Suite, SuiteError, load_suite

    from ..core.plugins import loaded_folders

    if loaded_folders() and "plugins" not in d:  # --plugins folders: the suite file names them, so it reruns alone
        d = {**d, "plugins": [str(f) for f in loaded_folders()]}
    text = suite_toml(d, header=header)
    if tomllib.loads(text) != d:  # pragma: no cover - the writer's own guarantee
        raise RuntimeError("suite_toml wrote a file that does not read back to the suite")
    if progress is not None:
        progress("validating the suite (builds each task once)")
    try:
        checked = Suite.from_dict(d, source=str(suite_file))
    except SuiteError as exc:
        raise SweepError(str(exc)) from None
    checked = replace(checked, path=str(suite_file), sha256=hashlib.sha256(text.encode()).hexdigest())
    try:
        check_run_folder(run_dir, checked, resume=resume, force=force)
    except RunFolderError as exc:
        raise SweepError(str(exc).replace("--out", f"--out (its {run_dir.name}/ folder)")) from None
    suite_file.parent.mkdir(parents=True, exist_ok=True)
    old = suite_file.read_text() if suite_file.is_file() else None
    if old != text:
        suite_file.write_text(text)
    suite = load_suite(str(suite_file), validate=False)
    if [c.config_hash() for c in suite.cells()] != [c.config_hash() for c in checked.cells()]:  # pragma: no cover
        raise RuntimeError(f"{suite_file} does not reproduce the sweep's cells")
    return suite


def _run_cells(suite, run_dir: Path, *, workers: int, threads: int | None, timeout: float | None, resume: bool,
               force: bool, retry_failed: bool, argv: list[str] | None, reporter: Any):
    """:func:`hpo_bench.running.harness.run_suite` on ``workers`` cell processes."""
    from ..running.executors import ProcessPool
    from ..running.harness import run_suite

    executor = ProcessPool(int(workers))
    try:
        return run_suite(suite, run_dir, argv=argv, executor=executor, resume=resume, force=force,
                         retry_failed=retry_failed, timeout=timeout, threads=threads, reporter=reporter)
    finally:
        executor.shutdown(wait=True)


def _run_provenance(res) -> dict[str, Any]:
    """The run folder's ``provenance.json`` plus the load average when the sweep ended (times depend on it)."""
    prov = json.loads(Path(res.provenance_path).read_text())
    try:
        prov["loadavg_1_5_15_end"] = list(os.getloadavg())
    except OSError:
        prov["loadavg_1_5_15_end"] = None
    return prov


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
#: TPE, random search and grid search with a reference inner solve per evaluation; the grid has 50 points per
#: block (``space = "block"``), so on the one per-feature block it is the shared-λ grid practitioners run (a
#: full factorial grid has 50^p points).
DEFAULT_TUNERS: tuple[TunerConfig, ...] = (
    TunerConfig("gradient-cg", "gradient", {"method": "cg", "inner": "exact", "outer": "adam", "outer_lr": 0.05}),
    TunerConfig("gradient-exact", "gradient", {"method": "exact", "inner": "exact", "outer": "adam",
                                               "outer_lr": 0.05}),
    TunerConfig("gradient-cg-gd", "gradient", {"method": "cg", "inner": "gd", "inner_steps": 100, "outer": "adam",
                                               "outer_lr": 0.05}),
    TunerConfig("tpe", "tpe", {}),
    TunerConfig("random", "random", {}),
    TunerConfig("grid", "grid", {"space": "block", "points": 50}),
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
                  sparse_params: dict[str, Any] | None = None, row_nnz: float | None = None) -> dict[str, Any]:
    """The scaling sweep as a suite (a dict with the suite file's schema): one ``[[task]]`` per ``p``
    (label ``p<p>``: ``ridge_per_feature`` with ``n = n_factor * p``, ``p`` and ``task_params``; above
    ``sparse_above``, also ``sparse_params``, default :data:`SPARSE_PARAMS`), the configurations as
    ``[[tuner]]`` tables, the budget (``seconds``, ``steps``) and the ``seeds``.

    With ``row_nnz``, a sparse size's density is ``row_nnz / p`` instead (rows keep ``row_nnz`` expected
    non-zeros at every size, so the data, and one matrix-vector product, grow like ``p``; at a fixed density
    they grow like ``n p ~ p^2``)."""
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
            if row_nnz is not None:
                params["density"] = row_nnz / p
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
    """Why a cell ended: its last row's ``stop_reason`` (the recorder's own, :meth:`Recorder.finish`).
    Records written before that column existed get it inferred from the last row: its status if not
    ``ok``, else the recorder's budget rule (``budget_steps`` before ``budget_seconds``, as
    :meth:`Recorder.should_stop` checks them), else the tuner ended on its own (``tuner``: e.g. L-BFGS-B
    converged). The inference can say ``tuner`` for a cell whose time ran out after its last row."""
    stored = last.get("stop_reason")
    if isinstance(stored, str) and stored:
        return stored
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


def _check_scaling_args(ps, target, n_factor, seeds, seconds, steps, sparse_above, task_params=None,
                        row_nnz=None) -> None:
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
    if row_nnz is not None:
        if sparse_above is None:
            raise SweepError("option --row-nnz sets the density of the sparse sizes: it needs --sparse-above")
        if isinstance(row_nnz, bool) or not isinstance(row_nnz, (int, float)) or not math.isfinite(row_nnz) \
                or row_nnz <= 0:
            raise SweepError(f"option --row-nnz must be a number > 0, but got {row_nnz!r}")
        dense_ps = [p for p in ps if p > sparse_above and row_nnz > p]
        if dense_ps:
            raise SweepError(f"option --row-nnz: {row_nnz:g} non-zeros per row needs p >= {row_nnz:g}, but the "
                             f"sparse sizes include p = {', '.join(map(str, dense_ps))}")


def scaling(ps: list[int], configs: list[TunerConfig], out: str | Path, *, target: float = 1e-3,
            seconds: float | None = 20.0, steps: int | None = None, n_factor: int = 5,
            seeds: list[int] | tuple[int, ...] = (0,), task_params: dict[str, Any] | None = None,
            oracle_seconds: float | None = 1800.0, oracle_evals: int | None = None,
            oracle_cache: str | Path | None = None, workers: int = 1, threads: int | None = None,
            timeout: float | None = None, resume: bool = False, force: bool = False, retry_failed: bool = False,
            sparse_above: int | None = None, sparse_params: dict[str, Any] | None = None,
            row_nnz: float | None = None, argv: list[str] | None = None, reporter: Any = None,
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
    ``n = n_factor * p``), where the references are matrix-free and certified; ``row_nnz`` sets their density to
    ``row_nnz / p`` (:func:`scaling_suite`).

    Raises:
        SweepError: bad input, or a folder ``OUT/run`` that cannot take this run (the message says why).
    """
    from .oracle import oracle_for

    ps = list(ps)
    seeds = list(seeds)
    _check_scaling_args(ps, target, n_factor, seeds, seconds, steps, sparse_above, task_params, row_nnz)
    extra = dict(task_params or {})
    for k in ("n", "p", "seed", "dtype", "device"):
        if k in extra:
            raise SweepError(f"option --param: `{k}` is set by the sweep (n = n_factor * p), not by --param")
    out = Path(out)
    check_out_folder(out)
    suite_file = out / "suite.toml"
    d = scaling_suite(ps, configs, seconds=seconds, steps=steps, n_factor=n_factor, seeds=seeds, task_params=extra,
                      sparse_above=sparse_above, sparse_params=sparse_params, row_nnz=row_nnz)
    header = ("Written by `hpo-bench sweep scaling` (hpo_bench.analysis.sweep.scaling_suite). From this folder,\n"
              "  hpo-bench run suite.toml --out run --workers 1 --resume\nruns (or continues) the same cells.")
    run_dir = out / "run"
    suite = _write_suite(d, suite_file, run_dir, header, resume=resume, force=force, progress=progress)

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

    res = _run_cells(suite, run_dir, workers=workers, threads=threads, timeout=timeout, resume=resume, force=force,
                     retry_failed=retry_failed, argv=argv, reporter=reporter)
    oracles = polish_from_cells(res.frame, suite, oracles, cache, max_seconds=oracle_seconds, progress=progress)
    table, notes = scaling_table(res.frame, suite, oracles, target)
    fits = fit_exponents(table)
    prov = _run_provenance(res)
    info = {"task": SCALING_TASK, "task_params": extra, "ps": ps, "n_factor": n_factor, "seeds": seeds,
            "target": target, "budget": {"steps": steps, "seconds": seconds}, "sparse_above": sparse_above,
            "sparse_params": (SPARSE_PARAMS if sparse_params is None else sparse_params)
            if sparse_above is not None else None, "row_nnz": row_nnz,
            "configs": [c.table() for c in configs], "suite": suite_file.name, "run": run_dir.name,
            "oracle_cache": str(cache),
            "oracles": {f"{lab}/seed{s}": asdict(o) for (lab, s), o in oracles.items()},
            "fits": fits.to_dict(orient="records"), "notes": notes, "statuses": res.statuses,
            "provenance": prov}
    return ScalingResult(table, fits, info, suite_file, res)


# --------------------------------------------------------------------------- output
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
