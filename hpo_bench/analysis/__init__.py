"""Analysis: what is computed from tasks and runs rather than inside a cell.

:mod:`.oracle` (the best-known optimum F* per task instance), :mod:`.check` (``hpo-bench check``: every
hypergradient method vs the reference vs finite differences), :mod:`.sweep` (frontier and scaling sweeps,
written as suites the harness runs), :mod:`.tune` (the tune step: tuning-seed suites, then the clean run),
:mod:`.summary` (the console summary) and :mod:`.notebook` (the seed notebook, replayed and diagnosed).

May import every layer below it (core, data, methods, running) and the report package; nothing below imports it.
"""
