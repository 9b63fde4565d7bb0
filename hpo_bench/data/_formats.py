"""Parsers of the source formats: libsvm/svmlight, MNIST idx, parquet, the 20 Newsgroups archive.

libsvm files are read with :func:`sklearn.datasets.load_svmlight_file`: scikit-learn's Cython
parser is fast and well kept (comments, gaps in the indices, ``.gz``/``.bz2`` files), so hpo-bench
does not carry a parser of its own, and its parse time *is* the reference time of the performance
goal (parsing within 1.2x of ``load_svmlight_file``: the ratio is 1 plus the cost of the conversion
to the stored form). idx files are read with numpy, parquet files with pyarrow.

Every parser raises :class:`~hpo_bench.data.CorruptDataError` for a file it cannot read
(truncated, wrong magic number, bad line), never returns partial data.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._errors import CorruptDataError

__all__ = ["read_libsvm", "read_idx", "read_parquet", "read_20news"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_libsvm(path: str | os.PathLike, *, n_features: int, zero_based: bool = False, dense: bool = False,
                what: str = "") -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
    """``(X, y)`` of a libsvm/svmlight file (``.gz``/``.bz2`` decompressed on the fly).

    ``X`` is CSR float64 with exactly ``n_features`` columns (a dense C-ordered float64 array with
    ``dense=True``); ``y`` float64. Indices are 1-based unless ``zero_based``.
    """
    from sklearn.datasets import load_svmlight_file

    try:
        x, y = load_svmlight_file(str(path), n_features=n_features, zero_based=zero_based, dtype=np.float64)
    except (ValueError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise CorruptDataError(f"{what or path}: not a readable libsvm file with {n_features} features "
                               f"({type(exc).__name__}: {exc})") from None
    x = sp.csr_matrix(x)
    x.sort_indices()
    return (x.toarray() if dense else x), np.asarray(y, dtype=np.float64)


def _open(path: Path):
    name = str(path)
    if name.endswith(".gz"):
        return gzip.open(name, "rb")
    if name.endswith(".bz2"):
        return bz2.open(name, "rb")
    return open(name, "rb")


def read_idx(path: str | os.PathLike, *, what: str = "") -> np.ndarray:
    """The array of an idx file (MNIST format, optionally gzip/bz2-compressed), in native byte order.

    Header: two zero bytes, a type code (0x08 uint8 ... 0x0E float64), the number of dimensions,
    then one big-endian uint32 per dimension; the data follow, big-endian, row-major.
    """
    label = what or str(path)
    try:
        with _open(Path(path)) as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptDataError(f"{label}: not a readable idx file ({type(exc).__name__}: {exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CorruptDataError(f"{label}: not an idx file (the header must start with 0x00 0x00 and a type code "
                               f"in {sorted(_IDX_DTYPES)}, but got {raw[:4]!r})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise CorruptDataError(f"{label}: truncated idx header ({len(raw)} bytes, {head} needed)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - head != need:
        raise CorruptDataError(f"{label}: idx data of shape {dims} must be {need} bytes, but got {len(raw) - head} "
                               "(truncated or padded file)")
    arr = np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_parquet(path: str | os.PathLike, *, target: str, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of a parquet table: ``y`` is column ``target``, ``X`` every other column as float64."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    label = what or str(path)
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise CorruptDataError(f"{label}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    if target not in table.column_names:
        raise CorruptDataError(f"{label}: the target column {target!r} must be present, but the columns are "
                               f"{table.column_names}")
    y = table.column(target).to_numpy()
    cols = [c for c in table.column_names if c != target]
    try:
        x = np.column_stack([table.column(c).to_numpy().astype(np.float64) for c in cols]) if cols else \
            np.zeros((table.num_rows, 0))
    except (ValueError, TypeError) as exc:
        raise CorruptDataError(f"{label}: every feature column must be numeric ({exc})") from None
    return np.ascontiguousarray(x), np.asarray(y)


def read_20news(path: str | os.PathLike, *, what: str = "") -> tuple[sp.csr_matrix, np.ndarray, sp.csr_matrix,
                                                                    np.ndarray]:
    """``(X_train, y_train, X_test, y_test)`` of the ``20news-bydate.tar.gz`` archive.

    scikit-learn's ``fetch_20newsgroups_vectorized`` recipe: the documents read as latin-1,
    ``CountVectorizer`` (default settings) fitted on the training documents, counts as float64,
    each row scaled to unit Euclidean norm. Labels are the newsgroup indices in sorted folder order.
    """
    import tarfile
    import tempfile

    from sklearn.datasets import load_files
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    label = what or str(path)
    with tempfile.TemporaryDirectory(prefix="hpo-bench-20news-") as tmp:
        try:
            with tarfile.open(str(path), "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse links and paths outside tmp
                    tar.extractall(tmp, filter="data")
                else:
                    for m in tar.getmembers():
                        if not (m.isfile() or m.isdir()) or m.name.startswith(("/", "..")) or "/../" in m.name:
                            raise CorruptDataError(f"{label}: unexpected archive member {m.name!r}")
                    tar.extractall(tmp)  # noqa: S202 - members checked above
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise CorruptDataError(f"{label}: not a readable 20news-bydate archive ({exc})") from None
        try:
            train = load_files(os.path.join(tmp, "20news-bydate-train"), encoding="latin1", shuffle=False)
            test = load_files(os.path.join(tmp, "20news-bydate-test"), encoding="latin1", shuffle=False)
        except (OSError, FileNotFoundError) as exc:
            raise CorruptDataError(f"{label}: the archive must hold 20news-bydate-train/ and 20news-bydate-test/ "
                                   f"({exc})") from None
    vec = CountVectorizer(dtype=np.float64)
    x_tr = normalize(vec.fit_transform(train.data).tocsr())
    x_te = normalize(vec.transform(test.data).tocsr())
    return x_tr, np.asarray(train.target, np.int64), x_te, np.asarray(test.target, np.int64)
