"""TTSA (Hong, Wai, Wang, Yang, SIAM J. Optim. 2023, "A two-timescale stochastic algorithm framework for
bilevel optimization: complexity analysis and application to actor-critic", Algorithm 1).

Single loop, two time scales: at the same state ``(w_k, theta_k)``::

    w     <- w - alpha_k grad_w f_B(w, theta)
    theta <- proj(theta - beta_k D_theta),   D_theta = -J_B v,
    v = Q eta prod_{j=1}^{p} (I - eta H_{B_j}) grad_w g_B'(w),   p uniform on {0, ..., Q - 1}

(the randomly truncated Neumann estimate of Ghadimi & Wang 2018 that the paper uses, eq. (9)). With
``decay = true`` the steps follow the paper's non-convex schedule ``alpha_k = alpha (k+1)^{-2/5}``,
``beta_k = beta (k+1)^{-3/5}``; by default they are constant (``alpha = step_size``, ``beta =
step_size / outer_ratio``), and the iterates settle at a noise floor that shrinks with the steps.
"""

from __future__ import annotations

from typing import Any

from ..core.registry import register_tuner
from ._base import BASE_OPTIONS, TRUNCATED_NEUMANN_OPTIONS, StochasticTuner, TruncatedNeumann

__all__ = ["TTSA"]


@register_tuner
class TTSA(TruncatedNeumann, StochasticTuner):
    """TTSA: one inner SGD step and one outer step with a randomly truncated Neumann hypergradient per iteration."""

    name = "ttsa"
    paper = "Hong et al. 2023, Algorithm 1"
    options = {**BASE_OPTIONS, **TRUNCATED_NEUMANN_OPTIONS}
    defaults: dict[str, Any] = {"neumann_steps": 10, "neumann_lr": None, "decay": False}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._init_truncated_neumann()

    def estimate(self) -> None:
        self.d_w = self.grad_inner(self.w, self.theta, self.inner_sampler.draw())
        r0 = self.grad_outer(self.w, self.outer_sampler.draw())
        self.v = self.neumann([(self.w, self.theta)], [r0], self.neumann_steps, self.neumann_lr,
                              truncation=self.draw_truncation())[0]
        self.d_theta = self.cross(self.w, self.theta, self.inner_sampler.draw(), self.v).neg_()

    def apply(self) -> None:
        k = self.iteration + 1
        alpha, beta = self.inner_lr, self.outer_lr
        if self.decay:
            alpha, beta = alpha * k ** -0.4, beta * k ** -0.6
        self.step_w(self.d_w, alpha)
        self.step_theta(self.d_theta, beta)
