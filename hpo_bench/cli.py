"""The ``hpo-bench`` command line.

Bad input (unknown names, malformed suite files, bad parameters or bounds) ends with one
line on stderr and exit status 2, never a traceback. ``check`` exits 1 when a method that
claims exactness (or the reference) disagrees beyond tolerance.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import sys
import threading
import tomllib
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup
from rich.table import Table

from .core.registry import METHODS, TASKS, TUNERS, RegistryError, UnknownNameError, broken_plugins

# Help is rendered by click's plain formatter (rich_markup_mode=None): typer's rich formatter parses every help
# text as console markup (it ate "[dist]" in "pip install 'hpo-bench[dist]'") and prints a `<bool>` type beside
# flags, which take no value. HELP_SETTINGS lets help lines use a wide terminal instead of click's 80 columns.
HELP_SETTINGS = {"max_content_width": 120}
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings=HELP_SETTINGS,
                  help="Hyperparameter-optimization benchmarks with ground-truth hypergradients.")
console = Console(width=None if sys.stdout.isatty() else 180)
#: Exceptions that are bad input (one line, exit 2), as ``(module, class name)``. They are looked up only in modules
#: already imported when one is raised (an exception of a module never imported cannot have been raised), so the
#: commands that need no task (``plot``, ``--help``) do not import torch through ``space``, ``task`` or ``suite``.
BAD_INPUT_NAMES = (("hpo_bench.core.registry", "UnknownNameError"), ("hpo_bench.running.suite", "SuiteError"),
                   ("hpo_bench.core.space", "SpaceError"), ("hpo_bench.core.task", "TaskParamError"),
                   ("hpo_bench.core.tuner", "TunerParamError"), ("hpo_bench.core.registry", "RegistryError"),
                   ("hpo_bench.core.plugins", "PluginFolderError"))


def _bad_input_types() -> tuple[type, ...]:
    """The classes of :data:`BAD_INPUT_NAMES` whose modules are imported."""
    return tuple(getattr(sys.modules[mod], name) for mod, name in BAD_INPUT_NAMES if mod in sys.modules)


class BadInput(Exception):
    """Raised by commands for input they reject; printed as one line, exit 2."""


class IOFailure(Exception):
    """Raised by commands when a file cannot be read or written; printed as one line, exit 1."""


#: Exit status of `run` and `tune` when a cell ended with error, timeout or oom (or its job was lost).
EXIT_CELLS_FAILED = 3


def _io_failure(exc: OSError, what: str, todo: str = "") -> IOFailure:
    """One line for an OSError: what failed, the file, the reason, and (``todo``) what to do."""
    if exc.filename is None or str(exc.filename) in str(exc):
        text = str(exc)
    else:
        text = f"{exc.strerror or exc} ({str(exc.filename)!r})"
    return IOFailure(f"{what}: {text}" + (f"; {todo}" if todo else ""))


_RUN_IO_TODO = ("free space (or raise the file-size limit) or choose a writable --out, then run the same command "
                "with --resume: finished cells are kept")


def _print_version(value: bool) -> None:
    """``--version``: print ``hpo-bench <version>`` (the installed distribution's metadata) and exit 0."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("hpo-bench")
    except PackageNotFoundError:
        print("hpo-bench: error: the distribution 'hpo-bench' is not installed, so it has no version "
              "(install it with `pip install -e .`)", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"hpo-bench {v}")
    raise typer.Exit(0)


@app.callback()
def _main_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the installed version (hpo-bench X.Y.Z) and exit."),
) -> None:
    """Options of ``hpo-bench`` itself, before any command."""


