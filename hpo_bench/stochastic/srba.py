"""SRBA (Dagréou, Moreau, Vaiter, Ablin, AISTATS 2024, "A lower bound and a near-optimal algorithm for bilevel
empirical risk minimization", Algorithm 1): SOBA's directions with SARAH (recursive) variance reduction.

Write ``s = (w, v, theta)`` and ``Phi_{B,B'}(s) = (grad_w f_B, H_B v - grad_w g_B', -J_B v)`` at ``s``.
Every ``period`` iterations (default: one epoch of the inner data, ``ceil(n / batch_size)``) the
directions are recomputed on the full data sets; in between, on fresh batches at the current and the
previous state::

    D_k = D_{k-1} + Phi_{B,B'}(s_k) - Phi_{B,B'}(s_{k-1})
    w <- w - rho D_w;   v <- v - rho D_v;   theta <- proj(theta - gamma D_theta)

``E[D_k | past] = D_{k-1} + Phi(s_k) - Phi(s_{k-1})`` (unbiased increments). With constant steps the
iterates converge to a stationary point (their Theorem 3.2); two fused oracle calls and two outer
gradients per inner iteration.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.options import Option
from ..core.registry import register_tuner
from ._base import BASE_OPTIONS, StochasticTuner

__all__ = ["SRBA"]


@register_tuner
class SRBA(StochasticTuner):
    """SRBA: SARAH estimates of SOBA's directions with full-batch restarts every ``period`` iterations."""

    name = "srba"
    paper = "Dagréou et al. 2024, Algorithm 1"
    v_from_outer_grad = True
    options = {**BASE_OPTIONS, "period": Option(int, low=1, optional=True)}
    defaults: dict[str, Any] = {"period": None}

    def init_state(self) -> None:
        t = self.task
        self.period = int(self.params["period"] or math.ceil(t.n_train / self.batch_size))
        self.all_in = torch.arange(t.n_train, device=t.device)
        self.all_out = torch.arange(t.n_val, device=t.device)
        p, q = self.w.shape[0], self.theta.shape[0]
        self._p = p
        self.w_prev, self.v_prev, self.theta_prev = self.w.clone(), self.v.clone(), self.theta.clone()
        self.d = torch.zeros(2 * p + q, dtype=self.w.dtype, device=self.w.device)

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.w, self.theta, self.v, self.w_prev, self.v_prev, self.theta_prev, self.d]

    def _phi(self, w, v, theta, idx, jdx) -> torch.Tensor:
        g, hv, jv = self.fused(w, theta, idx, v)
        return torch.cat((g, hv - self.grad_outer(w, jdx), -jv))

    def estimate(self) -> None:
        if self.iteration % self.period == 0:
            self.d.copy_(self._phi(self.w, self.v, self.theta, self.all_in, self.all_out))
        else:
            idx, jdx = self.inner_sampler.draw(), self.outer_sampler.draw()
            self.d.add_(self._phi(self.w, self.v, self.theta, idx, jdx))
            self.d.sub_(self._phi(self.w_prev, self.v_prev, self.theta_prev, idx, jdx))
        self.d_theta = self.d[2 * self._p:]

    def apply(self) -> None:
        p = self._p
        self.w_prev.copy_(self.w)
        self.v_prev.copy_(self.v)
        self.theta_prev.copy_(self.theta)
        self.step_w(self.d[:p], self.inner_lr)
        self.v.sub_(self.d[p:2 * p], alpha=self.inner_lr)
        self.step_theta(self.d_theta, self.outer_lr)
