"""Imported once by the fork server of :mod:`hpo_bench.running.executors`, so that every cell
process starts with torch, the harness (cell process, run folder, provenance), the registries and
the driver's third-party imports already loaded (a fork, not an interpreter start and seconds of
imports per cell)."""

from __future__ import annotations

import gc
import importlib
import os

import torch

from ..core import _threads, registry
from . import cell_process, harness, provenance, run_folder  # noqa: F401 - preloaded for every cell
from .executors import PRELOAD_ENV

# No thread team before fork: an OpenMP (or MKL) pool started here would be inherited by every
# forked cell without its threads, and the cell's first parallel op would wait on them for ever
# (a cell with >= 2 torch threads hung until its timeout). Everything here runs on one thread; each
# cell sets its own count (hpo_bench.running.cell_process._execute) before its first op.
torch.set_num_threads(1)
cell_process.warm_up()
try:  # NumPy's / SciPy's BLAS pools: one thread in every cell (see hpo_bench.core._threads)
    _threads.cap_blas_threads(1)
except Exception:  # noqa: BLE001, S110 - no threadpoolctl support here: pools stay as they are
    pass

try:
    registry.discover()
except Exception:  # noqa: BLE001 - a broken plug-in must not kill the fork server:
    registry._DISCOVERED = False  # each cell retries and records the real error as `error`

try:  # the bundled datasets, parsed once here rather than in every cell that builds a task on them
    importlib.import_module("hpo_bench.tasks._datasets").preload()
except Exception:  # noqa: BLE001, S110 - a cell reads them itself then
    pass

for _name in filter(None, os.environ.get(PRELOAD_ENV, "").split(",")):
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001, S112 - a module that cannot be preloaded is imported by the cell if needed
        continue

# Everything imported so far lives as long as the fork server: move it out of the garbage
# collector's generations, so collections in a cell process do not touch (and copy-on-write
# copy) the inherited pages of every object.
gc.freeze()