def _parse_params(items: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise BadInput(f"{what} must look like key=value (TOML value), but got {item!r}")
        key, val = item.split("=", 1)
        if not key.strip():
            raise BadInput(f"{what} must look like key=value with a non-empty key, but got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {val}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = val  # a bare word is a string
    return out


# reST inline markup, outermost first: ``literal``, :role:`text`, `text <target>`_, `text`_, **strong**, *emphasis*,
# `interpreted`. Each keeps its text.
_REST_INLINE = (
    (re.compile(r"``(.+?)``"), r"\1"),
    (re.compile(r":[\w.+-]+:`~?([^`<]*?)\s*(?:<[^`>]*>)?`"), r"\1"),
    (re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?"), r"\1"),
    (re.compile(r"`([^`]+)`__?"), r"\1"),
    (re.compile(r"\*\*(\S(?:.*?\S)?)\*\*"), r"\1"),
    (re.compile(r"(?<![\w*])\*(\S(?:.*?\S)?)\*(?![\w*])"), r"\1"),
    (re.compile(r"`([^`]+)`"), r"\1"),
)


def plain_summary(doc: str | None) -> str:
    """The first paragraph of a docstring as one line of plain text, for ``hpo-bench list``.

    Guarantees: no line breaks; reST inline markup (````literal````, ``*emphasis*``, ``**strong**``,
    ```interpreted```, ``:role:`text```, hyperlink references) replaced by its text; ``""`` for no docstring.
    """
    import inspect

    paragraph = inspect.cleandoc(doc or "").split("\n\n", 1)[0]
    text = " ".join(paragraph.split())
    for pattern, repl in _REST_INLINE:
        text = pattern.sub(repl, text)
    return text


# ----------------------------------------------------------------------- list
#: ``--plugins DIR`` of every command that builds tasks or tuners: one definition, so the commands agree.
PluginsOpt = Annotated[Optional[list[Path]], typer.Option(
    "--plugins", help="A folder of plug-in .py files (tasks, tuners); repeatable. Also: HPO_BENCH_PLUGINS, a "
    "suite's `plugins`.")]


def _use_plugins(folders: Optional[list[Path]]) -> None:
    """Load ``--plugins`` folders (and pass them on to every process this command starts)."""
    if folders:
        from .core.plugins import use_folders

        use_folders(folders)


def _run_plugins(run_dir: Path) -> list[Path]:
    """The plug-in folders a run folder's suite used (``provenance.json``), those that still exist."""
    try:
        prov = json.loads((run_dir / "provenance.json").read_text())
    except (OSError, ValueError):
        return []
    return [Path(p) for p in prov.get("plugins") or [] if Path(p).is_dir()]


_INIT_SUITE = """# A suite over this folder's plug-ins (plugins = ["."]) and two built-in tuners for comparison.
name = "my_suite"
plugins = ["."]
seeds = [0, 1]

[budget]
steps = 20

[[task]]
name = "my_task"
params = { n = 100, p = 5 }

[[tuner]]
name = "my_tuner"

[[tuner]]
name = "random"

[[tuner]]
name = "gradient"
label = "cg"
params = { method = "cg" }
"""

_INIT_README = """# My hpo-bench plug-ins

`my_task.py` (a task: per-feature ridge with a certified reference) and `my_tuner.py` (a tuner: a (1+1)
evolution strategy) are plain files that hpo-bench loads from this folder: rename the classes and their
`name`, then replace the data, the losses or the search with yours. Every `.py` file here is loaded except
`_*.py`, `test_*.py`, `template_*.py` and `conftest.py`. A name that a built-in or another plug-in already
has is refused, naming both files.

From this folder, in the environment that has hpo-bench installed:

```bash
@ACTIVATE@
hpo-bench check --plugins . -t my_task       # 1. the task's reference vs finite differences, every method
pytest --hpo-bench-plugins .                 # 2. the conformance kit on this folder's tasks and tuners
hpo-bench run suite.toml --out run           # 3. the suite (its `plugins = ["."]` loads this folder)
hpo-bench report run                         # 4. tables, figures, summary.md, report.html in run/report
```

A tuner that an Optuna sampler can drive needs less code: subclass `hpo_bench.OptunaTuner` and return the
sampler from `make_sampler`, or name the sampler in the suite with the built-in `optuna` tuner
(`params = { sampler = "optuna.samplers.QMCSampler" }`). Outside this folder, `--plugins DIR` or
`HPO_BENCH_PLUGINS=DIR` loads it for any command.
"""


def _activate_line() -> str:
    """The shell line that enters the environment running this command (its venv's activate script, if any)."""
    if sys.prefix != sys.base_prefix:  # a virtual environment: name its activate script by absolute path
        return f"source {Path(sys.prefix).resolve() / 'bin' / 'activate'}"
    return "# (hpo-bench is installed in this Python; no environment to activate)"


@app.command("init")
def init_cmd(
    folder: Path = typer.Argument(..., help="The folder to write (created; must be empty unless --force)."),
    force: bool = typer.Option(False, "--force", help="Write into a folder that is not empty (files of the same "
                               "names are replaced)."),
) -> None:
    """Write a plug-in folder: a template task, a template tuner, a suite that uses both, and a README."""
    import importlib.util

    if folder.exists() and not folder.is_dir():
        raise BadInput(f"init: {str(folder)!r} must be a folder, but it is a file")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise BadInput(f"init: folder {str(folder)!r} must be empty (or pass --force to write into it)")
    sources = {}
    for module, target in (("hpo_bench.tasks.template_task", "my_task.py"),
                           ("hpo_bench.baselines.template_tuner", "my_tuner.py")):
        spec = importlib.util.find_spec(module)  # the shipped templates, not a copy of them
        sources[target] = Path(spec.origin).read_text()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        readme = _INIT_README.replace("@ACTIVATE@", _activate_line())
        for name, text in {**sources, "suite.toml": _INIT_SUITE, "README.md": readme}.items():
            (folder / name).write_text(text)
    except OSError as exc:
        raise _io_failure(exc, f"cannot write {str(folder)!r}", "choose another folder") from None
    console.print(f"wrote {folder}: my_task.py, my_tuner.py, suite.toml, README.md (next: cd {folder}; see README.md)")


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    plugins: PluginsOpt = None,
) -> None:
    """Tasks, tuners, hypergradient methods and named suites."""
    _use_plugins(plugins)
    from .running.suite import load_suite, named_suites

    tasks = [{"name": n, "tags": sorted(getattr(c, "tags", ())), "origin": TASKS.origin(n),
              "summary": plain_summary(c.__doc__)} for n, c in TASKS.items()]
    tuners = [{"name": n, "tags": sorted(getattr(c, "tags", ())), "origin": TUNERS.origin(n),
               "summary": plain_summary(c.__doc__)} for n, c in TUNERS.items()]
    methods = [{"name": n, "kind": f.info.kind, "exact": f.info.exact, "knob": f.info.knob,
                "summary": plain_summary(f.info.summary)} for n, f in METHODS.items()]
    suites = []
    for n, p in sorted(named_suites().items()):
        s = load_suite(str(p), validate=False)
        suites.append({"name": n, "cells": len(s.cells()), "description": s.description})
    broken = broken_plugins()  # modules / entry points that failed to import: one line each, the rest is listed
    for b in broken:
        print(f"hpo-bench: warning: {b.line()}", file=sys.stderr)
    if as_json:
        print(json.dumps({"tasks": tasks, "tuners": tuners, "methods": methods, "suites": suites,
                          "broken_plugins": [{"kind": b.kind, "source": b.source, "error": b.error, "name": b.name}
                                             for b in broken]}, indent=2))
        return
    for title, rows, cols in (("Tasks", tasks, ("name", "tags", "summary")),
                              ("Tuners", tuners, ("name", "tags", "summary")),
                              ("Hypergradient methods", methods, ("name", "kind", "exact", "knob", "summary")),
                              ("Suites", suites, ("name", "cells", "description"))):
        table = Table(title=title, title_justify="left")
        for c in cols:
            table.add_column(c)
        for r in rows:
            table.add_row(*[", ".join(r[c]) if isinstance(r[c], list) else str(r[c]) for c in cols])
        console.print(table)


# ---------------------------------------------------------------------- check
def _fmt(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2e}"


@app.command("check")
def check_cmd(
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="Task(s) to check (default: all)."),
    method: Optional[list[str]] = typer.Option(None, "--method", "-m", help="Method(s) (default: all)."),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="Task parameter key=value (TOML)."),
    points: int = typer.Option(6, help="Hyperparameter points per task: init, corners, then seeded uniform ones."),
    quick: bool = typer.Option(False, "--quick", help="Check the small check_params instances, not the default size."),
    all_points: bool = typer.Option(False, "--all-points", help="Print every point, not the worst per task x method."),
    seed: int = typer.Option(0, help="Seed of the task data and the points."),
    exact_tol: float = typer.Option(1e-8, help="Max rel. error of exact methods vs the reference."),
    fd_tol: float = typer.Option(1e-6, help="Max rel. error of the reference vs finite differences."),
    device: str = typer.Option("cpu", help="Torch device."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    plugins: PluginsOpt = None,
) -> None:
    """Gradient check: every method vs the reference vs central finite differences, across the box."""
    _use_plugins(plugins)
    from .analysis.check import build_check_task, check_task, worst_rows

    if points < 1:
        raise BadInput(f"--points must be >= 1, but got {points}")
    names = task or TASKS.names()
    for n in names:
        TASKS.get(n)
    for m in method or []:
        METHODS.get(m)
    params = _parse_params(param, "--param")
    rows = []
    small = []
    for n in names:
        # a non-convex task's default-size solve is a continuation (minutes per point): unless named, the small one
        q = quick or (not task and "non-convex" in TASKS.get(n).tags)
        if q and not quick:
            small.append(n)
        t = build_check_task(n, params, device=device, seed=seed, quick=q)
        rows.extend(check_task(t, methods=method, n_points=points, seed=seed, exact_tol=exact_tol, fd_tol=fd_tol))
    failed = [r for r in rows if r.verdict == "FAIL"]
    worst = worst_rows(rows)
    counts = {v: sum(r.verdict == v for r in rows) for v in ("uncertified", "unconverged", "no-ref", "skipped")}
    if as_json:
        print(json.dumps({"rows": [r.as_dict() for r in rows], "worst": [r.as_dict() for r in worst],
                          "failed": len(failed), "small_instance": small,
                          **{k.replace("-", "_"): c for k, c in counts.items()}}, indent=2))
    else:
        n_pts = len({(r.task, r.point) for r in rows})
        what = "every point" if all_points else f"worst of {n_pts} points per task x method"
        table = Table(title=f"Hypergradient check (float64, {'check_params' if quick else 'default-size'} "
                            f"instances, {what}): rel. error vs reference (and the method's own bound) and vs "
                            "finite differences", title_justify="left")
        for c in ("task", "pt", "λ", "method", "kind", "err vs ref", "bound", "err vs FD", "cosine", "sign",
                  "HVPs", "ms", "verdict", "note"):
            table.add_column(c, justify="right" if c in ("err vs ref", "bound", "err vs FD", "HVPs", "ms") else "left")
        for r in (rows if all_points else worst):
            style = "red" if r.verdict == "FAIL" else ("green" if r.verdict == "pass" else None)
            hp = ", ".join(f"{v:.4g}" for v in r.hp[:3]) + (" …" if len(r.hp) > 3 else "")
            table.add_row(r.task, str(r.point), hp, r.method, r.kind, _fmt(r.rel_error_ref), _fmt(r.error_bound),
                          _fmt(r.rel_error_fd), f"{r.cosine:.4f}", f"{r.sign_agree:.2f}", str(r.hvp),
                          f"{r.time_ms:.2f}", r.verdict, r.note, style=style)
        console.print(table)
        if small:
            console.print(f"checked at their small check_params instance (non-convex: a default-size solve takes "
                          f"minutes per point; name it with --task to check its default size): {', '.join(small)}")
        console.print(f"{len(rows)} rows, {len(failed)} failed (exact methods: rel. error <= {exact_tol:g} and <= "
                      f"their own bound; reference vs FD <= {fd_tol:g} beyond FD's own noise; approximate methods "
                      f"are reported, not failed); {counts['unconverged']} unconverged (an exact method's bound above "
                      f"its tolerance), {counts['uncertified']} uncertified (no certified bound), "
                      f"{counts['no-ref']} points without a reference, {counts['skipped']} skipped")
    if failed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------ run


def _run_options(workers: str | None, dask: str | None, threads: int | None, timeout: float | None, resume: bool,
                 force: bool, retry_failed: bool) -> int | None:
    """Check the run options before anything starts (:func:`hpo_bench.running.harness.check_run_options`);
    return the number of local workers (or ``None``)."""
    from .running.harness import check_run_options

    try:
        return check_run_options(workers, dask, threads, timeout, resume, force, retry_failed,
                                 spell=lambda name: "--" + name.replace("_", "-"))
    except ValueError as exc:
        raise BadInput(str(exc)) from None


# Options of every command that runs cells through the harness (`run`, `sweep frontier`, `sweep scaling`): one
# definition each, so their names, rules and help cannot drift apart.
WorkersOpt = Annotated[Optional[str], typer.Option(
    "--workers", "-w", help="Run N cells at a time, each in its own process ('auto': one per usable CPU). Default: "
    "`run` runs them one at a time in this process (for debugging), a sweep in one cell process at a time (cells "
    "on a shared machine slow each other's clocks). With `run --dask local`: the number of Dask workers.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", help="Torch threads per cell, on every executor (default 1: small cells run fastest on one "
    "thread; run.log says why).")]
TimeoutOpt = Annotated[Optional[float], typer.Option(
    "--timeout", help="Hard wall-clock seconds per cell; overrides the suite's `timeout` (default 10 x budget "
    "seconds + 60, else 3600).")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue the run (in --out; a sweep's: its run folder): keep finished cells, run the rest. "
    "Refuses if the suite file or the code changed (see --force).")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="With --resume: resume although the suite file or the code changed (unchanged cells are "
    "kept, changed ones run again).")]
