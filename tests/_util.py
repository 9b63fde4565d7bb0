"""Shared helpers of the core tests."""

from __future__ import annotations

import torch


def theta_points(task, n=3, seed=0):
    """Init plus seeded perturbations (unit normal in theta), inside the bounds."""
    gen = torch.Generator().manual_seed(seed)
    base = task.space.init_theta(dtype=task.dtype)
    return [base] + [task.space.project(base + torch.randn(base.shape[0], generator=gen, dtype=task.dtype))
                     for _ in range(n - 1)]


def fd_grad(fn, theta, h=1e-5):
    """Central finite differences of a scalar function of theta, coordinate by coordinate."""
    out = torch.zeros_like(theta)
    for j in range(theta.shape[0]):
        e = torch.zeros_like(theta)
        e[j] = h
        out[j] = (float(fn(theta + e)) - float(fn(theta - e))) / (2 * h)
    return out


def rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


class VirtualClock:
    """``time.perf_counter`` plus a virtual offset that :meth:`sleep` advances without waiting.

    Install it in one module (``monkeypatch.setattr(module, "time", clock)``); code there then sees
    a "sleep" of hours that costs nothing. Accounting tests use a virtual sleep far longer than any
    real work, so an assertion like ``time_s < SLEEP`` checks where the clock was paused, not how
    fast this machine is.
    """

    def __init__(self) -> None:
        import time

        self._real = time.perf_counter
        self.offset = 0.0

    def perf_counter(self) -> float:
        return self._real() + self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += seconds
