"""Data hyper-cleaning (``hyper_cleaning``; Franceschi et al., ICML 2017, Sec. 5.1).

Softmax regression on scikit-learn's digits (``dataset = "digits"``, the default) or on MNIST /
Fashion-MNIST (``"mnist"``, ``"fashion_mnist"``, or their synthetic stand-ins ``"mnist-like"``,
``"fashion_mnist-like"``; :mod:`hpo_bench.data`) where a fraction ``corruption`` of the training
labels is replaced by a uniformly drawn *wrong* class. Every training example ``i`` has
a weight ``sigmoid(theta_i)`` (one hyperparameter per example, ``transform = "none"``,
``theta`` in ``[theta_low, theta_high]``, start 0 = weight 1/2)::

    inner(W, theta) = 1/n sum_i sigmoid(theta_i) CE(W x_i, y_i) + reg/2 ||W||^2

with ``x_i`` the pixels plus a constant 1 (the bias), ``W`` of shape ``(C, d + 1)`` flattened
row-major into ``w``. Validation (clean labels) and test losses are mean cross-entropies.
``reg > 0`` makes the inner problem strongly convex.

Reference inner solve: Newton with the analytic dense Hessian
``H = 1/n sum_i a_i (diag(p_i) - p_i p_i^T) kron x_i x_i^T + reg I`` (``a_i = sigmoid(theta_i)``)
to ``||grad|| <= 1e-12`` plus two polishing steps. Reference hypergradient (tag
``"reference:implicit-dense"``), with ``H q = grad outer(w*)`` and ``Q`` = ``q`` as a matrix::

    dF/dtheta_i = -sigmoid'(theta_i) / n (p_i - e_{y_i})^T Q x_i

:meth:`HyperCleaning.cleaning_scores` says how well the weights find the corrupted
examples (an example is *flagged* when its weight is below ``threshold``, default 1/2);
:func:`add_cleaning_scores` adds those numbers to a records table for any tuner.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from hpo_bench.core.registry import register_task
from hpo_bench.core.solvers import SolveCache, newton_or_raise
from hpo_bench.core.space import Block, Space
from hpo_bench.core.task import Linearization, Task, require

from hpo_bench import data as _data

from ._digits import load_digits_split

__all__ = ["HyperCleaning", "HyperCleaningLinearization", "add_cleaning_scores"]


class HyperCleaningLinearization(Linearization):
    """Analytic HVPs (``O(n C d)`` each) and cross-derivatives; dense Hessian on demand."""

    def __init__(self, task: HyperCleaning, w: torch.Tensor, theta: torch.Tensor) -> None:
        self.task = task
        self._w = w.detach()
        self._theta = theta.detach()
        self._a = torch.sigmoid(self._theta)
        self._p = task.probabilities(self._w, task.x_train)
        self.grad = task.inner_grad(self._w, self._theta)
        self.n_hvp = 0
        self.n_cross = 0

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += 1
        t = self.task
        x, p = t.x_train, self._p
        s = x @ t.as_matrix(v).T                          # (n, C): V x_i
        m = p * s - p * (p * s).sum(1, keepdim=True)      # (diag(p) - p p^T) V x_i
        hv = (m * (self._a / x.shape[0])[:, None]).T @ x  # (C, d + 1)
        return hv.reshape(-1) + t.reg * v

    def strong_convexity_bound(self) -> float:
        """``reg``: the cross-entropy term is positive semi-definite (weights ``a_i > 0``), so ``H >= reg I``."""
        return float(self.task.reg)

    def cross_norm_bound(self) -> float:
        """``||J||_F`` from the ``(p, n)`` cross Jacobian (built analytically, one pass over the data)."""
        n_cross = self.n_cross
        bound = float(torch.linalg.matrix_norm(self.cross_jacobian()))
        self.n_cross = n_cross + 1  # one analytic pass, not p products
        return bound

    def cross_vjp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_cross += 1
        t = self.task
        return t.example_grad_dot(self._p, v) * self._a * (1 - self._a) / t.n_train

    def hvp_batch(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += v.shape[1]
        t = self.task
        x, p = t.x_train, self._p
        k = v.shape[1]
        vm = v.T.reshape(k, t.n_classes, x.shape[1])
        s = torch.einsum("if,kcf->kic", x, vm)
        m = p * s - p * (p * s).sum(-1, keepdim=True)
        hv = torch.einsum("kic,if->kcf", m * (self._a / x.shape[0]).unsqueeze(1), x)
        return hv.reshape(k, -1).T + t.reg * v

    def cross_jacobian(self) -> torch.Tensor:
        """Column ``i``: ``sigmoid'(theta_i) / n grad_w CE_i``, shape ``(p, n)``."""
        t = self.task
        self.n_cross += self._w.shape[0]
        z = ((self._p - t._onehot).unsqueeze(2) * t.x_train.unsqueeze(1)).reshape(t.n_train, -1)
        return (z * (self._a * (1 - self._a) / t.n_train).unsqueeze(1)).T

    def hessian(self) -> torch.Tensor:
        self.n_hvp += self._w.shape[0]
        return self.task.hessian_at(self._w, self._theta)


IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "mnist-like", "fashion_mnist-like")


def load_image_split(*, task: str, dataset: str, n_classes: int, pool: int, n_train: int, n_val: int,
                     n_test: int | None, seed: int) -> tuple[np.ndarray, ...]:
    """``(x_tr, y_tr, x_va, y_va, x_te, y_te)`` of a 28 x 28 image set: pixels / 255 in [0, 1], ``pool x pool``
    blocks averaged, classes ``0 .. n_classes - 1`` kept; the first ``n_train`` / ``n_val`` / ``n_test`` images
    of the canonical split's (seed-permuted) train / validation / test parts (``n_test`` omitted: all)."""
    require(isinstance(n_classes, int) and 2 <= n_classes <= 10, task, "n_classes", "an integer in [2, 10]",
            n_classes)
    require(pool in (1, 2, 4, 7, 14, 28), task, "pool", "one of [1, 2, 4, 7, 14, 28] (it must divide 28)", pool)
    for key, val in (("n_train", n_train), ("n_val", n_val)):
        require(isinstance(val, int) and val >= 1, task, key, "an integer >= 1", val)
    require(n_test is None or (isinstance(n_test, int) and n_test >= 1), task, "n_test",
            "an integer >= 1 or omitted (all test images)", n_test)
    split = _data.canonical_split(dataset, seed)
    out = []
    for (x, y), want, key in (((split.x_train, split.y_train), n_train, "n_train"),
                              ((split.x_val, split.y_val), n_val, "n_val"),
                              ((split.x_test, split.y_test), n_test, "n_test")):
        keep = np.flatnonzero(np.asarray(y) < n_classes)
        have = len(keep)
        require(want is None or want <= have, task, key, f"<= {have} (the {key[2:]} images of classes "
                f"0..{n_classes - 1} in {dataset}'s canonical split)", want)
        keep = keep[:want] if want is not None else keep
        xs = np.asarray(x[keep], dtype=np.float64) / 255.0
        if pool > 1:
            s = 28 // pool
            xs = xs.reshape(-1, s, pool, s, pool).mean(axis=(2, 4)).reshape(len(xs), -1)
        out += [xs, np.asarray(y[keep], dtype=np.int64)]
    return tuple(out)