RetryFailedOpt = Annotated[bool, typer.Option(
    "--retry-failed", help="With --resume: run cells that ended with error, timeout or oom again.")]


@app.command("run")
def run_cmd(
    suite: str = typer.Argument(..., help="A named suite (see `hpo-bench list`) or a path to a suite TOML."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (records.parquet, cells/, provenance.json, "
                             "run.log)."),
    workers: WorkersOpt = None,
    dask: Optional[str] = typer.Option(None, "--dask", help="Run on Dask: 'local' starts a LocalCluster here, "
                                       "tcp://host:port joins a running scheduler (pip install 'hpo-bench[dist]')."),
    threads: ThreadsOpt = None,
    timeout: TimeoutOpt = None,
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    retry_failed: RetryFailedOpt = False,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display; only print where results went."),
    allow_failures: bool = typer.Option(False, "--allow-failures", help="Exit 0 even if cells ended with error, "
                                        "timeout or oom (default: exit 3)."),
    plugins: PluginsOpt = None,
) -> None:
    """Run a suite: every task x tuner x seed cell, serially, in worker processes, or on Dask.

    Exit status: 0 when every cell finished (ok or diverged); 1 on an I/O failure (disk full, folder not
    writable); 2 on bad input; 3 when a cell ended with error, timeout or oom, or its executor lost it (unless
    --allow-failures); 128+N when stopped by signal N (continue with --resume).
    """
    from .running.executors import ProcessPool, SerialExecutor, dask_executor
    from .running.harness import RunFolderError, RunFolderIOError, check_run_folder, run_suite
    from .running.progress import make_reporter
    from .running.suite import load_suite
    from .analysis.summary import summarize

    n_workers = _run_options(workers, dask, threads, timeout, resume, force, retry_failed)
    _use_plugins(plugins)
    s = load_suite(suite)
    if dask is None:
        import torch

        dev = torch.device(s.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BadInput(f"suite {s.name!r}: device {s.device!r} is not available on this machine (no CUDA); "
                           "set `device = \"cpu\"` or run on a machine with a GPU")
    try:
        check_run_folder(out, s, resume=resume, force=force)
    except RunFolderError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise _io_failure(exc, f"cannot read the run folder {str(out)!r}", "choose another --out") from None

    dask_run = None
    if dask is not None:
        try:
            dask_run = dask_executor(dask, n_workers=n_workers)
        except (OSError, TimeoutError) as exc:
            raise BadInput(f"option --dask {dask!r}: cannot reach the scheduler ({exc})") from None
        executor: Any = dask_run
    elif n_workers is not None:
        executor = ProcessPool(n_workers)
    else:
        executor = SerialExecutor()
    stopped_by = [signal.SIGINT]

    def _terminate(signum, frame):  # SIGTERM (kill, SLURM's scancel), SIGHUP (a closed terminal): like Ctrl-C
        stopped_by[0] = signum
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    old_handlers = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGHUP)} if in_main else {}
    try:
        res = run_suite(s, out, argv=sys.argv, executor=executor, resume=resume, force=force,
                        retry_failed=retry_failed, timeout=timeout, threads=threads,
                        reporter=make_reporter(console, quiet=quiet))
    except RunFolderError as exc:  # the folder changed since the check (another run started in it)
        raise BadInput(str(exc)) from None
    except OSError as exc:  # disk full, file-size limit, cells/ not writable: finished cells are kept
        if isinstance(exc, RunFolderIOError):
            raise IOFailure(str(exc)) from None
        raise _io_failure(exc, f"cannot write the run folder {str(out)!r}", _RUN_IO_TODO) from None
    except KeyboardInterrupt:
        n_done = len(list((out / "cells").glob("*.parquet")))
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(f"hpo-bench: stopped by {signal.Signals(stopped_by[0]).name}; {n_done} finished cells are in "
                  f"{str(out / 'cells')!r}: run the same command with --resume to continue", file=sys.stderr)
        raise typer.Exit(128 + stopped_by[0]) from None
    finally:
        for sig, old in old_handlers.items():
            signal.signal(sig, old)
        if dask_run is not None:
            dask_run.close()
        else:
            executor.shutdown(wait=True)
    if not quiet:
        console.print(summarize(res.frame))
    bad = {k: v for k, v in res.statuses.items() if v != "ok"}
    kept = f"; {len(res.skipped)} cells kept from before" if res.skipped else ""
    console.print(f"records: {res.records_path} ({len(res.frame)} rows); provenance: {res.provenance_path}; "
                  f"log: {res.log_path}{kept}"
                  + (f"; {len(bad)} cells not ok: {', '.join(f'{k}={v}' for k, v in bad.items())}" if bad else ""))
    _exit_for_failures(res, allow_failures)


