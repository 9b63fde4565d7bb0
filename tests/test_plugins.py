"""Plug-ins from other packages (entry points), the shipped templates, and name collisions.

A tiny outside package (tests/data/hpo_bench_plugin_demo) is installed offline with
``pip install --no-deps --no-build-isolation --target`` into a temporary folder; fresh
processes that have that folder on ``PYTHONPATH`` see its entry points, so the registry,
``hpo-bench list``, the conformance kit and a suite run all pick the plug-in up, while this
test process's registry stays untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpo_bench.core.registry import TASKS, Registry, RegistryError

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(__file__).resolve().parent / "data" / "hpo_bench_plugin_demo"


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["PIP_NO_INDEX"] = "1"
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The demo plug-in installed (offline) into a fresh folder; the source is copied first so the
    build leaves nothing in the repository."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    shutil.copytree(DEMO, src)
    site = tmp / "site"
    res = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                "--disable-pip-version-check", "--quiet", "--target", str(site), str(src)], _env(), tmp, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert any(p.name.startswith("hpo_bench_plugin_demo-") and p.suffix == ".dist-info" for p in site.iterdir())
    return site


def test_plugin_appears_in_hpo_bench_list(plugin_site, tmp_path):
    res = _run([sys.executable, "-m", "hpo_bench.cli", "list", "--json"], _env(plugin_site), tmp_path)
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout)
    tasks = {t["name"]: t for t in listing["tasks"]}
    tuners = {t["name"]: t for t in listing["tuners"]}
    assert tasks["demo_quadratic"]["origin"] == "hpo_bench_plugin_demo.DemoQuadratic"
    assert tuners["demo_golden"]["origin"] == "hpo_bench_plugin_demo.DemoGolden"
    assert "ridge" in tasks and "gradient" in tuners  # built-ins are still there
    # and this process never saw the plug-in
    assert "demo_quadratic" not in TASKS


TEMPLATE_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    import copied_task, copied_tuner                      # the templates, copied and renamed
    from hpo_bench.core.registry import TASKS, TUNERS
    from hpo_bench.testing import check_object
    from hpo_bench.running.harness import run_suite
    from hpo_bench.running.suite import load_suite
    out = {}
    for kind, reg, name in (("task", TASKS, "demo_quadratic"), ("tuner", TUNERS, "demo_golden"),
                            ("task", TASKS, "copied_task"), ("tuner", TUNERS, "copied_tuner")):
        out[name] = check_object(reg.get(name))
    suite = Path(sys.argv[1])
    suite.write_text('''
    name = "plugins"
    seeds = [0]
    [budget]
    steps = 6
    [[task]]
    name = "demo_quadratic"
    [[task]]
    name = "copied_task"
    [[tuner]]
    name = "demo_golden"
    tasks = ["demo_quadratic"]
    [[tuner]]
    name = "copied_tuner"
    [[tuner]]
    name = "gradient"
    label = "exact"
    params = { method = "exact", inner = "exact" }
    ''')
    res = run_suite(load_suite(str(suite)), Path(sys.argv[2]))
    out["statuses"] = res.statuses
    out["rows"] = len(res.frame)
    print(json.dumps(out))
""")


def _copy_template(src: Path, dst: Path, old: str, new: str) -> None:
    text = src.read_text()
    assert f'name = "{old}"' in text
    dst.write_text(text.replace(f'name = "{old}"', f'name = "{new}"'))


