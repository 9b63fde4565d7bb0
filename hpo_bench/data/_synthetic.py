"""Synthetic stand-ins: generated data with the shape, sparsity and classes of a real dataset.

They exist so that every named suite runs on a machine without internet; they are *not* the real
data, and every table that names one must say "synthetic stand-in" (:meth:`DatasetEntry.label`).
The data depend only on the stand-in's name, :data:`VERSION` and ``scale`` (never on a task's
seed: the seed only draws the split), so two machines generate the same arrays.

* Binary and regression sets (``ijcnn1-like``, ``cadata-like`` ...): ``X`` with the real set's density, non-zeros at uniformly
  drawn positions (at least one per row); Gaussian values for the dense sets, positive values
  with rows of unit norm for the text sets (as their tf-idf originals). Labels ``{-1, +1}`` from a
  linear model ``x . beta + noise`` on a sparse ``beta``, thresholded so that the positive share
  matches the real set's (regression: ``y = x . beta + noise`` itself).
* Image sets (``mnist-like`` ...): ten smooth class prototypes on a 28 x 28 grid; each image is
  its class's prototype at a random intensity, shifted by up to two pixels, plus noise, as uint8.

``scale`` (0 < scale <= 1) shrinks the rows (and the columns of sets with more than 1000
features) and keeps the density, for small tests.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp

from ._registry import DatasetEntry

__all__ = ["VERSION", "generate", "scaled_shape", "text_like", "TEXT_LIKE"]

#: Bumped whenever the generator changes: it is part of the cache key of a stand-in's stored form.
VERSION = 1


def _rng(entry: DatasetEntry, scale: float) -> np.random.Generator:
    digest = hashlib.sha256(f"{entry.name}/{VERSION}/{scale!r}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def scaled_shape(entry: DatasetEntry, scale: float) -> tuple[int, int, int]:
    """``(n_train_rows, n_test_rows, p)`` of ``entry`` generated at ``scale``."""
    n = max(int(round(entry.n * scale)), 10)
    n_test = max(int(round(entry.n_test * scale)), 10) if entry.n_test else 0
    p = max(int(round(entry.p * scale)), 10) if entry.p > 1000 else entry.p
    return n, n_test, p


def _sparse_binary(entry: DatasetEntry, rows: int, p: int, rng: np.random.Generator) -> tuple:
    density = float(entry.density or 0.01)
    if p <= 1000:  # few columns: each entry non-zero with probability `density` (exact expected density)
        mask = rng.random((rows, p)) < density
        mask[np.arange(rows), rng.integers(0, p, size=rows)] = True  # at least one per row
        x = sp.csr_matrix(mask, dtype=np.float64)
        x.data = rng.random(x.nnz) + 0.05 if entry.sparse else rng.standard_normal(x.nnz)
    else:
        per_row = np.maximum(rng.binomial(p, density, size=rows), 1)
        indptr = np.concatenate([[0], np.cumsum(per_row)])
        # positions drawn with replacement (duplicates, rare at this density, are summed by the CSR constructor)
        indices = rng.integers(0, p, size=int(indptr[-1]))
        data = rng.random(int(indptr[-1])) + 0.05 if entry.sparse else rng.standard_normal(int(indptr[-1]))
        x = sp.csr_matrix((data, indices, indptr), shape=(rows, p))
        x.sum_duplicates()
    if entry.sparse:  # text sets: rows of unit norm
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        x = sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x)
    k = max(p // 10, 1)
    beta = np.zeros(p)
    beta[rng.choice(p, size=k, replace=False)] = rng.standard_normal(k)
    score = x @ beta
    score = score + 0.3 * (score.std() or 1.0) * rng.standard_normal(rows)
    if entry.task == "regression":
        return (x if entry.sparse else x.toarray()), score
    frac = entry.positive_fraction if entry.positive_fraction is not None else 0.5
    y = np.where(score >= np.quantile(score, 1.0 - frac), 1.0, -1.0)
    return (x if entry.sparse else x.toarray()), y


def _images(rows: int, rng: np.random.Generator, classes: int = 10, side: int = 28) -> tuple:
    freq = np.fft.fftfreq(side)
    low = np.exp(-(freq[:, None] ** 2 + freq[None, :] ** 2) / (2 * 0.08 ** 2))
    protos = []
    for _ in range(classes):
        field = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((side, side))) * low))
        field[:4], field[-4:], field[:, :4], field[:, -4:] = 0, 0, 0, 0  # dark border, like MNIST
        thr = np.quantile(field, 0.8)
        protos.append(np.clip((field - thr) / (field.max() - thr + 1e-12), 0, 1))
    protos = np.stack(protos)
    y = rng.integers(0, classes, size=rows)
    shift = rng.integers(-2, 3, size=(rows, 2))
    intensity = rng.uniform(0.6, 1.0, size=rows)
    out = np.empty((rows, side, side), dtype=np.uint8)
    for c in range(classes):  # one roll per (class, shift) pair
        for dx in range(-2, 3):
            for dy in range(-2, 3):
                sel = np.flatnonzero((y == c) & (shift[:, 0] == dx) & (shift[:, 1] == dy))
                if sel.size:
                    img = np.roll(protos[c], (dx, dy), axis=(0, 1))
                    noise = 0.08 * rng.standard_normal((sel.size, side, side)) * (img[None] > 0)  # dark stays dark
                    vals = img[None] * intensity[sel, None, None] + noise
                    out[sel] = np.clip(255 * vals, 0, 255).astype(np.uint8)
    return out.reshape(rows, side * side), y.astype(np.int64)


#: Registry name of the text-like generator (:func:`text_like`); tasks take ``dataset = "text-like"`` with their
#: own ``n``, ``p`` and ``density``.
TEXT_LIKE = "text-like"


def text_like(*, n: int, p: int, density: float = 1e-3, n_informative: int | None = None, target: str = "binary",
              zipf: float = 1.1, noise: float = 0.5, signal: float = 4.0, seed: int = 0) -> tuple:
    """``(X, y)``: a seeded synthetic bag-of-words design, ``X`` a ``scipy.sparse`` CSR ``n x p`` (float64).

    * Feature frequencies follow Zipf's law: the feature of rank ``k`` (ranks shuffled over the
      columns by the seed) appears in a row with probability ``min(1, c / k^zipf)``, ``c`` chosen so that
      the expected density is ``density`` (about ``density * p`` words per row; every row gets at least one).
    * Values are tf-idf-like: ``log(1 + count) * log(n / df_j)`` (counts of repeated draws), rows of unit norm.
    * ``n_informative`` features (default ``max(p // 100, 1)``, drawn by the seed among those that occur)
      carry ``N(0, 1)`` weights ``beta``; with ``s = X beta / std(X beta)``, ``target = "regression"``
      gives ``y = s + noise * N(0, 1)`` and ``"binary"`` labels in ``{-1, +1}`` with
      ``P(y = +1) = sigmoid(signal * s)``.

    Memory and time are ``O(nnz)``: nothing ``n x p`` is formed. Deterministic in its arguments.
    """
    if target not in ("binary", "regression"):
        raise ValueError(f"`target` must be one of ['binary', 'regression'], but got {target!r}")
    if not (0 < density <= 1):
        raise ValueError(f"`density` must be in (0, 1], but got {density!r}")
    rng = np.random.default_rng([int(seed), 0x7E47])
    ranks = np.arange(1, p + 1, dtype=np.float64) ** -float(zipf)
    # solve sum_k min(1, c r_k) = density * p for c (bisection on a monotone function)
    lo, hi = 0.0, float(p) / ranks[-1] + 1.0
    want = density * p
    for _ in range(200):
        c = 0.5 * (lo + hi)
        if np.minimum(1.0, c * ranks).sum() < want:
            lo = c
        else:
            hi = c
    freq = np.minimum(1.0, hi * ranks)[rng.permutation(p)]
    df = rng.binomial(n, freq)  # rows containing each feature
    cols = np.repeat(np.arange(p), df)
    # rows of each feature drawn uniformly: with replacement (a repeat adds to the word's count) except for
    # the few frequent features (df > n / 8), whose rows are distinct
    rows = rng.integers(0, n, size=cols.size)
    starts = np.concatenate([[0], np.cumsum(df)])
    for j in np.flatnonzero(df > n // 8):
        rows[starts[j]:starts[j + 1]] = rng.choice(n, size=int(df[j]), replace=False)
    counts = rng.geometric(0.6, size=cols.size).astype(np.float64)  # word counts >= 1
    empty = np.setdiff1d(np.arange(n), rows)
    if empty.size:  # every document has at least one word
        rows = np.concatenate([rows, empty])
        cols = np.concatenate([cols, rng.integers(0, p, size=empty.size)])
        counts = np.concatenate([counts, np.ones(empty.size)])
    x = sp.csr_matrix((np.log1p(counts), (rows, cols)), shape=(n, p))
    x.sum_duplicates()
    df_real = np.bincount(x.indices, minlength=p)
    idf = np.log(n / np.maximum(df_real, 1)) + 1.0
    x = sp.csr_matrix(x @ sp.diags(idf))
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x)
    x.sort_indices()
    occurring = np.flatnonzero(df_real)
    k = max(p // 100, 1) if n_informative is None else int(n_informative)
    k = min(k, occurring.size)
    beta = np.zeros(p)
    beta[rng.choice(occurring, size=k, replace=False)] = rng.standard_normal(k)
    score = x @ beta
    score = score / (score.std() or 1.0)
    if target == "regression":
        return x, score + noise * rng.standard_normal(n)
    y = np.where(rng.random(n) < 1.0 / (1.0 + np.exp(-signal * score)), 1.0, -1.0)
    return x, y


def generate(entry: DatasetEntry, scale: float = 1.0) -> dict[str, np.ndarray | sp.csr_matrix]:
    """The arrays of stand-in ``entry`` at ``scale``: ``{"x", "y"}`` plus ``{"x_test", "y_test"}`` where
    the real set has an official test file. Deterministic in ``(entry.name, VERSION, scale)``."""
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
        raise ValueError(f"`scale` must be in (0, 1], but got {scale!r}")
    rng = _rng(entry, float(scale))
    n, n_test, p = scaled_shape(entry, float(scale))
    total = n + n_test
    if entry.task == "multiclass":
        x, y = _images(total, rng, classes=entry.n_classes, side=int(round(np.sqrt(entry.p))))
    elif entry.extra.get("generator") == TEXT_LIKE:
        x, y = text_like(n=total, p=p, density=float(entry.density), target=entry.task, seed=0)
    else:
        x, y = _sparse_binary(entry, total, p, rng)
    out = {"x": x[:n], "y": y[:n]}
    if n_test:
        out.update(x_test=x[n:], y_test=y[n:])
    return out