def _exit_for_failures(res: Any, allow_failures: bool) -> None:
    """One line on stderr and exit 3 if a cell failed or was lost (unless ``allow_failures``)."""
    failed = res.failed
    if not failed:
        return
    lost = [c for c in res.lost if c in failed]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(Counter(failed.values()).items()))
    what = (f"{len(lost)} of them lost to an executor failure (the scheduler or a worker went away, see run.log), "
            if lost else "")
    line = (f"{len(failed)} of {len(res.statuses)} cells did not finish ({counts}); {what}rerun them with the same "
            "command plus --resume --retry-failed")
    if allow_failures:
        console.print(f"note: {line} (exit 0: --allow-failures)")
        return
    print(f"hpo-bench: error: {line}", file=sys.stderr)
    raise typer.Exit(EXIT_CELLS_FAILED)


@app.command("show")
def show_cmd(run_dir: Path = typer.Argument(..., help="A run folder written by `hpo-bench run`.")) -> None:
    """Summarise a finished run folder (one row per task x tuner, mean over seeds)."""
    import pandas as pd

    from .analysis.summary import summarize, time_breakdown

    path = run_dir / "records.parquet"
    if not path.is_file():
        raise BadInput(f"{str(path)!r} not found: is {str(run_dir)!r} a run folder written by `hpo-bench run`?")
    from .core.records import RecordsFileError, read_records_file

    try:
        df = read_records_file(path)
    except RecordsFileError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise _io_failure(exc, f"cannot read {str(path)!r}") from None
    console.print(summarize(df))
    if "measure_s" in df.columns:  # runs written before the column existed have no breakdown
        t = time_breakdown(df)
        console.print(f"cell time ({t['cells']} cells): {t['wall_s']:.2f} s wall = tuners {t['tuner_s']:.2f} s + "
                      f"measurements {t['measure_s']:.2f} s + harness {t['harness_s']:.2f} s "
                      f"({t['harness_share']:.1%})")


