"""Built-in tuners of the library: the gradient tuner and its presets.

Black-box baselines live in ``hpo_bench.baselines``.
"""
