"""``hpo_bench.data``: the one data layer of hpo-bench: a registry of datasets over a checked cache.

Tasks name datasets (``dataset = "ijcnn1"``); they never read files themselves::

    from hpo_bench import data

    data.names(task="binary")                 # registered binary sets
    data.get("ijcnn1")                        # its entry: URLs, checksums, shape, split rule, licence
    data.fetch("mnist")                       # download with pooch, verify, parse once (needs internet)
    data.import_files("mnist", ["~/mnist/"])  # the same from local copies (machines without internet)
    split = data.canonical_split("ijcnn1-like", seed=0)   # train / validation / test, drawn by the seed

The cache folder is ``$HPO_BENCH_DATA`` (default ``~/.cache/hpo-bench/data``); the command line
is ``hpo-bench data list | fetch | import | path``. See ``docs/data.md``.
"""

from __future__ import annotations

import importlib

# The registry and the errors are plain Python and load with the package; the cache, the parsers and the
# generators (numpy, scipy) load on first use of one of their names (PEP 562), so the report layer can ask the
# registry what a dataset is (``hpo-bench plot``: is it a synthetic stand-in?) without importing scipy.
from ._errors import (ChecksumError, CorruptDataError, DataError, DatasetMissingError, FetchError,
                      UnknownDatasetError, UnverifiedSourceError)
from ._registry import (FORMATS, SPLIT_RULES, DatasetEntry, SourceFile, entries, get, names, register,
                        unregister)

_LAZY = {**{n: "._synthetic" for n in ("TEXT_LIKE", "text_like")},
         **{n: "._store" for n in ("DATA_ENV", "PARSER_VERSION", "Data", "Split", "available", "canonical_split",
                                   "clear_memory", "data_dir", "fetch", "first_available", "import_files", "load",
                                   "parsed_path", "path_of", "raw_dir", "status")}}

__all__ = ["ChecksumError", "CorruptDataError", "DataError", "DatasetMissingError", "FetchError",
           "UnknownDatasetError", "UnverifiedSourceError", "FORMATS", "SPLIT_RULES", "DatasetEntry", "SourceFile",
           "entries", "get", "names", "register", "unregister", "DATA_ENV", "PARSER_VERSION", "Data", "Split",
           "canonical_split", "clear_memory", "data_dir", "fetch", "import_files", "load", "parsed_path", "path_of",
           "raw_dir", "status", "describe", "stand_in_of", "available", "first_available", "TEXT_LIKE", "text_like"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def describe(name: str) -> dict:
    """What records and tables should say about dataset ``name``: ``dataset_label`` ("ijcnn1-like (synthetic
    stand-in)" for stand-ins), ``dataset_kind`` ("download", "bundled" or "synthetic stand-in"),
    ``dataset_stand_in_for`` (the real set a stand-in imitates, else ``None``) and, for downloaded sets in the
    cache, ``dataset_verified`` and ``dataset_key`` (the source digest)."""
    entry = get(name)
    out = {"dataset_label": entry.label(), "dataset_kind": entry.kind, "dataset_stand_in_for": entry.stand_in_for}
    if entry.files:
        from ._store import parsed_path, status

        st = status(name)
        out["dataset_verified"] = st["verified"]
        path = parsed_path(name)
        out["dataset_key"] = path.stem if path is not None else None
    return out


def stand_in_of(name: str) -> str | None:
    """The registered synthetic stand-in of dataset ``name`` (the entry whose ``stand_in_for`` is ``name``), or
    ``None`` if it has none (bundled sets, stand-ins, unknown names)."""
    return next((e.name for e in entries(synthetic=True) if e.stand_in_for == name), None)
