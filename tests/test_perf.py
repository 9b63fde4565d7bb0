"""Accounting behind the performance claims: tuner time, measurement time and the harness's own share."""

from __future__ import annotations

from _util import VirtualClock

from hpo_bench import Budget, Recorder, TUNERS, get_task
from hpo_bench.core import records
from hpo_bench.running.cell_process import _execute
from hpo_bench.running.suite import Cell, Entry


def test_measure_s_counts_the_paused_measurements(monkeypatch):
    clock = VirtualClock()  # each reference "sleeps" 1000 s on the recorder's clock, at no real cost
    monkeypatch.setattr(records, "time", clock)

    class SlowReference(type(get_task("ridge", n=60, p=6))):
        def reference(self, theta, warm=None):  # what the recorder calls for a row's reference
            clock.sleep(1000.0)
            return super().reference(theta, warm)

    task = SlowReference(n=60, p=6, seed=0)
    rec = Recorder(task, Budget(steps=3))
    rec.start()
    TUNERS.get("gradient")(method="exact", inner="exact").run(task, rec)
    ms = [r["measure_s"] for r in rec.rows]
    assert ms == sorted(ms) and ms[0] >= 1000 and ms[-1] >= 3000  # cumulative, this row's measurements included
    assert rec.rows[-1]["time_s"] < 1000  # and none of it is tuner time


def test_a_cells_wall_time_splits_into_tuner_measurement_and_harness():
    cell = Cell(suite="t", task=Entry("ridge", "ridge", {"n": 60, "p": 6}),
                tuner=Entry("gradient", "cg", {"method": "cg", "inner": "gd", "inner_steps": 20}), seed=0,
                budget=Budget(steps=5))
    res = _execute(cell, 1)
    last = res.rows[-1]
    assert res.status == "ok" and len(res.rows) == 5
    assert last["time_s"] > 0 and last["measure_s"] > 0
    assert last["wall_s"] >= last["time_s"] + last["measure_s"]  # disjoint parts of one wall clock


def test_blas_threads_caps_numpy_and_scipy_pools_and_restores_them():
    import contextlib

    from hpo_bench.core._threads import _controller, blas_threads

    ctl = _controller()  # imports SciPy's linear algebra: its own OpenBLAS is among the controlled pools
    assert ctl.lib_controllers and all(lib.user_api == "blas" for lib in ctl.lib_controllers)
    two = ctl.limit(limits=2)  # whatever the environment says, start from two threads per pool
    try:
        with blas_threads(1):
            assert all(lib.num_threads == 1 for lib in ctl.lib_controllers)
        assert all(lib.num_threads == 2 for lib in ctl.lib_controllers)
        assert isinstance(blas_threads(2), contextlib.nullcontext)  # already small enough: nothing to change
    finally:
        two.restore_original_limits()


def test_bundled_datasets_are_read_once_and_read_only():
    import numpy as np
    import pytest

    from hpo_bench.tasks._datasets import bundled

    x, y = bundled("diabetes")
    assert bundled("diabetes")[0] is x  # cached: cells built in one process share one parse
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0] = 1.0
    with pytest.raises(ValueError, match="unknown bundled dataset 'nope'; known: diabetes, breast_cancer, digits, "
                                         "wine, iris, linnerud"):
        bundled("nope")
    assert bundled("iris")[0].shape == (150, 4)  # every bundled scikit-learn set is registered (no closed list)
    a = get_task("ridge_per_feature", dataset="diabetes", seed=1)
    b = get_task("ridge_per_feature", dataset="diabetes", seed=1)
    assert np.array_equal(a.x_train.numpy(), b.x_train.numpy()) and not np.shares_memory(a.x_train.numpy(), x)
