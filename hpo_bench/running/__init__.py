"""Running: from a suite to a run folder of records.

:mod:`.suite` (suite files, validation, cells), :mod:`.harness` (running cells and suites: the public entry
point :func:`~.harness.run_suite`), :mod:`.executors` (serial, process pool, Dask), :mod:`.progress`
(displays), :mod:`.target` (time-to-target recording), and the per-process helpers ``_instances`` and
``_worker_init``.

May import :mod:`hpo_bench.core`, :mod:`hpo_bench.data` and the methods; never the analysis or report
layers (tests/test_layers.py checks it).
"""
