"""VRBO (Yang, Ji, Liang, NeurIPS 2021, "Provably faster algorithms for bilevel optimization", Algorithm 2):
SPIDER/SARAH estimators of the inner gradient and of the hypergradient with periodic large-batch restarts.

Every ``period`` iterations (default one inner epoch, ``ceil(n / batch_size)``) the estimators are
recomputed on the full data sets (``u = grad_w f``, ``d = h`` with full-batch Neumann products); in
between, on one set of batches shared by the current and the previous state::

    u_k = u_{k-1} + grad_w f_B(w_k, theta_k) - grad_w f_B(w_{k-1}, theta_{k-1})
    d_k = d_{k-1} + h_B(w_k, theta_k)        - h_B(w_{k-1}, theta_{k-1})
    w <- w - rho u_k;   theta <- proj(theta - gamma d_k)

``h = -J v``, ``v`` StocBiO's Neumann series (``neumann_steps``, ``neumann_lr``): its truncation bias
``(I - eta H)^{Q+1} H^{-1} grad g`` is the only error left at convergence. The paper nests ``m`` inner
SARAH steps on ``w`` per outer step; this implementation takes ``inner_steps`` of them (default 1).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.options import Option
from ..core.registry import register_tuner
from ._base import BASE_OPTIONS, StochasticTuner
from .mrbo import hypergradient_at

__all__ = ["VRBO"]


@register_tuner
class VRBO(StochasticTuner):
    """VRBO: SARAH estimators of the inner gradient and the Neumann hypergradient, full-batch restarts."""

    name = "vrbo"
    paper = "Yang et al. 2021, Algorithm 2"
    options = {**BASE_OPTIONS, "period": Option(int, low=1, optional=True), "inner_steps": Option(int, low=1),
               "neumann_steps": Option(int, low=0), "neumann_lr": Option(float, low=0, low_open=True, optional=True)}
    defaults: dict[str, Any] = {"period": None, "inner_steps": 1, "neumann_steps": 10, "neumann_lr": None}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.inner_steps = int(self.params["inner_steps"])
        self.neumann_steps = int(self.params["neumann_steps"])
        self.neumann_lr = float(self.params["neumann_lr"] or self.step_size)

    def init_state(self) -> None:
        t = self.task
        self.period = int(self.params["period"] or math.ceil(t.n_train / self.batch_size))
        self.all_in = torch.arange(t.n_train, device=t.device)
        self.all_out = torch.arange(t.n_val, device=t.device)
        self.u = torch.zeros_like(self.w)
        self.d = torch.zeros_like(self.theta)
        self.w_prev, self.theta_prev = self.w.clone(), self.theta.clone()

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.w, self.theta, self.v, self.u, self.d, self.w_prev, self.theta_prev]

    def _full(self) -> None:
        self.u.copy_(self.grad_inner(self.w, self.theta, self.all_in))
        ((h, v),) = hypergradient_at(self, [(self.w, self.theta)], draw=lambda: self.all_in,
                                     outer_draw=lambda: self.all_out)
        self.d.copy_(h)
        self.v = v

    def _recursive(self, *, hyper: bool) -> None:
        idx = self.inner_sampler.draw()
        self.u.add_(self.grad_inner(self.w, self.theta, idx)).sub_(self.grad_inner(self.w_prev, self.theta_prev, idx))
        if hyper:
            (h, v), (hp, _) = hypergradient_at(self, [(self.w, self.theta), (self.w_prev, self.theta_prev)])
            self.d.add_(h).sub_(hp)
            self.v = v

    def estimate(self) -> None:
        if self.iteration % self.period == 0:
            self._full()
        else:
            self._recursive(hyper=True)
        self.d_theta = self.d

    def apply(self) -> None:
        self.w_prev.copy_(self.w)
        self.theta_prev.copy_(self.theta)
        self.step_theta(self.d, self.outer_lr)
        self.step_w(self.u, self.inner_lr)
        for _ in range(self.inner_steps - 1):  # the paper's inner SARAH loop on w at the new theta
            self._recursive(hyper=False)
            self.w_prev.copy_(self.w)
            self.theta_prev.copy_(self.theta)
            self.step_w(self.u, self.inner_lr)
