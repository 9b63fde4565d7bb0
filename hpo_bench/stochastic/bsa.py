"""BSA (Ghadimi & Wang 2018, "Approximation methods for bilevel programming", Algorithm 3 with the
hypergradient estimate of their eq. (3.9)).

One outer iteration: ``inner_steps`` SGD steps on ``w`` (warm start), then a randomly truncated Neumann
estimate: ``p`` uniform on ``{0, ..., Q - 1}`` (``Q = neumann_steps``, its own generator stream)::

    v = Q eta prod_{j=1}^{p} (I - eta H_{B_j}) grad_w g_B'(w),     E[v] = eta sum_{q<Q} (I - eta H)^q grad g
    D_theta = -J_B v;   theta <- proj(theta - gamma D_theta)

The paper's step sizes decrease (``gamma_k ~ 1/sqrt(k)``) and its inner loops lengthen; here steps are
constant (the literature's benchmarks tune them) unless ``decay = true`` (``gamma_k = gamma / sqrt(k + 1)``).
"""

from __future__ import annotations

import math
from typing import Any

from ..core.options import Option
from ..core.registry import register_tuner
from ._base import BASE_OPTIONS, TRUNCATED_NEUMANN_OPTIONS, StochasticTuner, TruncatedNeumann

__all__ = ["BSA"]


@register_tuner
class BSA(TruncatedNeumann, StochasticTuner):
    """BSA: inner SGD loops and a randomly truncated stochastic Neumann hypergradient (module docstring)."""

    name = "bsa"
    paper = "Ghadimi & Wang 2018, Algorithm 3, eq. (3.9)"
    options = {**BASE_OPTIONS, "inner_steps": Option(int, low=1), **TRUNCATED_NEUMANN_OPTIONS}
    defaults: dict[str, Any] = {"inner_steps": 10, "neumann_steps": 10, "neumann_lr": None, "decay": False,
                                "eval_every": 8}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.inner_steps = int(self.params["inner_steps"])
        self._init_truncated_neumann()

    def compute(self) -> None:
        for _ in range(self.inner_steps):
            self.step_w(self.grad_inner(self.w, self.theta, self.inner_sampler.draw()), self.inner_lr)
        self.estimate()

    def estimate(self) -> None:
        r0 = self.grad_outer(self.w, self.outer_sampler.draw())
        self.v = self.neumann([(self.w, self.theta)], [r0], self.neumann_steps, self.neumann_lr,
                              truncation=self.draw_truncation())[0]
        self.d_theta = self.cross(self.w, self.theta, self.inner_sampler.draw(), self.v).neg_()

    def apply(self) -> None:
        lr = self.outer_lr / math.sqrt(self.iteration + 1) if self.decay else self.outer_lr
        self.step_theta(self.d_theta, lr)
