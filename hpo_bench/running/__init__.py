"""Running: from a suite to a run folder of records.

:mod:`.suite` (suite files, validation, cells), :mod:`.harness` (scheduling a suite's cells: the public entry
point :func:`~.harness.run_suite`), :mod:`.cell_process` (one cell, in this process or a child: timeouts,
statuses), :mod:`.run_folder` (atomic writes, the lock, finished cells, the run log), :mod:`.provenance`
(code fingerprint, versions, host), :mod:`.executors` (serial, process pool, Dask), :mod:`.progress`
(displays), :mod:`.target` (time-to-target recording), and the per-process helpers ``_instances`` and
``_worker_init``.

May import :mod:`hpo_bench.core`, :mod:`hpo_bench.data` and the methods; never the analysis or report
layers (tests/test_layers.py checks it).
"""
