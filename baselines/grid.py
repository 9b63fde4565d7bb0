"""Grid search: optuna's GridSampler (``grid``) and, for one ridge penalty, one eigendecomposition
for the whole grid (``grid_eig``).

Grids are honest about many hyperparameters: ``space`` says what is gridded and every row
records the grid actually used (``extra``: ``grid_space``, ``grid_axes``,
``grid_points_per_axis``, ``grid_size``, ``grid_complete``):

* ``"block"`` (default): one axis per hyperparameter block, every entry of a block shares
  the block's value: a scalar penalty is an ordinary grid; a per-feature block becomes a
  shared-λ grid (one λ for all features).
* ``"shared"``: one axis for all of ``theta`` (all blocks need the same transform).
* ``"full"``: one axis per entry of ``theta`` (a full factorial).

Without ``points``, the points per axis are the most the step budget allows,
``k = floor(steps ** (1 / axes))``; a single point is the centre of the bounds. Values are
equally spaced in theta (log-spaced for log-penalties), bounds included.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import torch

from hpo_bench.core.options import Option
from hpo_bench.core.registry import register_tuner
from hpo_bench.core.tuner import Tuner

from .ask_tell import OptunaTuner

__all__ = ["GridSearchTuner", "EigGridTuner", "grid_values", "points_per_axis", "ridge_eig_grid"]

GRID_SPACES = ("block", "shared", "full")
MAX_GRID = 1_000_000  # optuna's GridSampler enumerates the whole product


def points_per_axis(steps: int, axes: int) -> int:
    """The largest ``k >= 1`` with ``k ** axes <= steps``."""
    k = max(1, int(math.floor(steps ** (1.0 / axes))))
    while k > 1 and k ** axes > steps:
        k -= 1
    while (k + 1) ** axes <= steps:
        k += 1
    return k


def grid_values(low: float, high: float, k: int) -> list[float]:
    """``k`` equally spaced values in ``[low, high]`` (bounds included); one value: the centre."""
    if k == 1:
        return [0.5 * (low + high)]
    return [float(v) for v in torch.linspace(low, high, k, dtype=torch.float64)]


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """optuna's GridSampler, minus its ``study.stop()`` on exhaustion.

    ``GridSampler.after_trial`` calls ``study.stop()``, which raises outside
    ``study.optimize``; under ask/tell the tuner stops itself after ``grid_size`` proposals.
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D102
        return None


@register_tuner
class GridSearchTuner(OptunaTuner):
    """Grid search through optuna's GridSampler (points visited in a seeded random order).

    Args:
        points: values per axis (>= 1); ``None``: as many as the step budget allows.
        space: ``"block"``, ``"shared"`` or ``"full"`` (see the module docstring).
        inner, inner_steps, inner_lr: see :class:`~hpo_bench.baselines.ask_tell.OptunaTuner`.
    """

    name = "grid"
    options = {**OptunaTuner.options, "points": Option(int, low=1, optional=True),
               "space": Option(str, choices=GRID_SPACES)}

    def __init__(self, *, points: int | None = None, space: str = "block", **common) -> None:
        super().__init__(points=points, space=space, **common)  # checks `options`
        self.points = points
        self.space = space
        self._geo: dict[str, Any] = {}

    # ------------------------------------------------------------ geometry
    def prepare(self, task, recorder) -> None:
        sp = task.space
        if self.space == "full":
            lo, hi = sp.theta_bounds()
            axes = [(n, float(a), float(b), [i]) for i, (n, a, b) in enumerate(zip(sp.names, lo, hi))]
        elif self.space == "block":
            axes = []
            for b, (name, sl) in zip(sp.blocks, sp.slices().items()):
                lo, hi = b.theta_bounds
                axes.append((name, lo, hi, list(range(sl.start, sl.stop))))
        else:
            transforms = sorted({b.transform for b in sp.blocks})
            if len(transforms) > 1:
                raise ValueError(f"tuner 'grid': space='shared' needs one transform for all blocks, but task "
                                 f"{task.name!r} mixes {transforms}; use space='block'")
            lo = max(b.theta_bounds[0] for b in sp.blocks)
            hi = min(b.theta_bounds[1] for b in sp.blocks)
            if not lo < hi:
                raise ValueError(f"tuner 'grid': space='shared' needs overlapping bounds, but the blocks of "
                                 f"task {task.name!r} share none (low={lo}, high={hi})")
            axes = [("shared", lo, hi, list(range(sp.dim)))]
        steps = recorder.budget.steps
        if self.points is not None:
            k = self.points
        elif steps is not None:
            k = points_per_axis(steps, len(axes))
        else:
            raise ValueError("tuner 'grid': the budget has no `steps`, so give the grid's `points` per axis")
        size = k ** len(axes)
        if size > MAX_GRID:
            raise ValueError(f"tuner 'grid': {k} points on {len(axes)} axes is {size:.3g} grid points "
                             f"(at most {MAX_GRID}); use fewer points or space='block'/'shared'")
        self._geo = {"axes": axes, "k": k, "size": size,
                     "values": {name: grid_values(lo, hi, k) for name, lo, hi, _ in axes},
                     "complete": steps is None or size <= steps}

    def search_axes(self, task):
        return [a[0] for a in self._geo["axes"]], [(a[1], a[2]) for a in self._geo["axes"]]

    def to_theta(self, task, values):
        flat = [0.0] * task.space.dim
        for (_, _, _, idx), v in zip(self._geo["axes"], values):
            for i in idx:
                flat[i] = v
        return super().to_theta(task, flat)

    def make_sampler(self, task, recorder, seed: int) -> optuna.samplers.BaseSampler:
        return _AskTellGridSampler(self._geo["values"], seed=seed)

    def max_trials(self, task, recorder) -> int | None:
        return self._geo["size"]

    def row_info(self, task, recorder) -> dict[str, Any]:
        g = self._geo
        return {"grid_space": self.space, "grid_axes": len(g["axes"]), "grid_points_per_axis": g["k"],
                "grid_size": g["size"], "grid_complete": g["complete"]}


