"""SABA (Dagréou, Ablin, Vaiter, Moreau, NeurIPS 2022, Algorithm 2): SOBA with SAGA variance reduction.

Every per-sample quantity SOBA uses, ``phi_i = (grad_w f_i, H_i v, J_i v)`` and ``psi_j = grad_w g_j``, gets a
SAGA memory. With benchmark_bilevel's convention, a memory slot belongs to a *block* (a fixed minibatch
of a seeded partition, :meth:`~hpo_bench.stochastic._oracle.Sampler.draw_block`): at block ``k`` of
weight ``p_k = |B_k| / n`` among ``K`` blocks,

    D = K p_k (phi_k(w, v, theta) - m_k) + sum_l p_l m_l,     then m_k <- phi_k(w, v, theta)

(unbiased: ``E_k[K p_k phi_k] = sum_k p_k phi_k = phi``), and alike for ``psi``. The directions are
SOBA's built from these: ``D_w = D_grad``, ``D_v = D_Hv - D_psi``, ``D_theta = -D_Jv``; the updates are
SOBA's. The memories start at the initial point (one pass over both data sets, counted in ``samples``).
With constant steps SABA converges to a stationary point (Dagréou et al. 2022, Theorem 2).
"""

from __future__ import annotations

import torch

from ..core.registry import register_tuner
from ._base import StochasticTuner

__all__ = ["SABA"]


@register_tuner
class SABA(StochasticTuner):
    """SABA: SOBA's directions with SAGA memories per block (module docstring)."""

    name = "saba"
    paper = "Dagréou et al. 2022, Algorithm 2"
    v_from_outer_grad = True

    def init_state(self) -> None:
        p, q = self.w.shape[0], self.theta.shape[0]
        self._p, self._q = p, q
        blocks = self.inner_sampler.blocks()
        oblocks = self.outer_sampler.blocks()
        self.wt_in = self.inner_sampler.block_weights().to(self.w)
        self.wt_out = self.outer_sampler.block_weights().to(self.w)
        self.mem_in = torch.empty(len(blocks), 2 * p + q, dtype=self.w.dtype, device=self.w.device)
        self.mem_out = torch.empty(len(oblocks), p, dtype=self.w.dtype, device=self.w.device)
        for k, idx in enumerate(blocks):
            g, hv, jv = self.fused(self.w, self.theta, idx, self.v)
            self.mem_in[k] = torch.cat((g, hv, jv))
        for k, jdx in enumerate(oblocks):
            self.mem_out[k] = self.grad_outer(self.w, jdx)
        self.mean_in = self.wt_in @ self.mem_in
        self.mean_out = self.wt_out @ self.mem_out
        self.d_in = torch.empty(2 * p + q, dtype=self.w.dtype, device=self.w.device)
        self.d_out = torch.empty(p, dtype=self.w.dtype, device=self.w.device)
        self.d_v = torch.empty_like(self.w)

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.w, self.theta, self.v, self.mem_in, self.mem_out, self.mean_in, self.mean_out]

    def _saga(self, phi, mem, mean, weights, k, out) -> None:
        n_blocks = mem.shape[0]
        wk = float(weights[k])
        diff = phi - mem[k]                                     # phi_k - m_k
        torch.add(mean, diff, alpha=n_blocks * wk, out=out)     # D = K p_k (phi_k - m_k) + mean
        mean.add_(diff, alpha=wk)                               # the memory mean after m_k <- phi_k
        mem[k].add_(diff)

    def estimate(self) -> None:
        k, idx = self.inner_sampler.draw_block()
        l, jdx = self.outer_sampler.draw_block()
        g, hv, jv = self.fused(self.w, self.theta, idx, self.v)
        self._saga(torch.cat((g, hv, jv)), self.mem_in, self.mean_in, self.wt_in, k, self.d_in)
        self._saga(self.grad_outer(self.w, jdx), self.mem_out, self.mean_out, self.wt_out, l, self.d_out)
        p = self._p
        torch.sub(self.d_in[p:2 * p], self.d_out, out=self.d_v)
        torch.neg(self.d_in[2 * p:], out=self.d_theta)

    def apply(self) -> None:
        self.step_w(self.d_in[:self._p], self.inner_lr)
        self.v.sub_(self.d_v, alpha=self.inner_lr)
        self.step_theta(self.d_theta, self.outer_lr)