@register_task
class HyperCleaning(Task):
    """Data hyper-cleaning on digits: one weight sigmoid(theta_i) per (possibly mislabelled) training example."""

    name = "hyper_cleaning"
    tags = frozenset({"convex", "per-example", "reference:implicit-dense", "many-hyperparameters", "minibatch",
                      "fused-oracle"})
    check_params = {"n_train": 30, "n_val": 40, "n_test": 40, "n_classes": 3, "pool": 4, "corruption": 0.3}

    def __init__(self, *, dataset: str = "digits", n_train: int = 300, n_val: int = 300, n_test: int | None = 300,
                 n_classes: int = 10, pool: int = 2, corruption: float = 0.3, reg: float = 1e-3, theta0: float = 0.0,
                 theta_low: float = -6.0, theta_high: float = 6.0, seed: int = 0, dtype="float64",
                 device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        nm = self.name
        require(0.0 <= corruption < 1.0, nm, "corruption", "in [0, 1)", corruption)
        require(reg > 0, nm, "reg", "> 0 (it makes the inner problem strongly convex)", reg)
        require(theta_low < theta_high, nm, "theta_low < theta_high", "true", (theta_low, theta_high))
        require(theta_low <= theta0 <= theta_high, nm, "theta0",
                f"within [theta_low, theta_high] = [{theta_low}, {theta_high}]", theta0)
        require(dataset in IMAGE_DATASETS, nm, "dataset", f"one of {list(IMAGE_DATASETS)}", dataset)
        if dataset == "digits":
            x_tr, y_tr, x_va, y_va, x_te, y_te = load_digits_split(
                task=nm, n_classes=n_classes, pool=pool, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
        else:
            x_tr, y_tr, x_va, y_va, x_te, y_te = load_image_split(
                task=nm, dataset=dataset, n_classes=n_classes, pool=pool, n_train=n_train, n_val=n_val,
                n_test=n_test, seed=seed)
        rng = np.random.default_rng(seed + 7919)
        n_bad = int(round(corruption * n_train))
        bad = np.sort(rng.choice(n_train, size=n_bad, replace=False))
        y_noisy = y_tr.copy()
        # a uniformly drawn *different* class: shift by 1 .. C-1
        y_noisy[bad] = (y_tr[bad] + rng.integers(1, n_classes, size=n_bad)) % n_classes
        t = self.tensor

        def with_bias(x):
            return t(np.hstack([x, np.ones((len(x), 1))]))

        self.x_train, self.x_val, self.x_test = with_bias(x_tr), with_bias(x_va), with_bias(x_te)
        dev = self.device
        self.y_train = torch.as_tensor(y_noisy, device=dev)
        self.y_train_clean = torch.as_tensor(y_tr, device=dev)
        self.y_val, self.y_test = torch.as_tensor(y_va, device=dev), torch.as_tensor(y_te, device=dev)
        self.corrupted = torch.zeros(n_train, dtype=torch.bool, device=dev)
        self.corrupted[torch.as_tensor(bad, dtype=torch.long, device=dev)] = True
        self.n_classes = n_classes
        self.reg = float(reg)
        self._onehot = torch.nn.functional.one_hot(self.y_train, n_classes).to(self.dtype)
        self._space = Space((Block("example_weight_logit", kind="per_example", size=n_train, low=theta_low,
                                   high=theta_high, transform="none", init=theta0),))
        self._cache = SolveCache()
        self.params = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "n_classes": n_classes, "pool": pool,
                       "corruption": corruption, "reg": reg, "theta0": theta0, "theta_low": theta_low,
                       "theta_high": theta_high}
        if dataset != "digits":  # digits' params stay as they were (records and oracle caches keep matching)
            self.params = {"dataset": dataset, **self.params}

    def describe(self) -> dict:
        """The base description plus what tables must say about the dataset (``dataset_label``: "...
        (synthetic stand-in)" for stand-ins; :func:`hpo_bench.data.describe`)."""
        return {**super().describe(), **_data.describe(self.params.get("dataset", "digits"))}

    # -------------------------------------------------------------- structure
    def as_matrix(self, w: torch.Tensor) -> torch.Tensor:
        return w.reshape(self.n_classes, self.x_train.shape[1])

    def probabilities(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x @ self.as_matrix(w).T, dim=1)

    def example_grad_dot(self, p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``[grad_w CE_i . v]_i = (p_i - e_{y_i})^T V x_i`` for every training example."""
        return ((p - self._onehot) * (self.x_train @ self.as_matrix(v).T)).sum(1)

    def hessian_at(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Dense ``H`` (block ``(c, d)`` rows, as ``w`` is flattened)."""
        x = self.x_train
        n, f = x.shape
        c = self.n_classes
        p = self.probabilities(w, x)
        a = torch.sigmoid(theta) / n
        z = (p[:, :, None] * x[:, None, :]).reshape(n, c * f)          # rows p_i kron x_i
        h = -(z.T * a) @ z                                             # -sum a_i (p_i p_i^T) kron x_i x_i^T
        blocks = torch.einsum("i,ic,if,ig->cfg", a, p, x, x)           # sum a_i p_ic x_i x_i^T
        for k in range(c):
            h[k * f:(k + 1) * f, k * f:(k + 1) * f] += blocks[k]
        h.diagonal().add_(self.reg)
        return 0.5 * (h + h.T)

    # -------------------------------------------------------------- contract
    @property
    def space(self) -> Space:
        return self._space

    @property
    def n_params(self) -> int:
        return self.n_classes * self.x_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.n_params, dtype=self.dtype, device=self.device)

    def _ce(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example cross-entropies."""
        return torch.nn.functional.cross_entropy(x @ self.as_matrix(w).T, y, reduction="none")

    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(theta) * self._ce(w, self.x_train, self.y_train)).mean() + 0.5 * self.reg * (w @ w)

    def inner_loss_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ce = self._ce(w, self.x_train[idx], self.y_train[idx])
        return (torch.sigmoid(theta[idx]) * ce).mean() + 0.5 * self.reg * (w @ w)

    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self._ce(w, self.x_val, self.y_val).mean()

    # ------------------------------------------------ minibatch oracles (closed forms; tag "fused-oracle")
    @property
    def n_val(self) -> int:
        return self.x_val.shape[0]

    def outer_loss_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self._ce(w, self.x_val[idx], self.y_val[idx]).mean()

    def _batch_terms(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor):
        x = self.x_train[idx]
        p = torch.softmax(x @ self.as_matrix(w).T, dim=1)
        return x, p, p - self._onehot[idx], torch.sigmoid(theta.detach()[idx])

    def inner_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x, _, r, a = self._batch_terms(w, theta, idx)
        return ((r * (a / x.shape[0])[:, None]).T @ x).reshape(-1) + self.reg * w

    def outer_grad_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x = self.x_val[idx]
        p = torch.softmax(x @ self.as_matrix(w).T, dim=1)
        onehot = torch.nn.functional.one_hot(self.y_val[idx], self.n_classes).to(self.dtype)
        return ((p - onehot) / x.shape[0]).T.matmul(x).reshape(-1)

    def inner_theta_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``sigmoid'(theta_i) CE_i / b`` at the batch's examples (summed over repeats), 0 elsewhere."""
        ce = self._ce(w, self.x_train[idx], self.y_train[idx])
        a = torch.sigmoid(theta.detach()[idx])
        return torch.zeros_like(theta).index_add_(0, idx, a * (1 - a) * ce / idx.shape[0])

    def inner_oracle_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                           v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(grad, H_B v, J_B v)`` in closed form (module docstring's Hessian and cross derivative, on the batch)."""
        x, p, r, a = self._batch_terms(w, theta, idx)
        b = x.shape[0]
        s = x @ self.as_matrix(v).T                        # (b, C): V x_i
        m = p * s - p * (p * s).sum(1, keepdim=True)       # (diag(p) - p p^T) V x_i
        coef = torch.cat((r, m), 1) * (a / b)[:, None]     # both products from one pass over x
        gh = coef.T @ x                                    # (2C, d + 1)
        c = self.n_classes
        grad = gh[:c].reshape(-1) + self.reg * w
        hv = gh[c:].reshape(-1) + self.reg * v
        jv = torch.zeros_like(theta).index_add_(0, idx, (r * s).sum(1) * a * (1 - a) / b)
        return grad, hv, jv

    def test_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self._ce(w, self.x_test, self.y_test).mean()

    def inner_grad(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        x = self.x_train
        p = self.probabilities(w, x)
        a = torch.sigmoid(theta.detach()) / x.shape[0]
        return ((p - self._onehot) * a[:, None]).T.matmul(x).reshape(-1) + self.reg * w

    def outer_grad(self, w: torch.Tensor) -> torch.Tensor:
        x = self.x_val
        p = self.probabilities(w, x)
        onehot = torch.nn.functional.one_hot(self.y_val, self.n_classes).to(self.dtype)
        return ((p - onehot) / x.shape[0]).T.matmul(x).reshape(-1)

    def linearize(self, w: torch.Tensor, theta: torch.Tensor) -> Linearization:
        return HyperCleaningLinearization(self, w, theta)

    def _solve(self, theta: torch.Tensor) -> torch.Tensor:
        return newton_or_raise(self.name, lambda v: self.inner_loss(v, theta), lambda v: self.inner_grad(v, theta),
                               lambda v: self.hessian_at(v, theta), self.init_params())

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """Newton to ``||grad|| <= 1e-12`` (+ 2 polishing steps), memoised on ``theta``."""
        return self._cache.get(theta, self._solve)

    def reference_hypergradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Dense implicit differentiation at the Newton solution (module docstring)."""
        theta = theta.detach()
        w = self.solve(theta)
        chol, info = torch.linalg.cholesky_ex(self.hessian_at(w, theta))
        if int(info) != 0:
            raise FloatingPointError(f"{self.name}: Hessian not positive definite at the solution")
        q = torch.cholesky_solve(self.outer_grad(w).unsqueeze(1), chol).squeeze(1)
        a = torch.sigmoid(theta)
        p = self.probabilities(w, self.x_train)
        return -self.example_grad_dot(p, q) * a * (1 - a) / self.n_train

    # ------------------------------------------------------------ diagnostics
    def cleaning_scores(self, theta: torch.Tensor, *, threshold: float = 0.5) -> dict[str, Any]:
        """How well the example weights ``sigmoid(theta)`` find the corrupted labels.

        An example is *flagged* when its weight is below ``threshold``. Returns
        ``n_corrupted``, ``n_flagged``, ``true_positives``, ``precision`` (flagged that are
        corrupted; NaN when nothing is flagged), ``recall`` (corrupted that are flagged;
        NaN when nothing is corrupted) and ``f1``.
        """
        require(0.0 < threshold < 1.0, self.name, "threshold", "in (0, 1)", threshold)
        self.space.check_shape(theta)
        flagged = torch.sigmoid(theta.detach()).to(self.device) < threshold
        tp = int((flagged & self.corrupted).sum())
        n_flag, n_bad = int(flagged.sum()), int(self.corrupted.sum())
        prec = tp / n_flag if n_flag else math.nan
        rec = tp / n_bad if n_bad else math.nan
        f1 = 2 * prec * rec / (prec + rec) if n_flag and n_bad and (prec + rec) > 0 else (
            0.0 if n_flag and n_bad else math.nan)
        return {"n_corrupted": n_bad, "n_flagged": n_flag, "true_positives": tp, "precision": prec,
                "recall": rec, "f1": f1}

    def extra_metrics(self, w: torch.Tensor, theta: torch.Tensor) -> dict[str, float]:
        """``test_accuracy`` of ``w``; ``clean_precision`` and ``clean_recall`` of the recovered clean set
        (the examples whose weight ``sigmoid(theta_i)`` is at least 1/2): the fraction of it whose labels
        are clean (NaN when it is empty), and the fraction of clean examples it keeps."""
        kept = torch.sigmoid(theta.detach()).to(self.device) >= 0.5
        clean = ~self.corrupted
        both, n_kept, n_clean = int((kept & clean).sum()), int(kept.sum()), int(clean.sum())
        return {"test_accuracy": self.accuracy(w, "test"),
                "clean_precision": both / n_kept if n_kept else math.nan,
                "clean_recall": both / n_clean if n_clean else math.nan}

    def accuracy(self, w: torch.Tensor, split: str = "test") -> float:
        """Classification accuracy of ``w`` on ``"train_clean"``, ``"val"`` or ``"test"``."""
        x, y = {"train_clean": (self.x_train, self.y_train_clean), "val": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}[split]
        return float((self.probabilities(w, x).argmax(1) == y).double().mean())


def add_cleaning_scores(frame, *, threshold: float = 0.5, dtype: str = "float64"):
    """Add ``cleaning_{n_flagged,true_positives,precision,recall,f1}`` columns to a records table.

    Works for any tuner (gradient or black-box): each ``hyper_cleaning`` row's task is rebuilt
    from its ``task_params`` and ``seed`` (deterministic) and scored at its ``theta``; rows of
    other tasks get NaN. Returns a new DataFrame.
    """
    import pandas as pd

    keys = ("n_corrupted", "n_flagged", "true_positives", "precision", "recall", "f1")
    out = {f"cleaning_{k}": [] for k in keys}
    tasks: dict[tuple, HyperCleaning] = {}
    for tp, seed, theta in zip(frame["task_params"], frame["seed"], frame["theta"]):
        params = json.loads(tp) if isinstance(tp, str) else dict(tp)
        name = params.pop("name", None)
        theta = list(theta) if theta is not None else []
        if name != HyperCleaning.name or len(theta) == 0:
            for k in keys:
                out[f"cleaning_{k}"].append(math.nan)
            continue
        key = (json.dumps(params, sort_keys=True), int(seed))
        if key not in tasks:
            tasks[key] = HyperCleaning(**params, seed=int(seed), dtype=dtype)
        sc = tasks[key].cleaning_scores(torch.tensor(theta, dtype=torch.float64), threshold=threshold)
        for k in keys:
            out[f"cleaning_{k}"].append(sc[k])
    res = frame.copy()
    for col, vals in out.items():
        res[col] = pd.Series(vals, index=frame.index, dtype=float)
    return res
