"""Plug-in folders: tasks and tuners from plain ``.py`` files in a user's own folder.

A folder is loaded by importing each of its ``*.py`` files (not ``_*.py``, ``test_*.py``, ``template_*.py``
or ``conftest.py``; not subfolders) in name order, each as a module of its own whose name is derived from
the folder's resolved path (``hpo_bench_plugins.f<hash>.<stem>``), so two folders may both hold a
``tuner.py``. Files register with the usual decorators (:func:`hpo_bench.register_task`,
:func:`hpo_bench.register_tuner`) into the same registries as the built-ins:

* a name that is already taken is an error naming both owners (a plug-in's owner is its file);
* a file that fails to import (a syntax error, a missing dependency) is recorded as a
  :class:`~hpo_bench.core.registry.BrokenPlugin` (one line in ``hpo-bench list``; named when a suite asks
  for an unknown name) and the other files are still loaded;
* loading a folder twice in one process does nothing the second time.

Where folders come from, merged in this order: ``--plugins DIR`` of the CLI commands, the environment
variable ``HPO_BENCH_PLUGINS`` (folders separated by ``os.pathsep``), and a suite file's
``plugins = ["rel/path", ...]`` (relative to the file). Every process that resolves names loads them:
the command's process and each cell's process (a cell carries its suite's folders); the fingerprint
that ``--resume`` compares covers the loaded files' contents (:func:`fingerprint_files`).

Written here rather than with ``pluggy`` or entry points: plain files in a folder that is not a package
need a loader by path (``importlib.util.spec_from_file_location``), which is all this module is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Iterable

from .registry import BrokenPlugin, RegistryError, _BROKEN, _error, discover

__all__ = ["ENV", "PluginFolderError", "load_folders", "use_folders", "loaded_folders", "folders_from_env", "fingerprint_files",
           "plugin_files", "PLUGIN_ATTR"]

#: The environment variable naming plug-in folders (``os.pathsep``-separated).
ENV = "HPO_BENCH_PLUGINS"
#: Module attribute that marks a plug-in module and holds its file (the registry's owner string uses it).
PLUGIN_ATTR = "__hpo_bench_plugin_file__"
_PACKAGE = "hpo_bench_plugins"
_LOADED: dict[Path, list[Path]] = {}


class PluginFolderError(ValueError):
    """A plug-in folder that does not exist or is not a folder (the message names it and where it came from)."""


def plugin_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that are loaded, in load order."""
    return [p for p in sorted(folder.glob("*.py"))
            if not p.name.startswith(("_", "test_", "template_")) and p.name != "conftest.py" and p.is_file()]


def folders_from_env() -> list[Path]:
    """The folders named by ``HPO_BENCH_PLUGINS`` (empty entries ignored)."""
    return [Path(x) for x in os.environ.get(ENV, "").split(os.pathsep) if x.strip()]


def _module_prefix(folder: Path) -> str:
    return f"{_PACKAGE}.f{hashlib.sha1(str(folder).encode()).hexdigest()[:12]}"


def _ensure_package(name: str) -> None:
    if name not in sys.modules:
        mod = types.ModuleType(name)
        mod.__path__ = []  # a namespace for the plug-in modules, never searched on disk
        sys.modules[name] = mod


def load_folders(folders: Iterable[str | Path], *, source: str = "plug-in folder") -> list[Path]:
    """Load every plug-in folder in ``folders`` (after the built-ins: :func:`~hpo_bench.core.registry.discover`).

    Returns the resolved folders. ``source`` says where they came from, for the error message.

    Raises:
        PluginFolderError: a folder does not exist.
        RegistryError: a plug-in registers a name that is already taken.
    """
    discover()
    out = []
    for f in folders:
        folder = Path(f).expanduser().resolve()
        if not folder.is_dir():
            raise PluginFolderError(f"{source} {str(f)!r} must be an existing folder of .py files, but "
                                    f"{'it is a file' if folder.exists() else 'it does not exist'}")
        out.append(folder)
        if folder in _LOADED:
            continue
        prefix = _module_prefix(folder)
        _ensure_package(_PACKAGE)
        _ensure_package(prefix)
        _LOADED[folder] = []
        for path in plugin_files(folder):
            name = f"{prefix}.{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            setattr(module, PLUGIN_ATTR, str(path))
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except RegistryError:
                del sys.modules[name]
                raise  # two owners of one name is an error, not a broken file
            except Exception as exc:  # one broken file must not hide the others
                del sys.modules[name]
                _BROKEN.append(BrokenPlugin(kind="task or tuner", source=str(path), error=_error(exc)))
                continue
            _LOADED[folder].append(path)
    return out


def use_folders(folders: Iterable[str | Path], *, source: str = "option --plugins") -> list[Path]:
    """:func:`load_folders`, and add them to ``HPO_BENCH_PLUGINS`` of this process, so that every process it
    starts (cell processes, the report's oracle workers, a suite's validation) loads them too."""
    loaded = load_folders(folders, source=source)
    have = [str(p.resolve()) for p in folders_from_env()]
    new = [str(p) for p in loaded if str(p) not in have]
    if new:
        os.environ[ENV] = os.pathsep.join([*have, *new])
    return loaded


def loaded_folders() -> list[Path]:
    """The plug-in folders loaded in this process, in load order."""
    return list(_LOADED)


def fingerprint_files() -> list[Path]:
    """Every file of the loaded plug-in folders that the loader imports (broken ones too), for the code
    fingerprint: editing a plug-in makes a run's finished cells stale, as editing the package does."""
    return [p for folder in _LOADED for p in plugin_files(folder)]
