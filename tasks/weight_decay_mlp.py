"""A small MLP on digits with one weight-decay hyperparameter per weight (``weight_decay_mlp``).

After Lorraine, Vicol & Duvenaud (AISTATS 2020), who tune one decay per weight with
implicit differentiation. Parameters ``w`` are all weights and biases of a ``tanh`` MLP
(``hidden`` gives the layer widths) flattened into one vector; with ``lam = exp(theta)``,
one entry per parameter::

    inner(w, theta) = 1/n sum_i CE(mlp(x_i; w), y_i) + 1/2 sum_k lam_k w_k^2

Validation and test losses are mean cross-entropies. The problem is **non-convex**, so
there is no closed form, and "the minimiser reached from a fixed start" is not even a
continuous function of ``theta`` (a line search that decides differently at two nearby
``theta`` lands in another basin). ``w*(theta)`` is therefore defined as *the branch of
strict local minima through the anchor* ``w_a``: the minimum reached from the seeded
``init_params()`` at the space's initial point ``theta_0``, continued along the segment
``theta_0 -> theta`` (:func:`hpo_bench.solvers.continuation`: tangent predictor, Newton-CG
corrector, steps of at most 0.5 in ``log lam``, halved where the corrector fails). It is
smooth in ``theta`` wherever that branch does not fold.

Reference (tags ``"non-convex"``, ``"reference:implicit-cg"``), stated as such:

* inner solve: line-search Newton-CG (:func:`hpo_bench.solvers.newton_cg`, matrix-free
  Hessian-vector products; dense Newton, :func:`hpo_bench.solvers.newton`, up to 256
  parameters, where that is cheaper), each continuation step to ``||grad|| <= 1e-8``, the
  last to ``||grad|| <= solve_gtol`` (1e-12) plus two polishing Newton steps;
* hypergradient: implicit differentiation at that point with ``H q = grad outer`` solved by
  conjugate gradients to relative residual ``cg_tol`` (1e-10), ``dF/dtheta = -lam . w* . q``.
  A point where CG meets negative curvature is not a strict local minimum: the reference
  raises ``FloatingPointError`` there (the recorder reports it).

``tanh`` keeps the loss twice differentiable (ReLU's Hessian is not defined at its kinks,
which breaks finite-difference checks). Every operation is device-agnostic, so the same
task runs with ``device = "cuda"`` (and ``dtype = "float32"`` for speed); sizes are
set by ``n_train``, ``pool``, ``hidden`` and ``n_classes``.
"""

from __future__ import annotations

import math

import torch

from hpo_bench.hypergrad import conjugate_gradient
from hpo_bench.registry import register_task
from hpo_bench.solvers import SolveCache, SolveError, continuation, newton, newton_cg
from hpo_bench.space import Block, Space
from hpo_bench.task import Linearization, Task, require

from ._digits import load_digits_split

__all__ = ["WeightDecayMLP"]


