"""Tasks (installed as ``hpo_bench.tasks``): one module per task family.

Every public module here is imported by :func:`hpo_bench.core.registry.discover`; modules
named ``_*`` (shared helpers) and ``template_*`` are skipped.
"""
