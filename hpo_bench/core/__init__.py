"""Contracts: what tasks, tuners and the harness agree on.

:mod:`.space` (hyperparameter blocks and transforms), :mod:`.task` (the bilevel problem and its certified
reference), :mod:`.tuner` (the search contract), :mod:`.records` (the recorder and the records table),
:mod:`.registry` (names, discovery, plug-ins), :mod:`.options` (declared option schemas), and the numerical
foundations every task may use (:mod:`.solvers`, the BLAS thread control ``_threads``).

Modules here import nothing from ``hpo_bench`` outside this package (tests/test_layers.py checks it), so a
task or tuner written against them never pulls in the runner or the report.
"""
