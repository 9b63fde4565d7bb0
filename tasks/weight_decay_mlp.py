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
strict local minima through the Newton-CG anchor* ``w_a`` (the minimum that line-search
Newton(-CG) reaches from the seeded ``init_params()`` at the space's initial point
``theta_0``), continued along a fixed path: another solver from the same start can reach
another local minimum, and the reference describes this branch only. The path is keyed on
``theta`` alone, so ``solve`` is a pure function of ``theta`` whatever was solved before:

* ``theta`` rounds to the lattice point ``q = theta_0 + s k`` (``s = 0.5`` in ``log lam``,
  ``k`` integer per coordinate);
* ``q`` is reached from the anchor through the lattice points ``clamp(k, -L, L)``,
  ``L = 1, 2, ..., max|k|`` (each one lattice step from the last in the max-norm). These are
  cached (4096 of them), so a tuner that moves ``theta`` gradually pays only for the
  lattice points it has not visited, and a point in a visited cell costs one step;
* ``q -> theta`` (at most ``s/2`` per coordinate) is the last step.

Each step is a tangent predictor ``dw = -H^{-1} (lam . dtheta . w)`` and a local Newton
corrector that must stay within the predictor's trust region (``||w - w_pred|| <=
0.5 ||dw||``) with a positive-definite Hessian; a step that does not is halved, up to three
times. Between lattice points the branch may *fold* (its smallest Hessian eigenvalue reaches
0; on this MLP that happens several times between ``lam = 1e-3`` and ``1e-4``): there the
path jumps to the minimum L-BFGS (scipy) and Newton reach from the prediction, a
deterministic function of the lattice point, counted in ``n_jumps``. On the last step
``q -> theta`` no jump is allowed: a fold there raises :class:`hpo_bench.core.solvers.SolveError`
("no reference", a ``FloatingPointError``: recorders store NaN reference columns with the
message). So ``F(theta)`` is smooth inside each lattice cell wherever it is defined, and can
jump only on cell boundaries and on folds.

Reference (tags ``"non-convex"``, ``"reference:implicit-cg"``), stated as such:

* inner solve: Newton-CG (:func:`hpo_bench.core.solvers.newton_cg`, matrix-free Hessian-vector
  products; dense Newton, :func:`hpo_bench.core.solvers.newton`, up to 256 parameters, where that
  is cheaper), each lattice point to ``||grad|| <= 1e-8``, ``theta`` itself to
  ``||grad|| <= solve_gtol`` (1e-12) plus two polishing Newton steps;
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
from collections import OrderedDict

import numpy as np
import scipy.optimize
import torch

