"""F2SA (Kwon, Kwon, Wright, Nowak, ICML 2023, "A fully first-order method for stochastic bilevel
optimization", Algorithm 1): no Hessian- or cross-products at all.

It minimises the penalised Lagrangian ``g(y) + lam (f(y, theta) - min_z f(z, theta))`` with two inner
variables: ``z`` tracks ``w*(theta)`` and ``y`` the minimiser of ``g / lam + f``. With one batch ``B``
(inner) and ``B'`` (outer) per iteration, at the same state::

    z     <- z - rho grad_w f_B(z, theta)
    y     <- y - rho (grad_w g_B'(y) / lam + grad_w f_B(y, theta))      (the paper's alpha = rho / lam)
    D_theta = lam (grad_theta f_B(y, theta) - grad_theta f_B(z, theta));  theta <- proj(theta - gamma D_theta)
    lam   <- min(lam + penalty_growth, penalty_max)

Since ``y - z ~ -H^{-1} grad g / lam``, ``D_theta ~ -J H^{-1} grad g`` with a bias ``O(1 / lam)``; the
recorded ``w`` is ``z`` and the recorded ``v`` is ``lam (z - y)``. ``y`` starts one step of its own update
ahead of ``z`` (``y_0 = z_0 - rho grad g_B'(z_0) / lam``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.options import Option
from ..core.registry import register_tuner
from ._base import BASE_OPTIONS, StochasticTuner

__all__ = ["F2SA"]


@register_tuner
class F2SA(StochasticTuner):
    """F2SA: fully first-order penalty method with two inner sequences (module docstring)."""

    name = "f2sa"
    paper = "Kwon et al. 2023, Algorithm 1"
    options = {**BASE_OPTIONS, "penalty": Option(float, low=0, low_open=True),
               "penalty_growth": Option(float, low=0), "penalty_max": Option(float, low=0, low_open=True)}
    defaults: dict[str, Any] = {"penalty": 100.0, "penalty_growth": 0.0, "penalty_max": 1e4}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.penalty = float(self.params["penalty"])
        self.penalty_growth = float(self.params["penalty_growth"])
        self.penalty_max = float(self.params["penalty_max"])
        if self.penalty > self.penalty_max:
            self._fail_rule("penalty", f"<= penalty_max = {self.penalty_max}", self.penalty)

    def init_state(self) -> None:
        self.lam = self.penalty  # y0 = z0 - rho grad g_B'(z0) / lam: one step of y's update, so D_theta(0) != 0
        self.y = self.w - (self.inner_lr / self.lam) * self.grad_outer(self.w, self.outer_sampler.draw())
        self.d_y = torch.empty_like(self.w)

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.w, self.theta, self.y]

    def v_estimate(self) -> torch.Tensor:
        return (self.w - self.y).mul_(self.lam)

    def estimate(self) -> None:
        idx = self.inner_sampler.draw()
        jdx = self.outer_sampler.draw()
        self.d_z = self.grad_inner(self.w, self.theta, idx)
        torch.add(self.grad_inner(self.y, self.theta, idx), self.grad_outer(self.y, jdx), alpha=1.0 / self.lam,
                  out=self.d_y)
        gy = self.grad_theta(self.y, self.theta, idx)
        self.d_theta = gy.sub_(self.grad_theta(self.w, self.theta, idx)).mul_(self.lam)

    def apply(self) -> None:
        self.step_w(self.d_z, self.inner_lr)
        self.y.sub_(self.d_y, alpha=self.inner_lr)
        self.step_theta(self.d_theta, self.outer_lr)
        self.lam = min(self.lam + self.penalty_growth, self.penalty_max)
