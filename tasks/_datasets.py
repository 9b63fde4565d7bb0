"""Datasets for the tasks, through :mod:`hpo_bench.data` (tasks never read files themselves).

:func:`bundled` gives scikit-learn's bundled sets (every ``load_*`` of the registry), read once
per process and read-only, so no task can change what another one gets (tasks index or permute
them, which copies). The fork server of ``hpo-bench run`` reads them once, before any cell forks
(:func:`preload`). :func:`task_split` gives any registered dataset's canonical split, densified,
for the tasks that take ``dataset = "<registered name>"``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hpo_bench import data
from hpo_bench.core.task import TaskParamError, require

__all__ = ["bundled", "preload", "BUNDLED", "task_split", "dataset_names", "dataset_rule", "DENSE_LIMIT_BYTES",
           "DescribesDataset"]

BUNDLED = tuple(e.name for e in data.entries() if e.format == "sklearn")

class DescribesDataset:
    """Mixin for tasks with ``params["dataset"]`` (``"synthetic"`` or a registered name): their
    description adds what tables must say about a registered dataset (``dataset_label``: "...
    (synthetic stand-in)" for stand-ins; :func:`hpo_bench.data.describe`)."""

    def describe(self) -> dict:
        out = super().describe()
        if self.params["dataset"] != "synthetic":
            out.update(data.describe(self.params["dataset"]))
        return out


#: The most memory (bytes, float64) a task's densified design matrices may take: larger sparse
#: sets need sparse-matrix support in the task, and are refused up front rather than swapping.
DENSE_LIMIT_BYTES = 2 * 1024 ** 3


def bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of a bundled scikit-learn dataset, read-only (one parse per process)."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled dataset {name!r}; known: {', '.join(BUNDLED)}")
    d = data.load(name)
    return d.x, d.y


def preload() -> None:
    """Read every bundled dataset now (the fork server calls this once)."""
    for name in BUNDLED:
        bundled(name)


def dataset_names(task_kind: str, *, extra: tuple[str, ...] = ()) -> list[str]:
    """``extra`` plus the registered names of one kind (``"regression"``, ``"binary"``, ``"multiclass"``) with
    a one-column target."""
    return [*extra, *(e.name for e in data.entries(task=task_kind) if e.n_targets == 1)]


def dataset_rule(classic: tuple[str, ...], kind: str) -> tuple[list[str], str]:
    """``(accepted names, rule text)`` for a task's ``dataset``: ``classic`` first, then every registered
    ``kind`` set with a one-column target (the rule names them and the command that lists them)."""
    others = [n for n in dataset_names(kind) if n not in classic]
    fits = [*classic, *others]
    rule = (f"one of {list(classic)} or another registered {kind} set ({', '.join(others)}; "
            f"`hpo-bench data list --task {kind}`)")
    return fits, rule


def task_split(*, task: str, dataset: str, fits: list[str], seed: int, max_train: int | None = None,
               rule: str = "", keep_sparse: bool = False) -> data.Split:
    """The canonical split of registered ``dataset`` drawn by ``seed``, each ``X`` a dense float64 array
    (``keep_sparse``: a sparse set's ``X`` stays ``scipy.sparse`` CSR, and no size limit applies).

    ``fits``: the names this task accepts (a :class:`TaskParamError` with ``rule`` otherwise);
    ``max_train``: keep the first ``max_train`` rows of the (seed-permuted) training split.
    Sets whose densified matrices would exceed :data:`DENSE_LIMIT_BYTES` are refused before
    anything is loaded; a set not in the cache raises :class:`hpo_bench.data.DatasetMissingError`.
    """
    require(dataset in fits, task, "dataset", rule or f"one of {fits}", dataset)
    require(max_train is None or (isinstance(max_train, int) and not isinstance(max_train, bool) and max_train >= 1),
            task, "max_train", "an integer >= 1 or omitted (the whole training split)", max_train)
    entry = data.get(dataset)
    if entry.split == "official-test-val20" and entry.n_test:
        n_va = entry.n // 5
        n_tr, n_te = entry.n - n_va, entry.n_test
    else:
        total = entry.n + entry.n_test
        n_tr, n_va = total // 2, total // 4
        n_te = total - n_tr - n_va
    if max_train is not None:
        n_tr = min(n_tr, max_train)
    p = entry.p
    need = (n_tr + n_va + n_te) * p * 8
    if entry.sparse and need > DENSE_LIMIT_BYTES and not keep_sparse:
        raise TaskParamError(
            f"task {task!r}: parameter `dataset` must fit in memory once densified (<= {DENSE_LIMIT_BYTES / 2**30:.0f} "
            f"GiB as float64), but {dataset!r} is sparse {entry.shape[0]} x {p} and densified needs "
            f"{need / 2**30:.1f} GiB: this task holds X dense; choose a dense set ({', '.join(_dense(fits))})")
    split = data.canonical_split(dataset, seed)
    x_tr, y_tr = split.x_train, split.y_train
    if max_train is not None:
        x_tr, y_tr = x_tr[:max_train], y_tr[:max_train]

    def dense(x):
        if sp.issparse(x):
            return sp.csr_matrix(x, dtype=np.float64) if keep_sparse else x.toarray()
        return np.asarray(x, dtype=np.float64)

    return data.Split(dense(x_tr), np.asarray(y_tr), dense(split.x_val), np.asarray(split.y_val),
                      dense(split.x_test), np.asarray(split.y_test))


def _dense(names: list[str]) -> list[str]:
    out = []
    for n in names:
        try:
            if not data.get(n).sparse:
                out.append(n)
        except data.UnknownDatasetError:
            out.append(n)
    return out


def text_like_split(task: str, *, n, p, density, n_informative, n_val, n_test, max_train, seed: int, **kw):
    """The checked ``text-like`` parameters and the generated rows, split train / validation / test.

    ``n`` training rows, ``n_val`` and ``n_test`` (default ``max(n // 2, 10)`` each) from one
    :func:`hpo_bench.data.text_like` draw; ``kw`` goes to it (``target``, ``noise``, ``signal``).
    Returns ``(x, y, (n, n_val, n_test))`` with ``x`` CSR and ``y`` as generated.
    """
    require(max_train is None, task, "max_train", f"omitted with dataset = {data.TEXT_LIKE!r} (use `n`)", max_train)
    for key, val in (("n", n), ("p", p)):
        require(isinstance(val, int) and val >= 1, task, key, "an integer >= 1", val)
    density = 1e-3 if density is None else density
    require(isinstance(density, (int, float)) and 0 < density <= 1, task, "density", "in (0, 1]", density)
    require(n_informative is None or (isinstance(n_informative, int) and 0 <= n_informative <= p), task,
            "n_informative", f"an integer in [0, p={p}] or omitted", n_informative)
    n_val = max(n // 2, 10) if n_val is None else n_val
    n_test = max(n // 2, 10) if n_test is None else n_test
    require(isinstance(n_val, int) and n_val >= 1, task, "n_val", "an integer >= 1", n_val)
    require(isinstance(n_test, int) and n_test >= 1, task, "n_test", "an integer >= 1", n_test)
    x, y = data.text_like(n=n + n_val + n_test, p=p, density=density, n_informative=n_informative, seed=seed, **kw)
    return x, y, (n, n_val, n_test)