def test_plugin_and_copied_templates_pass_the_kit_and_run_in_a_suite(plugin_site, tmp_path):
    mods = tmp_path / "mods"
    mods.mkdir()
    _copy_template(ROOT / "tasks" / "template_task.py", mods / "copied_task.py", "my_task", "copied_task")
    _copy_template(ROOT / "baselines" / "template_tuner.py", mods / "copied_tuner.py", "my_tuner", "copied_tuner")
    script = tmp_path / "script.py"
    script.write_text(TEMPLATE_SCRIPT)
    res = _run([sys.executable, str(script), str(tmp_path / "suite.toml"), str(tmp_path / "run")],
               _env(plugin_site, mods), tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name in ("demo_quadratic", "demo_golden", "copied_task", "copied_tuner"):
        results = dict(out[name])
        assert results and all(v == "pass" for v in results.values()), (name, results)
    assert "check_task_reference_fd" in dict(out["copied_task"])
    assert "check_tuner_diverging" in dict(out["demo_golden"])
    assert out["statuses"] and set(out["statuses"].values()) == {"ok"}, out["statuses"]
    assert len(out["statuses"]) == 5  # demo x (golden, copied, exact) + copied_task x (copied, exact)


def test_templates_are_skipped_by_discovery():
    from hpo_bench.core.registry import TUNERS

    assert "my_task" not in TASKS and "my_tuner" not in TUNERS
    assert (ROOT / "tasks" / "template_task.py").is_file() and (ROOT / "baselines" / "template_tuner.py").is_file()


def _fake_dist(site: Path, dist: str, group: str, name: str, value: str, module_src: str | None) -> None:
    """A hand-written installed distribution (dist-info + entry_points.txt): what pip would leave."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {value}\n")
    if module_src is not None:
        (site / f"{value.split(':')[0]}.py").write_text(module_src)


def test_plugin_name_collision_is_a_clear_one_line_error(tmp_path):
    site = tmp_path / "site"
    _fake_dist(site, "hpo_bench_clash", "hpo_bench.tasks", "ridge", "hpo_bench_clash:Clash",
               "from hpo_bench.tasks.ridge import Ridge\n\nclass Clash(Ridge):\n    pass\n")
    res = _run([sys.executable, "-m", "hpo_bench.cli", "list"], _env(site), tmp_path)
    assert res.returncode == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert ("task name 'ridge' is already registered by hpo_bench.tasks.ridge.Ridge; "
            "hpo_bench_clash.Clash must use another name") in err


def test_broken_plugin_names_itself(tmp_path):
    site = tmp_path / "site"
    _fake_dist(site, "hpo_bench_broken", "hpo_bench.tuners", "broken", "hpo_bench_missing_module:Tuner", None)
    res = _run([sys.executable, "-m", "hpo_bench.cli", "list"], _env(site), tmp_path)
    # a broken plug-in is reported in one line and the rest is still listed (exit 0)
    assert res.returncode == 0, res.stderr
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "plug-in entry point 'broken'" in err and "hpo_bench_broken" in err and "failed to import" in err
    assert "ModuleNotFoundError" in err and "ridge" in res.stdout and "gradient" in res.stdout


# ------------------------------------------------------------- broken plug-in modules, in process
@pytest.fixture
def broken_task_module(tmp_path, monkeypatch):
    """A file of hpo_bench.tasks that fails to import (a folder added to the package path, never the tree)."""
    import hpo_bench.tasks
    from hpo_bench.core import registry

    extra = tmp_path / "extra_tasks"
    extra.mkdir()
    (extra / "broken_task.py").write_text("import nonexistent_pkg_for_hpo_bench_tests\n")
    monkeypatch.setattr(hpo_bench.tasks, "__path__", [*hpo_bench.tasks.__path__, str(extra)])
    registry.discover(force=True)
    yield extra / "broken_task.py"
    monkeypatch.undo()
    registry.discover(force=True)
    assert not registry.broken_plugins()


@pytest.fixture
def broken_entry_point(monkeypatch):
    """A tuner entry point whose module does not exist."""
    from importlib.metadata import EntryPoint

    from hpo_bench.core import registry

    real = registry.entry_points
    fake = EntryPoint(name="broken_tuner", value="hpo_bench_missing_module_for_tests:Tuner", group="hpo_bench.tuners")
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [*real(group=group), *([fake] if group == "hpo_bench.tuners" else [])])
    registry.discover(force=True)
    yield fake
    monkeypatch.undo()
    registry.discover(force=True)
    assert not registry.broken_plugins()


ONE_CELL = """
seeds = [0]
[budget]
steps = 2
[[task]]
name = "{task}"
params = {{ n = 30, p = 3 }}
[[tuner]]
name = "{tuner}"
params = {params}
"""


def test_broken_module_is_recorded_and_discovery_goes_on(broken_task_module, monkeypatch, capsys, tmp_path):
    from _runs import invoke, one_error_line

    from hpo_bench.core.registry import TUNERS, broken_plugins

    (b,) = broken_plugins()
    assert b.kind == "task" and b.name is None and b.source.endswith("broken_task.py")
    assert b.error == "ModuleNotFoundError: No module named 'nonexistent_pkg_for_hpo_bench_tests'"
    assert "ridge" in TASKS and "gradient" in TUNERS  # the rest was discovered
    # `list`: one line for the broken file, then everything else
    code, out, err = invoke(monkeypatch, capsys, "list")
    assert code in (0, None) and "Traceback" not in err
    assert err.strip().splitlines() == [f"hpo-bench: warning: task plug-in {b.source} failed to import: {b.error}"]
    assert "ridge" in out and "seed_toy" in out
    # a suite that uses only known names runs
    good = tmp_path / "good.toml"
    good.write_text(ONE_CELL.format(task="ridge", tuner="gradient", params='{ method = "exact", inner = "exact" }'))
    code, _, err = invoke(monkeypatch, capsys, "run", good, "--out", tmp_path / "out")
    assert code in (0, None), err
    # a suite naming an unknown task is refused with a line naming the broken file
    bad = tmp_path / "bad.toml"
    bad.write_text(ONE_CELL.format(task="my_broken_task", tuner="gradient", params="{}"))
    code, _, err = invoke(monkeypatch, capsys, "run", bad, "--out", tmp_path / "out2")
    line = one_error_line(err)
    assert code == 2 and "task[0].name" in line and "'my_broken_task'" in line
    assert str(b.source) in line and "nonexistent_pkg_for_hpo_bench_tests" in line
    # an unknown *tuner* could not come from a broken task file: the known tuners are listed as before
    bad.write_text(ONE_CELL.format(task="ridge", tuner="no_such_tuner", params="{}"))
    code, _, err = invoke(monkeypatch, capsys, "run", bad, "--out", tmp_path / "out3")
    line = one_error_line(err)
    assert code == 2 and "a registered tuner name (" in line and "gradient" in line and "failed to import" not in line


def test_broken_entry_point_refuses_only_its_name(broken_entry_point, monkeypatch, capsys, tmp_path):
    from _runs import invoke, one_error_line

    from hpo_bench.core.registry import TUNERS, UnknownNameError, broken_plugins

    (b,) = broken_plugins("tuner")
    assert b.name == "broken_tuner" and "entry point 'broken_tuner'" in b.source
    with pytest.raises(UnknownNameError, match="entry point 'broken_tuner'.*failed to import: ModuleNotFoundError"):
        TUNERS.get("broken_tuner")
    with pytest.raises(UnknownNameError, match="known tuners: .*gradient"):
        TUNERS.get("other_tuner")  # the entry point names itself: other names are plainly unknown
    code, _, err = invoke(monkeypatch, capsys, "list", "--json")
    assert code in (0, None) and len(err.strip().splitlines()) == 1 and "broken_tuner" in err
    bad = tmp_path / "bad.toml"
    bad.write_text(ONE_CELL.format(task="ridge", tuner="broken_tuner", params="{}"))
    code, _, err = invoke(monkeypatch, capsys, "run", bad, "--out", tmp_path / "out")
    assert code == 2 and "entry point 'broken_tuner'" in one_error_line(err)
    good = tmp_path / "good.toml"
    good.write_text(ONE_CELL.format(task="ridge", tuner="gradient", params='{ method = "exact", inner = "exact" }'))
    code, _, err = invoke(monkeypatch, capsys, "run", good, "--out", tmp_path / "out2")
    assert code in (0, None), err


def test_the_kit_reports_a_broken_module_as_one_failing_check(broken_task_module):
    from hpo_bench.testing import ConformanceError, checks_for, parametrize_with_checks, registered_tasks

    broken = [o for o in registered_tasks() if not isinstance(o, type)]
    assert len(broken) == 1 and [c.__name__ for c in checks_for(broken[0])] == ["check_plugin_imports"]
    cases = [p for p in parametrize_with_checks(registered_tasks()).args[1] if p.id.startswith("broken:")]
    assert len(cases) == 1 and not cases[0].marks
    obj, check = cases[0].values
    with pytest.raises(ConformanceError, match=r"broken_task\.py failed to import: ModuleNotFoundError"):
        check(obj)


KIT_TEST = textwrap.dedent("""
    from hpo_bench.testing import parametrize_with_checks, registered_tasks, registered_tuners

    @parametrize_with_checks(registered_tasks() + registered_tuners())
    def test_kit(obj, check):
        check(obj)
""")


def test_the_kit_under_pytest_collects_and_fails_one_test_for_a_broken_entry_point(tmp_path):
    site = tmp_path / "site"
    _fake_dist(site, "hpo_bench_broken", "hpo_bench.tasks", "broken_task", "hpo_bench_missing_module:Task", None)
    (tmp_path / "test_kit.py").write_text(KIT_TEST)
    # only the broken plug-in's case runs (-k): collection still covers the whole registry
    res = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "broken", "test_kit.py"],
               _env(site), tmp_path)
    out = res.stdout
    assert res.returncode == 1, out[-3000:]
    assert "1 failed" in out and "error" not in out.splitlines()[-1], out[-3000:]
    assert "broken:broken_task-check_plugin_imports" in out and "hpo_bench_missing_module" in out


def test_registry_collision_in_process():
    reg = Registry("task")

    class A:
        pass

    class B:
        pass

    reg.add("thing", A)
    reg.add("thing", A)  # the same owner again is fine (re-import)
    with pytest.raises(RegistryError, match=r"task name 'thing' is already registered by .*A; .*B must use another"):
        reg.add("thing", B)
    with pytest.raises(RegistryError, match="non-empty"):
        reg.add("bad name!", B)

    class Impostor:
        name = "ridge"

    with pytest.raises(RegistryError, match="already registered by hpo_bench.tasks.ridge.Ridge"):
        TASKS.add("ridge", Impostor)
    assert TASKS.get("ridge").__name__ == "Ridge"


def test_the_template_tuner_spends_its_step_budget_on_infeasible_proposals():
    """Proposals without an inner solution are not records but count against the step budget, so the
    template ends where every proposal but the first is infeasible, having solved exactly ``steps`` times
    (a template that skips them halves its step until a proposal rounds back to the incumbent and records
    that point again: 6 rows here)."""
    import torch

    from hpo_bench.core.records import Budget
    from hpo_bench.testing import conformance_task, run_tuner

    text = (ROOT / "baselines" / "template_tuner.py").read_text().replace("@register_tuner\n", "")
    namespace: dict = {"__name__": "template_copy"}
    exec(compile(text, "template_tuner.py", "exec"), namespace)  # not registered: this process's TUNERS stay
    task = conformance_task()
    init = task.space.init_theta(dtype=task.dtype)
    solve = task.solve
    calls = []

    def infeasible_but_init(theta):
        calls.append(theta)
        if not torch.equal(theta, init):
            raise FloatingPointError("no inner minimiser here")
        return solve(theta)

    task.solve = infeasible_but_init
    rec = run_tuner(namespace["MyTuner"](), task, Budget(steps=6, seconds=60.0), reference=False)
    assert len(rec.rows) == 1 and rec.stop_reason == "budget_steps"
    assert len(calls) == 6 and rec.costs["inner_solves"] == 6
