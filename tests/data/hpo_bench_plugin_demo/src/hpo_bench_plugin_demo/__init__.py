"""hpo-bench plug-in demo: one task and one tuner, registered through entry points only.

``demo_quadratic``: ``inner(w, theta) = 1/2 ||w - a||^2 + lam/2 ||w||^2`` with ``lam = exp(theta)``,
so ``w* = a / (1 + lam)``; ``outer(w) = 1/2 ||w - b||^2``. Closed-form reference:
``dF/dtheta = -lam / (1 + lam)^2 * a . (w* - b)``.

``demo_golden``: golden-section search on the single coordinate of ``theta`` (black-box).
"""

from __future__ import annotations

import math

import torch

from hpo_bench.core.space import Block, Space
from hpo_bench.core.task import Task, require
from hpo_bench.core.tuner import Tuner

__all__ = ["DemoQuadratic", "DemoGolden"]


class DemoQuadratic(Task):
    """Shrinkage toward zero of a seeded vector; one log-penalty; closed form."""

    name = "demo_quadratic"
    tags = frozenset({"closed-form", "convex"})
    check_params = {"p": 4}

    def __init__(self, *, p: int = 8, lam0: float = 1.0, seed: int = 0, dtype="float64", device: str = "cpu"):
        super().__init__(seed=seed, dtype=dtype, device=device)
        require(isinstance(p, int) and p >= 1, self.name, "p", "an integer >= 1", p)
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(p, generator=gen, dtype=torch.float64)
        self.a = self.tensor(a)
        self.b = self.tensor(0.5 * a + 0.3 * torch.randn(p, generator=gen, dtype=torch.float64))
        self.c = self.tensor(0.5 * a + 0.3 * torch.randn(p, generator=gen, dtype=torch.float64))
        self._space = Space((Block("lam", low=1e-4, high=1e4, init=lam0),))
        self.params = {"p": p, "lam0": lam0}

    @property
    def space(self) -> Space:
        return self._space

    @property
    def n_params(self) -> int:
        return self.a.shape[0]

    def init_params(self) -> torch.Tensor:
        return torch.zeros_like(self.a)

    def inner_loss(self, w, theta):
        lam = self.space.to_natural(theta)[0]
        return 0.5 * torch.sum((w - self.a) ** 2) + 0.5 * lam * torch.sum(w * w)

    def outer_loss(self, w):
        return 0.5 * torch.sum((w - self.b) ** 2)

    def test_loss(self, w):
        return 0.5 * torch.sum((w - self.c) ** 2)

    def solve(self, theta):
        return self.a / (1 + self.space.to_natural(theta.detach())[0])

    def reference_hypergradient(self, theta):
        lam = self.space.to_natural(theta.detach())[0]
        w = self.a / (1 + lam)
        return (-lam / (1 + lam) ** 2 * (self.a @ (w - self.b))).reshape(1)


class DemoGolden(Tuner):
    """Golden-section search on a one-dimensional theta (black-box)."""

    name = "demo_golden"
    tags = frozenset({"black-box"})

    def __init__(self):
        super().__init__()

    def run(self, task, recorder, *, seed: int = 0) -> None:
        if task.space.dim != 1:
            raise ValueError(f"tuner 'demo_golden' needs one hyperparameter, but task {task.name!r} has "
                             f"{task.space.dim}")
        lo, hi = (float(v[0]) for v in task.space.theta_bounds(dtype=task.dtype))
        r = (math.sqrt(5) - 1) / 2

        def evaluate(x: float):
            theta = torch.tensor([x], dtype=task.dtype, device=task.device)
            recorder.add_cost(inner_solves=1)
            w = task.solve(theta)
            val = float(task.outer_loss(w))
            return recorder.record(w=w, theta=theta, val_loss=val), val

        c, d = hi - r * (hi - lo), lo + r * (hi - lo)
        fc = fd = None
        while not recorder.should_stop():
            if fc is None:
                status, fc = evaluate(c)
            elif fd is None:
                status, fd = evaluate(d)
            elif fc < fd:
                hi, d, fd = d, c, fc
                c, fc = hi - r * (hi - lo), None
                continue
            else:
                lo, c, fc = c, d, fd
                d, fd = lo + r * (hi - lo), None
                continue
            if status != "ok":
                return
