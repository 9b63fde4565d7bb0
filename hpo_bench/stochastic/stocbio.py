"""StocBiO (Ji, Yang, Liang, ICML 2021, "Bilevel optimization: convergence analysis and enhanced design",
Algorithm 2).

One outer iteration: ``inner_steps`` SGD steps on ``w`` (warm start, one batch each), then the
hypergradient from a stochastic Neumann series (their eq. (4)), ``neumann_steps`` fresh batches::

    w <- w - rho grad_w f_B(w, theta)                                         (inner_steps times)
    v  = eta sum_{q=0}^{Q} prod_{j=1}^{q} (I - eta H_{B_j}) grad_w g_B'(w)    (eta = neumann_lr)
    D_theta = -J_B v;   theta <- proj(theta - gamma D_theta)

``E[v] = eta sum_{q<=Q} (I - eta H)^q grad g`` (independent batches), a truncation of ``H^{-1} grad g``
with bias ``(I - eta H)^{Q+1} H^{-1} grad g``; ``neumann_lr`` must be below ``2 / L``. ``eval_every`` counts
outer iterations.
"""

from __future__ import annotations

from typing import Any

from ..core.options import Option
from ..core.registry import register_tuner
from ._base import BASE_OPTIONS, StochasticTuner

__all__ = ["StocBiO"]


@register_tuner
class StocBiO(StochasticTuner):
    """StocBiO: warm-started inner SGD, then a stochastic Neumann hypergradient (module docstring)."""

    name = "stocbio"
    paper = "Ji et al. 2021, Algorithm 2"
    options = {**BASE_OPTIONS, "inner_steps": Option(int, low=1), "neumann_steps": Option(int, low=0),
               "neumann_lr": Option(float, low=0, low_open=True, optional=True,
                                    doc="Neumann step eta (default: step_size)")}
    defaults: dict[str, Any] = {"inner_steps": 10, "neumann_steps": 10, "neumann_lr": None, "eval_every": 8}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.inner_steps = int(self.params["inner_steps"])
        self.neumann_steps = int(self.params["neumann_steps"])
        self.neumann_lr = float(self.params["neumann_lr"] or self.step_size)

    def inner_loop(self) -> None:
        for _ in range(self.inner_steps):
            self.step_w(self.grad_inner(self.w, self.theta, self.inner_sampler.draw()), self.inner_lr)

    def compute(self) -> None:
        self.inner_loop()
        self.estimate()

    def hypergradient_v(self):
        r0 = self.grad_outer(self.w, self.outer_sampler.draw())
        return self.neumann([(self.w, self.theta)], [r0], self.neumann_steps, self.neumann_lr)[0]

    def estimate(self) -> None:
        self.v = self.hypergradient_v()
        self.d_theta = self.cross(self.w, self.theta, self.inner_sampler.draw(), self.v).neg_()

    def apply(self) -> None:
        self.step_theta(self.d_theta, self.outer_lr)
