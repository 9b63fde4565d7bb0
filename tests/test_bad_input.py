"""Bad input that used to be accepted and then failed (or silently misled) at run time: one table.

Each row is a suite fragment (or extra ``run`` arguments) that validation must refuse before any
cell runs: ``hpo-bench run`` exits 2 with ONE line ``hpo-bench: error: ...`` holding the expected
fragments (the key or parameter, the rule, the value). Rows come from issue 10 (items 6, 7:
requirements, parameter types) and issue 11 (items 4, 5: overflowing limits, method options
checked only when they ran, silent ``ok`` nonsense). On top of the table, hypothesis generates
malformed suites: every one is refused the same way, with no traceback.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from _runs import invoke, one_error_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo_bench.running.suite import MAX_TIMEOUT, load_suite

BASE = {
    "top": "",
    "budget": "steps = 2",
    "task": 'name = "ridge"\nlabel = "r"\nparams = { n = 30, p = 3 }',
    "tuner": 'name = "gradient"\nlabel = "g"\nparams = { method = "exact", inner = "exact" }',
}


def suite_text(**parts: str) -> str:
    p = {**BASE, **parts}
    return f'seeds = [0]\n{p["top"]}\n[budget]\n{p["budget"]}\n\n[[task]]\n{p["task"]}\n\n[[tuner]]\n{p["tuner"]}\n'


def gradient(params: str, label: str = "g") -> str:
    return f'name = "gradient"\nlabel = "{label}"\nparams = {{ {params} }}'


KR = 'name = "kernel_ridge"\nlabel = "kr"\nparams = { dataset = "synthetic", n = 30, p = 3, n_val = 15, n_test = 10 }'
LOGISTIC = 'name = "logistic_l2"\nlabel = "lg"\nparams = { dataset = "synthetic", n = 40, p = 3 }'
PER_FEATURE = 'name = "ridge_per_feature"\nlabel = "rpf"\nparams = { n = 30, p = 3 }'
LIMIT = f"<= {MAX_TIMEOUT:.0f}"

# (id, suite parts or CLI args, fragments the one error line must hold)
CASES = [
    # ---- issue 11 item 4: limits the timeout machinery cannot take (OverflowError in every cell before)
    ("budget-seconds-inf", dict(budget="seconds = inf"), ["`budget.seconds`", LIMIT, "but got inf"]),
    ("budget-seconds-1e300", dict(budget="seconds = 1e300"), ["`budget.seconds`", LIMIT, "1e+300"]),
    ("budget-seconds-nan", dict(budget="seconds = nan"), ["`budget.seconds`", "but got nan"]),
    ("tuner-budget-seconds-1e300", dict(tuner=gradient('method = "exact", inner = "exact"')
                                        + "\nbudget = { seconds = 1e300 }"),
     ["`tuner[0].budget.seconds`", LIMIT]),
    ("timeout-1e300", dict(top="timeout = 1e300"), ["`timeout`", LIMIT, "1e+300"]),
    ("timeout-inf", dict(top="timeout = inf"), ["`timeout`", LIMIT, "inf"]),
    ("tuner-timeout-1e300", dict(tuner=gradient('method = "exact", inner = "exact"') + "\ntimeout = 1e300"),
     ["`tuner[0].timeout`", LIMIT]),
    ("cli-timeout-1e300", ["--timeout", "1e300"], ["option --timeout", LIMIT, "1e+300"]),
    ("cli-timeout-inf", ["--timeout", "inf"], ["option --timeout", LIMIT, "inf"]),
    # ---- issue 11 item 4: method options that were checked only when they ran
    ("neumann-iterations-string", dict(tuner=gradient('method = "neumann", method_opts = { iterations = "ten" }')),
     ["method 'neumann'", "option `iterations` must be an integer >= 0", "'ten'"]),
    ("cg-precond-unknown", dict(tuner=gradient('method = "cg", method_opts = { precond = "jacobi2" }')),
     ["method 'cg'", "option `precond` must be one of ['auto', 'jacobi', 'none']", "'jacobi2'"]),
    ("cg-precond-int", dict(tuner=gradient('method = "cg", method_opts = { precond = 1 }')),
     ["option `precond` must be one of", "but got 1"]),
    ("truncated-truncate-zero", dict(tuner=gradient('method = "truncated", method_opts = { truncate = 0 }')),
     ["method 'truncated'", "option `truncate` must be an integer >= 1", "but got 0"]),
    ("method-opts-not-a-table", dict(tuner=gradient('method = "cg", method_opts = 3')),
     ["parameter `method_opts` must be a table", "but got 3"]),
    ("grid-eig-per-feature", dict(task=PER_FEATURE, tuner='name = "grid_eig"\nlabel = "eig"'),
     ["tuner 'eig'", "task 'rpf'", "'scalar-hyperparameter'"]),
    # ---- issue 11 item 5: silent nonsense (a zero hypergradient or a useless run with status ok)
    ("cg-tol-negative", dict(tuner=gradient('method = "cg", method_opts = { tol = -1 }')),
     ["method 'cg'", "option `tol` must be in (0, 1)", "but got -1"]),
    ("cg-tol-one", dict(tuner=gradient('method = "cg", method_opts = { tol = 1.5 }')),
     ["option `tol` must be in (0, 1)", "1.5"]),
    ("cg-max-iter-zero", dict(tuner=gradient('method = "cg", method_opts = { max_iter = 0 }')),
     ["option `max_iter` must be an integer >= 1", "but got 0"]),
    ("fixed-point-iterations-zero", dict(tuner=gradient('method = "fixed_point", method_opts = { iterations = 0 }')),
     ["method 'fixed_point'", "option `iterations` must be an integer >= 1", "but got 0"]),
    ("neumann-alpha-negative", dict(tuner=gradient('method = "neumann", method_opts = { alpha = -0.5 }')),
     ["option `alpha` must be > 0", "-0.5"]),
    ("outer-lr-inf", dict(tuner=gradient('method = "cg", outer_lr = inf')),
     ["parameter `outer_lr` must be > 0 (a finite number)", "but got inf"]),
    ("outer-lr-nan", dict(tuner=gradient('method = "cg", outer_lr = nan')), ["parameter `outer_lr`", "nan"]),
    ("inner-lr-inf", dict(tuner=gradient('method = "cg", inner_lr = inf')), ["parameter `inner_lr`", "inf"]),
    ("outer-momentum-one", dict(tuner=gradient('method = "cg", outer = "sgd", outer_momentum = 1.0')),
     ["parameter `outer_momentum` must be in [0, 1)", "1.0"]),
    ("inner-steps-bool", dict(tuner=gradient('method = "cg", inner_steps = true')),
     ["parameter `inner_steps` must be an integer >= 1", "but got True"]),
    ("warm-start-string", dict(tuner=gradient('method = "cg", warm_start = "yes"')),
     ["parameter `warm_start` must be true or false", "'yes'"]),
    ("task-n-bool", dict(task='name = "ridge"\nparams = { n = true, p = 3 }'),
     ["task 'ridge'", "parameter `n` must be an integer (int)", "but got True"]),
    # ---- issue 10 item 7: parameter types are checked before any comparison
    ("task-n-string", dict(task='name = "ridge"\nparams = { n = "ten", p = 3 }'),
     ["`task[0].params`", "task 'ridge'", "parameter `n` must be an integer (int)", "'ten'"]),
    ("task-noise-string", dict(task='name = "ridge"\nparams = { n = 30, p = 3, noise = "x" }'),
     ["task 'ridge'", "parameter `noise` must be a number (float)", "'x'"]),
    ("kernel-ridge-noise-string", dict(task=KR.replace("n_test = 10", 'n_test = 10, noise = "x"')),
     ["task 'kernel_ridge'", "parameter `noise` must be a number (float)", "'x'"]),
    ("task-n-float", dict(task='name = "ridge"\nparams = { n = 30.5, p = 3 }'),
     ["parameter `n` must be an integer (int)", "30.5"]),
    ("task-n-val-string", dict(task='name = "ridge"\nparams = { n = 30, p = 3, n_val = "5" }'),
     ["parameter `n_val` must be an integer or omitted", "'5'"]),
    ("logistic-lam0-string", dict(task=LOGISTIC.replace("p = 3", 'p = 3, lam0 = "big"')),
     ["task 'logistic_l2'", "parameter `lam0` must be a number (float)", "'big'"]),
    ("seed-toy-per-weight-int", dict(task='name = "seed_toy"\nparams = { per_weight = 1 }'),
     ["task 'seed_toy'", "parameter `per_weight` must be true or false", "but got 1"]),
    # ---- issue 10 item 6: a tuner's declared requirements against the task's tags
    ("per-example-on-kernel-ridge", dict(task=KR, tuner=gradient(
        'method = "cg", inner = "adam_per_example", inner_steps = 1, inner_lr = 0.01', label="ape")),
     ["tuner 'ape'", "task 'kr'", "needs task tag 'per-example'"]),
    ("seed-notebook-on-kernel-ridge", dict(task=KR, tuner='name = "seed_notebook"\nlabel = "nb"'),
     ["tuner 'nb'", "task 'kr'", "'per-example'"]),
    ("jacobi-on-logistic", dict(task=LOGISTIC, tuner=gradient(
        'method = "cg", method_opts = { precond = "jacobi" }', label="jac")),
     ["tuner 'jac'", "task 'lg'", "'hessian-diagonal'"]),
    ("grid-eig-on-logistic", dict(task=LOGISTIC, tuner='name = "grid_eig"\nlabel = "eig"'),
     ["tuner 'eig'", "task 'lg'", "'gram-matrix'"]),
    ("grid-eig-on-kernel-ridge", dict(task=KR, tuner='name = "grid_eig"\nlabel = "eig"'),
     ["tuner 'eig'", "task 'kr'", "'gram-matrix'"]),
    ("grid-eig-on-seed-toy-per-weight", dict(task='name = "seed_toy"\nlabel = "toyw"\nparams = { per_weight = true }',
                                             tuner='name = "grid_eig"\nlabel = "eig"'),
     ["task 'toyw'", "'scalar-hyperparameter'"]),
    ("tune-grid-needs-per-example", dict(
        top="[tune]\nseeds = [100]", task=KR,
        tuner=gradient('method = "cg", inner_steps = 1, inner_lr = 0.01', label="tg")
        + '\ntune = { inner = ["gd", "adam_per_example"] }'),
     ["tuner 'tg'", "with tune {'inner': 'adam_per_example'}", "task 'kr'", "'per-example'"]),
]


def _run_case(monkeypatch, capsys, tmp_path, case):
    if isinstance(case, list):
        path, args = tmp_path / "good.toml", case
        path.write_text(suite_text())
    else:
        path, args = tmp_path / "bad.toml", []
        path.write_text(suite_text(**case))
    return invoke(monkeypatch, capsys, "run", path, "--out", tmp_path / "out", *args)


@pytest.mark.parametrize("case, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, case, fragments):
    code, _, err = _run_case(monkeypatch, capsys, tmp_path, case)
    line = one_error_line(err)  # exactly one line, `hpo-bench: error: ...`, no traceback
    assert code == 2, line
    for frag in fragments:
        assert frag in line, (frag, line)
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_the_table_is_counted_and_its_base_is_valid(tmp_path):
    """Every row fails only because of its own edit: the base suite (and each task/tuner used
    as a replacement, on a task it fits) validates."""
    (tmp_path / "base.toml").write_text(suite_text())
    load_suite(str(tmp_path / "base.toml"))
    for parts in (dict(task=KR), dict(task=LOGISTIC, tuner=gradient('method = "cg"')),
                  dict(tuner='name = "grid_eig"\nlabel = "eig"'), dict(tuner='name = "seed_notebook"\nlabel = "nb"'),
                  dict(tuner=gradient('method = "cg", method_opts = { precond = "jacobi" }')),
                  dict(budget=f"seconds = {MAX_TIMEOUT}", top=f"timeout = {MAX_TIMEOUT}")):
        (tmp_path / "ok.toml").write_text(suite_text(**parts))
        load_suite(str(tmp_path / "ok.toml"))
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


def test_the_method_checks_the_same_schema_at_run_time():
    """The schema suite validation applies is the one the method applies on every call (no drift)."""
    from hpo_bench.hypergrad import cg, neumann
    from hpo_bench.core.options import OptionError
    from hpo_bench.testing import conformance_task

    task = conformance_task()
    theta = task.space.init_theta(dtype=task.dtype)
    w = task.solve(theta)
    for fn, opts, frag in ((cg, {"tol": -1}, "option `tol`"), (cg, {"max_iter": 0}, "option `max_iter`"),
                           (cg, {"precond": "jacobi2"}, "option `precond`"),
                           (neumann, {"iterations": "ten"}, "option `iterations`")):
        with pytest.raises(OptionError, match=frag.replace("`", ".")):
            fn(task, w, theta, **opts)
    assert cg(task, w, theta, tol=1e-10).stats["converged"]


# ------------------------------------------------------------------ property-based: malformed suites
def _toml(value) -> str:
    """A TOML value (inline) for the generated suites: numbers, strings, booleans, arrays, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                                  else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def _suite(doc: dict) -> str:
    lines = []
    for key, value in doc.items():
        if key in ("task", "tuner"):
            continue
        lines.append(f"{key} = {_toml(value)}")
    for kind in ("task", "tuner"):
        for table in doc.get(kind, []):
            lines.append(f"[[{kind}]]")
            lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _valid() -> dict:
    return {"seeds": [0], "budget": {"steps": 2},
            "task": [{"name": "ridge", "label": "r", "params": {"n": 30, "p": 3}}],
            "tuner": [{"name": "gradient", "label": "g", "params": {"method": "cg", "inner_steps": 5}}]}


