"""The minibatch contract helpers and the seeded sampler of the stochastic solvers.

Oracles (tasks tagged :data:`MINIBATCH_TAG`, see :mod:`hpo_bench.core.task`): at a batch ``B`` of training
indices and a batch ``B'`` of validation indices, with ``f_B`` the inner loss averaged over ``B``
(penalty included) and ``g_B'`` the outer loss averaged over ``B'``::

    inner_oracle_batch(w, theta, B, v) = (grad_w f_B, H_B v, J_B v)     # fused; J = d^2 f / dtheta dw
    outer_grad_batch(w, B')            = grad_w g_B'
    inner_grad_batch, inner_hvp_batch, inner_cross_batch, inner_theta_grad_batch

Each is an unbiased estimate of its full-batch value under uniform sampling (:class:`Sampler`).

Sampler. ``"shuffle"`` walks a fresh random permutation of the examples in consecutive chunks of
``batch_size`` (the last chunk of an epoch is shorter when ``batch_size`` does not divide ``n``): every
example is seen once per epoch. ``"replacement"`` draws ``batch_size`` indices independently and
uniformly. Blocks (:meth:`Sampler.draw_block`) are a fixed partition of a seeded permutation into
``ceil(n / batch_size)`` chunks, drawn by id in either mode: SAGA-type memories keep one slot per
block (benchmark_bilevel's convention). Every generator is seeded from the cell's seed and a stream
name (:func:`generator`), so two runs with one seed draw the same batches.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

__all__ = ["MINIBATCH_TAG", "SAMPLING_MODES", "Sampler", "generator", "require_minibatch"]

#: The capability tag of tasks with minibatch oracles on both levels.
MINIBATCH_TAG = "minibatch"
SAMPLING_MODES = ("shuffle", "replacement")


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, stream)`` (``SeedSequence`` mixes every bit of ``seed``)."""
    words = np.random.SeedSequence([int(seed) & (2 ** 63 - 1), zlib.crc32(stream.encode())]).generate_state(2)
    return torch.Generator().manual_seed(int(words[0]) << 31 ^ int(words[1]))


def require_minibatch(task, tuner: str) -> None:
    """Raise ``ValueError`` unless ``task`` declares :data:`MINIBATCH_TAG` (suite validation refuses such
    cells up front through ``required_tags``; this guards direct calls)."""
    if MINIBATCH_TAG not in getattr(task, "tags", ()):
        raise ValueError(f"tuner {tuner!r} needs a task tagged {MINIBATCH_TAG!r} (minibatch oracles on both "
                         f"levels), but task {getattr(task, 'name', '?')!r} has tags {sorted(task.tags)}")


class Sampler:
    """Seeded minibatches of ``range(n)`` (module docstring).

    Args:
        n: number of examples.
        batch_size: examples per batch; ``batch_size >= n`` means the full set (shuffled in ``"shuffle"`` mode).
        mode: ``"shuffle"`` or ``"replacement"``.
        gen: the generator (:func:`generator`).
        device: where index tensors live.
    """

    def __init__(self, n: int, batch_size: int, *, mode: str = "shuffle", gen: torch.Generator,
                 device: torch.device | str = "cpu") -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"`mode` must be one of {list(SAMPLING_MODES)}, but got {mode!r}")
        if not (isinstance(n, int) and n >= 1 and isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"`n >= 1` and `batch_size >= 1` must hold (integers), but got (n={n!r}, "
                             f"batch_size={batch_size!r})")
        self.n, self.mode, self.gen, self.device = n, mode, gen, torch.device(device)
        self.batch_size = min(batch_size, n)
        self._perm: torch.Tensor | None = None
        self._pos = n
        self._blocks: list[torch.Tensor] | None = None
        self._block_perm: torch.Tensor | None = None
        self._block_pos = 0

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def draw(self) -> torch.Tensor:
        """The next batch of indices (a long tensor on ``device``)."""
        b = self.batch_size
        if self.mode == "replacement":
            return torch.randint(self.n, (b,), generator=self.gen).to(self.device)
        if self._pos >= self.n:
            self._perm = torch.randperm(self.n, generator=self.gen).to(self.device)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + b]
        self._pos += b
        return idx

    def blocks(self) -> list[torch.Tensor]:
        """The fixed partition (drawn once from the generator)."""
        if self._blocks is None:
            perm = torch.randperm(self.n, generator=self.gen).to(self.device)
            self._blocks = list(torch.split(perm, self.batch_size))
        return self._blocks

    def block_weights(self) -> torch.Tensor:
        """``|B_k| / n`` per block (float64): the full average is ``sum_k weight_k mean_{B_k}``."""
        return torch.tensor([len(b) / self.n for b in self.blocks()], dtype=torch.float64)

    def draw_block(self) -> tuple[int, torch.Tensor]:
        """``(k, indices of block k)``, ``k`` uniform (``"replacement"``) or a shuffled pass over the blocks."""
        blocks = self.blocks()
        nb = len(blocks)
        if self.mode == "replacement":
            k = int(torch.randint(nb, (1,), generator=self.gen))
            return k, blocks[k]
        if self._block_perm is None or self._block_pos >= nb:
            self._block_perm = torch.randperm(nb, generator=self.gen)
            self._block_pos = 0
        k = int(self._block_perm[self._block_pos])
        self._block_pos += 1
        return k, blocks[k]
