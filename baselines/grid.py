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

from hpo_bench.registry import register_tuner
from hpo_bench.tuner import Tuner

from ._optuna import OptunaTuner

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
        inner, inner_steps, inner_lr: see :class:`~hpo_bench.baselines._optuna.OptunaTuner`.
    """

    name = "grid"

    def __init__(self, *, points: int | None = None, space: str = "block", **common) -> None:
        super().__init__(points=points, space=space, **common)
        self._int("points", points, 1, optional=True)
        if space not in GRID_SPACES:
            self._fail("space", f"one of {list(GRID_SPACES)}", space)
        self.points = points
        self.space = space
        self._geo: dict[str, Any] = {}

    # ------------------------------------------------------------ geometry
    def _prepare(self, task, recorder) -> None:
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

    def _axes(self, task):
        return [a[0] for a in self._geo["axes"]], [(a[1], a[2]) for a in self._geo["axes"]]

    def _to_theta(self, task, values):
        flat = [0.0] * task.space.dim
        for (_, _, _, idx), v in zip(self._geo["axes"], values):
            for i in idx:
                flat[i] = v
        return super()._to_theta(task, flat)

    def _sampler(self, task, recorder, seed: int) -> optuna.samplers.BaseSampler:
        return _AskTellGridSampler(self._geo["values"], seed=seed)

    def _max_trials(self, task, recorder) -> int | None:
        return self._geo["size"]

    def _row_info(self, task, recorder) -> dict[str, Any]:
        g = self._geo
        return {"grid_space": self.space, "grid_axes": len(g["axes"]), "grid_points_per_axis": g["k"],
                "grid_size": g["size"], "grid_complete": g["complete"]}


# --------------------------------------------------------------------------- eig grid
def _check_eig_task(task) -> None:
    ok = ("quadratic" in task.tags and task.space.dim == 1 and all(
        hasattr(task, a) for a in ("gram", "xty", "a", "b", "x_val", "y_val")))
    if not ok:
        raise ValueError(f"tuner 'grid_eig' needs a quadratic task with one scalar penalty (tag 'quadratic', "
                         f"space of dimension 1), but task {task.name!r} has tags {sorted(task.tags)} and "
                         f"{task.space.dim} hyperparameters; use tuner 'grid'")


def ridge_eig_grid(task, thetas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inner solutions and validation losses of a scalar-penalty quadratic task at every ``theta``.

    With ``2a G = V diag(s) V^T`` (one symmetric eigendecomposition) the Hessian at penalty
    λ is ``V diag(s + 2bλ) V^T``, so ``w*(λ) = V diag(1 / (s + 2bλ)) V^T (2a c)``: every grid
    point costs two ``p``-vector scalings and mat-vecs instead of a factorisation.

    Args:
        task: a task passing the ``grid_eig`` checks (``gram``, ``xty``, ``a``, ``b``, ``x_val``, ``y_val``).
        thetas: shape ``(K,)``, transformed coordinates.

    Returns:
        ``(W, val, feasible)``: shapes ``(K, p)``, ``(K,)``, ``(K,)``; rows where ``s + 2bλ``
        is not positive (no inner minimiser) have ``feasible = False`` and NaN entries.
    """
    _check_eig_task(task)
    thetas = thetas.reshape(-1).to(task.dtype)
    lam = torch.exp(thetas) if task.space.blocks[0].transform == "log" else thetas
    s, v = torch.linalg.eigh(2 * task.a * task.gram)
    z = v.T @ (2 * task.a * task.xty)
    d = s.unsqueeze(0) + 2 * task.b * lam.unsqueeze(1)  # (K, p) Hessian eigenvalues
    feasible = (d > 1e-12 * float(s.abs().max().clamp_min(1.0))).all(dim=1)
    coef = torch.where(feasible.unsqueeze(1), z.unsqueeze(0) / d, torch.full_like(d, float("nan")))
    w = coef @ v.T
    resid = w @ task.x_val.T - task.y_val.unsqueeze(0)
    val = (resid * resid).mean(dim=1)
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

    def __init__(self, *, points: int | None = None, order: str = "ascending") -> None:
        super().__init__(points=points, order=order)
        if points is not None and (isinstance(points, bool) or not isinstance(points, int) or points < 1):
            self._fail("points", "an integer >= 1 or omitted", points)
        if order not in self.ORDERS:
            self._fail("order", f"one of {list(self.ORDERS)}", order)
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
