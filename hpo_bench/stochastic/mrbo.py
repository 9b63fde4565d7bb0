"""MRBO (Yang, Ji, Liang, NeurIPS 2021, "Provably faster algorithms for bilevel optimization", Algorithm 1):
momentum-based recursive (STORM) estimators of the inner gradient and of the hypergradient.

With ``m = momentum`` (the paper's ``1 - alpha`` and ``1 - beta``) and one set of batches per iteration,
shared by the current and the previous state::

    u_k = grad_w f_B(w_k, theta_k) + m (u_{k-1} - grad_w f_B(w_{k-1}, theta_{k-1}))
    d_k = h_B(w_k, theta_k)        + m (d_{k-1} - h_B(w_{k-1}, theta_{k-1}))
    w <- w - rho u_k;   theta <- proj(theta - gamma d_k)

where ``h_B = -J_B v`` with ``v`` StocBiO's stochastic Neumann series (``neumann_steps`` terms,
``neumann_lr``): the paper's hypergradient estimator. The first iteration uses the plain estimates.

Schedules (``schedule``):

* ``"paper"`` (default; Algorithm 1 with Theorem 1's choices ``eta_k = kappa / (c + k)^{1/3}`` and
  ``alpha_{k+1} = c_1 eta_k^2``, as benchmark_bilevel runs it): with ``s_k = (c / (c + k))^{1/3}``,
  ``c = schedule_offset``::

      rho_k = step_size s_k,   gamma_k = (step_size / outer_ratio) s_k,   1 - m_k = (1 - momentum) s_k^2

  so the weight ``m_k`` of the recursive term tends to 1 and the estimator error vanishes, as
  ``k^{-2/3}`` (the paper's rate), while the steps shrink as ``k^{-1/3}``. The rate is polynomial: STORM is
  not a finite-sum variance reduction, so unlike SABA, SRBA and VRBO, MRBO does not converge linearly, and
  ``||dF||^2 <= 1e-10`` takes far more iterations than those solvers need (``tests/test_stochastic_solvers.py``
  checks that its floor falls ~10x below the constant schedule's at the same knobs).
* ``"constant"``: ``m``, ``rho = step_size`` and ``gamma = step_size / outer_ratio`` fixed, like the other
  solvers' constant steps. The STORM error then settles at a floor of order ``(1 - m)`` times the sampling
  variance, so the iterates reach a noise ball, not a stationary point.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.options import Option
from ..core.registry import register_tuner
from ._base import BASE_OPTIONS, StochasticTuner

__all__ = ["MRBO", "hypergradient_at"]

SCHEDULES = ("constant", "paper")


def hypergradient_at(solver: StochasticTuner, points, *, draw=None, outer_draw=None):
    """``[(h, v)]`` at each ``(w, theta)`` of ``points`` on shared batches: ``v`` the stochastic Neumann series for
    ``H^{-1} grad g`` (``solver.neumann_steps``, ``solver.neumann_lr``), ``h = -J v``."""
    draw = draw or solver.inner_sampler.draw
    jdx = (outer_draw or solver.outer_sampler.draw)()
    r0 = [solver.grad_outer(w, jdx) for w, _ in points]
    vs = solver.neumann(points, r0, solver.neumann_steps, solver.neumann_lr, draw=draw)
    idx = draw()
    return [(solver.cross(w, th, idx, v).neg_(), v) for (w, th), v in zip(points, vs)]


@register_tuner
class MRBO(StochasticTuner):
    """MRBO: STORM estimators of the inner gradient and of the Neumann hypergradient (module docstring)."""

    name = "mrbo"
    paper = "Yang et al. 2021, Algorithm 1"
    options = {**BASE_OPTIONS, "momentum": Option(float, low=0, high=1, high_open=True),
               "neumann_steps": Option(int, low=0), "neumann_lr": Option(float, low=0, low_open=True, optional=True),
               "schedule": Option(str, choices=SCHEDULES),
               "schedule_offset": Option(float, low=1, doc="the offset c of s_k = (c / (c + k))^(1/3)")}
    defaults: dict[str, Any] = {"momentum": 0.9, "neumann_steps": 10, "neumann_lr": None, "schedule": "paper",
                                "schedule_offset": 100.0}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.momentum = float(self.params["momentum"])
        self.schedule = self.params["schedule"]
        self.schedule_offset = float(self.params["schedule_offset"])
        self.neumann_steps = int(self.params["neumann_steps"])
        self.neumann_lr = float(self.params["neumann_lr"] or self.step_size)

    def init_state(self) -> None:
        self.u = torch.zeros_like(self.w)
        self.d = torch.zeros_like(self.theta)
        self.w_prev, self.theta_prev = self.w.clone(), self.theta.clone()

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.w, self.theta, self.v, self.u, self.d, self.w_prev, self.theta_prev]

    def decay(self) -> float:
        """``s_k = (c / (c + k))^{1/3}`` at the current iteration (1 with the constant schedule)."""
        if self.schedule == "constant":
            return 1.0
        c = self.schedule_offset
        return (c / (c + self.iteration)) ** (1.0 / 3.0)

    @property
    def current_momentum(self) -> float:
        """``m_k``: ``momentum``, or ``1 - (1 - momentum) s_k^2`` with the paper's schedule."""
        return 1.0 - (1.0 - self.momentum) * self.decay() ** 2

    def estimate(self) -> None:
        idx = self.inner_sampler.draw()
        m = self.current_momentum
        if self.iteration == 0:
            self.u.copy_(self.grad_inner(self.w, self.theta, idx))
            ((h, v),) = hypergradient_at(self, [(self.w, self.theta)])
            self.d.copy_(h)
        else:
            g, gp = self.grad_inner(self.w, self.theta, idx), self.grad_inner(self.w_prev, self.theta_prev, idx)
            self.u.sub_(gp).mul_(m).add_(g)
            (h, v), (hp, _) = hypergradient_at(self, [(self.w, self.theta), (self.w_prev, self.theta_prev)])
            self.d.sub_(hp).mul_(m).add_(h)
        self.v = v
        self.d_theta = self.d

    def apply(self) -> None:
        self.w_prev.copy_(self.w)
        self.theta_prev.copy_(self.theta)
        s = self.decay()
        self.step_w(self.u, self.inner_lr * s)
        self.step_theta(self.d, self.outer_lr * s)
