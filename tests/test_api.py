"""The Python API: hpo_bench.run from a dict, TOML text or a path; load_records; flattened parameter columns."""

from __future__ import annotations

import json

import pytest

import hpo_bench
from hpo_bench.core.records import flat_param_columns
from hpo_bench.running.harness import RunFolderError
from hpo_bench.running.suite import SuiteError

SUITE = {"name": "api", "seeds": [0], "budget": {"steps": 3},
         "task": [{"name": "ridge", "params": {"n": 30, "p": 3}}],
         "tuner": [{"name": "random"}, {"name": "gradient", "label": "cg", "params": {"method": "cg"}}]}
TOML = '''name = "api"
seeds = [0]
[budget]
steps = 3
[[task]]
name = "ridge"
params = { n = 30, p = 3 }
[[tuner]]
name = "random"
[[tuner]]
name = "gradient"
label = "cg"
params = { method = "cg" }
'''


def _core(df):
    return df.sort_values(["tuner_label", "step"])[["tuner_label", "step", "val_loss"]].reset_index(drop=True)


def test_a_dict_toml_text_and_a_path_run_the_same_cells(tmp_path):
    a = hpo_bench.run(SUITE, tmp_path / "a")
    b = hpo_bench.run(TOML, tmp_path / "b")
    path = tmp_path / "s.toml"
    path.write_text(TOML)
    c = hpo_bench.run(path, tmp_path / "c")
    assert len(a) == 6 and set(a["status"]) == {"ok"}
    # the same cells and seeds on the same code path: the same numbers
    assert _core(a).equals(_core(b)) and _core(a).equals(_core(c))
    assert (a["task.name"] == "ridge").all() and (a["task.n"] == 30).all()
    assert set(a.loc[a["tuner_label"] == "cg", "tuner.method"]) == {"cg"}


def test_load_records_reads_the_run_back_with_the_same_columns(tmp_path):
    df = hpo_bench.run(SUITE, tmp_path / "run")
    back = hpo_bench.load_records(tmp_path / "run")
    assert {c for c in df.columns if c.startswith(("task.", "tuner."))} <= set(back.columns)
    assert _core(df).equals(_core(back))


def test_a_bad_dict_gives_the_suite_file_error():
    bad = dict(SUITE, tuner=[{"name": "no_such_tuner"}])
    with pytest.raises(SuiteError) as err:
        hpo_bench.run(bad, "unused")
    assert "no_such_tuner" in str(err.value) and "random" in str(err.value)  # the known names are listed
    with pytest.raises(SuiteError, match="not valid TOML"):
        hpo_bench.run("name = \n[[task]", "unused")


def test_bad_options_and_an_existing_run_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"option `workers` must be an integer >= 1 or 'auto', but got 0"):
        hpo_bench.run(SUITE, tmp_path / "x", workers=0)
    with pytest.raises(ValueError, match=r"option `force` must come with `resume`"):
        hpo_bench.run(SUITE, tmp_path / "x", force=True)
    hpo_bench.run(SUITE, tmp_path / "run")
    with pytest.raises(RunFolderError):
        hpo_bench.run(SUITE, tmp_path / "run")
    again = hpo_bench.run(SUITE, tmp_path / "run", resume=True)  # every cell kept
    assert len(again) == 6


def test_flat_param_columns_equal_the_json_params():
    import pandas as pd

    df = pd.DataFrame({"task_params": [json.dumps({"name": "t", "n": 3, "grid": [1, 2]}), json.dumps({"name": "u"})],
                       "tuner_params": [json.dumps({"sampler_kwargs": {"qmc_type": "sobol"}}), "{}"]})
    out = flat_param_columns(df)
    assert list(out["task.name"]) == ["t", "u"] and out["task.n"].iloc[0] == 3 and pd.isna(out["task.n"].iloc[1])
    assert out["task.grid"].iloc[0] == "[1, 2]"
    assert out["tuner.sampler_kwargs.qmc_type"].iloc[0] == "sobol"
    assert flat_param_columns(out).equals(out)  # idempotent
    assert "task.name" not in df.columns  # the input is left alone
