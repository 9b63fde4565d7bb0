"""The data cache: fetch (pooch), import, parse once, load, split.

Layout under :func:`data_dir` (``$HPO_BENCH_DATA``, default ``$XDG_CACHE_HOME/hpo-bench/data``,
else ``~/.cache/hpo-bench/data``)::

    raw/<name>/<file>             the source files as published
    raw/<name>/manifest.json      per file: sha256, verified or not, where it came from, bytes
    parsed/<name>/<key>.npz       the parsed arrays (dense, or CSR as data/indices/indptr/shape)
    parsed/<name>/<key>.json      their shape, non-zeros and density (for ``hpo-bench data list``)

``<key>`` is a digest of the source files' sha256 and the parser version: a changed source
file or parser is parsed again, never confused with the old one. Every file is written to a
temporary name and renamed, so a reader never sees half a file.

Guarantees:

* Nothing is downloaded implicitly: :func:`load` of a missing dataset raises
  :class:`DatasetMissingError` naming the fetch and import commands.
* A download whose checksum does not match is deleted and never used (pooch downloads to a
  temporary file and moves it only after the check); a cached file that no longer matches is
  downloaded again. An interrupted download (the server closes mid-body) is retried
  (``retries`` times, pooch's ``retry_if_failed``).
* A file with no registered checksum is fetched or imported only with ``verify=False``, and
  its manifest records ``verified: false``; a truncated compressed file of that kind fails to
  parse and is deleted (a truncated *plain-text* one cannot be told from a shorter file: that is
  what checksums are for).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import scipy.sparse as sp

from . import _formats, _synthetic
from ._errors import (ChecksumError, CorruptDataError, DataError, DatasetMissingError, FetchError,
                      UnverifiedSourceError)
from ._registry import DatasetEntry, get

__all__ = ["DATA_ENV", "PARSER_VERSION", "Data", "Split", "data_dir", "raw_dir", "load", "fetch", "import_files",
           "canonical_split", "status", "path_of", "parsed_path", "clear_memory", "available", "first_available"]

DATA_ENV = "HPO_BENCH_DATA"
#: Part of every parsed file's key: bumped when a parser's output changes.
PARSER_VERSION = 1

ArrayLike = "np.ndarray | sp.csr_matrix"


def data_dir() -> Path:
    """The data cache folder (created on first write, not here)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hpo-bench" / "data"


def raw_dir(name: str) -> Path:
    return data_dir() / "raw" / name


def _parsed_dir(name: str) -> Path:
    return data_dir() / "parsed" / name


@dataclass(frozen=True)
class Data:
    """The arrays of one dataset, read-only.

    ``x`` holds the rows of the training file (all rows where there is no official test file),
    ``x_test``/``y_test`` the official test file's (``None`` where there is none). ``x`` is a
    C-ordered float64 ndarray (uint8 for images) or, for sparse sets, a ``scipy.sparse.csr_matrix``
    with sorted indices. ``key`` identifies the source bytes (digest of their sha256) and the
    parser; ``verified`` says whether every source file matched a registered checksum (``None``
    for bundled and synthetic sets).
    """

    entry: DatasetEntry
    x: Any
    y: np.ndarray
    x_test: Any = None
    y_test: np.ndarray | None = None
    key: str = ""
    verified: bool | None = None

    @property
    def name(self) -> str:
        return self.entry.name


class Split(NamedTuple):
    """The canonical train / validation / test split of a dataset (see ``SPLIT_RULES``)."""

    x_train: Any
    y_train: np.ndarray
    x_val: Any
    y_val: np.ndarray
    x_test: Any
    y_test: np.ndarray


