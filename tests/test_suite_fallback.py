"""A task's `fallback = "stand-in"`: real data where cached, its registered synthetic stand-in otherwise,
and the run folder says which (provenance.json `datasets`, run.log); malformed keys are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpo_bench import data
from hpo_bench.running.harness import run_suite
from hpo_bench.report.metrics import load_records
from hpo_bench.running.suite import SuiteError, load_suite

SUITE = '''
name = "fb"
seeds = [0]
[budget]
steps = 2
[[task]]
name = "ridge"
label = "ridge-cadata"
params = {{ dataset = "cadata", max_train = 40 }}
{extra}
[[tuner]]
name = "random"
label = "random"
'''


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty data cache for one test."""
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "data"))
    data.clear_memory()
    yield tmp_path / "data"
    data.clear_memory()


def _suite(tmp_path, extra='fallback = "stand-in"'):
    path = tmp_path / "fb.toml"
    path.write_text(SUITE.format(extra=extra))
    return path


def _import_small_cadata(tmp_path, n=120):
    """A small libsvm regression file named like cadata's source, imported through `data.import_files`."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, 8))
    y = x @ np.arange(1.0, 9.0) + 0.1 * rng.standard_normal(n)
    lines = [f"{y[i]:.17g} " + " ".join(f"{j + 1}:{x[i, j]:.17g}" for j in range(8)) for i in range(n)]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "cadata").write_text("\n".join(lines) + "\n")
    data.import_files("cadata", [tmp_path / "src" / "cadata"], verify=False)  # LIBSVM publishes no checksum


def test_without_the_key_a_missing_dataset_keeps_the_one_line_fetch_and_import_error(cache, tmp_path):
    with pytest.raises(SuiteError) as exc:
        load_suite(str(_suite(tmp_path, extra="")))
    msg = str(exc.value)
    assert "\n" not in msg and "task[0].params.dataset" in msg
    assert "`hpo-bench data fetch cadata`" in msg and "`hpo-bench data import cadata FILE`" in msg


@pytest.mark.parametrize("extra, dataset, rule", [
    ('fallback = "real"', "cadata", "one of ['stand-in']"),
    ('fallback = true', "cadata", "one of ['stand-in']"),
    ('fallback = "stand-in"', "diabetes", "a downloaded dataset with a registered stand-in"),
    ('fallback = "stand-in"', "cadata-like", "a downloaded dataset with a registered stand-in"),
])
def test_a_malformed_fallback_names_the_file_the_key_the_rule_and_the_value(cache, tmp_path, extra, dataset, rule):
    path = tmp_path / "fb.toml"
    path.write_text(SUITE.format(extra=extra).replace('dataset = "cadata"', f'dataset = "{dataset}"'))
    with pytest.raises(SuiteError) as exc:
        load_suite(str(path))
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and "`task[0].fallback`" in msg and rule in msg
    assert "but got" in msg and ("real" in msg or "True" in msg or dataset in msg)


def test_a_missing_dataset_runs_on_its_stand_in_and_the_run_folder_records_it(cache, tmp_path):
    suite = load_suite(str(_suite(tmp_path)))
    task = suite.tasks[0]
    assert task.params == {"dataset": "cadata-like", "max_train": 40}
    assert task.data == {"requested": "cadata", "fallback": "stand-in", "substituted": True}
    out = tmp_path / "run"
    run_suite(suite, out, argv=["test"])
    prov = json.loads((out / "provenance.json").read_text())
    (used,) = prov["datasets"]
    assert used["task"] == "ridge-cadata" and used["dataset"] == "cadata-like" and used["substituted"] is True
    assert used["dataset_kind"] == "synthetic stand-in" and used["dataset_stand_in_for"] == "cadata"
    assert used["requested"] == "cadata"
    log = (out / "run.log").read_text()
    assert "dataset 'cadata' is not in the data cache, so it runs on its synthetic stand-in 'cadata-like'" in log
    records = load_records(out)
    assert set(records["task"]) == {"ridge-cadata (synthetic stand-in: cadata-like)"}
    assert set(records["task_label"]) == {"ridge-cadata"}
    assert {json.loads(p)["dataset"] for p in records["task_params"]} == {"cadata-like"}


def test_a_cached_dataset_is_used_and_recorded_as_real(cache, tmp_path):
    _import_small_cadata(tmp_path)
    suite = load_suite(str(_suite(tmp_path)))
    task = suite.tasks[0]
    assert task.params["dataset"] == "cadata" and task.data["substituted"] is False
    out = tmp_path / "run"
    run_suite(suite, out, argv=["test"])
    (used,) = json.loads((out / "provenance.json").read_text())["datasets"]
    assert used["dataset"] == "cadata" and used["dataset_kind"] == "download" and used["substituted"] is False
    assert used["dataset_verified"] is False  # imported with --no-verify: recorded as such
    assert "stand-in" not in (out / "run.log").read_text()
    records = load_records(out)
    assert set(records["task"]) == {"ridge-cadata"}
    from hpo_bench.report.datasets import data_lines, run_datasets

    assert data_lines(records, run_datasets(out)) == [
        "- ridge-cadata: `cadata`, real data from the data cache, checksum not verified"]
    # the real rows: 120 of them, split 50/25/25 by the seed (train capped by max_train = 40)
    from hpo_bench import get_task

    built = get_task("ridge", **task.params, seed=0)
    assert built.x_train.shape == (40, 8) and built.design_val.mat.shape[0] == 30


def test_the_shipped_paper_suite_names_its_real_data_cells_with_the_fallback(cache):
    suite = load_suite("paper", validate=False)
    with_fallback = [t for t in suite.tasks if t.data is not None]
    assert with_fallback, "paper.toml: no task uses `fallback`"
    for t in with_fallback:
        assert t.data["requested"] == "cadata" and t.data["substituted"] is True  # the cache is empty here
        assert t.params["dataset"] == "cadata-like"