_texts = st.text(alphabet="abcxyz_ -.", min_size=0, max_size=6)
_not_int = st.one_of(_texts, st.booleans(), st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda x: not (isinstance(x, float) and math.isfinite(x) and x.is_integer())), st.just([1]))
_not_positive_number = st.one_of(_texts, st.booleans(), st.floats(max_value=0.0), st.just(math.inf),
                                 st.just(math.nan))
_bad_seconds = st.one_of(_not_positive_number, st.floats(min_value=MAX_TIMEOUT * 2, allow_infinity=True))

# (where to write in the suite document, a strategy of values that can never be valid there)
_MUTATIONS = [
    (("seeds",), st.one_of(_texts, st.just([]), st.lists(st.integers(max_value=-1), min_size=1, max_size=3))),
    (("budget", "steps"), st.one_of(_not_int, st.integers(max_value=0))),
    (("budget", "seconds"), _bad_seconds),
    (("timeout",), _bad_seconds),
    (("tuner", 0, "timeout"), _bad_seconds),
    (("task", 0, "name"), st.one_of(st.integers(), st.sampled_from(["ridgeback", "", "tpe"]))),
    (("tuner", 0, "name"), st.one_of(st.integers(), st.sampled_from(["gradient_boosting", "ridge"]))),
    (("task", 0, "params", "n"), st.one_of(_not_int, st.integers(max_value=0))),
    (("task", 0, "params", "noise"), st.one_of(_texts, st.booleans(), st.floats(max_value=-1e-9), st.just([0.1]))),
    (("task", 0, "params", "bogus"), st.integers()),
    (("tuner", 0, "params", "inner_steps"), st.one_of(_not_int, st.integers(max_value=0))),
    (("tuner", 0, "params", "outer_lr"), _not_positive_number),
    (("tuner", 0, "params", "inner"), st.one_of(_texts, st.integers())),
    (("tuner", 0, "params", "method_opts"), st.one_of(
        st.fixed_dictionaries({"tol": st.one_of(_texts, st.floats(max_value=0.0), st.floats(min_value=1.0),
                                                 st.just(math.nan))}),
        st.fixed_dictionaries({"max_iter": st.one_of(_not_int, st.integers(max_value=0))}),
        st.fixed_dictionaries({"precond": st.one_of(_texts, st.integers())}),
        st.fixed_dictionaries({"colour": st.integers()}))),
    (("tuner", 0, "tasks"), st.one_of(st.just([]), st.just(["nope"]), _texts)),
    (("colour",), st.integers()),
]


@st.composite
def malformed_suites(draw) -> str:
    """A valid suite with 1 to 3 mutations, each writing a value that is never valid at its key."""
    doc = _valid()
    picks = draw(st.lists(st.sampled_from(range(len(_MUTATIONS))), min_size=1, max_size=3, unique=True))
    for i in picks:
        path, values = _MUTATIONS[i]
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = draw(values)
    return _suite(doc)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=malformed_suites())
def test_any_malformed_suite_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, text):
    work = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example (tmp_path is shared by all of them)
    path = work / "gen.toml"
    path.write_text(text)
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", work / "out")
    assert code == 2, (text, err)
    line = one_error_line(err)
    assert "suite file" in line, (text, line)
    assert not (work / "out").exists()