# ------------------------------------------------------------------ small file helpers
@contextlib.contextmanager
def _atomic(path: Path, mode: str = "wb"):
    """Write ``path`` through a temporary file in its folder, renamed into place on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=str(path.parent))
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash_matches(path: Path, checksum: str) -> tuple[bool, str]:
    """``(matches, actual)`` for a pooch-style ``"alg:hex"`` checksum."""
    alg, _, want = checksum.partition(":")
    h = hashlib.new(alg)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    got = h.hexdigest()
    return got == want.lower(), f"{alg}:{got}"


def _manifest_path(name: str) -> Path:
    return raw_dir(name) / "manifest.json"


def _read_manifest(name: str) -> dict[str, Any]:
    try:
        return json.loads(_manifest_path(name).read_text())
    except (OSError, ValueError):
        return {"files": {}}


def _write_manifest(name: str, manifest: dict[str, Any]) -> None:
    with _atomic(_manifest_path(name), "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)


def _source_key(entry: DatasetEntry, manifest: dict[str, Any]) -> str | None:
    """The parsed-file key of the recorded sources, ``None`` unless every source file is recorded."""
    files = manifest.get("files", {})
    if not all(f.name in files for f in entry.files):
        return None
    text = "\n".join(f"{f.name}:{files[f.name]['sha256']}" for f in entry.files) + f"\nparser:{PARSER_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def parsed_path(name: str) -> Path | None:
    """Where the parsed form of ``name`` lives (or would live), ``None`` for bundled sets and unrecorded sources."""
    entry = get(name)
    if entry.format == "sklearn":
        return None
    if entry.synthetic:
        return _parsed_dir(name) / f"synthetic-v{_synthetic.VERSION}-scale1.npz"
    key = _source_key(entry, _read_manifest(name))
    return None if key is None else _parsed_dir(name) / f"{key}.npz"


def path_of(name: str) -> Path:
    """The folder that holds ``name``'s files (raw sources, or the generated arrays of a stand-in)."""
    entry = get(name)
    if entry.format == "sklearn":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "data"
    return _parsed_dir(name) if entry.synthetic else raw_dir(name)