@register_task
class WeightDecayMLP(Task):
    """Tanh MLP on digits, one weight decay per parameter (non-convex; Newton-CG + CG reference)."""

    name = "weight_decay_mlp"
    tags = frozenset({"non-convex", "per-example", "reference:implicit-cg", "many-hyperparameters"})
    check_params = {"n_train": 40, "n_val": 40, "n_test": 40, "n_classes": 3, "pool": 4, "hidden": [4]}

    def __init__(self, *, n_train: int = 200, n_val: int = 200, n_test: int | None = 300, n_classes: int = 10,
                 pool: int = 2, hidden: list[int] | tuple[int, ...] = (16,), lam0: float = 1e-3,
                 lam_low: float = 1e-6, lam_high: float = 1e2, solve_gtol: float = 1e-12, cg_tol: float = 1e-10,
                 seed: int = 0, dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        nm = self.name
        hidden = list(hidden) if isinstance(hidden, (list, tuple)) else hidden
        require(isinstance(hidden, list) and all(isinstance(h, int) and h >= 1 for h in hidden), nm, "hidden",
                "a list of layer widths (integers >= 1), possibly empty", hidden)
        require(lam_low <= lam0 <= lam_high, nm, "lam0", f"within [lam_low, lam_high] = [{lam_low}, {lam_high}]",
                lam0)
        require(0 < solve_gtol < 1e-6, nm, "solve_gtol", "in (0, 1e-6) (the reference needs a tight solve)",
                solve_gtol)
        require(0 < cg_tol <= 1e-8, nm, "cg_tol", "in (0, 1e-8] (the reference needs a tight linear solve)", cg_tol)
        x_tr, y_tr, x_va, y_va, x_te, y_te = load_digits_split(task=nm, n_classes=n_classes, pool=pool,
                                                               n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
        t = self.tensor
        dev = self.device
        self.x_train, self.x_val, self.x_test = t(x_tr), t(x_va), t(x_te)
        self.y_train = torch.as_tensor(y_tr, device=dev)
        self.y_val, self.y_test = torch.as_tensor(y_va, device=dev), torch.as_tensor(y_te, device=dev)
        widths = [self.x_train.shape[1], *hidden, n_classes]
        self._layers: list[tuple[slice, tuple[int, int], slice]] = []
        start = 0
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            w_sl = slice(start, start + fan_in * fan_out)
            b_sl = slice(w_sl.stop, w_sl.stop + fan_out)
            self._layers.append((w_sl, (fan_out, fan_in), b_sl))
            start = b_sl.stop
        self._n_params = start
        # Glorot-uniform weights, zero biases; drawn on the CPU from the seed, then moved
        gen = torch.Generator().manual_seed(seed + 104729)
        w0 = torch.zeros(start, dtype=torch.float64)
        for w_sl, (fan_out, fan_in), _ in self._layers:
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w0[w_sl] = (2 * torch.rand(fan_out * fan_in, generator=gen, dtype=torch.float64) - 1) * bound
        self._w0 = w0.to(dtype=self.dtype, device=dev)
        self.solve_gtol, self.cg_tol = float(solve_gtol), float(cg_tol)
        self.continuation_step = 0.5
        self.dense_max = 256  # below this many parameters a dense Hessian is cheaper than CG's HVPs
        self._space = Space((Block("lam", kind="per_weight", size=start, low=lam_low, high=lam_high,
                                   transform="log", init=lam0),))
        self._cache = SolveCache()
        self._anchor: tuple[torch.Tensor, torch.Tensor] | None = None
        self.params = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "n_classes": n_classes, "pool": pool,
                       "hidden": list(hidden), "lam0": lam0, "lam_low": lam_low, "lam_high": lam_high,
                       "solve_gtol": solve_gtol, "cg_tol": cg_tol}

    # -------------------------------------------------------------- model
    def logits(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = len(self._layers) - 1
        for k, (w_sl, shape, b_sl) in enumerate(self._layers):
            h = h @ w[w_sl].reshape(shape).T + w[b_sl]
            if k < last:
                h = torch.tanh(h)
        return h

    def _ce(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.logits(w, x), y)

    # -------------------------------------------------------------- contract
    @property
    def space(self) -> Space:
        return self._space

    @property
    def n_params(self) -> int:
        return self._n_params

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    def init_params(self) -> torch.Tensor:
        return self._w0.clone()

    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self._ce(w, self.x_train, self.y_train) + 0.5 * torch.sum(self.space.to_natural(theta) * w * w)

    def inner_loss_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (self._ce(w, self.x_train[idx], self.y_train[idx])
                + 0.5 * torch.sum(self.space.to_natural(theta) * w * w))

    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self._ce(w, self.x_val, self.y_val)

    def test_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self._ce(w, self.x_test, self.y_test)

    def accuracy(self, w: torch.Tensor, split: str = "test") -> float:
        x, y = {"train": (self.x_train, self.y_train), "val": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}[split]
        return float((self.logits(w, x).argmax(1) == y).double().mean())

    # -------------------------------------------------------------- reference
    def _newton(self, theta: torch.Tensor, w_start: torch.Tensor, gtol: float, *, max_iter: int = 500,
                polish: int = 2):
        """Line-search Newton: dense (autograd Hessian, Cholesky) up to ``dense_max`` parameters, else Newton-CG."""
        def loss(v):
            return self.inner_loss(v, theta)

        def grad(v):
            return self.inner_grad(v, theta)

        if self.n_params <= self.dense_max:
            return newton(loss, grad, lambda v: Linearization(self, v, theta).hessian(), w_start, gtol=gtol,
                          max_iter=max_iter, polish=polish)
        return newton_cg(loss, grad, lambda v: Linearization(self, v, theta).hvp, w_start, gtol=gtol,
                         max_iter=max_iter, polish=polish)

    def _correct(self, theta: torch.Tensor, w_start: torch.Tensor, final: bool) -> torch.Tensor | None:
        """Corrector of one continuation step: at most 50 Newton iterations (more means another basin)."""
        w, info = self._newton(theta, w_start, self.solve_gtol if final else 1e-8, max_iter=50,
                               polish=2 if final else 0)
        return w if info.converged else None

    def _jump(self, theta: torch.Tensor, w_start: torch.Tensor, final: bool) -> torch.Tensor | None:
        """Across a fold: the globalised solver with its full iteration budget."""
        w, info = self._newton(theta, w_start, self.solve_gtol if final else 1e-8, polish=2 if final else 0)
        return w if info.converged else None

    def anchor(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(theta_0, w_a)``: the space's initial point and the minimum reached there from ``init_params()``."""
        if self._anchor is None:
            th0 = self.space.init_theta(dtype=self.dtype, device=self.device)
            w, info = self._newton(th0, self.init_params(), self.solve_gtol)
            if not info.converged:
                raise SolveError(f"{self.name}: Newton-CG from init_params() stopped at ||grad|| = "
                                 f"{info.grad_norm:.2e} after {info.iterations} iterations "
                                 f"(target {self.solve_gtol:g}) at the initial hyperparameters")
            self._anchor = (th0, w)
        return self._anchor

    def _tangent(self, theta: torch.Tensor, w: torch.Tensor, dtheta: torch.Tensor) -> torch.Tensor:
        """``-H^{-1} (lam . dtheta . w)``: how the minimiser moves with ``theta`` (0 where ``H`` is not PD)."""
        lin = Linearization(self, w, theta)
        rhs = -(self.space.to_natural(theta) * dtheta * w)
        if self.n_params <= self.dense_max:
            chol, info = torch.linalg.cholesky_ex(lin.hessian())
            return torch.cholesky_solve(rhs.unsqueeze(1), chol).squeeze(1) if int(info) == 0 else torch.zeros_like(w)
        dw, info = conjugate_gradient(lin.hvp, rhs, tol=1e-8, max_iter=2 * w.shape[0] + 50)
        return dw if info["converged"] else torch.zeros_like(w)

    def _solve(self, theta: torch.Tensor) -> torch.Tensor:
        th0, wa = self.anchor()
        return continuation(self._correct, th0, wa, theta.detach().to(dtype=self.dtype, device=self.device),
                            max_step=self.continuation_step, tangent=self._tangent, jump=self._jump)

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """The branch of local minima through the anchor, at ``theta`` (memoised on ``theta``)."""
        return self._cache.get(theta, self._solve)

    def reference_hypergradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Implicit differentiation at :meth:`solve` with CG to relative residual ``cg_tol``."""
        theta = theta.detach()
        w = self.solve(theta)
        lin = self.linearize(w, theta)
        v = self.outer_grad(w)
        q, info = conjugate_gradient(lin.hvp, v, tol=self.cg_tol, max_iter=20 * v.shape[0] + 100)
        if not info["converged"]:
            raise FloatingPointError(f"{self.name}: reference CG did not reach {self.cg_tol:g} "
                                     f"({info.get('cg_status')}, residual {info['residual']:.2e}); "
                                     "the solution is not a strict local minimum")
        return -self.space.to_natural(theta) * w * q
