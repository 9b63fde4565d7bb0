"""``pytest --hpo-bench-plugins DIR``: the conformance kit on the tasks and tuners of a plug-in folder.

Registered as a pytest plug-in (entry point ``pytest11``), so it is loaded by every pytest run in an
environment with hpo-bench installed; without the option it does nothing (it adds the option and returns).

With ``--hpo-bench-plugins DIR`` (repeatable) the folders are loaded (:func:`hpo_bench.core.plugins.use_folders`)
and each plug-in file becomes a test file whose tests are the kit's checks (:func:`hpo_bench.testing.checks_for`)
of the tasks and tuners that file registered, one test per (class, check), with a class's declared
``xfail_checks`` marked as expected failures. A file that failed to import is one failing test naming the error.
No test file is needed in the folder. When pytest is given no paths, it collects the folders themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

OPTION = "--hpo-bench-plugins"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("hpo-bench").addoption(
        OPTION, action="append", default=[], metavar="DIR",
        help="Run hpo-bench's conformance kit on the tasks and tuners of this plug-in folder (repeatable).")


def pytest_configure(config: pytest.Config) -> None:
    folders = config.getoption(OPTION)
    if not folders:
        return
    from hpo_bench.core.plugins import PluginFolderError, use_folders

    try:
        loaded = use_folders(folders, source=f"option {OPTION}")
    except PluginFolderError as exc:
        raise pytest.UsageError(str(exc)) from None
    config._hpo_bench_plugin_files = {p.resolve() for folder in loaded for p in _files(folder)}  # type: ignore[attr-defined]
    invocation = Path(config.invocation_params.dir).resolve()
    if not config.args or [Path(a).resolve() for a in config.args] == [invocation]:
        config.args[:] = [str(f) for f in loaded]  # no paths given: collect the plug-in folders


def _files(folder: Path) -> list[Path]:
    from hpo_bench.core.plugins import plugin_files

    return plugin_files(folder)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    files = getattr(parent.config, "_hpo_bench_plugin_files", None)
    if files and file_path.resolve() in files:
        return KitFile.from_parent(parent, path=file_path)
    return None


class KitFile(pytest.File):
    """One plug-in file: the kit's checks of what it registered."""

    def collect(self):
        from hpo_bench.core.plugins import PLUGIN_ATTR
        from hpo_bench.core.registry import broken_plugins
        from hpo_bench.testing import checks_for, check_plugin_imports, label_of, registered_tasks, registered_tuners
        from hpo_bench.testing import xfail_reason

        import sys

        me = str(self.path.resolve())
        for broken in broken_plugins():
            if Path(broken.source).resolve() == Path(me):
                yield KitItem.from_parent(self, name="check_plugin_imports", obj=broken, check=check_plugin_imports)
        for obj in [*registered_tasks(), *registered_tuners()]:
            cls = obj[0] if isinstance(obj, tuple) else obj
            module = sys.modules.get(getattr(cls, "__module__", ""), None)
            if getattr(module, PLUGIN_ATTR, None) is None or str(Path(getattr(module, PLUGIN_ATTR)).resolve()) != me:
                continue
            for check in checks_for(obj):
                item = KitItem.from_parent(self, name=f"{label_of(obj)}-{check.__name__}", obj=obj, check=check)
                reason = xfail_reason(obj, check)
                if reason:
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
                yield item


class KitItem(pytest.Item):
    """One check of the kit on one plug-in class."""

    def __init__(self, *, obj: Any, check: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.obj, self.check = obj, check

    def runtest(self) -> None:
        from hpo_bench.core._threads import one_thread

        with one_thread():
            self.check(self.obj)

    def reportinfo(self):
        return self.path, None, self.name
