"""Registries of tasks, tuners and hypergradient methods.

Registration is explicit (a decorator); discovery imports every public module of
``hpo_bench.tasks`` and ``hpo_bench.baselines`` (files named ``_*`` or ``template_*`` are
skipped) and the entry points of other packages (groups ``hpo_bench.tasks`` and
``hpo_bench.tuners``, each pointing at a class or a module that registers on import).
A second registration under a taken name is an error naming both owners.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

__all__ = [
    "Registry", "RegistryError", "UnknownNameError", "TASKS", "TUNERS", "METHODS",
    "register_task", "register_tuner", "register_method", "discover",
]

T = TypeVar("T")


class RegistryError(ValueError):
    """A name collision or an invalid registration."""


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}

    def add(self, name: str, obj: T) -> T:
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise RegistryError(f"{self.kind} names are non-empty [A-Za-z0-9_-] strings, but got {name!r}")
        origin = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
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
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(sorted(self._items)) or '(none)'}"
            ) from None

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
_PACKAGES = ("hpo_bench.hypergrad", "hpo_bench.tuners", "hpo_bench.tasks", "hpo_bench.baselines")
_ENTRY_GROUPS = {"hpo_bench.tasks": TASKS, "hpo_bench.tuners": TUNERS, "hpo_bench.methods": METHODS}


def _import_package_modules(pkg_name: str) -> None:
    pkg = importlib.import_module(pkg_name)
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        if info.name.startswith("_") or info.name.startswith("template_"):
            continue
        importlib.import_module(f"{pkg_name}.{info.name}")


def discover(*, force: bool = False) -> None:
    """Import built-in modules and load entry-point plug-ins (once per process)."""
    global _DISCOVERED
    if _DISCOVERED and not force:
        return
    _DISCOVERED = True
    for pkg in _PACKAGES:
        _import_package_modules(pkg)
    for group, reg in _ENTRY_GROUPS.items():
        for ep in entry_points(group=group):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plug-in names itself instead of a bare traceback
                raise RegistryError(f"plug-in entry point {ep.name!r} = {ep.value!r} (group {group!r}, "
                                    f"distribution {dist!r}) failed to load: {type(exc).__name__}: {exc}") from exc
            if not (isinstance(obj, type) or callable(obj)):
                raise RegistryError(f"plug-in entry point {ep.name!r} = {ep.value!r} (group {group!r}, distribution "
                                    f"{dist!r}) must point at a class or a function, but got {type(obj).__name__}")
            reg.add(ep.name, obj)
