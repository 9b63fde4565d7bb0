"""Registries of tasks, tuners and hypergradient methods.

Registration is explicit (a decorator); discovery imports every public module of
``hpo_bench.tasks`` and ``hpo_bench.baselines`` (files named ``_*`` or ``template_*`` are
skipped) and the entry points of other packages (groups ``hpo_bench.tasks`` and
``hpo_bench.tuners``, each pointing at a class or a module that registers on import).
A second registration under a taken name is an error naming both owners.

Broken plug-ins. A module of those packages, or an entry point, that fails to import (a
missing dependency, a syntax error, any exception) does not stop discovery: it is recorded
as a :class:`BrokenPlugin` (file or entry point, exception type and message; see
:func:`broken_plugins`) and the rest is discovered. ``hpo-bench list`` reports each in one
line; asking for an unknown name of a kind a broken plug-in could have provided
(:meth:`Registry.get`, suite validation) names the broken file instead of only listing the
known names; the conformance kit reports each as one failing test.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

__all__ = [
    "Registry", "RegistryError", "UnknownNameError", "TASKS", "TUNERS", "METHODS", "BrokenPlugin",
    "register_task", "register_tuner", "register_method", "discover", "broken_plugins",
]

T = TypeVar("T")


class RegistryError(ValueError):
    """A name collision or an invalid registration."""


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class BrokenPlugin:
    """A plug-in module or entry point that failed to import during discovery.

    Attributes:
        kind: the registry it would have filled (``"task"``, ``"tuner"``, ``"hypergradient method"``).
        source: where it is: a file path (package modules) or ``entry point 'x' = 'mod:obj' (group ...,
            distribution ...)``.
        error: ``"<exception type>: <message>"``.
        name: the name it would have registered, where known (entry points); ``None`` for modules,
            which may register any names.
    """

    kind: str
    source: str
    error: str
    name: str | None = None

    def line(self) -> str:
        """One line for ``hpo-bench list`` and error messages."""
        return f"{self.kind} plug-in {self.source} failed to import: {self.error}"

    def could_provide(self, kind: str, name: str) -> bool:
        """Whether the missing ``kind`` name ``name`` might have come from this plug-in."""
        return kind in self.kind.split(" or ") and (self.name is None or self.name == name)


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}

    def add(self, name: str, obj: T) -> T:
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise RegistryError(f"{self.kind} names are non-empty [A-Za-z0-9_-] strings, but got {name!r}")
        module = getattr(obj, "__module__", "?")
        where = getattr(sys.modules.get(module), "__hpo_bench_plugin_file__", None) or module  # plug-in file
        origin = f"{where}{':' if where != module else '.'}{getattr(obj, '__qualname__', repr(obj))}"
        if name in self._items and self._origin[name] != origin:
            raise RegistryError(
                f"{self.kind} name {name!r} is already registered by {self._origin[name]}; "
                f"{origin} must use another name"
            )
        self._items[name] = obj
        self._origin[name] = origin
        return obj

    def get(self, name: str) -> T:
        discover()
        try:
            return self._items[name]
        except KeyError:
            hint = self.broken_hint(name)
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}"
                + (f"; {hint}" if hint else f"; known {self.kind}s: {', '.join(sorted(self._items)) or '(none)'}")
            ) from None

    def broken_hint(self, name: str) -> str | None:
        """For a name that is not registered: the broken plug-ins that could have provided it, in words, or ``None``."""
        discover()
        suspects = [b for b in _BROKEN if b.could_provide(self.kind, name)]
        if not suspects:
            return None
        return ("it may come from a plug-in that failed to import: " + "; ".join(b.line() for b in suspects)
                + " (fix or remove it; `hpo-bench list` shows what loaded)")

    def names(self) -> list[str]:
        discover()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        discover()
        return sorted(self._items.items())

    def origin(self, name: str) -> str:
        return self._origin[name]

    def __contains__(self, name: object) -> bool:
        discover()
        return name in self._items


TASKS: Registry[Any] = Registry("task")
TUNERS: Registry[Any] = Registry("tuner")
METHODS: Registry[Any] = Registry("hypergradient method")


def _decorator(reg: Registry, name: str | None) -> Callable[[T], T]:
    def deco(obj: T) -> T:
        reg.add(name or getattr(obj, "name", None) or obj.__name__, obj)
        return obj
    return deco


def register_task(cls=None, *, name: str | None = None):
    """Class decorator: ``@register_task`` registers under ``cls.name``."""
    return _decorator(TASKS, name)(cls) if cls is not None else _decorator(TASKS, name)


def register_tuner(cls=None, *, name: str | None = None):
    return _decorator(TUNERS, name)(cls) if cls is not None else _decorator(TUNERS, name)


def register_method(fn=None, *, name: str | None = None):
    return _decorator(METHODS, name)(fn) if fn is not None else _decorator(METHODS, name)


_DISCOVERED = False
#: package -> the kind of names its modules register
_PACKAGES = {"hpo_bench.hypergrad": "hypergradient method", "hpo_bench.tuners": "tuner", "hpo_bench.tasks": "task",
             "hpo_bench.baselines": "tuner", "hpo_bench.stochastic": "tuner"}
_ENTRY_GROUPS = {"hpo_bench.tasks": TASKS, "hpo_bench.tuners": TUNERS, "hpo_bench.methods": METHODS}
_BROKEN: list[BrokenPlugin] = []


def broken_plugins(kind: str | None = None) -> list[BrokenPlugin]:
    """The plug-ins that failed to import during discovery (of one ``kind``, or all), in discovery order."""
    discover()
    return [b for b in _BROKEN if kind is None or b.kind == kind]


def _error(exc: BaseException) -> str:
    """``"<type>: <first line of the message>"``: one line, whatever the exception."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _shown_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith(os.pardir) else rel


