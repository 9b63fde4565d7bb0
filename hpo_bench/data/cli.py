"""``hpo-bench data``: list, fetch, import and locate datasets (:mod:`hpo_bench.data`).

Every refusal is one line on stderr, ``hpo-bench: error: ...``: exit status 2 for input that is
refused (unknown name, checksum mismatch, no checksum without ``--no-verify``, a file that does
not parse), 1 for a download that failed.
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import _registry, _store
from ._errors import DataError

data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, context_settings={"max_content_width": 120},
                       help="Datasets: list the registry and what is cached, fetch (pooch, checksums), import local "
                       "copies for machines without internet, print where a dataset lives (docs/data.md).")
_console = Console(width=None if sys.stdout.isatty() else 180)


def _fail(exc: DataError) -> typer.Exit:
    print(f"hpo-bench: error: {exc}", file=sys.stderr)
    return typer.Exit(exc.exit_code)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@data_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
             task: Optional[str] = typer.Option(None, "--task", help="Only sets of this kind: binary, multiclass "
                                                "or regression.")) -> None:
    """Registered datasets: name, kind, shape, density, size and whether they are cached."""
    if task is not None and task not in ("binary", "multiclass", "regression"):
        raise _fail(DataError(f"option --task must be one of ['binary', 'multiclass', 'regression'], but got "
                              f"{task!r}"))
    rows = [_store.status(e.name) for e in _registry.entries(task=task)]
    if as_json:
        for r, e in zip(rows, _registry.entries(task=task)):
            r.update(title=e.title, format=e.format, split=e.split, licence=e.licence, citation=e.citation,
                     files=[{"name": f.name, "url": f.url, "checksum": f.checksum, "size": f.size, "role": f.role}
                            for f in e.files])
        print(json.dumps({"data_dir": str(_store.data_dir()), "datasets": rows}, indent=1))
        return
    tab = Table(title=f"Datasets (cache: {_store.data_dir()})")
    for col in ("name", "kind", "task", "shape (n x p)", "density", "size", "cached", "verified"):
        tab.add_column(col)
    for r in rows:
        dens = "?" if r["density"] is None else f"{'~' if r['density_nominal'] else ''}{r['density']:.3g}"
        ver = {None: "-", True: "yes", False: "NO (--no-verify)"}[r["verified"]]
        tab.add_row(r["name"], r["kind"], r["task"], f"{r['shape'][0]} x {r['shape'][1]}", dens, _size(r["size"]),
                    r["cached"], ver)
    _console.print(tab)
    _console.print("density: ~ nominal (measured once cached); size: of the source files")


@data_app.command("path")
def path_cmd(name: str = typer.Argument(..., help="A registered dataset name.")) -> None:
    """Print the folder that holds a dataset's files (its source files, or its generated arrays)."""
    try:
        print(_store.path_of(name))
    except DataError as exc:
        raise _fail(exc) from None


@data_app.command("fetch")
def fetch_cmd(names: List[str] = typer.Argument(..., help="Registered dataset names."),
              no_verify: bool = typer.Option(False, "--no-verify", help="Accept files without a registered "
                                             "checksum (the cache records them as unverified)."),
              retries: int = typer.Option(2, "--retries", min=0, help="More tries after a failed or interrupted "
                                          "download.")) -> None:
    """Download datasets into the cache (pooch), check their checksums, and parse them once."""
    try:
        for n in names:  # every name is checked before anything is downloaded
            _registry.get(n)
        for n in names:
            d = _store.fetch(n, verify=not no_verify, retries=retries)
            how = {None: "", True: ", verified", False: ", NOT verified (--no-verify)"}[d.verified]
            print(f"{n}: {d.entry.kind}, cached in {_store.path_of(n)}{how}")
    except DataError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        print(f"hpo-bench: error: writing the data cache {str(_store.data_dir())!r}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


@data_app.command("import")
def import_cmd(name: str = typer.Argument(..., help="A registered dataset name."),
               files: List[str] = typer.Argument(..., help="The dataset's source files (named as registered, "
                                                 "see `hpo-bench data list --json`) or a folder holding them."),
               no_verify: bool = typer.Option(False, "--no-verify", help="Import without checking checksums "
                                              "(the cache records that they were not verified).")) -> None:
    """Import local copies of a dataset's files (machines without internet): checked, copied, parsed once."""
    try:
        d = _store.import_files(name, files, verify=not no_verify)
    except DataError as exc:
        raise _fail(exc) from None
    except OSError as exc:
        print(f"hpo-bench: error: importing dataset {name!r}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"{name}: imported into {_store.path_of(name)}"
          + (", verified" if d.verified else ", NOT verified (--no-verify)"))
