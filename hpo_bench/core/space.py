"""Hyperparameter spaces: named blocks, bounds and transforms.

A tuner never sees natural hyperparameter values directly. It works on one flat,
unconstrained-looking vector ``theta`` (the *transformed* coordinates), which the
space maps to named blocks in *natural* units:

* ``transform="log"``: ``lam = exp(theta)``; penalties are positive by construction.
* ``transform="none"``: ``lam = theta`` (the seed notebook's raw-λ convention).

Bounds are always stated in natural units and are mapped through the transform, so
``Space.project`` keeps every tuner inside them. Hypergradients in this package are
gradients with respect to ``theta``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["Block", "Space", "SpaceError", "BLOCK_KINDS", "TRANSFORMS"]

#: What a block's values index: one value, one per input feature, one per training
#: example, or one per model weight.
BLOCK_KINDS = ("scalar", "per_feature", "per_example", "per_weight")
TRANSFORMS = ("log", "none")


class SpaceError(ValueError):
    """A hyperparameter space or a point in it breaks a stated rule."""


@dataclass(frozen=True)
class Block:
    """One named block of hyperparameters.

    Args:
        name: identifier, unique within a space.
        kind: one of :data:`BLOCK_KINDS`.
        size: number of values (1 for ``scalar``).
        low, high: bounds in natural units, ``low < high``; ``low > 0`` for ``log``.
        transform: ``"log"`` or ``"none"``.
        init: starting value in natural units (broadcast over the block).
    """

    name: str
    kind: str = "scalar"
    size: int = 1
    low: float = 1e-6
    high: float = 1e6
    transform: str = "log"
    init: float = 1.0

    def __post_init__(self) -> None:
        where = f"hyperparameter block {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise SpaceError(f"{where}: `name` must be a non-empty string")
        if self.kind not in BLOCK_KINDS:
            raise SpaceError(f"{where}: `kind` must be one of {list(BLOCK_KINDS)}, but got {self.kind!r}")
        if not isinstance(self.size, int) or self.size < 1:
            raise SpaceError(f"{where}: `size >= 1` must hold, but got size={self.size!r}")
        if self.kind == "scalar" and self.size != 1:
            raise SpaceError(f"{where}: a scalar block has `size == 1`, but got size={self.size}")
        if self.transform not in TRANSFORMS:
            raise SpaceError(
                f"{where}: `transform` must be one of {list(TRANSFORMS)}, but got {self.transform!r}"
            )
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SpaceError(f"{where}: bounds must be finite, but got (low={self.low}, high={self.high})")
        if not self.low < self.high:
            raise SpaceError(f"{where}: `low < high` must hold, but got (low={self.low}, high={self.high})")
        if self.transform == "log" and self.low <= 0:
            raise SpaceError(f"{where}: a log-transformed block needs `low > 0`, but got low={self.low}")
        if not self.low <= self.init <= self.high:
            raise SpaceError(
                f"{where}: `low <= init <= high` must hold, but got "
                f"(low={self.low}, init={self.init}, high={self.high})"
            )

    def to_theta(self, value: float) -> float:
        return math.log(value) if self.transform == "log" else float(value)

    @property
    def theta_bounds(self) -> tuple[float, float]:
        return self.to_theta(self.low), self.to_theta(self.high)


@dataclass(frozen=True)
class Space:
    """An ordered collection of :class:`Block`; ``theta`` concatenates them in order."""

    blocks: tuple[Block, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if not self.blocks:
            raise SpaceError("a hyperparameter space needs at least one block")
        names = [b.name for b in self.blocks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpaceError(f"hyperparameter block names must be unique, but {dup} repeat")

    # ------------------------------------------------------------------ sizes
    @property
    def dim(self) -> int:
        """Length of the flat ``theta`` vector."""
        return sum(b.size for b in self.blocks)

    @property
    def names(self) -> list[str]:
        """One label per entry of ``theta``: ``lam`` or ``lam[3]``."""
        out: list[str] = []
        for b in self.blocks:
            out.extend([b.name] if b.size == 1 else [f"{b.name}[{i}]" for i in range(b.size)])
        return out

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for b in self.blocks:
            out[b.name] = slice(start, start + b.size)
            start += b.size
        return out

    # ------------------------------------------------------------- transforms
    def _per_entry(self, attr: str) -> list:
        vals: list = []
        for b in self.blocks:
            vals.extend([getattr(b, attr)] * b.size)
        return vals

    def init_theta(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
        """The blocks' ``init`` values in transformed coordinates."""
        vals = []
        for b in self.blocks:
            vals.extend([b.to_theta(b.init)] * b.size)
        return torch.tensor(vals, dtype=dtype, device=device)

    def theta_bounds(self, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        """The box of ``theta``: tensors ``(lo, hi)`` of length :attr:`dim`, one entry per coordinate, in
        the transformed coordinates (log of a ``log`` block's bounds). :meth:`project` clips into it."""
        lo, hi = [], []
        for b in self.blocks:
            tlo, thi = b.theta_bounds
            lo.extend([tlo] * b.size)
            hi.extend([thi] * b.size)
        return (torch.tensor(lo, dtype=dtype, device=device), torch.tensor(hi, dtype=dtype, device=device))

    def _log_mask(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.tensor([t == "log" for t in self._per_entry("transform")], device=theta.device)

    @property
    def _transform_kind(self) -> str:
        kinds = {b.transform for b in self.blocks}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def to_natural(self, theta: torch.Tensor) -> torch.Tensor:
        """Flat natural values (differentiable in ``theta``)."""
        self.check_shape(theta)
        kind = self._transform_kind
        if kind == "log":
            return torch.exp(theta)
        if kind == "none":
            return theta
        return torch.where(self._log_mask(theta), torch.exp(theta), theta)

    def from_natural(self, lam: torch.Tensor) -> torch.Tensor:
        self.check_shape(lam)
        mask = self._log_mask(lam)
        if bool(mask.any()) and bool((lam[mask] <= 0).any()):
            raise SpaceError("natural values of log-transformed blocks must be > 0")
        return torch.where(mask, torch.log(torch.where(mask, lam, torch.ones_like(lam))), lam)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named views of a flat vector (natural or transformed)."""
        self.check_shape(flat)
        return {name: flat[s] for name, s in self.slices().items()}

    def project(self, theta: torch.Tensor) -> torch.Tensor:
        """Clip ``theta`` into the bounds (mapped through each block's transform)."""
        lo, hi = self.theta_bounds(dtype=theta.dtype, device=theta.device)
        return torch.minimum(torch.maximum(theta, lo), hi)

    def contains(self, theta: torch.Tensor, *, atol: float = 1e-12) -> bool:
        lo, hi = self.theta_bounds(dtype=theta.dtype, device=theta.device)
        return bool(((theta >= lo - atol) & (theta <= hi + atol)).all())

    def check_shape(self, theta: torch.Tensor) -> None:
        if theta.ndim != 1 or theta.shape[0] != self.dim:
            raise SpaceError(
                f"a point of this space is a 1-D tensor of length {self.dim} "
                f"(blocks {[b.name for b in self.blocks]}), but got shape {tuple(theta.shape)}"
            )

    def sample(self, generator: torch.Generator, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Uniform in transformed coordinates (log-uniform for log blocks)."""
        lo, hi = self.theta_bounds(dtype=dtype)
        u = torch.rand(self.dim, generator=generator, dtype=dtype)
        return lo + (hi - lo) * u

    def describe(self) -> list[dict]:
        return [
            {"name": b.name, "kind": b.kind, "size": b.size, "low": b.low, "high": b.high,
             "transform": b.transform, "init": b.init}
            for b in self.blocks
        ]