def _import_package_modules(pkg_name: str, kind: str) -> None:
    pkg = importlib.import_module(pkg_name)
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        if info.name.startswith("_") or info.name.startswith("template_"):
            continue
        try:
            importlib.import_module(f"{pkg_name}.{info.name}")
        except RegistryError:
            raise  # a name collision: two owners of one name is an error, not a broken file
        except Exception as exc:  # one broken file must not hide the others (nor stop `list` and the kit)
            finder_path = getattr(info.module_finder, "path", None)
            where = os.path.join(finder_path, info.name + ("/__init__.py" if info.ispkg else ".py")) \
                if finder_path else f"{pkg_name}.{info.name}"
            _BROKEN.append(BrokenPlugin(kind=kind, source=_shown_path(where), error=_error(exc)))


def discover(*, force: bool = False) -> None:
    """Import built-in modules and load entry-point plug-ins (once per process).

    A module or entry point that fails to import is recorded (:func:`broken_plugins`) and skipped;
    a name collision raises :class:`RegistryError`.
    """
    global _DISCOVERED
    if _DISCOVERED and not force:
        return
    _DISCOVERED = True
    _BROKEN.clear()
    for pkg, kind in _PACKAGES.items():
        _import_package_modules(pkg, kind)
    for group, reg in _ENTRY_GROUPS.items():
        for ep in entry_points(group=group):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
            source = f"entry point {ep.name!r} = {ep.value!r} (group {group!r}, distribution {dist!r})"
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plug-in is recorded, named, and skipped
                _BROKEN.append(BrokenPlugin(kind=reg.kind, source=source, error=_error(exc), name=ep.name))
                continue
            if not (isinstance(obj, type) or callable(obj)):
                _BROKEN.append(BrokenPlugin(kind=reg.kind, source=source, name=ep.name,
                                            error=f"it must point at a class or a function, but got "
                                                  f"{type(obj).__name__}"))
                continue
            reg.add(ep.name, obj)
    from .plugins import ENV, folders_from_env, load_folders

    if folders_from_env():  # plug-in folders named by the environment (also seen by cell processes)
        load_folders(folders_from_env(), source=f"{ENV} folder")
