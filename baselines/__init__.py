"""Black-box tuners (installed as ``hpo_bench.baselines``): one module per tuner family.

Every public module here is imported by :func:`hpo_bench.registry.discover`; modules
named ``_*`` and ``template_*`` are skipped.
"""
