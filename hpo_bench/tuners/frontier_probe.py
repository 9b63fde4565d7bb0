"""The frontier probe: one hypergradient method called at a fixed ``theta`` for each value of its knob.

A measurement, not a competitor (tag ``"probe"``): it does not search ``theta``. ``hpo-bench sweep frontier``
(:func:`hpo_bench.analysis.sweep.frontier`) writes one probe cell per method and runs them with the harness;
any suite may hold one too::

    [[tuner]]
    name = "frontier_probe"
    label = "cg"
    params = { method = "cg", values = [1, 2, 5, 10], repeats = 3 }
    budget = { steps = 4 }

Per knob value ``v`` the probe calls ``method(task, w, theta, knob=v, ...)`` ``repeats`` times (timed, on the
cell's torch threads, CUDA synchronised), then once more to measure the peak memory (:func:`peak_memory`), and
records one row: the recorder measures the error and cosine of the estimate against the task's reference
hypergradient (clock paused); the row's ``extra`` holds ``time_s_min`` (the minimum over the repeats),
``time_s_all``, the call's own counts (``hvp``, ``grad_evals``, ``iterations``, ``converged``) and
``peak_mem_bytes``. The cumulative cost columns add up the counts of the recorded calls (timed repeats and the
memory call are the same computation, counted once).

Calls follow ``benchmarks/bench_core.py``: implicit methods at ``w = task.solve(theta)``, unrolled methods from
``task.init_params()`` with ``steps`` and ``lr``; methods with an ``alpha`` option (Neumann, fixed point) get
``alpha = lr``, so no method spends HVPs on its own step size. ``lr`` defaults to ``1/L``, ``L`` the largest
eigenvalue of the inner Hessian (:func:`largest_eigenvalue`), the larger of its values at ``task.init_params()``
and at ``w*``.

A non-finite estimate (or iterate) is the recorder's ``diverged`` and ends the cell; a method that raises is
the harness's ``error`` row; larger knob values are then not run. With ``stop_when_converged``, a point that
reports ``converged`` after fewer iterations than its knob ends the cell too (larger values repeat the same
computation).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch

from ..core.options import Option
from ..core.registry import METHODS, register_tuner
from ..core.tuner import Tuner, TunerParamError

__all__ = ["FrontierProbe", "min_time", "peak_memory", "largest_eigenvalue", "call_options", "DENSE_L_MAX"]

#: Up to this many inner parameters ``L`` comes from a dense ``eigvalsh``; above, from power iteration.
DENSE_L_MAX = 3000


# --------------------------------------------------------------------------- measurements
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


def call_options(method: str, value: int | None, lr: float, steps: int | None) -> tuple[dict[str, Any], int | None]:
    """The keyword options of one call of ``method`` at knob value ``value`` (``None``: no knob), and its ``T``.

    Unrolled methods get ``lr`` and ``steps`` (the knob when it is ``steps``, else ``steps``); a method with an
    ``alpha`` option gets ``alpha = lr``; the knob, if any, gets ``value``.
    """
    info = METHODS.get(method).info
    opts: dict[str, Any] = {}
    t = None
    if info.kind == "unrolled":
        t = value if info.knob == "steps" and value is not None else steps
        opts.update(lr=lr, steps=t)
        if info.knob not in (None, "steps") and value is not None:
            opts[info.knob] = value
    else:
        if "alpha" in info.options:
            opts["alpha"] = lr
        if info.knob is not None and value is not None:
            opts[info.knob] = value
    return opts, t


# --------------------------------------------------------------------------- the tuner
@register_tuner
class FrontierProbe(Tuner):
    """Calls one hypergradient method at a fixed ``theta`` for each knob value and records error, time, HVPs
    and peak memory (a measurement for ``hpo-bench sweep frontier``, not a tuner that searches).

    Args:
        method: a registered hypergradient method.
        values: its knob values (integers >= 1), one recorded row each; empty: one call with the method's
            defaults (the only choice for a method without a knob).
        repeats: timed calls per value (the row's ``time_s_min`` is their minimum).
        lr: the unrolled step and the ``alpha`` of Neumann / fixed point (default ``1/L``, see the module
            docstring).
        steps: ``T`` of an unrolled method whose knob is not ``steps`` (``truncated``; default: the largest
            value, so ``K <= T``).
        theta: ``"init"`` (the space's init) or the point itself, a list of ``space.dim`` numbers.
        memory: measure the peak memory (one extra call per value).
        stop_when_converged: end the cell at a value whose call converged in fewer iterations than the knob.
    """

    name = "frontier_probe"
    tags = frozenset({"gradient-based", "probe"})
    options = {"method": Option(str), "values": Option(list), "repeats": Option(int, low=1),
               "lr": Option(float, low=0, low_open=True, optional=True), "steps": Option(int, low=1, optional=True),
               "memory": Option(bool), "stop_when_converged": Option(bool)}
    check_params = {"method": "cg", "values": [1, 2, 5], "repeats": 1}

    def __init__(self, *, method: str = "cg", values: list[int] | None = None, repeats: int = 3,
                 lr: float | None = None, steps: int | None = None, theta: str | list[float] = "init",
                 memory: bool = True, stop_when_converged: bool = True) -> None:
        values = [] if values is None else values
        theta_param = list(theta) if isinstance(theta, (list, tuple)) else theta
        super().__init__(method=method, values=values, repeats=repeats, lr=lr, steps=steps, theta=theta_param,
                         memory=memory, stop_when_converged=stop_when_converged)
        info = METHODS.get(method).info  # unknown names list the known ones
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            self._fail("values", "a list of integers >= 1", values)
        if info.knob is None and values:
            self._fail("values", f"empty: method {method!r} has no accuracy knob (one call)", values)
        if theta_param != "init" and not (isinstance(theta_param, list) and theta_param and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in theta_param)):
            self._fail("theta", "'init' or a non-empty list of numbers (the point, in the space's coordinates)",
                       theta)
        if steps is not None and info.kind == "unrolled" and info.knob != "steps" and values and max(values) > steps:
            self._fail("values", f"at most steps = {steps} ({info.knob} counts the last of the T steps)", values)
        self.method = method
        self.info = info

    @classmethod
    def required_tags(cls, params: Mapping[str, Any]) -> frozenset[str]:
        """The method's needs (``prox`` for the non-smooth methods)."""
        method = params.get("method", "cg")
        if isinstance(method, str) and method in METHODS:
            return frozenset(METHODS.get(method).info.required_tags({}))
        return frozenset()

    def _theta(self, task) -> torch.Tensor:
        th = self.params["theta"]
        if th == "init":
            return task.space.init_theta(dtype=task.dtype, device=task.device)
        theta = torch.tensor([float(x) for x in th], dtype=task.dtype, device=task.device)
        try:
            task.space.check_shape(theta)
        except ValueError as exc:
            raise TunerParamError(f"tuner {self.name!r}: parameter `theta`: {exc}") from None
        return theta

    def run(self, task, recorder, *, seed: int = 0) -> None:
        p = self.params
        fn = METHODS.get(self.method)
        dev = torch.device(task.device)
        with recorder.paused():  # the setup is not the measured call
            theta = self._theta(task)
            w0 = task.init_params().detach()
            w_star = task.solve(theta).detach() if self.info.kind == "implicit" or p["lr"] is None else None
            lr = p["lr"]
            if lr is None:
                lr = 1.0 / max(largest_eigenvalue(task, w_star, theta)[0], largest_eigenvalue(task, w0, theta)[0])
        values: list[int | None] = list(p["values"]) or [None]
        steps = p["steps"] if p["steps"] is not None else (max(p["values"]) if p["values"] else 100)
        w_in = w0 if self.info.kind == "unrolled" else w_star
        for v in values:
            if recorder.should_stop():
                return
            opts, t = call_options(self.method, v, lr, steps)

            def call(opts=opts):
                return fn(task, w_in, theta, **opts)

            t_min, t_all = min_time(call, p["repeats"], dev)
            if p["memory"]:
                hg, peak, how = peak_memory(call, dev)
            else:
                hg, peak, how = call(), -1, "off"
            st = hg.stats
            recorder.add_cost(hvps=int(st.get("hvp", 0)), grad_evals=int(st.get("grad_evals", 0)))
            if self.info.kind == "unrolled":
                recorder.add_cost(inner_steps=int(t))
            extra = {"method": self.method, "knob": self.info.knob or "", "knob_value": v, "steps": t,
                     "lr": lr if "lr" in opts or "alpha" in opts else None, "time_s_min": t_min,
                     "time_s_all": t_all, "hvp": st.get("hvp"), "grad_evals": st.get("grad_evals"),
                     "iterations": st.get("iterations"), "converged": st.get("converged"),
                     "residual": st.get("residual"), "cg_status": st.get("cg_status"), "peak_mem_bytes": peak,
                     "mem_measure": how}
            status = recorder.record(w=hg.w, theta=theta, hypergrad=hg.grad, hypergrad_stats=st, **extra)
            if status != "ok":
                return
            if (p["stop_when_converged"] and v is not None and st.get("converged") is True
                    and "iterations" in st and int(st["iterations"]) < v and v != values[-1]):
                recorder.request_stop(f"converged at {self.info.knob}={v}")
                return
