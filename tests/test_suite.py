"""Suite files: the documented schema and its errors (file, key, rule, value)."""

from __future__ import annotations

import pytest

from hpo_bench.running.suite import SuiteError, load_suite, named_suites

GOOD = '''
name = "mini"
seeds = [0, 1]
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


def write(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return str(p)


def test_good_suite_expands_to_cells(tmp_path):
    s = load_suite(write(tmp_path, GOOD))
    cells = s.cells()
    assert len(cells) == 2 * 2 + 1 * 2  # cg on both tasks, exact only on seed_toy; 2 seeds
    assert {c.cell_id for c in cells} == {"r__cg__seed0", "r__cg__seed1", "seed_toy__cg__seed0",
                                          "seed_toy__cg__seed1", "seed_toy__exact__seed0", "seed_toy__exact__seed1"}
    assert {c.budget.steps for c in cells if c.tuner.label == "exact"} == {5}
    assert len(s.sha256) == 64


def test_named_suites_validate():
    for name in named_suites():
        assert load_suite(name).cells()


@pytest.mark.parametrize("edit, key, fragment", [
    (lambda t: t.replace("seeds = [0, 1]", "seeds = []"), "seeds", "non-empty list"),
    (lambda t: t.replace("seeds = [0, 1]", "seeds = [0, 0]"), "seeds", "free of repeats"),
    (lambda t: t.replace("seeds = [0, 1]", "seeds = [-1]"), "seeds[0]", "integer >= 0"),
    (lambda t: t.replace("steps = 3", "steps = -3"), "budget.steps", "integer >= 1"),
    (lambda t: t.replace('name = "ridge"', 'name = "ridgeback"'), "task[0].name", "registered task name"),
    (lambda t: t.replace('label = "exact"', 'label = "cg"'), "tuner[*].label", "unique"),
    (lambda t: "colour = 'red'\n" + t, "colour", "one of the known keys"),
    (lambda t: t.replace('params = { n = 40, p = 4 }', 'params = { n = 40, q = 4 }'), "task[0].params.q",
     "a parameter of task 'ridge'"),
    (lambda t: t.replace('tasks = ["seed_toy"]', 'tasks = ["nope"]'), "tuner[1].tasks", "task labels"),
    (lambda t: t.replace('params = { method = "cg" }', 'params = { method = "cgg" }'), "tuner[0].params",
     "unknown hypergradient method 'cgg'"),
    (lambda t: 'dtype = "float16"\n' + t, "dtype", "'float64' or 'float32'"),
])
def test_errors_name_file_key_and_rule(tmp_path, edit, key, fragment):
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    msg = str(exc.value)
    assert path in msg and f"`{key}`" in msg and fragment in msg


def test_bad_toml(tmp_path):
    path = write(tmp_path, "seeds = [0,\n[[task]]")
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(path)


def test_hard_timeout_stays_within_what_the_executors_can_wait(tmp_path):
    """A budget's default limit (10 x seconds + 60) is capped at MAX_TIMEOUT; the largest accepted values load."""
    from hpo_bench.running.suite import MAX_TIMEOUT, check_timeout

    path = tmp_path / "big.toml"
    path.write_text(f"""seeds = [0]
[budget]
seconds = {MAX_TIMEOUT}
[[task]]
name = "ridge"
[[tuner]]
name = "gradient"
""")
    (cell,) = load_suite(str(path)).cells()
    assert cell.hard_timeout == MAX_TIMEOUT
    assert check_timeout(MAX_TIMEOUT, "t") == MAX_TIMEOUT
    for bad in (MAX_TIMEOUT * 1.001, float("inf"), 1e300):
        with pytest.raises(ValueError, match=r"t must be a number of seconds <= 2147483"):
            check_timeout(bad, "t")
    # the limit is what the process pool's wait takes: poll(2) with an int of milliseconds
    import multiprocessing.connection
    import os

    r, w = os.pipe()
    try:
        os.write(w, b"x")
        assert multiprocessing.connection.wait([r], timeout=MAX_TIMEOUT) == [r]
        with pytest.raises(OverflowError):
            multiprocessing.connection.wait([r], timeout=MAX_TIMEOUT + 1)
    finally:
        os.close(r)
        os.close(w)