from hpo_bench.hypergrad import conjugate_gradient
from hpo_bench.core.registry import register_task
from hpo_bench.core.solvers import SolveCache, SolveError, newton, newton_cg
from hpo_bench.core.space import Block, Space
from hpo_bench.core.task import Linearization, Task, require

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
        self.continuation_step = 0.5  # lattice spacing s in log lam (max-norm of one continuation step)
        self.locality = 0.5  # trust region of the predictor: ||w - w_pred|| <= locality ||dw||
        self.max_halvings = 3
        self.lattice_cache_size = 4096
        self._lattice: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        #: corrector calls (continuation steps, halvings included) and fold jumps so far (cost counters)
        self.n_corrections = 0
        self.n_jumps = 0
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

    def _correct(self, theta: torch.Tensor, w_start: torch.Tensor) -> torch.Tensor | None:
        """Local corrector of one continuation step (``None`` when it leaves the branch).

        At most 50 Newton iterations (more means another basin); dense Newton must never
        have shifted an indefinite Hessian, and Newton-CG runs in its ``local`` mode (full
        steps, gives up at negative curvature), so the result is a continuous function of
        the start. Every point is solved to ``solve_gtol`` plus two polishing steps, so a
        lattice point is as accurate as ``solve(theta)`` itself.
        """
        self.n_corrections += 1
        gtol, polish = self.solve_gtol, 2

        def loss(v):
            return self.inner_loss(v, theta)

        def grad(v):
            return self.inner_grad(v, theta)

        if self.n_params <= self.dense_max:
            w, info = newton(loss, grad, lambda v: Linearization(self, v, theta).hessian(), w_start, gtol=gtol,
                             max_iter=50, polish=polish)
            return w if info.converged and info.shifts == 0 else None
        w, info = newton_cg(loss, grad, lambda v: Linearization(self, v, theta).hvp, w_start, gtol=gtol,
                            max_iter=50, polish=polish, local=True)
        return w if info.converged else None

    def _jump(self, theta: torch.Tensor, w_start: torch.Tensor) -> torch.Tensor | None:
        """Across a fold: L-BFGS (scipy, float64 on the CPU) from ``w_start``, then Newton to the tolerance."""
        self.n_jumps += 1

        def fg(x):
            v = torch.as_tensor(x, dtype=self.dtype, device=self.device)
            return float(self.inner_loss(v, theta)), self.inner_grad(v, theta).detach().cpu().double().numpy()

        res = scipy.optimize.minimize(fg, w_start.detach().cpu().double().numpy(), jac=True, method="L-BFGS-B",
                                      options={"maxiter": 20000, "maxfun": 40000, "gtol": 1e-9, "ftol": 0.0,
                                               "maxcor": 30})
        w0 = torch.as_tensor(np.asarray(res.x), dtype=self.dtype, device=self.device)
        w, info = self._newton(theta, w0, self.solve_gtol, max_iter=100)
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

    def _step(self, th_a: torch.Tensor, w_a: torch.Tensor, th_b: torch.Tensor, *, jump: bool,
              depth: int = 0) -> torch.Tensor:
        """One predictor-corrector step ``th_a -> th_b`` along the branch through ``w_a``.

        A corrected point outside the predictor's trust region (or a failed corrector) halves
        the step, up to ``max_halvings`` times; then the branch has folded: with ``jump`` the
        path continues from the minimum :meth:`_jump` reaches, otherwise :class:`SolveError`
        ("no reference") is raised.
        """
        dw = self._tangent(th_a, w_a, th_b - th_a)
        w_start = w_a + dw
        w = self._correct(th_b, w_start)
        # slack for rounding in w_a (solved to rounding level) when dw is ~0
        slack = 1e-7 * (1.0 + float(torch.linalg.vector_norm(w_a)))
        if w is not None and (float(torch.linalg.vector_norm(w - w_start))
                              <= self.locality * float(torch.linalg.vector_norm(dw)) + slack):
            return w
        if depth < self.max_halvings:
            th_mid = th_a + 0.5 * (th_b - th_a)
            w_mid = self._step(th_a, w_a, th_mid, jump=jump, depth=depth + 1)
            return self._step(th_mid, w_mid, th_b, jump=jump, depth=depth + 1)
        size = float((th_b - th_a).abs().max())
        if not jump:
            raise SolveError(f"{self.name}: no reference: the branch of minima through the anchor folds within "
                             f"{size:.2e} (in log lam) of the lattice point nearest to theta")
        w = self._jump(th_b, w_start)
        if w is None:
            raise SolveError(f"{self.name}: no reference: past a fold of the branch through the anchor, L-BFGS + "
                             f"Newton did not reach a minimum ({size:.2e} from the last point on the branch)")
        return w

    def lattice_point(self, theta: torch.Tensor) -> tuple[int, ...]:
        """``k`` with ``theta_0 + s k`` the lattice point nearest to ``theta`` (``s = continuation_step``)."""
        th0, _ = self.anchor()
        k = torch.round((theta.detach().to(dtype=torch.float64, device="cpu") - th0.double().cpu())
                        / self.continuation_step)
        return tuple(int(v) for v in k.tolist())

    def _lattice_theta(self, k: tuple[int, ...]) -> torch.Tensor:
        th0, _ = self.anchor()
        return th0 + self.continuation_step * torch.tensor(k, dtype=self.dtype, device=self.device)

    def _lattice_solve(self, k: tuple[int, ...]) -> torch.Tensor:
        """The branch at lattice point ``k``, through ``clamp(k, -L, L)``, ``L = 1 .. max|k|`` (cached)."""
        _, wa = self.anchor()
        top = max((abs(v) for v in k), default=0)
        levels = []
        w = wa
        for level in range(top, 0, -1):  # walk down to the highest cached level (or the anchor)
            kk = tuple(max(-level, min(level, v)) for v in k)
            if kk in self._lattice:
                self._lattice.move_to_end(kk)
                w = self._lattice[kk]
                break
            levels.append(kk)
        prev = tuple(max(-(top - len(levels)), min(top - len(levels), v)) for v in k)
        for kk in reversed(levels):
            w = self._step(self._lattice_theta(prev), w, self._lattice_theta(kk), jump=True)
            self._lattice[kk] = w
            if len(self._lattice) > self.lattice_cache_size:
                self._lattice.popitem(last=False)
            prev = kk
        return w

    def _solve(self, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.detach().to(dtype=self.dtype, device=self.device)
        k = self.lattice_point(theta)
        return self._step(self._lattice_theta(k), self._lattice_solve(k), theta, jump=False)

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """The branch of local minima through the anchor at ``theta``, along the lattice path (memoised).

        A pure function of ``theta``: the path depends on ``theta`` only, and cached lattice
        points are the values that path computes. Raises :class:`SolveError` where the branch
        folds between ``theta`` and its lattice point (no reference there).
        """
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
