"""The package's layers point downward: read from the import statements (``ast``), never by importing.

Every ``import``/``from ... import`` counts, at module level or inside a function, and so does
``importlib.import_module("<literal>")``. A layer is a package folder of ``hpo_bench`` when it
exists, else the flat modules listed for it (so these rules hold before and after a layout move).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "hpo_bench"

#: layer -> (its package folder under hpo_bench/, the flat module stems it has where the folder does not exist)
LAYERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "core": ("core", ("space", "task", "tuner", "records", "registry", "options", "solvers", "_threads")),
    "running": ("running", ("harness", "cell_process", "run_folder", "provenance", "executors", "suite", "progress",
                            "target", "_instances", "_worker_init")),
    "analysis": ("analysis", ("oracle", "check", "sweep", "summary", "notebook", "tune")),
    "report": ("report", ()),
    "cli": ("", ("cli",)),
}

#: layer -> the layers its modules must never import; ``ALL_BUT_SELF``: nothing of hpo_bench outside the layer.
ALL_BUT_SELF = "everything of hpo_bench outside the layer"
FORBIDDEN: dict[str, object] = {
    "core": ALL_BUT_SELF,
    "running": ("analysis", "report", "cli"),
}

#: Modules that may import the CLI (``python -m hpo_bench`` runs it).
CLI_IMPORTERS = {f"{PACKAGE}.__main__", f"{PACKAGE}.cli"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_files() -> list[Path]:
    return sorted(p for p in (ROOT / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts)


def layer_modules(layer: str) -> set[str]:
    """Dotted names of the modules of ``layer``: its folder's modules if the folder exists, else its flat modules."""
    folder, flat = LAYERS[layer]
    pkg = ROOT / PACKAGE / folder
    if folder and pkg.is_dir():
        return {_module_name(p) for p in pkg.rglob("*.py") if "__pycache__" not in p.parts}
    return {f"{PACKAGE}.{stem}" for stem in flat if (ROOT / PACKAGE / f"{stem}.py").is_file()}


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def imports_in(text: str, module: str, *, is_package: bool = False) -> set[str]:
    """Dotted names of the hpo_bench modules (or packages) that ``text``, the source of ``module``, imports anywhere."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from pkg import submodule`
                if _is_module(f"{target}.{alias.name}"):
                    found.add(f"{target}.{alias.name}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _sources() -> dict[str, tuple[str, bool]]:
    """Every module of the package: dotted name -> (its source, whether it is a package's ``__init__``)."""
    return {_module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py") for p in _package_files()}


def _in(name: str, modules: set[str]) -> bool:
    """``name`` is one of ``modules`` or inside one of them (``hpo_bench.report`` covers ``hpo_bench.report.x``)."""
    return any(name == m or name.startswith(m + ".") for m in modules)


def violations(layer: str, sources: dict[str, tuple[str, bool]] | None = None) -> list[str]:
    """``"<module> imports <name>"`` for every import of a module of ``layer`` that :data:`FORBIDDEN` refuses."""
    own = layer_modules(layer)
    rule = FORBIDDEN[layer]
    banned = set().union(*(layer_modules(other) for other in rule)) if rule != ALL_BUT_SELF else set()
    out = []
    for module, (text, is_package) in sorted((sources or _sources()).items()):
        if module not in own:
            continue
        for name in sorted(imports_in(text, module, is_package=is_package)):
            bad = (not _in(name, own)) if rule == ALL_BUT_SELF else (_in(name, banned) and not _in(name, own))
            if bad:
                out.append(f"{module} imports {name}")
    return out


def cli_importers(sources: dict[str, tuple[str, bool]] | None = None) -> list[str]:
    """``"<module> imports <name>"`` for every import of the CLI outside :data:`CLI_IMPORTERS`."""
    cli = layer_modules("cli")
    return [f"{module} imports {name}" for module, (text, is_package) in sorted((sources or _sources()).items())
            if module not in CLI_IMPORTERS for name in sorted(imports_in(text, module, is_package=is_package))
            if _in(name, cli)]


def test_every_layer_is_found():
    for layer in LAYERS:
        assert layer_modules(layer), f"no module of layer {layer!r}: retarget LAYERS at the top of this file"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_never_imports_the_layers_above_it(layer):
    assert violations(layer) == []


def test_no_module_imports_the_cli():
    assert cli_importers() == []


@pytest.mark.parametrize("planted, layer", [
    ("def _late():\n    from ..running import harness\n", "core"),     # relative, inside a function
    ("def _late():\n    import hpo_bench.report.tables\n", "core"),    # absolute, inside a function
    ("import importlib\nimportlib.import_module('hpo_bench.analysis.oracle')\n", "core"),
    ("from ..analysis import oracle\n", "running"),
    ("def _late():\n    from .. import cli\n", "running"),
])
def test_a_planted_forbidden_import_is_caught(planted, layer):
    """The reader these tests rely on: one forbidden import added to a real module of the layer is reported."""
    sources = _sources()
    module = min(m for m in layer_modules(layer) if not sources[m][1])  # a plain module, not an __init__
    text, is_package = sources[module]
    assert violations(layer, {**sources, module: (text + "\n\n" + planted, is_package)}) != []
    if "cli" in planted:
        assert cli_importers({**sources, module: (text + "\n\n" + planted, is_package)}) != []
