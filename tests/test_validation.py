"""Up-front validation: every malformed suite file and every bad `run` option is one line naming the file, the
key, the rule and the value, with exit status 2 and no traceback, before anything runs."""

from __future__ import annotations

import pytest
from _runs import invoke, one_error_line, write_suite

from hpo_bench.running.suite import SuiteError, load_suite

GOOD = '''
name = "mini"
seeds = [0, 1]
seed = 3
timeout = 600
[budget]
steps = 3
[[task]]
name = "ridge"
label = "r"
params = { n = 40, p = 4 }
[[task]]
name = "seed_toy"
[[tuner]]
name = "gradient"
label = "cg"
params = { method = "cg" }
[[tuner]]
name = "gradient"
label = "exact"
params = { method = "exact", inner = "exact" }
budget = { steps = 5 }
tasks = ["seed_toy"]
'''


def sub(old, new, count=1):
    def edit(text):
        assert text.count(old) >= count, old
        return text.replace(old, new, count)
    return edit


def prepend(line):
    return lambda text: line + "\n" + text


def _without_tasks(text):
    """GOOD with its [[task]] tables (and the tuner's task filter) removed."""
    return text[: text.index("[[task]]")] + text[text.index("[[tuner]]"):].replace('tasks = ["seed_toy"]\n', "")


