"""Task instances built once per process where two steps need the same one.

Suite validation builds every task of a suite (on the CPU, with the suite's dtype, at the first
repetition seed) to catch bad parameters before any cell runs. A cell that runs in the same
process (the serial executor) with exactly that instance's name, parameters, seed, dtype and
device takes the validated instance instead of building the data again: :func:`offer` keeps it,
:func:`take` hands it out once. An instance is handed out only *fresh* (never used by a tuner
or a recorder): tasks keep caches (reference solves, a continuation path), and a second cell on a
used instance would be timed on the first one's work. Cells run in their own processes (process
pool, Dask) build their own; :func:`clear` then drops the validated instances, so the driver does not
hold their memory while cells run.

Own code, not ``functools.lru_cache``: an entry is handed out once and then forgotten, and the
keys are the task's constructor parameters as canonical JSON (TOML tables are unhashable dicts).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

__all__ = ["instance_key", "offer", "take", "clear", "MAX_FRESH"]

#: Validated instances kept at once (the first ones offered: the serial executor runs a suite's
#: cells task by task, so the first tasks' cells come first); further offers are dropped.
MAX_FRESH = 4

_FRESH: OrderedDict[str, Any] = OrderedDict()


def instance_key(name: str, params: dict[str, Any], seed: int, dtype: str, device: str) -> str:
    """What decides a built instance: the task's name and parameters, its seed, dtype and device."""
    return json.dumps([name, params, int(seed), str(dtype), str(device)], sort_keys=True, default=str)


def offer(key: str, task: Any) -> None:
    """Keep a freshly built ``task`` (never used since its construction) for one :func:`take`."""
    if key not in _FRESH and len(_FRESH) < MAX_FRESH:
        _FRESH[key] = task


def take(key: str) -> Any | None:
    """The fresh instance offered under ``key``, once (then it is forgotten), or ``None``."""
    return _FRESH.pop(key, None)


def clear() -> None:
    """Forget every offered instance (their memory goes back once nothing else holds them)."""
    _FRESH.clear()
