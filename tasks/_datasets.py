"""scikit-learn's bundled datasets (offline), read once per process.

``load_diabetes`` and friends parse compressed CSV files on every call (~10 ms for diabetes):
a cost every cell of a suite would pay again while building its task. The arrays are kept
read-only here, so no task can change what another one gets (tasks index or permute them,
which copies). The fork server of ``hpo-bench run`` reads them once, before any cell forks
(:func:`preload`).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["bundled", "preload", "BUNDLED"]

BUNDLED = ("diabetes", "breast_cancer", "digits")


@functools.lru_cache(maxsize=None)
def bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of a bundled scikit-learn dataset, read-only."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled dataset {name!r}; known: {', '.join(BUNDLED)}")
    from sklearn import datasets

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def preload() -> None:
    """Read every bundled dataset now (the fork server calls this once)."""
    for name in BUNDLED:
        bundled(name)