@app.command("notebook")
def notebook_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Replay the seed notebook: its printed numbers vs ours, then what its hypergradient gets right and wrong."""
    from .analysis.notebook import diagnose, render, replay

    rep = replay()
    diag = diagnose()
    if as_json:
        print(json.dumps({"replay": rep, "diagnosis": diag}, indent=2, default=float))
    else:
        render(console, rep, diag)
    if not all(r["match"] for r in rep):
        raise typer.Exit(1)


# --------------------------------------------------------------------- tune
@app.command("tune")
def tune_cmd(
    suite: str = typer.Argument(..., help="A named suite or a path to a suite TOML with a [tune] step."),
    out: Path = typer.Option(..., "--out", "-o", help="A new run folder; tune/ in it gets the tuning cells and "
                             "choices.json."),
    workers: int = typer.Option(1, "--workers", "-w", help="Cells at a time, each in its own process "
                                "(1: serially in this process)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads per cell (default 1, as for "
                                          "`run`)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print where results went."),
    allow_failures: bool = typer.Option(False, "--allow-failures", help="Exit 0 even if cells of the clean run "
                                        "ended with error, timeout or oom (default: exit 3)."),
    plugins: PluginsOpt = None,
) -> None:
    """Tune each tuner's declared knobs on the tuning seeds, then run the suite's seeds with the choice.

    Exit status as for `run`: 0, 1 (I/O failure), 2 (bad input), 3 when a cell of the clean run ended with
    error, timeout or oom (unless --allow-failures; a failing tuning cell only scores +inf).
    """
    import os
    import shutil

    from .running.harness import run_suite
    from .running.suite import load_suite
    from .analysis.tune import tune_suite, tuning_suite

    if workers < 1:
        raise BadInput(f"option --workers must be an integer >= 1, but got {workers}")
    if threads is not None and threads < 1:
        raise BadInput(f"option --threads must be an integer >= 1, but got {threads}")
    _use_plugins(plugins)
    s = load_suite(suite)
    ts = tuning_suite(s)
    if ts is None:
        raise BadInput(f"suite {s.name!r} declares no tune step (a [tune] table and a tuner with "
                       f"`tune = {{ knob = [values] }}`); run it with `hpo-bench run {suite} --out {out}`")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"--out {str(out)!r} must be a new or empty folder (the tune step and the run start there)")
    run_options: dict[str, Any] = {}
    if threads is not None:
        run_options["threads"] = threads
    if workers > 1:
        from .running.executors import ProcessPool

        run_options["executor"] = ProcessPool(workers)
    staging = out.parent / f".{out.name}.tune-{os.getpid()}"  # a run folder must be empty when its run starts
    if not quiet:
        console.print(f"suite [bold]{s.name}[/bold]: tune step, {len(ts.cells())} cells on tuning seeds "
                      f"{list(s.tune.seeds)}")
    try:
        resolved, doc = tune_suite(s, staging, argv=sys.argv, **run_options)
        if not quiet:
            for t in doc["tuners"]:
                chosen = {task: c["params"] for task, c in (t["choice"] or {}).get("by_task", {}).items()}
                console.print(f"  {t['label']}: {json.dumps(chosen, sort_keys=True)}")
            console.print(f"clean run: {len(resolved.cells())} cells on seeds {resolved.seeds} -> {out}")
        res = run_suite(resolved, out, argv=sys.argv, **run_options)
    except OSError as exc:
        raise _io_failure(exc, f"cannot write the run folder {str(out)!r}", "free space or choose a writable "
                          "--out, then run the same command again") from None
    finally:
        if "executor" in run_options:
            run_options["executor"].shutdown(wait=True)
    if (out / "tune").exists():
        shutil.rmtree(out / "tune")
    os.replace(staging, out / "tune")
    bad = {k: v for k, v in res.statuses.items() if v != "ok"}
    console.print(f"choices: {out / 'tune' / 'choices.json'}; records: {out / 'records.parquet'} "
                  f"({len(res.frame)} rows)"
                  + (f"; {len(bad)} cells not ok: {', '.join(f'{k}={v}' for k, v in bad.items())}" if bad else ""))
    _exit_for_failures(res, allow_failures)


# ------------------------------------------------------------------- report
def _count_budget(values: Optional[list[str]], option: str) -> Optional[dict[str, int]]:
    """``["200", "weight_decay_mlp=20"]`` -> ``{"*": 200, "weight_decay_mlp": 20}`` (``None`` when not given)."""
    if not values:
        return None
    out: dict[str, int] = {}
    for v in values:
        task, sep, n = v.rpartition("=")
        try:
            count = int(n)
        except ValueError:
            count = 0
        if count < 1 or (sep and not task.strip()):
            raise BadInput(f"{option} must be N or TASK=N with an integer N >= 1, but got {v!r}")
        out[task.strip() if sep else "*"] = count
    return out


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by `hpo-bench run` or `hpo-bench tune`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default: RUN_DIR/report)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Processes for oracle computations not yet "
                                       "cached (default: one per usable CPU)."),
    oracle_evals: Optional[list[str]] = typer.Option(None, "--oracle-evals", help="Count budget of one oracle "
                                                     "computation: N (every task) or TASK=N (a task name or label; "
                                                     "repeatable); default 50000, weight_decay_mlp 20. Counts, "
                                                     "never seconds: F* is the same on every machine."),
    oracle_polish_evals: Optional[list[str]] = typer.Option(None, "--oracle-polish-evals", help="Evaluations of "
                                                            "the oracle's polish from each cell's best point: N or "
                                                            "TASK=N (default 500, weight_decay_mlp 4)."),
    oracle_seconds: Optional[float] = typer.Option(None, "--oracle-seconds", help="Wall-clock backstop of one "
                                                   "oracle computation (default 1800), a safety against a runaway, "
                                                   "not a budget: an oracle it cuts short is marked INCOMPLETE in "
                                                   "the report and run.log."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines (one per oracle and per figure)."),
    shared_cache: bool = typer.Option(True, "--shared-cache/--no-shared-cache", help="Also read and write oracles "
                                      "in the cache shared by run folders made with the same code "
                                      "($HPO_BENCH_CACHE_DIR, default ~/.cache/hpo-bench; 'off' disables)."),
    label_prefix: str = typer.Option("tab:", "--label-prefix", help="Prefix of the LaTeX tables' \\label "
                                     "(two reports in one paper need two prefixes)."),
    table_env: Optional[str] = typer.Option(None, "--table-env", help="table or table* for every LaTeX table "
                                            "(default: table* for all but the ranks)."),
    html: bool = typer.Option(True, "--html/--no-html", help="Also write report.html (interactive, offline)."),
    plugins: PluginsOpt = None,
) -> None:
    """Tables (markdown, LaTeX, CSV), figures (PNG, PDF), summary.md and report.html from a run folder."""
    _use_plugins([*(plugins or []), *_run_plugins(run_dir)])
    from .report import ReportError, make_report, shared_oracle_cache

    if jobs is None:
        from .running.executors import usable_cpus

        jobs = usable_cpus()
    if jobs < 1:
        raise BadInput(f"--jobs must be >= 1, but got {jobs}")
    if oracle_seconds is not None and not oracle_seconds > 0:
        raise BadInput(f"--oracle-seconds must be > 0, but got {oracle_seconds}")
    evals = _count_budget(oracle_evals, "--oracle-evals")
    polish_evals = _count_budget(oracle_polish_evals, "--oracle-polish-evals")
    if table_env is not None and table_env not in ("table", "table*"):
        raise BadInput(f"--table-env must be table or table*, but got {table_env!r}")
    if not re.fullmatch(r"[A-Za-z0-9:._-]*", label_prefix):
        raise BadInput(f"--label-prefix must hold only letters, digits and : . _ -, but got {label_prefix!r}")
    try:
        shared = shared_oracle_cache() if shared_cache else None
        res = make_report(run_dir, out, jobs=jobs, oracle_seconds=oracle_seconds, shared_cache=shared,
                          oracle_evals=evals, oracle_polish_evals=polish_evals, html=html,
                          label_prefix=label_prefix, table_env=table_env,
                          progress=None if quiet else (lambda line: console.print(line, highlight=False,
                                                                                  markup=False)))
    except ReportError as exc:
        raise BadInput(str(exc)) from None
    console.print(f"report of {res.n_cells} cells ({res.n_rows} records): {res.summary_path}")
    console.print(f"tables: {res.summary_path.parent / 'tables'} ({', '.join(res.tables)}; .md .tex .csv)")
    console.print(f"figures: {res.summary_path.parent / 'figures'} ({', '.join(res.figures)}; .png .pdf)")
    if res.html_path is not None:
        console.print(f"interactive: {res.html_path}")
    console.print(f"oracle cache: {res.oracle_dir}" + (f" (shared: {shared})" if shared is not None else ""))


@app.command("plot")
def plot_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run folders (merged into one figure)."),
    out: Path = typer.Option(..., "--out", "-o", help="The figure: FILE.pdf, FILE.png or FILE.svg."),
    metric: str = typer.Option("regret", "--metric", "-m", help="regret, validation, test_loss, test_accuracy, "
                               "hypergrad_error, grad_norm_sq, inner_distance, or a numeric record column."),
    x: str = typer.Option("time", "--x", help="x-axis: time, cost, samples, epochs or step."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated task labels (default: all)."),
    tuners: Optional[str] = typer.Option(None, "--tuners", help="Comma-separated tuner labels (default: all)."),
    rename: Optional[list[str]] = typer.Option(None, "--rename", help="Display name, old=new (repeatable; tuners "
                                               "keep their colour and marker)."),
    order: Optional[str] = typer.Option(None, "--order", help="Comma-separated names that come first (legend, "
                                        "panels)."),
    style: str = typer.Option("paper", "--style", help="paper or slides."),
    width: Optional[str] = typer.Option(None, "--width", help="Inches (3.25, 8cm) or [FRACTION*]TEMPLATE[:column|"
                                        "text] with TEMPLATE neurips, iclr, icml, aistats or jmlr (default: "
                                        "5.5in for paper, 10in for slides)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Processes for oracle computations not yet cached."),
    shared_cache: bool = typer.Option(True, "--shared-cache/--no-shared-cache", help="Also read oracles from the "
                                      "cache shared by run folders."),
    plugins: PluginsOpt = None,
) -> None:
    """One figure (median and interquartile band over seeds per tuner, one panel per task) from run folders."""
    from .report import ReportError, shared_oracle_cache
    from .report.plot import parse_list, parse_rename, plot, plot_records

    if jobs < 1:
        raise BadInput(f"--jobs must be >= 1, but got {jobs}")
    _use_plugins([*(plugins or []), *(f for d in run_dirs for f in _run_plugins(d))])  # an oracle builds the task
    try:
        names = dict(tasks=parse_list(tasks, "--tasks"), tuners=parse_list(tuners, "--tuners"),
                     order=parse_list(order, "--order"), rename=parse_rename(rename))
        df = plot_records(run_dirs, metric=metric, x=x, jobs=jobs,  # the shared cache only if an oracle is missing
                          shared_cache=shared_oracle_cache if shared_cache else None)
        plot(df, metric=metric, x=x, style=style, width=width, out=out, **names)
    except ReportError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise _io_failure(exc, "cannot write the figure") from None
    console.print(f"figure: {out}")



# ---------------------------------------------------------------------- sweep
sweep_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Sweeps: the accuracy-cost frontier of hypergradient methods; "
                        "tuner time-to-target as the number of hyperparameters grows (docs/sweeps.md).")
app.add_typer(sweep_app, name="sweep")


class _LazyGroup(TyperGroup):
    """A command group whose commands are built from ``target`` (``(module, typer app)``) on first use: ``hpo-bench
    data`` imports scipy and the data layer, which the other commands (``plot``: ~0.2 s of its start) do not need."""

    target: tuple[str, str] = ("", "")

    def _load(self) -> None:
        if not self.commands:
            import importlib

            module = importlib.import_module(self.target[0], __package__)
            self.commands = typer.main.get_group(getattr(module, self.target[1])).commands

    def list_commands(self, ctx):
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx, cmd_name):
        self._load()
        return super().get_command(ctx, cmd_name)


class _DataGroup(_LazyGroup):
    target = (".data.cli", "data_app")


app.add_typer(typer.Typer(cls=_DataGroup, no_args_is_help=True, rich_markup_mode=None, context_settings=HELP_SETTINGS,
                          help="Datasets: list the registry and what is cached, fetch (pooch, checksums), import "
                          "local copies for machines without internet, print where a dataset lives (docs/data.md)."),
              name="data")


def _csv_list(text: str | None, what: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    if not items or any(not t for t in items):
        raise BadInput(f"option {what} must be a comma-separated list of names, but got {text!r}")
    return items


def _int_list(text: str, what: str) -> list[int]:
    out = []
    for t in text.split(","):
        try:
            v = int(t.strip())
        except ValueError:
            raise BadInput(f"option {what} must be a comma-separated list of integers >= 1, but got {text!r}") from None
        if v < 1:
            raise BadInput(f"option {what} must be a comma-separated list of integers >= 1, but got {text!r}")
        out.append(v)
    return out


def _sweep_errors():
    from .analysis.sweep import SweepError

    return SweepError


@sweep_app.command("frontier")
def sweep_frontier_cmd(
    task: str = typer.Option(..., "--task", "-t", help="A registered task (see `hpo-bench list`)."),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="Task parameter key=value (TOML); "
                                              "default: the task's own defaults."),
    seed: int = typer.Option(0, help="Seed of the task data (and of --theta random)."),
    theta: str = typer.Option("init", help="'init' (the space's init) or 'random' (seeded, inside the bounds)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods (default: all)."),
    grid: Optional[list[str]] = typer.Option(None, "--grid", help="Knob values of one method, METHOD=v1,v2,... "
                                             "(repeatable); overrides the default grid."),
    max_iters: int = typer.Option(1000, "--max-iters", help="Top of the default 1-2-5 grids (not cg: 2p+10)."),
    truncated_steps: Optional[int] = typer.Option(None, "--truncated-steps", help="T of truncated (default: the "
                                                  "largest reverse T)."),
    forward_max_hyper: int = typer.Option(200, "--forward-max-hyper", help="Skip forward mode above this many "
                                          "hyperparameters (m HVPs per step)."),
    forward_max_hvp: int = typer.Option(100_000, "--forward-max-hvp", help="Cap forward's T so T*m <= this."),
    repeats: int = typer.Option(3, "--repeats", help="Timed calls per point (time = their minimum)."),
    device: str = typer.Option("cpu", help="Torch device ('cuda': peak memory from torch.cuda)."),
    workers: WorkersOpt = None,
    threads: ThreadsOpt = None,
    timeout: TimeoutOpt = None,
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    retry_failed: RetryFailedOpt = False,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    out: Path = typer.Option(Path("results/sweep/frontier"), "--out", "-o", help="Output folder."),
    name: str = typer.Option("frontier", "--name", help="File stem of the outputs (<name>.csv/.json/.png/.pdf, "
                             "<name>.suite.toml, the run folder <name>.run)."),
    plugins: PluginsOpt = None,
) -> None:
    """Accuracy-cost frontier: every hypergradient method x its knob at fixed hyperparameters. Writes the sweep
    as a suite (OUT/<name>.suite.toml, one probe cell per method) and runs it with the harness into
    OUT/<name>.run."""
    import torch

    from .analysis.sweep import check_out_folder, frontier, write_records
    from .report.sweep_figures import frontier_figure
    from .running.progress import make_reporter

    SweepError = _sweep_errors()
    n_workers = _run_options(workers, None, threads, timeout, resume, force, retry_failed) or 1
    _use_plugins(plugins)
    try:
        check_out_folder(out)
    except SweepError as exc:
        raise BadInput(str(exc)) from None
    TASKS.get(task)
    method_list = _csv_list(methods, "--methods")
    for m in method_list or []:
        METHODS.get(m)
    if theta not in ("init", "random"):
        raise BadInput(f"option --theta must be 'init' or 'random', but got {theta!r}")
    for opt, val in (("--repeats", repeats), ("--max-iters", max_iters), ("--forward-max-hyper", forward_max_hyper),
                     ("--forward-max-hvp", forward_max_hvp)):
        if val < 1:
            raise BadInput(f"option {opt} must be an integer >= 1, but got {val}")
    if truncated_steps is not None and truncated_steps < 1:
        raise BadInput(f"option --truncated-steps must be an integer >= 1, but got {truncated_steps}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise BadInput(f"option --name must be a plain file stem [A-Za-z0-9_.-], but got {name!r}")
    grids: dict[str, list[int]] = {}
    for g in grid or []:
        if "=" not in g:
            raise BadInput(f"option --grid must look like METHOD=v1,v2,..., but got {g!r}")
        m, vals = g.split("=", 1)
        METHODS.get(m.strip())
        grids[m.strip()] = _int_list(vals, f"--grid {m.strip()}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"option --device {device!r} is not available on this machine (no CUDA)")
    params = _parse_params(param, "--param")
    try:
        res = frontier(task, out, params=params, seed=seed, theta=theta, methods=method_list, grids=grids,
                       repeats=repeats, truncated_steps=truncated_steps, max_iters=max_iters,
                       forward_max_hyper=forward_max_hyper, forward_max_hvp=forward_max_hvp, device=device, name=name,
                       workers=n_workers, threads=threads, timeout=timeout, resume=resume, force=force,
                       retry_failed=retry_failed, argv=sys.argv, reporter=make_reporter(console, quiet=quiet),
                       progress=None if quiet else (lambda s: console.print(f"[dim]{s}[/dim]")))
    except SweepError as exc:
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt:
        print(f"hpo-bench: stopped; finished cells are in {str(out / (name + '.run') / 'cells')!r}: run the same "
              "command with --resume to continue", file=sys.stderr)
        raise typer.Exit(130) from None
    table, info = res.table, res.info
    files = write_records(out, name, table, {"kind": "frontier", **info})
    n_params, m = info["n_params"], info["n_hyper"]
    files += frontier_figure(table, out, name=name, title=f"{task} ({', '.join(f'{k}={v}' for k, v in params.items())}"
                             f"{', ' if params else ''}seed {seed}), θ = {theta}; n_params = {n_params}, m = {m}")
    tab = Table(title=f"Frontier: {task}, θ = {theta}, p = {n_params}, m = {m}, "
                f"lr = 1/L = {info['lr']:.3g}", title_justify="left")
    for c in ("method", "knob", "value", "rel. error", "cosine", "ms", "HVPs", "peak KiB", "status"):
        tab.add_column(c, justify="left" if c in ("method", "knob", "status") else "right")
    for r in table.itertuples():
        tab.add_row(r.method, r.knob, "" if math.isnan(r.knob_value) else str(int(r.knob_value)), _fmt(r.rel_error),
                    "nan" if math.isnan(r.cosine) else f"{r.cosine:.6f}",
                    "nan" if math.isnan(r.time_s) else f"{1e3 * r.time_s:.3f}",
                    "nan" if math.isnan(r.hvp) else str(int(r.hvp)),
                    "nan" if math.isnan(r.peak_mem_bytes) else f"{r.peak_mem_bytes / 1024:.1f}", r.status)
    console.print(tab)
    for n in info["notes"]:
        console.print(f"note: {n}")
    console.print(f"suite: {res.suite_path}; run: {res.run.out_dir}; records: {files[0]}, {files[1]}; "
                  f"figure: {files[2]}, {files[3]}")


@sweep_app.command("scaling")
def sweep_scaling_cmd(
    p: str = typer.Option("1,10,100,1000", "--p", help="Comma-separated numbers of hyperparameters (= features)."),
    tuners: Optional[str] = typer.Option(None, "--tuners", help="Comma-separated default configurations "
                                         "(gradient-cg, [gradient-cg-lbfgs,] gradient-exact, gradient-cg-gd, tpe, "
                                         "random, grid); default: all of them unless --tuner/--tuners-file is given."),
    tuner: Optional[list[str]] = typer.Option(None, "--tuner", help="Extra configuration: one TOML inline table "
                                              "with the keys of a suite [[tuner]] table, e.g. '{label = \"cg50\", "
                                              "name = \"gradient\", params = {method = \"cg\"}}' (repeatable)."),
    tuners_file: Optional[Path] = typer.Option(None, "--tuners-file", help="TOML file of [[tuner]] tables in the "
                                               "suite file format (name, label, params, budget, timeout)."),
    target: float = typer.Option(1e-3, "--target", help="Fraction of the oracle gap F(init) - F* to reach."),
    seconds: float = typer.Option(20.0, "--seconds", help="Tuner-seconds budget per cell (every cell runs it)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Outer steps / evaluations budget (default: none)."),
    n_factor: int = typer.Option(5, "--n-factor", help="Training rows n = n_factor * p."),
    param: Optional[list[str]] = typer.Option(None, "--param", help="Other ridge_per_feature parameters key=value."),
    sparse_above: Optional[int] = typer.Option(None, "--sparse-above", help="Sizes p above this run on sparse "
                                               "text-like data (CSR, density 1e-3, n = n_factor * p; matrix-free "
                                               "certified references). Default: every size dense."),
    row_nnz: Optional[float] = typer.Option(None, "--row-nnz", help="With --sparse-above: the sparse sizes get "
                                            "density ROW_NNZ / p (ROW_NNZ expected non-zeros per row, so the data "
                                            "grow like p) instead of 1e-3."),
    seed: str = typer.Option("0", "--seed", help="Repetition seed(s) of the suite, comma-separated (data, oracle)."),
    oracle_evals: Optional[int] = typer.Option(None, "--oracle-evals", help="Count budget (evaluations) of one "
                                               "oracle computation (default 50000): counts, never seconds, so F* "
                                               "is the same on every machine."),
    oracle_seconds: float = typer.Option(1800.0, "--oracle-seconds", help="Wall-clock backstop of one oracle "
                                         "computation, a safety against a runaway, not a budget: an oracle it "
                                         "cuts short says INCOMPLETE in its notes."),
    oracle_cache: Optional[Path] = typer.Option(None, "--oracle-cache", help="Oracle cache folder "
                                                "(default: OUT/oracles)."),
    workers: WorkersOpt = None,
    threads: ThreadsOpt = None,
    timeout: TimeoutOpt = None,
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    retry_failed: RetryFailedOpt = False,
    allow_failures: bool = typer.Option(False, "--allow-failures", help="Exit 0 even if cells ended with error, "
                                        "timeout or oom (default: exit 3, after writing the outputs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    out: Path = typer.Option(Path("results/sweep/scaling"), "--out", "-o", help="Output folder."),
    plugins: PluginsOpt = None,
) -> None:
    """Time-to-target vs number of hyperparameters on ridge_per_feature, per tuner configuration: writes the
    sweep as a suite (OUT/suite.toml), runs it with the harness into OUT/run, fits the exponent in p."""
    from .running.progress import make_reporter
    from .analysis.sweep import load_tuner_file, parse_tuner_option, scaling, select_tuners, write_records
    from .report.sweep_figures import scaling_figure

    SweepError = _sweep_errors()
    ps = _int_list(p, "--p")
    try:
        seeds = [int(s) for s in seed.split(",")]
    except ValueError:
        raise BadInput(f"option --seed must be a comma-separated list of integers >= 0, but got {seed!r}") from None
    if not (0 < target < 1):
        raise BadInput(f"option --target must be a fraction of the oracle gap in (0, 1), but got {target}")
    if not (0 < seconds < math.inf):
        raise BadInput(f"option --seconds must be > 0, but got {seconds}")
    for opt, val in (("--steps", steps), ("--n-factor", n_factor), ("--oracle-evals", oracle_evals)):
        if val is not None and val < 1:
            raise BadInput(f"option {opt} must be an integer >= 1, but got {val}")
    if not oracle_seconds > 0:
        raise BadInput(f"option --oracle-seconds must be > 0, but got {oracle_seconds}")
    n_workers = _run_options(workers, None, threads, timeout, resume, force, retry_failed) or 1
    _use_plugins(plugins)
    params = _parse_params(param, "--param")
    try:
        for k in ("n", "p", "seed", "dtype", "device"):
            if k in params:
                raise SweepError(f"option --param: `{k}` is set by the sweep (n = n_factor * p), not by --param")
        custom = [parse_tuner_option(s, task_params=params) for s in tuner or []]
        if tuners_file is not None:
            custom += load_tuner_file(tuners_file, task_params=params)
        configs = select_tuners(_csv_list(tuners, "--tuners"), custom)
        res = scaling(ps, configs, out, target=target, seconds=seconds, steps=steps, n_factor=n_factor, seeds=seeds,
                      task_params=params, oracle_seconds=oracle_seconds, oracle_evals=oracle_evals,
                      oracle_cache=oracle_cache, workers=n_workers, threads=threads, timeout=timeout, resume=resume,
                      force=force, retry_failed=retry_failed, sparse_above=sparse_above, row_nnz=row_nnz, argv=sys.argv,
                      reporter=make_reporter(console, quiet=quiet),
                      progress=None if quiet else (lambda s: console.print(f"[dim]{s}[/dim]")))
    except SweepError as exc:
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt:
        print(f"hpo-bench: stopped; finished cells are in {str(out / 'run' / 'cells')!r}: run the same command "
              "with --resume to continue", file=sys.stderr)
        raise typer.Exit(130) from None
    table, fits, info = res.table, res.fits, res.info
    files = write_records(out, "scaling", table, {"kind": "scaling", **info})
    fits_path = out / "scaling_fits.csv"
    fits.to_csv(fits_path, index=False, float_format="%.6g")
    budget = f"budget {seconds:g} tuner s" + (f" / {steps} steps" if steps else "")
    data_note = "" if sparse_above is None else f" (text-like CSR above p = {sparse_above}" + (
        f", {row_nnz:g} non-zeros per row)" if row_nnz is not None else ")")
    files += scaling_figure(table, out, fits=fits, title=f"ridge_per_feature{data_note}, n = {n_factor} p, target {target:g} "
                            f"of the oracle gap, {budget}")
    tab = Table(title=f"Scaling: time to {target:g} of the oracle gap (ridge_per_feature{data_note}, n = {n_factor} p, "
                f"{budget})", title_justify="left")
    for c in ("p", "seed", "tuner", "reached", "time s", "evals", "cost", "gap left", "tuner s", "wall s", "stop"):
        tab.add_column(c, justify="left" if c in ("tuner", "reached", "stop") else "right")
    for r in table.itertuples():
        tab.add_row(str(r.p), str(r.seed), r.label, "yes" if r.reached else "no",
                    f"{r.time_to_target_s:.3g}" if r.reached else "-",
                    str(int(r.evals_to_target)) if r.reached else str(r.evals),
                    f"{r.cost_to_target:.3g}" if r.reached else f"{r.cost:.3g}", f"{r.final_gap_frac:.2e}",
                    f"{r.tuner_seconds:.3g}", f"{r.wall_s:.3g}", r.stop_reason)
    console.print(tab)
    ft = Table(title="Exponent of time (cost) to target in p: least squares on log-log over the cells that reached "
               "it", title_justify="left")
    for c in ("tuner", "time exponent", "cost exponent", "fit p range", "points", "misses at p", "stops from p"):
        ft.add_column(c, justify="left" if c == "tuner" else "right")
    for f in fits.itertuples():
        ft.add_row(f.label, "-" if math.isnan(f.exponent_time) else f"{f.exponent_time:.2f}",
                   "-" if math.isnan(f.exponent_cost) else f"{f.exponent_cost:.2f}",
                   "-" if not f.fit_points else f"{int(f.fit_p_min)}-{int(f.fit_p_max)}", str(f.fit_points),
                   f.missed_ps or "-", "-" if math.isnan(f.stops_from_p) else str(int(f.stops_from_p)))
    console.print(ft)
    for n in info["notes"]:
        console.print(f"note: {n}")
    console.print(f"suite: {res.suite_path}; run: {res.run.out_dir}; records: {files[0]}, {files[1]}, {fits_path}; "
                  f"figure: {files[2]}, {files[3]}")
    _exit_for_failures(res.run, allow_failures)


def main() -> None:
    """Console entry point: bad input is one line on stderr and exit status 2."""
    try:
        rc = app(standalone_mode=False)
    except BadInput as exc:
        print(f"hpo-bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except IOFailure as exc:
        print(f"hpo-bench: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("hpo-bench: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if isinstance(exc, _bad_input_types()):
            print(f"hpo-bench: error: {exc}", file=sys.stderr)
            sys.exit(2)
        # click's usage errors (typer may vendor click, so match by shape, not by class)
        if type(exc).__name__ == "NoArgsIsHelpError":  # the message is the help (empty if rich printed it)
            if exc.format_message():
                print(exc.format_message())
            sys.exit(0)
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            print(f"hpo-bench: error: {exc.format_message()}", file=sys.stderr)
            sys.exit(exc.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
