"""Ridge regression with one penalty (``ridge``) or one penalty per feature (``ridge_per_feature``).

Inner objective ``1/(2n) ||X w - y||^2 + 1/2 sum_j lam_j w_j^2``; validation and test
losses are mean squared errors. Closed-form ``w*`` and hypergradient (see
:mod:`hpo_bench.tasks._quadratic`).

Data (``dataset``):

* ``"synthetic"``: ``n`` training rows (``n_val``, ``n_test`` held out), ``p`` Gaussian
  features with Toeplitz correlation ``rho^|i-j|``, column scales spread log-uniformly
  from 1 to ``scale_spread``, ``n_informative`` non-zero true weights (positions drawn
  from the seed), Gaussian noise of standard deviation ``noise``. Up to ``AR1_MIN_P``
  features the correlation comes from the dense Cholesky factor of the Toeplitz matrix;
  above it from the AR(1) recursion ``x_j = rho x_{j-1} + sqrt(1 - rho^2) z_j``, which is
  that same factor applied in ``O(n p)`` (equal data up to rounding; no ``p x p`` matrix).
* ``"text-like"``: sparse bag-of-words rows (:func:`hpo_bench.data.text_like`: Zipf
  feature frequencies, ``density`` non-zeros, tf-idf values, rows of unit norm; ``n``,
  ``n_val``, ``n_test``, ``p``, ``n_informative`` (default ``p // 100``), ``noise``), held
  as sparse CSR: the task never densifies ``X`` and keeps no Gram matrix.
* ``"diabetes"``: scikit-learn's bundled diabetes set (442 x 10, offline), shuffled by
  the seed and split 50/25/25; features and target standardised with training
  statistics (no intercept is fitted after centring).
* any other registered regression set of :mod:`hpo_bench.data` (``"cadata"``, ...): its
  canonical split drawn by the seed (``max_train`` keeps the first rows of the training
  split), standardised like diabetes (constant features are left unscaled).
"""

from __future__ import annotations

import numpy as np

from hpo_bench import data
from hpo_bench.core.registry import register_task
from hpo_bench.core.space import Block, Space
from hpo_bench.core.task import require as _require

from ._datasets import DescribesDataset, dataset_rule, task_split, text_like_split
from ._quadratic import REFERENCE_MODES, QuadraticTask

__all__ = ["Ridge", "RidgePerFeature", "make_regression_data", "AR1_MIN_P"]

DATASETS = ("synthetic", "diabetes", data.TEXT_LIKE)  # and every other registered regression set (dataset_rule)

#: Above this many features synthetic data take the O(n p) AR(1) recursion instead of a dense p x p Cholesky.
AR1_MIN_P = 2000


