"""The Python API: run a suite and read its records from a script or a notebook.

::

    import hpo_bench

    df = hpo_bench.run("quick", "results/quick", workers=2)        # a named suite, a path, TOML text or a dict
    df = hpo_bench.load_records("results/quick")                   # the same table, later
    df[df["tuner.method"] == "cg"].groupby("task")["val_loss"].min()
    hpo_bench.plot(hpo_bench.plot_records("results/quick"), metric="regret", out="regret.pdf")

:func:`run` is ``hpo-bench run`` without the command line: the same validation (a bad suite raises
:class:`~hpo_bench.running.suite.SuiteError` with the file's message), the same harness
(:func:`~hpo_bench.running.harness.run_suite`: cells, statuses, hard timeouts, resume) and the same run folder.
It returns the records table with every ``task_params`` and ``tuner_params`` entry also as a ``task.<key>``
and ``tuner.<key>`` column (:func:`~hpo_bench.core.records.flat_param_columns`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Mapping

__all__ = ["run", "load_records", "as_suite"]


def as_suite(suite: Any) -> Any:
    """A validated :class:`~hpo_bench.running.suite.Suite` from a suite, a dict, a path, a named suite or TOML text.

    A string is a named suite (``"quick"``) or a path when one exists by that name, TOML text otherwise.

    Raises:
        SuiteError: the suite breaks a rule (the message names the source, the key, the rule and the value).
    """
    from .running.suite import Suite, SuiteError, load_suite, named_suites

    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, Mapping):
        return Suite.from_dict(dict(suite), source="<dict>")
    if isinstance(suite, Path):
        return load_suite(str(suite))
    if not isinstance(suite, str):
        raise SuiteError(f"suite must be a Suite, a dict, a path, a named suite or TOML text, but got "
                         f"{type(suite).__name__}")
    if suite in named_suites() or ("\n" not in suite and "=" not in suite):
        return load_suite(suite)  # a name or a path (a missing file is a SuiteError naming it)
    try:
        raw = tomllib.loads(suite)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"suite text '<string>': not valid TOML ({exc})") from None
    return Suite.from_dict(raw, source="<string>")


def run(suite: Any, out: str | Path, *, workers: int | str | None = None, dask: str | None = None,
        threads: int | None = None, timeout: float | None = None, resume: bool = False, force: bool = False,
        retry_failed: bool = False, progress: bool = False) -> Any:
    """Run ``suite`` into the run folder ``out`` and return its records (a ``pandas.DataFrame``).

    Args:
        suite: a :class:`~hpo_bench.running.suite.Suite`, a dict in the suite file's schema, a path, a named
            suite (``"quick"``) or TOML text (:func:`as_suite`).
        out: the run folder (created; an existing run is refused unless ``resume``).
        workers: ``None`` runs cells one at a time in this process; an integer N or ``"auto"`` runs N cells at a
            time, each in its own process (with ``dask="local"``: the number of Dask workers).
        dask: ``"local"`` (a LocalCluster here) or a scheduler address (``tcp://host:8786``).
        threads: torch threads per cell (default 1). timeout: hard seconds per cell (overrides the suite's).
        resume, force, retry_failed: as ``hpo-bench run --resume [--force] [--retry-failed]``.
        progress: show the progress display of ``hpo-bench run`` on standard error.

    Returns:
        The records table: one row per evaluation, with ``task.<key>`` and ``tuner.<key>`` columns.

    Raises:
        SuiteError: a bad suite. ValueError: a bad option (one line naming it).
        RunFolderError: ``out`` cannot take this run. OSError: the folder cannot be written (finished cells
        are kept: continue with ``resume=True``).
    """
    from .core.records import flat_param_columns
    from .running.executors import ProcessPool, SerialExecutor, dask_executor
    from .running.harness import check_run_folder, check_run_options, run_suite
    from .running.progress import make_reporter

    n_workers = check_run_options(workers, dask, threads, timeout, resume, force, retry_failed,
                                  spell=lambda name: f"`{name}`")
    s = as_suite(suite)
    out = Path(out)
    check_run_folder(out, s, resume=resume, force=force)
    if dask is not None:
        executor: Any = dask_executor(dask, n_workers=n_workers)
    elif n_workers is not None:
        executor = ProcessPool(n_workers)
    else:
        executor = SerialExecutor()
    reporter = None
    if progress:
        from rich.console import Console

        reporter = make_reporter(Console(stderr=True), quiet=False)
    try:
        res = run_suite(s, out, argv=["hpo_bench.run", str(out)], executor=executor, resume=resume, force=force,
                        retry_failed=retry_failed, timeout=timeout, threads=threads, reporter=reporter)
    finally:
        if dask is not None:
            executor.close()
        else:
            executor.shutdown(wait=True)
    return flat_param_columns(res.frame)


def load_records(run_dir: str | Path) -> Any:
    """The records of a run folder as a ``pandas.DataFrame``, with ``task.<key>`` and ``tuner.<key>`` columns.

    Reads ``records.parquet``, or the finished cells of an unfinished run (``cells/*.parquet``), or a folder
    written by :func:`hpo_bench.report.plot.export_for_redraw`: the reader of ``hpo-bench report`` and
    ``hpo-bench plot`` (:func:`hpo_bench.report.metrics.load_records`).

    Raises:
        FileNotFoundError: no records in ``run_dir``.
    """
    from .core.records import flat_param_columns
    from .report.metrics import load_records as _read

    return flat_param_columns(_read(Path(run_dir)))