# ------------------------------------------------------------------ stored form
def _save_arrays(path: Path, arrays: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    for k, v in arrays.items():
        if v is None:
            continue
        if sp.issparse(v):
            v = sp.csr_matrix(v)
            flat.update({f"{k}__data": v.data, f"{k}__indices": v.indices, f"{k}__indptr": v.indptr,
                         f"{k}__shape": np.asarray(v.shape, dtype=np.int64)})
            info[k] = {"shape": list(v.shape), "nnz": int(v.nnz)}
        else:
            v = np.ascontiguousarray(v)
            flat[k] = v
            if v.ndim == 2:
                info[k] = {"shape": list(v.shape), "nnz": int(np.count_nonzero(v))}
    with _atomic(path) as fh:
        np.savez(fh, **flat)
    rows = sum(i["shape"][0] for i in info.values())
    cols = next(iter(info.values()))["shape"][1] if info else 0
    nnz = sum(i["nnz"] for i in info.values())
    meta = {"shape": [rows, cols], "nnz": nnz, "density": nnz / max(rows * cols, 1), "bytes": path.stat().st_size}
    with _atomic(path.with_suffix(".json"), "w") as fh:
        json.dump(meta, fh)
    return meta


def _readonly(a):
    if sp.issparse(a):
        for part in (a.data, a.indices, a.indptr):
            part.setflags(write=False)
    else:
        a.setflags(write=False)
    return a


def _load_arrays(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        for k in keys:
            if "__" in k:
                base, part = k.split("__", 1)
                if part != "data":
                    continue
                out[base] = sp.csr_matrix((z[f"{base}__data"], z[f"{base}__indices"], z[f"{base}__indptr"]),
                                          shape=tuple(int(s) for s in z[f"{base}__shape"]))
                out[base].has_sorted_indices = True
            else:
                out[k] = z[k]
    return {k: _readonly(v) for k, v in out.items()}


def _parse(entry: DatasetEntry, folder: Path) -> dict[str, Any]:
    """The arrays of ``entry``'s source files in ``folder`` (:class:`CorruptDataError` if any is unreadable)."""
    by_role = {f.role: folder / f.name for f in entry.files}
    what = {f.role: f"dataset {entry.name!r}, file {f.name!r}" for f in entry.files}
    if entry.format == "libsvm":
        out = {}
        for role, key in (("train", ""), ("test", "_test")):
            if role in by_role:
                x, y = _formats.read_libsvm(by_role[role], n_features=entry.p, zero_based=entry.zero_based,
                                            dense=not entry.sparse, what=what[role])
                out[f"x{key}"], out[f"y{key}"] = x, y
        return out
    if entry.format == "idx":
        out = {}
        for part, key in (("train", ""), ("test", "_test")):
            img = _formats.read_idx(by_role[f"{part}-images"], what=what[f"{part}-images"])
            lab = _formats.read_idx(by_role[f"{part}-labels"], what=what[f"{part}-labels"])
            if img.ndim < 2 or lab.ndim != 1 or img.shape[0] != lab.shape[0]:
                raise CorruptDataError(f"dataset {entry.name!r}: the {part} images and labels must pair up, but got "
                                       f"shapes {img.shape} and {lab.shape}")
            out[f"x{key}"] = img.reshape(img.shape[0], -1)
            out[f"y{key}"] = lab.astype(np.int64)
        return out
    if entry.format == "parquet":
        out = {}
        for role, key in (("train", ""), ("test", "_test")):
            if role in by_role:
                out[f"x{key}"], out[f"y{key}"] = _formats.read_parquet(by_role[role], target=entry.target or "y",
                                                                       what=what[role])
        return out
    if entry.format == "20news":
        x, y, xt, yt = _formats.read_20news(by_role["archive"], what=what["archive"])
        return {"x": x, "y": y, "x_test": xt, "y_test": yt}
    raise DataError(f"dataset {entry.name!r}: format {entry.format!r} has no files to parse")


def _discard(entry: DatasetEntry) -> None:
    """Delete ``entry``'s raw files and manifest (a corrupt source is never kept)."""
    for f in entry.files:
        with contextlib.suppress(OSError):
            (raw_dir(entry.name) / f.name).unlink()
    with contextlib.suppress(OSError):
        _manifest_path(entry.name).unlink()


def _build_parsed(entry: DatasetEntry, manifest: dict[str, Any]) -> Path:
    key = _source_key(entry, manifest)
    assert key is not None
    target = _parsed_dir(entry.name) / f"{key}.npz"
    if target.exists():
        return target
    try:
        arrays = _parse(entry, raw_dir(entry.name))
    except CorruptDataError as exc:
        _discard(entry)
        raise CorruptDataError(f"{exc}; the cached copy was deleted: fetch or import it again") from None
    _save_arrays(target, arrays)
    return target


# ------------------------------------------------------------------ load
@functools.lru_cache(maxsize=8)
def _load_cached(name: str, key: str, path: str) -> dict[str, Any]:
    return _load_arrays(Path(path))


@functools.lru_cache(maxsize=None)
def _load_sklearn(loader: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    x, y = getattr(datasets, loader)(return_X_y=True)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def clear_memory() -> None:
    """Forget the arrays held in this process (the next :func:`load` reads the stored form again)."""
    _load_cached.cache_clear()


def _synthetic_arrays(entry: DatasetEntry, scale: float) -> tuple[dict[str, Any], str]:
    key = f"synthetic-v{_synthetic.VERSION}-scale{scale:g}"
    path = _parsed_dir(entry.name) / f"{key}.npz"
    if not path.exists():
        _save_arrays(path, _synthetic.generate(entry, scale))
    return _load_cached(entry.name, key, str(path)), key


def load(name: str, *, scale: float = 1.0) -> Data:
    """The arrays of dataset ``name`` from the cache, parsed on first use; never downloads.

    ``scale`` (synthetic stand-ins only, in (0, 1]) generates a smaller stand-in of the same
    density. Raises :class:`UnknownDatasetError` or :class:`DatasetMissingError` (with the
    ``hpo-bench data fetch`` / ``import`` commands).
    """
    entry = get(name)
    if scale != 1.0 and not entry.synthetic:
        raise DataError(f"`scale` must be 1 for dataset {name!r} (only synthetic stand-ins are generated at a "
                        f"scale), but got {scale!r}")
    if entry.format == "sklearn":
        x, y = _load_sklearn(entry.loader or f"load_{name}")
        return Data(entry, x, y, key="sklearn")
    if entry.synthetic:
        if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
            raise DataError(f"`scale` must be in (0, 1], but got {scale!r}")
        arrays, key = _synthetic_arrays(entry, float(scale))
        return Data(entry, arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"), key=key)
    manifest = _read_manifest(name)
    key = _source_key(entry, manifest)
    if key is None:
        raise DatasetMissingError(name, str(data_dir()))
    path = _parsed_dir(name) / f"{key}.npz"
    if not path.exists():
        if not all((raw_dir(name) / f.name).exists() for f in entry.files):
            raise DatasetMissingError(name, str(data_dir()))
        path = _build_parsed(entry, manifest)
    arrays = _load_cached(name, key, str(path))
    verified = all(manifest["files"][f.name].get("verified", False) for f in entry.files)
    return Data(entry, arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"), key=key,
                verified=verified)


def canonical_split(name: str, seed: int, *, scale: float = 1.0) -> Split:
    """The canonical train / validation / test split of ``name`` drawn by ``seed`` (the entry's ``split`` rule).

    Deterministic in ``(name, seed)`` (and the source bytes): ``numpy.random.default_rng(seed)``
    draws every permutation, so the same seed gives the same rows on every machine.
    """
    data = load(name, scale=scale)
    rule = data.entry.split
    rng = np.random.default_rng(seed)
    x, y = data.x, data.y
    if rule == "permute-50-25-25" or data.x_test is None:
        n = y.shape[0]
        perm = rng.permutation(n)
        a, b = n // 2, n // 2 + n // 4
        tr, va, te = perm[:a], perm[a:b], perm[b:]
        return Split(x[tr], y[tr], x[va], y[va], x[te], y[te])
    n = y.shape[0]
    perm = rng.permutation(n)
    n_va = n // 5
    tr, va = perm[:n - n_va], perm[n - n_va:]
    te = rng.permutation(data.y_test.shape[0])
    return Split(x[tr], y[tr], x[va], y[va], data.x_test[te], data.y_test[te])


# ------------------------------------------------------------------ fetch and import
def _record(name: str, fname: str, path: Path, *, verified: bool, source: str) -> None:
    manifest = _read_manifest(name)
    manifest.setdefault("files", {})[fname] = {"sha256": _sha256(path), "verified": bool(verified),
                                               "source": source, "bytes": path.stat().st_size}
    _write_manifest(name, manifest)


def _unverifiable(entry: DatasetEntry, how: str) -> UnverifiedSourceError:
    missing = [f.name for f in entry.files if f.checksum is None]
    return UnverifiedSourceError(
        f"dataset {entry.name!r}: no checksum is registered for {', '.join(missing)} (its source publishes none), "
        f"so it cannot be verified; run `hpo-bench data {how} {entry.name}{' FILE' if how == 'import' else ''} "
        "--no-verify` to accept it unverified (recorded as such in the cache)")


def fetch(name: str, *, verify: bool = True, retries: int = 2, timeout: float = 60.0) -> Data:
    """Download ``name``'s files with pooch into the cache, check them, parse them once; return :func:`load`.

    ``verify=True`` checks every file against its registered checksum and refuses a dataset
    with a file that has none (:class:`UnverifiedSourceError`); ``verify=False`` checks nothing
    and records that. A checksum mismatch (after ``retries`` more tries) raises
    :class:`ChecksumError` and leaves nothing behind; a network failure raises :class:`FetchError`.
    Bundled and synthetic sets need no download (their :func:`load` is returned).
    """
    entry = get(name)
    if not entry.files:
        return load(name)
    if verify and not entry.verifiable:
        raise _unverifiable(entry, "fetch")
    import pooch
    import requests

    pooch.get_logger().setLevel("WARNING")
    folder = raw_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    recorded = _read_manifest(name).get("files", {})
    reg = {f.name: (f.checksum if verify else None) for f in entry.files}
    if not verify:  # a file recorded as verified may stay; an unverified copy on disk is replaced
        for f in entry.files:
            if (folder / f.name).exists() and not recorded.get(f.name, {}).get("verified", False):
                (folder / f.name).unlink()
    pup = pooch.create(path=str(folder), base_url="", registry=reg, urls={f.name: f.url for f in entry.files},
                       retry_if_failed=retries, allow_updates=True)
    for f in entry.files:
        try:
            got = Path(pup.fetch(f.name, downloader=pooch.HTTPDownloader(timeout=timeout, progressbar=False)))
        except ValueError as exc:  # pooch: hash mismatch after every retry (the download was deleted)
            raise ChecksumError(f"dataset {name!r}, file {f.name!r} from {f.url}: the download does not match the "
                                f"registered checksum {f.checksum} ({exc}); it was deleted, nothing was "
                                "cached") from None
        except (requests.exceptions.RequestException, OSError) as exc:
            raise FetchError(f"dataset {name!r}, file {f.name!r}: downloading {f.url} failed after "
                             f"{retries + 1} tries ({type(exc).__name__}: {exc}); on a machine without internet, "
                             f"run `hpo-bench data import {name} FILE` with a copy") from None
        before = recorded.get(f.name, {})
        _record(name, f.name, got, verified=verify, source=f.url)
        after = _read_manifest(name)["files"][f.name]
        if not verify and before.get("verified") and before.get("sha256") == after["sha256"]:
            _record(name, f.name, got, verified=True, source=before.get("source", f.url))  # the same verified bytes
    _build_parsed(entry, _read_manifest(name))
    return load(name)


def _match_files(entry: DatasetEntry, paths: Iterable[str | os.PathLike]) -> dict[str, Path]:
    paths = [Path(p).expanduser() for p in paths]
    for p in paths:
        if not p.exists():
            raise DataError(f"file {str(p)!r} does not exist (dataset {entry.name!r})")
    wanted = [f.name for f in entry.files]
    if len(entry.files) == 1 and len(paths) == 1 and paths[0].is_file():
        return {entry.files[0].name: paths[0]}
    found: dict[str, Path] = {}
    for p in paths:
        if p.is_dir():
            for w in wanted:
                if (p / w).is_file():
                    found.setdefault(w, p / w)
        elif p.name in wanted:
            found[p.name] = p
        else:
            raise DataError(f"file {str(p)!r} must be one of dataset {entry.name!r}'s files ({', '.join(wanted)}), "
                            f"but its name is {p.name!r}")
    missing = [w for w in wanted if w not in found]
    if missing:
        raise DataError(f"dataset {entry.name!r} needs the files {', '.join(wanted)}, but got no {', '.join(missing)} "
                        "(give the files, or a folder holding them)")
    return found


def import_files(name: str, paths: Iterable[str | os.PathLike], *, verify: bool = True) -> Data:
    """Copy local source files of ``name`` into the cache (for machines without internet); return :func:`load`.

    ``paths``: the dataset's files (matched by name; any name for a one-file dataset) or a folder
    holding them. ``verify=True`` checks each against its registered checksum
    (:class:`ChecksumError` on a mismatch, :class:`UnverifiedSourceError` where none is
    registered) before anything is copied; ``verify=False`` records that they were not verified.
    """
    entry = get(name)
    if not entry.files:
        raise DataError(f"dataset {name!r} is {entry.kind} (nothing to import): it is always available")
    found = _match_files(entry, paths)
    if verify and not entry.verifiable:
        raise _unverifiable(entry, "import")
    if verify:
        for f in entry.files:
            ok, actual = _hash_matches(found[f.name], f.checksum)
            if not ok:
                raise ChecksumError(f"dataset {name!r}: file {str(found[f.name])!r} has checksum {actual}, but the "
                                    f"registered {f.name} has {f.checksum}: a corrupt or different copy; nothing was "
                                    "imported (--no-verify imports it anyway, recorded as unverified)")
    folder = raw_dir(name)
    for f in entry.files:
        with _atomic(folder / f.name) as out, open(found[f.name], "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        _record(name, f.name, folder / f.name, verified=verify, source=f"import:{found[f.name].resolve()}")
    _build_parsed(entry, _read_manifest(name))
    return load(name)


def available(name: str) -> bool:
    """Whether :func:`load` of ``name`` needs no download (bundled, synthetic, or its sources recorded in the cache)."""
    entry = get(name)
    if not entry.files:
        return True
    path = parsed_path(name)
    return path is not None and (path.exists() or all((raw_dir(name) / f.name).exists() for f in entry.files))


def first_available(names: Iterable[str]) -> str:
    """The first of ``names`` that :func:`available` finds (for suites that prefer real data where it is cached
    and fall back on a stand-in); :class:`DatasetMissingError` for the first name if none is."""
    names = list(names)
    if not names:
        raise DataError("`names` must hold at least one dataset name, but got none")
    for n in names:
        if available(n):
            return n
    raise DatasetMissingError(names[0], str(data_dir()))


def status(name: str) -> dict[str, Any]:
    """What ``hpo-bench data list`` shows: ``cached`` ("yes", "no", "bundled", "generated", "raw"), shape,
    density (measured when parsed, else nominal with ``density_nominal``), size, verified."""
    entry = get(name)
    out = {"name": name, "kind": entry.kind, "task": entry.task, "shape": list(entry.shape),
           "density": entry.density, "density_nominal": True, "size": entry.size, "verified": None}
    if entry.format == "sklearn":
        out["cached"] = "bundled"
        return out
    path = parsed_path(name)
    if path is not None and path.exists():
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(path.with_suffix(".json").read_text())
            out.update(shape=meta["shape"], density=meta["density"], density_nominal=False)
        out["cached"] = "generated" if entry.synthetic else "yes"
    elif entry.synthetic:
        out["cached"] = "on first use"
    else:
        out["cached"] = "raw" if path is not None and all((raw_dir(name) / f.name).exists()
                                                         for f in entry.files) else "no"
    if not entry.synthetic and entry.files:
        files = _read_manifest(name).get("files", {})
        if all(f.name in files for f in entry.files):
            out["verified"] = all(files[f.name].get("verified", False) for f in entry.files)
            out["size"] = sum(files[f.name].get("bytes", 0) for f in entry.files)
    return out