def make_regression_data(*, task: str, dataset: str, n: int, p: int, noise: float, rho: float,
                         scale_spread: float, n_informative: int | None, n_val: int | None,
                         n_test: int | None, seed: int, max_train: int | None = None, density: float | None = None):
    """Return ``(x_tr, y_tr, x_va, y_va, x_te, y_te)`` as float64 numpy arrays (``X`` sparse CSR for text-like)."""
    rng = np.random.default_rng(seed)
    _require(density is None or dataset == data.TEXT_LIKE, task, "density", f"omitted unless dataset = "
             f"{data.TEXT_LIKE!r}", density)
    if dataset == data.TEXT_LIKE:
        return _text_like(task=task, n=n, p=p, noise=noise, n_informative=n_informative, n_val=n_val,
                          n_test=n_test, seed=seed, max_train=max_train, density=density)
    if dataset != "synthetic":
        # the canonical split: all rows permuted by the seed, 50/25/25 for diabetes (as before the registry)
        fits, rule = dataset_rule(DATASETS, "regression")
        x_tr, y_tr, x_va, y_va, x_te, y_te = task_split(task=task, dataset=dataset, fits=fits, seed=seed,
                                                        max_train=max_train, rule=rule)
        mu, sd = x_tr.mean(0), x_tr.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        ym, ys = y_tr.mean(), y_tr.std()
        return tuple(a for xs, ys_ in ((x_tr, y_tr), (x_va, y_va), (x_te, y_te))
                     for a in ((xs - mu) / sd, (ys_ - ym) / ys))
    _require(max_train is None, task, "max_train", "omitted with dataset = 'synthetic' (use `n`)", max_train)

    for key, val in (("n", n), ("p", p)):
        _require(isinstance(val, int) and val >= 1, task, key, "an integer >= 1", val)
    _require(noise >= 0, task, "noise", ">= 0", noise)
    _require(0 <= rho < 1, task, "rho", "0 <= rho < 1", rho)
    _require(scale_spread >= 1, task, "scale_spread", ">= 1", scale_spread)
    k = p // 2 if n_informative is None else n_informative
    _require(isinstance(k, int) and 0 <= k <= p, task, "n_informative", f"an integer in [0, p={p}]", k)
    n_val = max(n // 2, 10) if n_val is None else n_val
    n_test = max(n // 2, 10) if n_test is None else n_test
    _require(isinstance(n_val, int) and n_val >= 1, task, "n_val", "an integer >= 1", n_val)
    _require(isinstance(n_test, int) and n_test >= 1, task, "n_test", "an integer >= 1", n_test)

    scales = np.logspace(0.0, np.log10(scale_spread), p)
    w_true = np.zeros(p)
    support = rng.choice(p, size=k, replace=False)
    w_true[support] = rng.standard_normal(k)
    total = n + n_val + n_test
    if p <= AR1_MIN_P:
        idx = np.arange(p)
        cov = rho ** np.abs(idx[:, None] - idx[None, :])
        chol = np.linalg.cholesky(cov)
        x = (rng.standard_normal((total, p)) @ chol.T) * scales
    else:
        x = _ar1(rng.standard_normal((total, p)), rho)
        x *= scales
    # true weights act on unit-scale features, so feature scale does not decide relevance
    y = (x / scales) @ w_true + noise * rng.standard_normal(total)
    tr, va, te = slice(0, n), slice(n, n + n_val), slice(n + n_val, None)
    return x[tr], y[tr], x[va], y[va], x[te], y[te]


def _ar1(z: np.ndarray, rho: float) -> np.ndarray:
    """``z L^T`` with ``L`` the Cholesky factor of ``rho^|i-j|``, in place and O(n p): ``L[:, 0] = rho^i`` and
    ``L[i, j] = sqrt(1 - rho^2) rho^(i-j)`` for ``1 <= j <= i``, i.e. ``x_0 = z_0``,
    ``x_j = rho x_{j-1} + sqrt(1 - rho^2) z_j`` (a stationary AR(1) with unit variance)."""
    s = np.sqrt(1.0 - rho * rho)
    zt = z.T  # a view: column j of z is row j of zt (strided, but no copy)
    for j in range(1, zt.shape[0]):
        col = zt[j]
        col *= s
        col += rho * zt[j - 1]
    return z


def _text_like(*, task, n, p, noise, n_informative, n_val, n_test, seed, max_train, density):
    _require(noise >= 0, task, "noise", ">= 0", noise)
    x, y, (n, n_val, n_test) = text_like_split(task, n=n, p=p, density=density, n_informative=n_informative,
                                               n_val=n_val, n_test=n_test, max_train=max_train, seed=seed,
                                               target="regression", noise=noise)
    y = (y - y[:n].mean()) / (y[:n].std() or 1.0)
    tr, va, te = slice(0, n), slice(n, n + n_val), slice(n + n_val, None)
    return x[tr], y[tr], x[va], y[va], x[te], y[te]


class _RidgeBase(DescribesDataset, QuadraticTask):
    check_params = {"n": 60, "p": 6, "rho": 0.6}
    per_feature: bool = False

    def __init__(self, *, dataset: str = "synthetic", n: int = 200, p: int = 20, noise: float = 1.0,
                 rho: float = 0.5, scale_spread: float = 10.0, n_informative: int | None = None,
                 n_val: int | None = None, n_test: int | None = None, max_train: int | None = None,
                 lam0: float = 1.0, lam_low: float = 1e-6, lam_high: float = 1e6, density: float | None = None,
                 reference: str = "auto", seed: int = 0, dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        _require(reference in REFERENCE_MODES, self.name, "reference", f"one of {list(REFERENCE_MODES)}", reference)
        arrays = make_regression_data(task=self.name, dataset=dataset, n=n, p=p, noise=noise, rho=rho,
                                      scale_spread=scale_spread, n_informative=n_informative,
                                      n_val=n_val, n_test=n_test, seed=seed, max_train=max_train, density=density)
        p_eff = arrays[0].shape[1]
        space = Space((Block("lam", kind="per_feature" if self.per_feature else "scalar",
                             size=p_eff if self.per_feature else 1, low=lam_low, high=lam_high,
                             transform="log", init=lam0),))
        self._setup(*arrays, space=space, reference=reference)
        self.params = {"dataset": dataset, "lam0": lam0, "lam_low": lam_low, "lam_high": lam_high}
        if dataset == "synthetic":
            self.params.update({"n": n, "p": p, "noise": noise, "rho": rho, "scale_spread": scale_spread,
                                "n_informative": n_informative, "n_val": n_val, "n_test": n_test})
        elif dataset == data.TEXT_LIKE:
            self.params.update({"n": n, "p": p, "noise": noise, "density": 1e-3 if density is None else density,
                                "n_informative": n_informative, "n_val": n_val, "n_test": n_test})
        elif max_train is not None:
            self.params["max_train"] = max_train
        if reference != "auto":  # only when set: the params of existing instances (and their oracles) stay as they were
            self.params["reference"] = reference


@register_task
class Ridge(_RidgeBase):
    """Ridge regression, one penalty ``lam`` (log-transformed)."""

    name = "ridge"


@register_task
class RidgePerFeature(_RidgeBase):
    """Ridge regression, one penalty per feature (``p`` log-transformed hyperparameters)."""

    name = "ridge_per_feature"
    per_feature = True
