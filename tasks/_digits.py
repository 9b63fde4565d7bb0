"""scikit-learn's bundled digits (1797 images of 8 x 8 pixels, offline), split by seed.

Shared by ``hyper_cleaning`` and ``weight_decay_mlp``. Pixels are scaled to ``[0, 1]``;
``pool`` averages ``pool x pool`` blocks (8 x 8 -> 4 x 4 with ``pool = 2``) so that small
instances stay small; only classes ``0 .. n_classes - 1`` are kept.
"""

from __future__ import annotations

import numpy as np

from hpo_bench.core.task import require

from ._datasets import bundled

__all__ = ["load_digits_split"]


def load_digits_split(*, task: str, n_classes: int, pool: int, n_train: int, n_val: int, n_test: int | None,
                      seed: int) -> tuple[np.ndarray, ...]:
    """``(x_tr, y_tr, x_va, y_va, x_te, y_te)``: features float64 in [0, 1], labels int64 in ``[0, n_classes)``."""
    require(isinstance(n_classes, int) and 2 <= n_classes <= 10, task, "n_classes", "an integer in [2, 10]",
            n_classes)
    require(pool in (1, 2, 4, 8), task, "pool", "one of [1, 2, 4, 8]", pool)
    for key, val in (("n_train", n_train), ("n_val", n_val)):
        require(isinstance(val, int) and val >= 1, task, key, "an integer >= 1", val)
    require(n_test is None or (isinstance(n_test, int) and n_test >= 1), task, "n_test",
            "an integer >= 1 or omitted (all remaining images)", n_test)
    x, y = bundled("digits")
    keep = y < n_classes
    x, y = x[keep] / 16.0, y[keep].astype(np.int64)
    if pool > 1:
        x = x.reshape(-1, 8 // pool, pool, 8 // pool, pool).mean(axis=(2, 4)).reshape(len(x), -1)
    total = len(y)
    need = n_train + n_val + (n_test or 1)
    require(need <= total, task, "n_train + n_val + n_test",
            f"<= {total} (digits of classes 0..{n_classes - 1})", need)
    perm = np.random.default_rng(seed).permutation(total)
    x, y = x[perm], y[perm]
    a, b = n_train, n_train + n_val
    c = total if n_test is None else b + n_test
    return x[:a], y[:a], x[a:b], y[a:b], x[b:c], y[b:c]
