"""The generic ``optuna`` tuner (any sampler by import path) and the named ``gp`` and ``qmc`` entries."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from hpo_bench import TUNERS, Budget, Recorder, TunerParamError, get_task
from hpo_bench.running.harness import run_suite
from hpo_bench.running.suite import Suite, SuiteError


@pytest.fixture
def ridge():
    return get_task("ridge_per_feature", n=40, p=3, seed=0)


def run(name, params, task, *, steps=8, seed=0):
    rec = Recorder(task, Budget(steps=steps), meta={})
    rec.start()
    TUNERS.get(name)(**params).run(task, rec, seed=seed)
    return rec


def thetas(rec):
    return [tuple(r["theta"]) for r in rec.rows]


@pytest.mark.parametrize("generic,named", [
    ({"sampler": "optuna.samplers.QMCSampler", "sampler_kwargs": {"scramble": True, "qmc_type": "halton"}},
     ("qmc", {"qmc_type": "halton"})),
    ({"sampler": "optuna.samplers:RandomSampler"}, ("random", {})),
])
def test_the_generic_tuner_proposes_what_the_named_entry_proposes(ridge, generic, named):
    # the same sampler, constructed with the same cell seed: the same code path, so the same points exactly
    a = run("optuna", generic, ridge, seed=3)
    b = run(*named, ridge, seed=3)
    assert len(a.rows) == 8 and thetas(a) == thetas(b)
    extra = json.loads(a.rows[0]["extra"])
    assert extra["sampler"] == generic["sampler"] and extra["sampler_seed"] == "cell"


def test_cell_seeds_vary_the_proposals_and_a_user_seed_pins_them(ridge):
    cell = {"sampler": "optuna.samplers.RandomSampler"}
    assert thetas(run("optuna", cell, ridge, seed=0)) != thetas(run("optuna", cell, ridge, seed=1))
    pinned = {"sampler": "optuna.samplers.RandomSampler", "sampler_kwargs": {"seed": 7}}
    a, b = run("optuna", pinned, ridge, seed=0), run("optuna", pinned, ridge, seed=1)
    assert thetas(a) == thetas(b)
    assert json.loads(a.rows[0]["extra"])["sampler_seed"] == "user"


def test_a_user_sampler_by_import_path(ridge, tmp_path, monkeypatch):
    (tmp_path / "my_samplers.py").write_text(textwrap.dedent('''
        import optuna
        from optuna.samplers import BaseSampler

        class Centre(BaseSampler):
            """Always proposes the middle of every axis (no seed argument)."""
            def infer_relative_search_space(self, study, trial):
                return {}
            def sample_relative(self, study, trial, search_space):
                return {}
            def sample_independent(self, study, trial, name, dist):
                return 0.5 * (dist.low + dist.high)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    rec = run("optuna", {"sampler": "my_samplers.Centre"}, ridge, steps=3)
    lo, hi = ridge.space.theta_bounds()
    centre = tuple(float(v) for v in ridge.space.project(0.5 * (lo + hi)))
    assert thetas(rec) == [centre] * 3
    assert json.loads(rec.rows[0]["extra"])["sampler_seed"] == "none"


@pytest.mark.parametrize("params,key,fragment", [
    ({"sampler": "optuna.samplers.Nope"}, "sampler", "has no attribute 'Nope'"),
    ({"sampler": "no_such_module_xyz.Sampler"}, "sampler", "cannot be imported"),
    ({"sampler": "optuna.Study"}, "sampler", "not a subclass of optuna.samplers.BaseSampler"),
    ({"sampler": "QMCSampler"}, "sampler", "not of the form 'package.module.Class'"),
    ({"sampler": 3}, "sampler", "must be a string"),
    ({"sampler": "optuna.samplers.QMCSampler", "sampler_kwargs": {"bogus": 1}}, "sampler_kwargs",
     "unexpected keyword argument 'bogus'"),
    ({"sampler": "optuna.samplers.QMCSampler", "sampler_kwargs": {"qmc_type": "bad"}}, "sampler_kwargs",
     "ValueError"),
    ({"sampler": "optuna.samplers.RandomSampler", "sampler_kwargs": [1]}, "sampler_kwargs", "must be a table"),
])
def test_bad_sampler_parameters_are_one_line_errors(params, key, fragment):
    with pytest.raises(TunerParamError) as err:
        TUNERS.get("optuna")(**params)
    msg = str(err.value)
    assert "\n" not in msg and f"parameter `{key}`" in msg and fragment in msg


def _suite(tuner_params):
    return {"seeds": [0], "budget": {"steps": 3},
            "task": [{"name": "ridge_per_feature", "params": {"n": 30, "p": 2}}],
            "tuner": [{"name": "optuna", "label": "sobol", "params": tuner_params}]}


def test_suite_validation_refuses_a_bad_sampler_before_any_cell():
    with pytest.raises(SuiteError) as err:
        Suite.from_dict(_suite({"sampler": "optuna.samplers.Nope"}), source="s.toml")
    assert "s.toml" in str(err.value) and "optuna.samplers.Nope" in str(err.value)


def test_a_suite_with_the_generic_tuner_runs(tmp_path):
    suite = Suite.from_dict(_suite({"sampler": "optuna.samplers.QMCSampler", "sampler_kwargs": {"scramble": True}}))
    res = run_suite(suite, tmp_path / "run")
    df = res.frame
    assert set(df["status"]) == {"ok"} and len(df) == 3
    assert all(torch.isfinite(torch.tensor(df["val_loss"].to_numpy())))