# (id, edit of GOOD, key named in the error, fragment of the rule, fragment of the value shown (None: no value))
CASES = [
    # wrong types
    ("seeds-string", sub("seeds = [0, 1]", 'seeds = "0, 1"'), "seeds", "non-empty list of distinct integers", "'0, 1'"),
    ("seed-float", sub("seeds = [0, 1]", "seeds = [0, 1.5]"), "seeds[1]", "an integer >= 0", "1.5"),
    ("seed-bool", sub("seeds = [0, 1]", "seeds = [true]"), "seeds[0]", "an integer >= 0", "True"),
    ("suite-seed-string", sub("seed = 3", 'seed = "three"'), "seed", "an integer >= 0", "'three'"),
    ("name-int", sub('name = "mini"', "name = 3"), "name", "a string of letters", "3"),
    ("name-spaces", sub('name = "mini"', 'name = "my suite"'), "name", "a string of letters", "'my suite'"),
    ("description-int", prepend("description = 5"), "description", "a string", "5"),
    ("dtype", prepend('dtype = "float16"'), "dtype", "'float64' or 'float32'", "'float16'"),
    ("device-int", prepend("device = 0"), "device", "a torch device string", "0"),
    ("device-unknown", prepend('device = "gpu0"'), "device", "a torch device string", "'gpu0'"),
    ("reference-string", prepend('reference = "yes"'), "reference", "true or false", "'yes'"),
    ("timeout-string", sub("timeout = 600", 'timeout = "long"'), "timeout", "a number of seconds > 0", "'long'"),
    ("budget-int", sub("[budget]\nsteps = 3", "budget = 5"), "budget", "a table like", "5"),
    ("steps-float", sub("steps = 3", "steps = 2.5"), "budget.steps", "an integer >= 1", "2.5"),
    ("steps-bool", sub("steps = 3", "steps = true"), "budget.steps", "an integer >= 1", "True"),
    ("params-int", sub("params = { n = 40, p = 4 }", "params = 3"), "task[0].params", "a table of keyword", "3"),
    ("label-int", sub('label = "r"', "label = 1"), "task[0].label", "a string of letters", "1"),
    ("task-value-type", sub("n = 40", 'n = "many"'), "task[0].params", "parameter `n` must be an integer (int)",
     "'many'"),
    ("tuner-value-type", sub('params = { method = "cg" }', 'params = { method = "cg", inner_steps = "many" }'),
     "tuner[0].params", "parameter `inner_steps` must be an integer >= 1", "'many'"),
    ("tuner-tasks-string", sub('tasks = ["seed_toy"]', 'tasks = "seed_toy"'), "tuner[1].tasks",
     "a non-empty list of task labels", "'seed_toy'"),
    ("tuner-timeout-string", sub('tasks = ["seed_toy"]', 'tasks = ["seed_toy"]\ntimeout = "1h"'),
     "tuner[1].timeout", "a number of seconds > 0", "'1h'"),
    # unknown keys
    ("unknown-top", prepend("colour = 'red'"), "colour", "one of the known keys", "'colour'"),
    ("unknown-budget", sub("steps = 3", "steps = 3\nminutes = 2"), "budget.minutes", "one of the known keys",
     "'minutes'"),
    ("unknown-task-key", sub('label = "r"', 'label = "r"\nparamz = {}'), "task[0].paramz", "one of the known keys",
     "'paramz'"),
    ("unknown-tuner-key", sub('label = "cg"', 'label = "cg"\nbudgett = 3'), "tuner[0].budgett",
     "one of the known keys", "'budgett'"),
    ("unknown-tuner-budget-key", sub("budget = { steps = 5 }", "budget = { steps = 5, hours = 1 }"),
     "tuner[1].budget.hours", "one of the known keys", "'hours'"),
    ("unknown-task-param", sub("p = 4", "q = 4"), "task[0].params.q", "a parameter of task 'ridge'", "'q'"),
    ("unknown-tuner-param", sub('params = { method = "cg" }', 'params = { method = "cg", learning_rate = 1 }'),
     "tuner[0].params", "keyword arguments of tuner 'gradient'", "'learning_rate'"),
    ("task-param-seed", sub("p = 4", "p = 4, seed = 3"), "task[0].params.seed", "set at suite level", "'seed'"),
    # negative or zero budgets and limits
    ("steps-negative", sub("steps = 3", "steps = -3"), "budget.steps", "an integer >= 1", "-3"),
    ("steps-zero", sub("steps = 3", "steps = 0"), "budget.steps", "an integer >= 1", "0"),
    ("seconds-negative", sub("steps = 3", "seconds = -1.0"), "budget.seconds", "a number > 0", "-1.0"),
    ("seconds-zero", sub("steps = 3", "seconds = 0"), "budget.seconds", "a number > 0", "0"),
    ("tuner-steps-negative", sub("budget = { steps = 5 }", "budget = { steps = -5 }"), "tuner[1].budget.steps",
     "an integer >= 1", "-5"),
    ("timeout-negative", sub("timeout = 600", "timeout = -10"), "timeout", "a number of seconds > 0", "-10"),
    ("timeout-zero", sub("timeout = 600", "timeout = 0"), "timeout", "a number of seconds > 0", "0"),
    ("seeds-negative", sub("seeds = [0, 1]", "seeds = [0, -1]"), "seeds[1]", "an integer >= 0", "-1"),
    ("suite-seed-negative", sub("seed = 3", "seed = -3"), "seed", "an integer >= 0", "-3"),
    ("task-value-negative", sub("n = 40", "n = -5"), "task[0].params", "parameter `n` must be an integer >= 1", "-5"),
    ("tuner-value-negative", sub('params = { method = "cg" }', 'params = { method = "cg", outer_lr = -0.1 }'),
     "tuner[0].params", "parameter `outer_lr` must be > 0", "-0.1"),
    # empty lists and tables
    ("seeds-empty", sub("seeds = [0, 1]", "seeds = []"), "seeds", "non-empty list", "[]"),
    ("budget-empty", sub("[budget]\nsteps = 3", "[budget]"), "budget", "a table with `steps`, `seconds` or both", "{}"),
    ("tasks-empty", sub('tasks = ["seed_toy"]', "tasks = []"), "tuner[1].tasks", "a non-empty list of task labels",
     "[]"),
    ("task-array-empty", lambda t: "task = []\n" + _without_tasks(t), "task", "a non-empty array of tables", "[]"),
    ("no-tuners", lambda t: t[: t.index("[[tuner]]")], "tuner", "a non-empty array of tables", "None"),
    ("no-seeds", sub("seeds = [0, 1]\n", ""), "seeds", "present", None),
    # unknown names
    ("unknown-task", sub('name = "ridge"', 'name = "ridgeback"'), "task[0].name", "a registered task name",
     "'ridgeback'"),
    ("unknown-tuner", sub('name = "gradient"', 'name = "gradient_boosting"'), "tuner[0].name",
     "a registered tuner name", "'gradient_boosting'"),
    ("unknown-method", sub('params = { method = "cg" }', 'params = { method = "cgg" }'), "tuner[0].params",
     "unknown hypergradient method", "'cgg'"),
    ("unknown-task-label", sub('tasks = ["seed_toy"]', 'tasks = ["nope"]'), "tuner[1].tasks",
     "a list of task labels of this suite", "'nope'"),
    ("missing-task-name", sub('name = "ridge"\n', ""), "task[0].name", "a registered task name", "None"),
    # duplicates
    ("seeds-repeated", sub("seeds = [0, 1]", "seeds = [0, 0]"), "seeds", "free of repeats", "[0, 0]"),
    ("task-labels-repeated", sub('[[task]]\nname = "seed_toy"', '[[task]]\nname = "seed_toy"\nlabel = "r"'),
     "task[*].label", "unique", "['r']"),
    ("tuner-labels-repeated", sub('label = "exact"', 'label = "cg"'), "tuner[*].label", "unique", "['cg']"),
    ("duplicate-task-cells", lambda t: t + '[[task]]\nname = "ridge"\nlabel = "r2"\nparams = { p = 4, n = 40 }\n',
     "task[2]", "different from task[0] (same name, params and budget: duplicate cells)", "'r2'"),
    ("duplicate-tuner-cells", lambda t: t + '[[tuner]]\nname = "gradient"\nlabel = "cg2"\n'
     'params = { method = "cg" }\n',
     "tuner[2]", "different from tuner[0] (same name, params and budget: duplicate cells)", "'cg2'"),
    ("tasks-repeated", sub('tasks = ["seed_toy"]', 'tasks = ["seed_toy", "seed_toy"]'), "tuner[1].tasks",
     "free of repeats", "['seed_toy', 'seed_toy']"),
]


