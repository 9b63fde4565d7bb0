"""AmIGO (Arbel & Mairal, ICLR 2022, "Amortized implicit differentiation for stochastic bilevel
optimization", Algorithm 1).

One outer iteration, both inner loops warm-started from the previous iteration (the amortisation)::

    w <- w - rho grad_w f_B(w, theta)                      (inner_steps times)
    v <- v - eta (H_B(w, theta) v - grad_w g_B'(w))        (v_steps times; eta = v_lr, default step_size)
    D_theta = -J_B v;   theta <- proj(theta - gamma D_theta)

``v`` runs SGD on the quadratic ``1/2 v^T H v - v^T grad g`` whose minimiser is ``H^{-1} grad g``.
``eval_every`` counts outer iterations.
"""

from __future__ import annotations

from typing import Any

from ..core.options import Option
from ..core.registry import register_tuner
from ._base import BASE_OPTIONS, StochasticTuner

__all__ = ["AmIGO"]


@register_tuner
class AmIGO(StochasticTuner):
    """AmIGO: warm-started SGD loops on ``w`` and on ``v``, then one outer step (module docstring)."""

    name = "amigo"
    paper = "Arbel & Mairal 2022, Algorithm 1"
    v_from_outer_grad = True
    options = {**BASE_OPTIONS, "inner_steps": Option(int, low=1), "v_steps": Option(int, low=1),
               "v_lr": Option(float, low=0, low_open=True, optional=True)}
    defaults: dict[str, Any] = {"inner_steps": 10, "v_steps": 10, "v_lr": None, "eval_every": 8}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.inner_steps = int(self.params["inner_steps"])
        self.v_steps = int(self.params["v_steps"])
        self.v_lr = float(self.params["v_lr"] or self.step_size)

    def compute(self) -> None:
        for _ in range(self.inner_steps):
            self.step_w(self.grad_inner(self.w, self.theta, self.inner_sampler.draw()), self.inner_lr)
        for _ in range(self.v_steps):
            hv = self.hvp(self.w, self.theta, self.inner_sampler.draw(), self.v)
            self.v.sub_(hv.sub_(self.grad_outer(self.w, self.outer_sampler.draw())), alpha=self.v_lr)
        self.estimate()

    def estimate(self) -> None:
        self.d_theta = self.cross(self.w, self.theta, self.inner_sampler.draw(), self.v).neg_()

    def apply(self) -> None:
        self.step_theta(self.d_theta, self.outer_lr)
