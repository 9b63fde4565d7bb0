"""Plug-in folders: `hpo-bench init` to a report outside the repository, collisions, broken files, the suite key,
the kit (`pytest --hpo-bench-plugins`), and resume refusing a changed plug-in.

Everything runs in fresh processes with the folder outside the repository (``tmp_path``), as a user's would be,
so this test process's registries stay untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpo_bench.running.suite import SuiteError, load_suite

HPO = [sys.executable, "-m", "hpo_bench.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("HPO_BENCH_PLUGINS", None)
    return env


def _run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_init_to_a_report_outside_the_repository(tmp_path):
    folder = tmp_path / "mine"
    r = _run([*HPO, "init", str(folder)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "my_task.py", "my_tuner.py", "suite.toml"]
    from test_cli_polish import bare_venv_calls  # the docs' rule: a new shell enters the environment first

    readme = (folder / "README.md").read_text()
    assert bare_venv_calls(readme) == [], readme
    assert f"source {Path(sys.prefix).resolve() / 'bin' / 'activate'}" in readme or sys.prefix == sys.base_prefix
    again = _run([*HPO, "init", str(folder)], tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "must be empty" in again.stderr

    r = _run([*HPO, "check", "--plugins", ".", "-t", "my_task", "--quick"], folder)
    assert r.returncode == 0, r.stderr + r.stdout[-2000:]
    r = _run([sys.executable, "-m", "pytest", "--hpo-bench-plugins", ".", "-q", "-p", "no:cacheprovider",
              "-p", "no:randomly"], folder)
    assert r.returncode == 0 and " passed" in r.stdout and "failed" not in r.stdout, r.stdout[-3000:]
    r = _run([*HPO, "run", "suite.toml", "--out", "run", "--workers", "2", "--quiet"], folder)
    assert r.returncode == 0, r.stderr
    r = _run([*HPO, "report", "run", "--no-html", "--quiet", "--oracle-evals", "100", "--no-shared-cache",
              "--jobs", "1"], folder)
    assert r.returncode == 0, r.stderr
    summary = (folder / "run" / "report" / "summary.md").read_text()
    assert "my_tuner" in summary and "my_task" in summary
    # the plug-in files are part of the code fingerprint: an edited tuner makes the finished cells stale
    with open(folder / "my_tuner.py", "a") as f:
        f.write("\n# an edit\n")
    r = _run([*HPO, "run", "suite.toml", "--out", "run", "--resume", "--quiet"], folder)
    assert r.returncode == 2 and "cannot resume" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "plugs"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


TUNER = '''
    from hpo_bench import Tuner, register_tuner

    @register_tuner
    class {cls}(Tuner):
        name = "{name}"
        tags = frozenset({{"black-box"}})

        def run(self, task, recorder, *, seed=0):
            theta = task.space.init_theta(dtype=task.dtype, device=task.device)
            while not recorder.should_stop():
                w = task.solve(theta)
                if recorder.record(w=w, theta=theta, val_loss=float(task.outer_loss(w))) != "ok":
                    return
'''


def test_a_name_taken_by_a_built_in_names_both_owners(tmp_path):
    folder = _folder(tmp_path, {"clash.py": TUNER.format(cls="Clash", name="random")})
    r = _run([*HPO, "list", "--plugins", str(folder)], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "'random' is already registered by hpo_bench.baselines.random_search" in r.stderr
    assert str(folder / "clash.py") in r.stderr


def test_a_broken_file_is_one_line_and_the_rest_loads(tmp_path):
    folder = _folder(tmp_path, {"good.py": TUNER.format(cls="Good", name="good_one"),
                                "bad.py": "import no_such_module_for_hpo_bench\n", "_private.py": "raise SystemExit\n",
                                "test_mine.py": "raise SystemExit\n"})
    r = _run([*HPO, "list", "--plugins", str(folder), "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "good_one" in r.stdout and "bad.py" in r.stderr and "ModuleNotFoundError" in r.stderr
    assert r.stderr.count("bad.py") == 1 and "_private" not in r.stderr


def test_the_kit_fails_a_plug_in_tuner_that_breaks_the_contract(tmp_path):
    # proposals outside the bounds: check_tuner_bounds must fail it
    bad = TUNER.format(cls="Outside", name="outside").replace(
        "theta = task.space.init_theta(dtype=task.dtype, device=task.device)",
        "theta = task.space.init_theta(dtype=task.dtype, device=task.device) + 1e6")
    folder = _folder(tmp_path, {"outside.py": bad})
    r = _run([sys.executable, "-m", "pytest", "--hpo-bench-plugins", str(folder), "-q", "-p", "no:cacheprovider",
              "-p", "no:randomly"], tmp_path)
    assert r.returncode == 1 and "failed" in r.stdout and "outside" in r.stdout, r.stdout[-3000:]


def test_the_suite_key_is_relative_to_the_file_and_checked(tmp_path):
    (tmp_path / "sub").mkdir()
    _folder(tmp_path / "sub", {"t.py": TUNER.format(cls="Rel", name="relative_one")})
    suite = tmp_path / "sub" / "s.toml"
    body = '\nseeds = [0]\n[[task]]\nname = "ridge"\n[[tuner]]\nname = "relative_one"\n'
    suite.write_text('plugins = ["plugs"]' + body)
    code = ("import sys; from hpo_bench.running.suite import load_suite; s = load_suite(sys.argv[1]); "
            "print(s.plugins[0]); print(s.cells()[0].plugins)")
    r = _run([sys.executable, "-c", code, str(suite)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str((tmp_path / "sub" / "plugs").resolve())
    for value, needle in (('"plugs"', "key `plugins` must be a list of folder paths"),
                          ('["nope"]', "key `plugins[0]` must be an existing folder of .py files")):
        suite.write_text(f"plugins = {value}" + body)
        with pytest.raises(SuiteError) as err:
            load_suite(str(suite))
        assert str(suite) in str(err.value) and needle in str(err.value)


def test_sweeps_take_plug_in_folders_and_their_suites_name_them(tmp_path):
    """`sweep frontier --plugins DIR` on a plug-in task: the generated suite names the folder (so it reruns on
    its own), its cells load it in their processes."""
    folder = tmp_path / "mine"
    assert _run([*HPO, "init", str(folder)], tmp_path).returncode == 0
    out = tmp_path / "fr"
    r = _run([*HPO, "sweep", "frontier", "--plugins", str(folder), "--task", "my_task", "--methods", "cg,exact",
              "--grid", "cg=1,5", "--repeats", "1", "--quiet", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    suite = load_suite(str(out / "frontier.suite.toml"))
    assert [Path(p) for p in suite.plugins] == [folder.resolve()]
    import pandas as pd

    table = pd.read_csv(out / "frontier.csv")
    assert set(table["method"]) == {"cg", "exact"} and (table["status"] == "ok").all()
    assert table.loc[table["method"] == "exact", "rel_error"].iloc[0] <= 1e-8
    r = _run([*HPO, "sweep", "frontier", "--task", "my_task", "--out", str(tmp_path / "none")], tmp_path)
    assert r.returncode == 2 and "my_task" in r.stderr and r.stderr.count("\n") == 1, r.stderr  # not loaded


def test_a_run_records_its_plugins_option_so_report_needs_no_option(tmp_path):
    folder = tmp_path / "mine"
    assert _run([*HPO, "init", str(folder)], tmp_path).returncode == 0
    suite = tmp_path / "s.toml"  # no `plugins` key: the folder comes from --plugins only
    suite.write_text('name = "s"\nseeds = [0]\n[budget]\nsteps = 3\n[[task]]\nname = "my_task"\n'
                     '[[tuner]]\nname = "my_tuner"\n')
    r = _run([*HPO, "run", str(suite), "--out", "run", "--plugins", str(folder), "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["plugins"] == [str(folder.resolve())]
    r = _run([*HPO, "report", "run", "--no-html", "--quiet", "--oracle-evals", "50", "--no-shared-cache"], tmp_path)
    assert r.returncode == 0, r.stderr