# --------------------------------------------------------------------------- eig grid
#: What ``grid_eig`` needs of a task (:meth:`EigGridTuner.required_tags`): a ridge-type quadratic that keeps
#: its Gram matrix (``gram``, ``xty``, ``a``, ``b``, ``x_val``, ``y_val``) and has one scalar hyperparameter.
EIG_REQUIRES = frozenset({"quadratic", "gram-matrix", "scalar-hyperparameter"})


def _check_eig_task(task) -> None:
    """The declared requirements (the rule suite validation applies), then the attributes they promise."""
    missing = sorted(EIG_REQUIRES - set(task.tags))
    ok = not missing and task.space.dim == 1 and all(
        hasattr(task, a) for a in ("gram", "xty", "a", "b", "x_val", "y_val"))
    if not ok:
        raise ValueError(f"tuner 'grid_eig' needs a ridge-type task with one scalar penalty (tags "
                         f"{sorted(EIG_REQUIRES)}), but task {task.name!r} has tags {sorted(task.tags)} "
                         f"(missing {missing}) and {task.space.dim} hyperparameters; use tuner 'grid'")


def ridge_eig_grid(task, thetas: torch.Tensor, *, weights: bool = True
                   ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Inner solutions and validation losses of a scalar-penalty quadratic task at every ``theta``.

    With the task's cached Gram matrix ``G = V diag(s) V^T`` (one symmetric eigendecomposition
    of ``p x p``) the Hessian at penalty λ is ``2a G + 2bλ I = V diag(2a s + 2bλ) V^T``, so in the
    eigenbasis ``w*(λ) = V u(λ)`` with ``u_i = z_i / (2a s_i + 2bλ)``, ``z = V^T (2a c)``: every grid
    point is a ``p``-vector division. The validation loss never forms the ``n_val x K`` predictions:
    with ``B = V^T X_v^T X_v V`` and ``e = V^T X_v^T y_v`` (small ``p x p`` / ``p`` matrices, built once
    per call from the task's kept ``X_v^T X_v`` where it has one), ``n_val * F(λ) = u^T B u - 2 u^T e + y_v^T y_v``; all ``K`` losses are one ``K x p x p``
    product. Rows whose loss is so far below the sizes of its terms that the expansion could lose
    digits (``F < 1e-7 (u^T B u + y_v^T y_v) / n_val``: a near-perfect validation fit) are recomputed
    directly from the residual, so every loss keeps ~1e-9 relative accuracy.

    Args:
        task: a task passing the ``grid_eig`` checks (``gram``, ``xty``, ``a``, ``b``, ``x_val``, ``y_val``).
        thetas: shape ``(K,)``, transformed coordinates.
        weights: also return the ``K x p`` inner solutions (one more ``K x p x p`` product);
            ``False`` returns ``None`` in their place (losses only, like ``GridSearchCV(refit=False)``).

    Returns:
        ``(W, val, feasible)``: shapes ``(K, p)`` (or ``None``), ``(K,)``, ``(K,)``; rows where
        ``2a s + 2bλ`` is not positive (no inner minimiser) have ``feasible = False`` and NaN entries.
    """
    _check_eig_task(task)
    thetas = thetas.reshape(-1).to(task.dtype)
    lam = torch.exp(thetas) if task.space.blocks[0].transform == "log" else thetas
    two_a = 2 * task.a
    s, v = torch.linalg.eigh(task.gram)  # ascending eigenvalues
    s.mul_(two_a)
    z = (task.xty @ v).mul_(two_a)  # = V^T (2a c)
    d = torch.add(s.unsqueeze(0), lam.unsqueeze(1), alpha=2 * task.b)  # (K, p) Hessian eigenvalues
    # s is ascending and rounding is monotone, so column 0 holds each row's smallest Hessian eigenvalue
    s_lo, s_hi = float(s[0]), float(s[-1])
    feasible = d[:, 0] > 1e-12 * max(abs(s_lo), abs(s_hi), 1.0)
    u = torch.div(z, d, out=d)  # d is not needed any more
    all_feasible = bool(feasible.all())
    if not all_feasible:
        u[~feasible] = float("nan")
    xv, yv = task.x_val, task.y_val
    m, p = xv.shape
    if hasattr(task, "val_xtx"):  # the task keeps X_v^T X_v (as it keeps its Gram matrix): two p^3 products
        big_b = v.T @ task.val_xtx @ v
        e = task.val_xty @ v
    elif 2 * p <= m:  # X_v^T X_v (m p^2) then two p^3 products beats (X_v V)^T (X_v V) (2 m p^2)
        big_b = v.T @ (xv.T @ xv) @ v
        e = (yv @ xv) @ v
    else:
        pv = xv @ v
        big_b = pv.T @ pv
        e = yv @ pv
    yy = float(yv @ yv)
    quad = ((u @ big_b).mul_(u)).sum(dim=1)
    val = torch.addmv(quad, u, e, alpha=-2.0).add_(yy).div_(m)
    w = u @ v.T if weights else None
    # near-perfect validation fits: the expansion's terms are much larger than their sum
    shaky = val < 1e-7 * (quad + yy) / m
    if not all_feasible:
        shaky &= feasible
    if bool(shaky.any()):
        idx = shaky.nonzero().squeeze(1)
        w_s = w[idx] if w is not None else u[idx] @ v.T
        resid = w_s @ xv.T - yv.unsqueeze(0)
        val[idx] = (resid * resid).mean(dim=1)
    return w, val, feasible


@register_tuner
class EigGridTuner(Tuner):
    """Grid search over one ridge penalty with one eigendecomposition for all grid points.

    The same grid as ``grid`` on a scalar penalty (``points`` values equally spaced in theta,
    bounds included), evaluated in one batch after one eigendecomposition of the Gram matrix
    (counted as one inner solve); each point is a few ``p``-vector operations. The rows are
    then recorded in ``order`` (``"ascending"`` or ``"descending"`` λ, or ``"shuffled"`` by
    the seed). Needs a quadratic task with a scalar penalty (``ridge``, ``seed_toy``).

    Args:
        points: grid size (>= 1); ``None``: the step budget.
        order: the order the rows are recorded in.
    """

    name = "grid_eig"
    tags = frozenset({"black-box"})
    ORDERS = ("ascending", "descending", "shuffled")
    options = {"points": Option(int, low=1, optional=True), "order": Option(str, choices=ORDERS)}

    @classmethod
    def required_tags(cls, params) -> frozenset[str]:
        """``"quadratic"``, ``"gram-matrix"`` and ``"scalar-hyperparameter"`` (:data:`EIG_REQUIRES`)."""
        return EIG_REQUIRES

    @classmethod
    def dense_needs(cls, params) -> list[tuple[str, str]]:
        """One symmetric eigendecomposition of the ``p x p`` Gram matrix."""
        return [("its eigendecomposition", "p x p: the Gram matrix's eigenvectors")]

    def __init__(self, *, points: int | None = None, order: str = "ascending") -> None:
        super().__init__(points=points, order=order)  # checks `options`
        self.points = points
        self.order = order

    def run(self, task, recorder, *, seed: int = 0) -> None:
        _check_eig_task(task)
        steps = recorder.budget.steps
        k = self.points if self.points is not None else steps
        if k is None:
            raise ValueError("tuner 'grid_eig': the budget has no `steps`, so give the grid's `points`")
        capped = steps is not None and k > steps
        k = min(k, steps) if steps is not None else k
        lo, hi = task.space.blocks[0].theta_bounds
        thetas = torch.tensor(grid_values(lo, hi, k), dtype=task.dtype, device=task.device)
        recorder.add_cost(inner_solves=1)  # the eigendecomposition
        w, val, feasible = ridge_eig_grid(task, thetas)
        order = list(range(k))
        if self.order == "descending":
            order.reverse()
        elif self.order == "shuffled":
            order = torch.randperm(k, generator=torch.Generator().manual_seed(seed)).tolist()
        info = {"grid_space": "eig", "grid_axes": 1, "grid_points_per_axis": k, "grid_size": k,
                "grid_complete": not capped, "eig_decompositions": 1}
        skipped = 0
        for i in order:
            if recorder.should_stop():
                return
            if not bool(feasible[i]):
                skipped += 1
                continue
            extra = dict(info, grid_index=i, **({"infeasible": skipped} if skipped else {}))
            skipped = 0
            if recorder.record(w=w[i], theta=thetas[i:i + 1], val_loss=float(val[i]), **extra) != "ok":
                return
        if not recorder.rows:
            recorder.fail("diverged", f"no grid point of {k} has an inner minimiser")