@pytest.mark.parametrize("edit, key, rule, value", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_suite_names_file_key_rule_and_value(monkeypatch, capsys, tmp_path, edit, key, rule, value):
    path = str(write_suite(tmp_path / "bad.toml", edit(GOOD)))
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    msg = str(exc.value)
    assert f"suite file {path!r}" in msg and f"`{key}`" in msg and rule in msg, msg
    if value is not None:
        assert value in msg, msg
    # the command line: the same message, one line, exit 2, nothing run
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", tmp_path / "out")
    assert code == 2 and one_error_line(err) == f"hpo-bench: error: {msg}"
    assert not (tmp_path / "out").exists()


def test_there_are_dozens_of_cases():
    assert len(CASES) >= 48 and len({c[0] for c in CASES}) == len(CASES)


def test_good_suite_is_accepted(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "good.toml", GOOD)))
    assert len(suite.cells()) == 6 and suite.seed == 3 and {c.hard_timeout for c in suite.cells()} == {600.0}


@pytest.mark.parametrize("content, fragment", [
    ("seeds = [0,\n[[task]]", "not valid TOML"),
    ("seeds = [0]\nseeds = [1]\n", "not valid TOML"),
    ('name = "unterminated\n', "not valid TOML"),
    ("[[task]\n", "not valid TOML"),
])
def test_bad_toml(monkeypatch, capsys, tmp_path, content, fragment):
    path = str(write_suite(tmp_path / "bad.toml", content))
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    assert f"suite file {path!r}: not valid TOML" in str(exc.value) and "line" in str(exc.value)
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", tmp_path / "out")
    assert code == 2 and fragment in one_error_line(err)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(str(path))


@pytest.mark.parametrize("args, fragment", [
    (("--workers", "0"), "option --workers must be an integer >= 1 or 'auto', but got '0'"),
    (("--workers", "two"), "option --workers must be an integer >= 1 or 'auto', but got 'two'"),
    (("--workers", "-3"), "option --workers must be an integer >= 1 or 'auto', but got '-3'"),
    (("--threads", "0"), "option --threads must be an integer >= 1, but got 0"),
    (("--timeout", "0"), "option --timeout must be a number of seconds > 0, but got 0.0"),
    (("--timeout", "-5"), "option --timeout must be a number of seconds > 0, but got -5.0"),
    (("--timeout", "nan"), "option --timeout must be a number of seconds > 0, but got nan"),
    (("--dask", "somewhere"), "option --dask must be 'local' or a scheduler address like tcp://host:8786, "
                              "but got 'somewhere'"),
    (("--dask", "tcp://host:port"), "but got 'tcp://host:port'"),
    (("--dask", "tcp://10.0.0.1:8786", "--workers", "4"), "option --workers must be omitted with an existing Dask "
                                                          "scheduler"),
    (("--force",), "option --force must come with --resume"),
    (("--retry-failed",), "option --retry-failed must come with --resume"),
    (("--threads", "many"), "Invalid value for '--threads'"),
])
def test_bad_run_options(monkeypatch, capsys, tmp_path, args, fragment):
    path = write_suite(tmp_path / "good.toml", GOOD)
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", tmp_path / "out", *args)
    assert code == 2 and fragment in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_out_is_a_file(monkeypatch, capsys, tmp_path):
    path = write_suite(tmp_path / "good.toml", GOOD)
    (tmp_path / "out").write_text("x")
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", tmp_path / "out")
    assert code == 2 and "exists and is not a folder" in one_error_line(err)


def test_unavailable_device_is_refused_before_running(monkeypatch, capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = write_suite(tmp_path / "cuda.toml", 'device = "cuda"\n' + GOOD)
    code, _, err = invoke(monkeypatch, capsys, "run", path, "--out", tmp_path / "out")
    assert code == 2 and "device 'cuda' is not available on this machine" in one_error_line(err)


def test_same_tuner_on_disjoint_tasks_is_not_a_duplicate(tmp_path):
    text = GOOD + ('[[tuner]]\nname = "gradient"\nlabel = "exact-ridge"\n'
                   'params = { method = "exact", inner = "exact" }\nbudget = { steps = 5 }\ntasks = ["r"]\n')
    suite = load_suite(str(write_suite(tmp_path / "ok.toml", text)))
    assert len(suite.cells()) == 8
    with pytest.raises(SuiteError, match=r"`tuner\[2\]` must be different from tuner\[1\]"):
        load_suite(str(write_suite(tmp_path / "dup.toml", text.replace('tasks = ["r"]', 'tasks = ["r", "seed_toy"]'))))
