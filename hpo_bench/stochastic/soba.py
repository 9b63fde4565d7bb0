"""SOBA (Dagréou, Ablin, Vaiter, Moreau, NeurIPS 2022, "A framework for bilevel optimization that enables
stochastic and global variance reduction algorithms", Algorithm 1).

One iteration, batches ``B`` (inner) and ``B'`` (outer) drawn afresh, every direction at the same state::

    D_w     = grad_w f_B(w, theta)
    D_v     = H_B(w, theta) v - grad_w g_B'(w)
    D_theta = -J_B(w, theta) v
    w <- w - rho D_w;   v <- v - rho D_v;   theta <- proj(theta - gamma D_theta)

with ``rho = step_size`` and ``gamma = step_size / outer_ratio`` (constant steps). ``v`` tracks
``H^{-1} grad outer`` (the paper's ``-v``). One fused oracle call and one outer gradient per iteration.
"""

from __future__ import annotations

import torch

from ..core.registry import register_tuner
from ._base import StochasticTuner

__all__ = ["SOBA"]


@register_tuner
class SOBA(StochasticTuner):
    """SOBA: simultaneous SGD steps on ``w``, ``v`` and ``theta`` from one fused minibatch oracle (module docstring)."""

    name = "soba"
    paper = "Dagréou et al. 2022, Algorithm 1"
    v_from_outer_grad = True

    def init_state(self) -> None:
        self.d_v = torch.empty_like(self.w)
        self.d_w = torch.empty_like(self.w)

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.w, self.theta, self.v]

    def estimate(self) -> None:
        idx = self.inner_sampler.draw()
        jdx = self.outer_sampler.draw()
        g, hv, jv = self.fused(self.w, self.theta, idx, self.v)
        self.d_w = g
        torch.sub(hv, self.grad_outer(self.w, jdx), out=self.d_v)
        torch.neg(jv, out=self.d_theta)

    def apply(self) -> None:
        self.step_w(self.d_w, self.inner_lr)
        self.v.sub_(self.d_v, alpha=self.inner_lr)
        self.step_theta(self.d_theta, self.outer_lr)
