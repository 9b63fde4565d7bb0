"""Suite files: TOML that names tasks, tuners, seeds and budgets.

Schema (every key but ``task``, ``tuner`` and ``seeds`` is optional)::

    name = "quick"                 # default: the file's stem
    description = "..."
    seeds = [0, 1, 2]              # non-empty list of distinct integers >= 0 (repetitions: data and tuner)
    seed = 0                       # suite seed, integer >= 0: with task, tuner and repetition it
                                   # derives each cell's tuner seed (``Cell.cell_seed``)
    timeout = 600.0                # hard wall-clock limit of one cell in seconds, > 0 (default: see
                                   # ``Cell.hard_timeout``); the cell is stopped and recorded as ``timeout``
    dtype = "float64"              # "float64" | "float32"
    device = "cpu"                 # any torch device string, e.g. "cuda"
    reference = true               # measure errors against the task's reference

    [budget]                       # default budget of every tuner
    steps = 30                     # outer steps / evaluations, integer >= 1
    seconds = 10.0                 # tuner seconds, > 0

    [[task]]                       # one table per task instance
    name = "ridge"                 # a registered task
    label = "ridge-small"          # unique; default: the name
    params = { n = 200, p = 20 }   # keyword arguments of the task
    fallback = "stand-in"          # optional: a `params.dataset` that must be downloaded and is not in the
                                   # data cache is replaced by its registered synthetic stand-in (cadata ->
                                   # cadata-like); the run folder records which data each instance used

    [[tuner]]
    name = "gradient"
    label = "cg"
    params = { method = "cg" }
    budget = { steps = 50 }        # overrides [budget] for this tuner
    timeout = 120.0                # overrides the suite's timeout for this tuner's cells
    tasks = ["ridge-small"]        # optional: only these task labels (default: all)
    tune = { outer_lr = [0.05, 0.2] }  # optional: knobs the tune step chooses (needs [tune])

    [tune]                         # the tune step (``hpo-bench tune``, :mod:`hpo_bench.analysis.tune`)
    seeds = [100, 101]             # tuning seeds: distinct integers >= 0, none in `seeds`
    scope = "task"                 # "task": a choice per task; "suite": one per tuner for all its tasks
    budget = { steps = 30 }        # optional: the tuning budget (default: each tuner's budget)

Cells are every task x tuner x seed (a tuner's ``tasks`` list restricts its tasks). Named suites ship in ``hpo_bench/suites/``.

Seeds. A cell's task is built with the repetition seed (column ``seed``), so every tuner
of a repetition sees the same data; the tuner and torch's global generator get
``cell_seed = derive_seed(suite seed, task label, tuner label, repetition seed)``.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from . import _instances
from ..data import DatasetMissingError
from ..core.records import Budget
from ..core.registry import TASKS, TUNERS, UnknownNameError
from ..core.space import SpaceError
from ..core.task import TaskParamError, resolve_dtype
from ..core.tuner import missing_tags

__all__ = ["Suite", "SuiteError", "Entry", "Cell", "TuneSpec", "FALLBACKS", "load_suite", "named_suites", "suite_path",
           "derive_seed", "DEFAULT_TIMEOUT", "MAX_TIMEOUT", "TIMEOUT_RULE", "check_timeout", "DENSE_MAX_PARAMS",
           "dense_refusal"]

#: The largest task a tuner that forms a dense matrix may run (``Tuner.dense_needs``: the ``exact``
#: method's Hessian, ``forward``'s tangent, ``grid_eig``'s eigenvectors): a ``p x p`` matrix only up to
#: this many inner parameters ``p`` (``n_params``), a ``p x m`` one up to ``DENSE_MAX_PARAMS**2`` entries.
#: At 5000 a ``p x p`` float64 matrix takes 200 MB and its Cholesky factorisation ~4e10 flops (seconds on
#: one core, at every outer step); at 10^4 it is 800 MB and 8 times the work, 10^5 does not fit in 24 GiB.
#: Suite validation refuses a larger pair in one line; matrix-free methods (``cg``, ``neumann``, ...) have
#: no such limit.
DENSE_MAX_PARAMS = 5000

#: Hard per-cell limit (wall-clock seconds) when neither the suite nor the command line sets one
#: and the budget has no ``seconds``; with ``seconds`` the default is ``10 * seconds + 60``.
DEFAULT_TIMEOUT = 3600.0

#: The longest hard timeout (and budget ``seconds``) accepted, in seconds: what every part of the
#: timeout machinery can take. The tightest is the process pool's wait on a cell's pipe
#: (``multiprocessing.connection.wait``: ``poll(2)`` with a C ``int`` of milliseconds, so
#: ``(2**31 - 1) ms``, about 24.8 days; more raises ``OverflowError: timeout is too large``);
#: the serial executor's ``signal.setitimer`` takes about 9.2e9 s and ``threading.TIMEOUT_MAX`` is
#: about 9.2e9 s on 64-bit Linux.
MAX_TIMEOUT = float((2**31 - 1) // 1000)
#: The rule of every timeout (suite ``timeout``, a tuner's ``timeout``, ``--timeout``): > 0 and at most this.
TIMEOUT_RULE = f"a number of seconds <= {MAX_TIMEOUT:.0f} (about 24 days, the longest wait the executors take)"


def check_timeout(value: Any, what: str) -> float:
    """``value`` as a hard timeout in seconds, or a :class:`ValueError` reading ``"<what> must be <rule>, but got
    <value>"``: ``a number of seconds > 0`` or, above :data:`MAX_TIMEOUT` (``inf`` and ``1e300`` included),
    :data:`TIMEOUT_RULE`. The one check behind the suite's ``timeout`` keys and ``run --timeout``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be a number of seconds > 0, but got {value!r}")
    if not value <= MAX_TIMEOUT:
        raise ValueError(f"{what} must be {TIMEOUT_RULE}, but got {value!r}")
    return float(value)


def derive_seed(suite_seed: int, task_label: str, tuner_label: str, seed: int) -> int:
    """A cell's tuner seed: SHA-256 of ``suite_seed/task/tuner/seed``, cut to 63 bits.

    Stable across Python versions, machines and processes (unlike ``hash``), and
    different for every cell, so no two cells share a random stream by accident.
    """
    digest = hashlib.sha256(f"{suite_seed}/{task_label}/{tuner_label}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


TOP_KEYS = {"name", "description", "seeds", "seed", "timeout", "dtype", "device", "reference", "budget", "task",
            "tuner", "tune", "plugins"}
ENTRY_KEYS = {"task": {"name", "label", "params", "fallback"},
              "tuner": {"name", "label", "params", "budget", "tasks", "timeout", "tune"}}
TUNE_KEYS = {"seeds", "scope", "budget"}
TUNE_SCOPES = ("task", "suite")
MAX_TUNE_COMBOS = 64
BUDGET_KEYS = {"steps", "seconds"}
#: Values of a task's ``fallback`` key: what replaces a downloaded dataset that is not in the data cache.
FALLBACKS = ("stand-in",)
_LABEL = re.compile(r"^[A-Za-z0-9_.+=-]+$")


class SuiteError(ValueError):
    """A suite file breaks the schema; the message names the file, the key, the rule and the value."""


@dataclass(frozen=True)
class Entry:
    name: str
    label: str
    params: dict[str, Any]
    budget: Budget | None = None
    only_tasks: tuple[str, ...] | None = None  # tuner entries: restrict to these task labels
    timeout: float | None = None  # tuner entries: hard per-cell limit for this tuner's cells
    # task entries with `fallback`: {"requested", "fallback", "substituted"} (params["dataset"] is what is used)
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class Cell:
    """One unit of work: a task instance, a tuner, a seed and a budget."""

    suite: str
    task: Entry
    tuner: Entry
    seed: int
    budget: Budget
    dtype: str = "float64"
    device: str = "cpu"
    reference: bool = True
    suite_seed: int = 0
    timeout: float | None = None  # from the suite file; ``None``: the default of :attr:`hard_timeout`
    #: plug-in folders (absolute) the cell's process loads before building the task and the tuner; where the
    #: code lives, not what it computes, so not part of :meth:`config` (the code fingerprint covers the files)
    plugins: tuple[str, ...] = ()

    @property
    def cell_id(self) -> str:
        return f"{self.task.label}__{self.tuner.label}__seed{self.seed}"

    @property
    def cell_seed(self) -> int:
        """The tuner's seed (also seeds torch, numpy and random): see :func:`derive_seed`."""
        return derive_seed(self.suite_seed, self.task.label, self.tuner.label, self.seed)

    @property
    def hard_timeout(self) -> float:
        """Wall-clock seconds after which the cell is stopped (task build and measurements included)."""
        if self.timeout is not None:
            return float(self.timeout)
        if self.budget.seconds is not None:
            return min(10.0 * self.budget.seconds + 60.0, MAX_TIMEOUT)
        return DEFAULT_TIMEOUT

    def config(self) -> dict[str, Any]:
        """Everything that decides the cell's records (not how or where it runs)."""
        return {"cell_id": self.cell_id, "suite_seed": self.suite_seed, "seed": self.seed,
                "task": {"name": self.task.name, "label": self.task.label, "params": self.task.params},
                "tuner": {"name": self.tuner.name, "label": self.tuner.label, "params": self.tuner.params},
                "budget": {"steps": self.budget.steps, "seconds": self.budget.seconds},
                "dtype": self.dtype, "device": self.device, "reference": self.reference}

    def config_hash(self) -> str:
        """SHA-256 of :meth:`config` as canonical JSON: a finished cell is reused only if it matches."""
        text = json.dumps(self.config(), sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class TuneSpec:
    """The declared tune step: knob grids per tuner label, tried on separate tuning seeds.

    ``hpo-bench tune`` (:func:`hpo_bench.analysis.tune.tune_suite`) runs every combination on every
    tuning seed, picks the best per task (``scope = "task"``) or per tuner (``"suite"``) and
    runs the suite's own seeds with the choice; ``hpo-bench run`` uses the declared params.
    """

    seeds: tuple[int, ...]
    grids: dict[str, dict[str, list]]  # tuner label -> {knob: values to try}
    scope: str = "task"
    budget: Budget | None = None

    def combos(self, label: str) -> list[dict[str, Any]]:
        """Every combination of the knobs of tuner ``label``, in declared order (none if it declares no grid)."""
        grid = self.grids.get(label)
        if not grid:
            return []
        keys = list(grid)
        return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


@dataclass
class Suite:
    name: str
    path: str
    description: str
    seeds: list[int]
    tasks: list[Entry]
    tuners: list[Entry]
    budget: Budget
    dtype: str = "float64"
    device: str = "cpu"
    reference: bool = True
    sha256: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    timeout: float | None = None
    tune: TuneSpec | None = None  # the declared tune step, if any
    plugins: tuple[str, ...] = ()  # plug-in folders (absolute): the file's `plugins`, then HPO_BENCH_PLUGINS

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>", *, validate: bool = True) -> Suite:
        """A suite from a dict with the suite file's schema (what ``tomllib`` reads from a suite file), validated
        like a file: every problem raises :class:`SuiteError` with the same message, naming ``source`` as the
        file, the key, the rule and the value. ``name`` defaults to ``source``'s stem (its letters, digits and
        ``_.+=-``), ``path`` is ``source`` and ``sha256`` hashes ``d`` as canonical JSON (sorted keys). ``d`` is
        copied, so changing it later changes nothing."""
        import copy

        ck = _Checker(source)
        if not isinstance(d, dict):
            raise SuiteError(f"suite file {source!r}: must be a table (a dict of the suite file's keys), but got "
                             f"{type(d).__name__}")
        raw = copy.deepcopy(d)
        text = json.dumps(raw, sort_keys=True, default=str, separators=(",", ":"))
        stem = re.sub(r"[^A-Za-z0-9_.+=-]", "", Path(source).stem) or "suite"
        return _suite_from_raw(raw, ck, default_name=stem, path=source,
                               sha256=hashlib.sha256(text.encode()).hexdigest(), validate=validate)

    def cells(self) -> list[Cell]:
        return [Cell(self.name, t, u, s, u.budget or self.budget, self.dtype, self.device, self.reference,
                     suite_seed=self.seed, timeout=u.timeout if u.timeout is not None else self.timeout,
                     plugins=self.plugins)
                for t in self.tasks for u in self.tuners for s in self.seeds
                if u.only_tasks is None or t.label in u.only_tasks]

    def datasets(self) -> list[dict[str, Any]]:
        """Which data each task instance uses, for ``provenance.json`` (key ``datasets``) and ``run.log``: one
        entry per task whose ``params.dataset`` is a registered name, with ``task`` (the label), ``dataset``
        (the name used), :func:`hpo_bench.data.describe`'s fields (``dataset_kind``: "download", "bundled" or
        "synthetic stand-in"; ``dataset_stand_in_for``; for downloaded sets ``dataset_verified`` and
        ``dataset_key``), and for tasks with ``fallback``: ``requested``, ``fallback``, ``substituted``."""
        from .. import data

        out = []
        for e in self.tasks:
            name = e.params.get("dataset")
            if not isinstance(name, str) or name not in data.names():
                continue
            row = {"task": e.label, "dataset": name, **data.describe(name)}
            row.update(e.data or {})
            out.append(row)
        return out

    def data_notes(self) -> list[str]:
        """One line per task whose data are not what its ``params.dataset`` asked for (a ``fallback``)."""
        return [f"task {e.label!r}: dataset {e.data['requested']!r} is not in the data cache, so it runs on its "
                f"synthetic stand-in {e.params['dataset']!r} (fallback = {e.data['fallback']!r}; "
                f"`hpo-bench data fetch {e.data['requested']}` or `hpo-bench data import {e.data['requested']} "
                "FILE` for the real data)" for e in self.tasks if e.data and e.data.get("substituted")]


def _fallback(value: Any, params: dict[str, Any], where: str, ck: _Checker) -> tuple[dict[str, Any], dict[str, Any]]:
    """A task's ``fallback``: ``params`` with a missing downloaded ``dataset`` replaced by its stand-in, and the
    record of it (``{"requested", "fallback", "substituted"}``)."""
    from .. import data

    if value not in FALLBACKS:
        ck.fail(f"{where}.fallback", f"one of {list(FALLBACKS)} (what replaces a dataset missing from the data "
                "cache)", value)
    with_stand_in = [e.stand_in_for for e in data.entries(synthetic=True) if e.stand_in_for]
    name = params.get("dataset")
    if not isinstance(name, str) or name not in with_stand_in:
        ck.fail(f"{where}.fallback", f"set only on a task whose `params.dataset` is a downloaded dataset with a "
                f"registered stand-in ({', '.join(with_stand_in)})", {"fallback": value, "dataset": name})
    substituted = not data.available(name)
    if substituted:
        params = {**params, "dataset": data.stand_in_of(name)}
    return params, {"requested": name, "fallback": value, "substituted": substituted}


def named_suites() -> dict[str, Path]:
    root = resources.files("hpo_bench") / "suites"
    return {Path(str(p)).stem: Path(str(p)) for p in root.iterdir() if str(p).endswith(".toml")}


def suite_path(name_or_path: str) -> Path:
    """A named suite (``quick``) or a path to a TOML file."""
    named = named_suites()
    if name_or_path in named:
        return named[name_or_path]
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise SuiteError(f"suite file {str(p)!r} does not exist")
        return p
    raise SuiteError(f"unknown suite {name_or_path!r}; named suites: {', '.join(sorted(named))} "
                     "(or give a path to a .toml file)")


class _Checker:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, rule: str, value: Any = inspect.Parameter.empty) -> None:
        got = "" if value is inspect.Parameter.empty else f", but got {value!r}"
        raise SuiteError(f"suite file {self.path!r}: key `{key}` must be {rule}{got}")

    def keys(self, table: dict, allowed: set[str], where: str) -> None:
        extra = sorted(set(table) - allowed)
        if extra:
            prefix = f"{where}." if where else ""
            self.fail(f"{prefix}{extra[0]}", f"one of the known keys ({', '.join(sorted(allowed))})", extra[0])

    def seed_list(self, seeds: Any, key: str, rule: str) -> list[int]:
        if not isinstance(seeds, list) or not seeds:
            self.fail(key, rule, seeds)
        for i, s in enumerate(seeds):
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                self.fail(f"{key}[{i}]", "an integer >= 0", s)
        if len(set(seeds)) != len(seeds):
            self.fail(key, "free of repeats", seeds)
        return seeds

    def budget(self, table: Any, where: str) -> Budget:
        if not isinstance(table, dict):
            self.fail(where, "a table like { steps = 30, seconds = 10.0 }", table)
        self.keys(table, BUDGET_KEYS, where)
        steps, seconds = table.get("steps"), table.get("seconds")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            self.fail(f"{where}.steps", "an integer >= 1", steps)
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not 0 < seconds <= MAX_TIMEOUT):
            self.fail(f"{where}.seconds", f"a number > 0 and <= {MAX_TIMEOUT:.0f} (the longest hard timeout)",
                      seconds)
        if steps is None and seconds is None:
            self.fail(where, "a table with `steps`, `seconds` or both", table)
        return Budget(steps=steps, seconds=float(seconds) if seconds is not None else None)

    def timeout(self, value: Any, where: str) -> float:
        try:
            return check_timeout(value, f"suite file {self.path!r}: key `{where}`")
        except ValueError as exc:
            raise SuiteError(str(exc)) from None


def load_suite(name_or_path: str, *, validate: bool = True) -> Suite:
    """Parse and validate a suite; every problem raises :class:`SuiteError`."""
    path = suite_path(name_or_path)
    shown = str(path) if not str(path).startswith(str(resources.files("hpo_bench"))) else f"<{path.stem}>"
    ck = _Checker(shown)
    data = path.read_bytes()
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SuiteError(f"suite file {shown!r}: not valid TOML: {exc}") from None
    return _suite_from_raw(raw, ck, default_name=path.stem, path=str(path), sha256=hashlib.sha256(data).hexdigest(),
                           validate=validate)


def _plugin_folders(value: Any, path: str, ck: _Checker) -> tuple[str, ...]:
    """The suite's ``plugins`` (folders relative to the suite file; absolute ones as they are), then the folders of
    ``HPO_BENCH_PLUGINS``, resolved and loaded (:func:`hpo_bench.core.plugins.load_folders`) so that the names
    below resolve against them."""
    from ..core.plugins import PluginFolderError, folders_from_env, load_folders

    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        ck.fail("plugins", "a list of folder paths (strings, relative to the suite file)", value)
    base = Path(path).parent if Path(path).is_file() else Path.cwd()
    folders = [base / v for v in value]
    for i, f in enumerate(folders):
        if not f.is_dir():
            ck.fail(f"plugins[{i}]", "an existing folder of .py files (relative to the suite file)", value[i])
    try:
        loaded = load_folders([*folders, *folders_from_env()])
    except PluginFolderError as exc:
        raise SuiteError(f"suite file {ck.path!r}: {exc}") from None
    return tuple(dict.fromkeys(str(f) for f in loaded))


def _suite_from_raw(raw: dict[str, Any], ck: _Checker, *, default_name: str, path: str, sha256: str,
                    validate: bool) -> Suite:
    """The checks and the build behind :func:`load_suite` and :meth:`Suite.from_dict`."""
    ck.keys(raw, TOP_KEYS, "")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not _LABEL.match(name):
        ck.fail("name", "a string of letters, digits and _.+=-", name)
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        ck.fail("description", "a string", desc)
    if "seeds" not in raw:
        ck.fail("seeds", "present (a non-empty list of distinct integers >= 0)")
    seeds = ck.seed_list(raw["seeds"], "seeds", "a non-empty list of distinct integers >= 0")
    suite_seed = raw.get("seed", 0)
    if isinstance(suite_seed, bool) or not isinstance(suite_seed, int) or suite_seed < 0:
        ck.fail("seed", "an integer >= 0 (the suite seed)", suite_seed)
    timeout = ck.timeout(raw["timeout"], "timeout") if "timeout" in raw else None
    dtype = raw.get("dtype", "float64")
    try:
        resolve_dtype(dtype)
    except (ValueError, TypeError):
        ck.fail("dtype", "'float64' or 'float32'", dtype)
    device = raw.get("device", "cpu")
    if not isinstance(device, str):
        ck.fail("device", "a torch device string such as 'cpu' or 'cuda'", device)
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        ck.fail("device", "a torch device string such as 'cpu', 'cuda' or 'cuda:1'", device)
    reference = raw.get("reference", True)
    if not isinstance(reference, bool):
        ck.fail("reference", "true or false", reference)
    budget = ck.budget(raw.get("budget", {"steps": 50}), "budget")
    plugins = _plugin_folders(raw.get("plugins", []), path, ck)

    entries: dict[str, list[Entry]] = {}
    for kind, registry in (("task", TASKS), ("tuner", TUNERS)):
        tables = raw.get(kind)
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            ck.fail(kind, f"a non-empty array of tables ([[{kind}]] with at least a `name`)", tables)
        out: list[Entry] = []
        for i, t in enumerate(tables):
            where = f"{kind}[{i}]"
            ck.keys(t, ENTRY_KEYS[kind], where)
            nm = t.get("name")
            if not isinstance(nm, str):
                ck.fail(f"{where}.name", f"a registered {kind} name ({', '.join(registry.names())})", nm)
            if nm not in registry:
                hint = registry.broken_hint(nm)  # a plug-in that failed to import may be where it lives
                if hint:
                    raise SuiteError(f"suite file {ck.path!r}: key `{where}.name` must be a registered {kind} name, "
                                     f"but got {nm!r}: {hint}")
                ck.fail(f"{where}.name", f"a registered {kind} name ({', '.join(registry.names())})", nm)
            label = t.get("label", nm)
            if not isinstance(label, str) or not _LABEL.match(label):
                ck.fail(f"{where}.label", "a string of letters, digits and _.+=-", label)
            params = t.get("params", {})
            if not isinstance(params, dict):
                ck.fail(f"{where}.params", "a table of keyword arguments", params)
            ebudget = ck.budget(t["budget"], f"{where}.budget") if "budget" in t else None
            etimeout = ck.timeout(t["timeout"], f"{where}.timeout") if "timeout" in t else None
            only = t.get("tasks")
            if only is not None:
                known = [e.label for e in entries["task"]]
                if not isinstance(only, list) or not only or not all(isinstance(x, str) for x in only):
                    ck.fail(f"{where}.tasks", "a non-empty list of task labels", only)
                for x in only:
                    if x not in known:
                        ck.fail(f"{where}.tasks", f"a list of task labels of this suite ({', '.join(known)})", x)
                if len(set(only)) != len(only):
                    ck.fail(f"{where}.tasks", "free of repeats (a repeated label would run its cells twice)", only)
                only = tuple(only)
            params, data_use = dict(params), None
            if kind == "task" and "fallback" in t:
                params, data_use = _fallback(t["fallback"], params, where, ck)
            out.append(Entry(nm, label, params, ebudget, only, etimeout, data_use))
        labels = [e.label for e in out]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            ck.fail(f"{kind}[*].label", f"unique (give each repeated {kind} a `label`)", dup)
        seen: dict[str, list[int]] = {}
        all_tasks = {e.label for e in entries.get("task", out)}
        for i, e in enumerate(out):
            # same name, params and budget under two labels (on a common task): the same cells twice
            key = json.dumps([e.name, e.params, e.budget and (e.budget.steps, e.budget.seconds)], sort_keys=True,
                             default=str)
            for j in seen.get(key, []):
                if set(out[j].only_tasks or all_tasks) & set(e.only_tasks or all_tasks):
                    ck.fail(f"{kind}[{i}]", f"different from {kind}[{j}] (same name, params and budget: duplicate "
                            "cells)", {"name": e.name, "label": e.label, "params": e.params})
            seen.setdefault(key, []).append(i)
        entries[kind] = out

    tune = _parse_tune(raw, entries["tuner"], list(seeds), ck)
    suite = Suite(name=name, path=path, description=desc, seeds=list(seeds), tasks=entries["task"],
                  tuners=entries["tuner"], budget=budget, dtype=dtype, device=device, reference=reference,
                  sha256=sha256, raw=raw, seed=suite_seed, timeout=timeout,
                  tune=tune, plugins=plugins)
    if validate:
        _validate_params(suite, ck)
    return suite


def _parse_tune(raw: dict, tuners: list[Entry], seeds: list[int], ck: _Checker) -> TuneSpec | None:
    """The ``[tune]`` table and the tuners' ``tune`` grids (knob names are checked by building tuners)."""
    grids: dict[str, dict[str, list]] = {}
    first = None
    for i, t in enumerate(raw["tuner"]):
        if "tune" not in t:
            continue
        where = f"tuner[{i}].tune"
        grid = t["tune"]
        if not isinstance(grid, dict) or not grid:
            ck.fail(where, "a non-empty table of knob = [values] (e.g. { outer_lr = [0.05, 0.2] })", grid)
        n = 1
        for knob, values in grid.items():
            if not isinstance(values, list) or not values:
                ck.fail(f"{where}.{knob}", "a non-empty list of values to try", values)
            if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
                ck.fail(f"{where}.{knob}", "free of repeats", values)
            if knob in t.get("params", {}):
                ck.fail(f"{where}.{knob}", f"absent from tuner[{i}].params (the tune step sets a tuned knob)", knob)
            n *= len(values)
        if n > MAX_TUNE_COMBOS:
            ck.fail(where, f"a grid of at most {MAX_TUNE_COMBOS} combinations", f"{n} combinations")
        grids[tuners[i].label] = {k: list(v) for k, v in grid.items()}
        first = i if first is None else first
    table = raw.get("tune")
    if table is None:
        if grids:
            ck.fail("tune.seeds", f"present (a [tune] table with tuning seeds), since tuner[{first}] declares `tune`")
        return None
    if not isinstance(table, dict):
        ck.fail("tune", "a table like { seeds = [100, 101] }", table)
    ck.keys(table, TUNE_KEYS, "tune")
    tseeds = ck.seed_list(table.get("seeds"), "tune.seeds",
                          "a non-empty list of distinct integers >= 0 (the tuning seeds)")
    overlap = sorted(set(tseeds) & set(seeds))
    if overlap:
        ck.fail("tune.seeds", "disjoint from `seeds` (tuning on the evaluation seeds would leak)", overlap)
    scope = table.get("scope", "task")
    if scope not in TUNE_SCOPES:
        ck.fail("tune.scope", f"one of {list(TUNE_SCOPES)}", scope)
    budget = ck.budget(table["budget"], "tune.budget") if "budget" in table else None
    return TuneSpec(seeds=tuple(tseeds), grids=grids, scope=scope, budget=budget)


def dense_refusal(tuner_cls: Any, params: dict[str, Any], n_params: int, n_hyper: int) -> str | None:
    """Why ``tuner_cls(**params)`` cannot run a task of ``n_params`` weights and ``n_hyper`` hyperparameters
    (a dense matrix of its :meth:`~hpo_bench.core.tuner.Tuner.dense_needs` above :data:`DENSE_MAX_PARAMS`), or
    ``None``. Needs no built tuner and no task data: only the two sizes."""
    needs = getattr(tuner_cls, "dense_needs", None)
    for what, shape in (needs(params) if needs is not None else []):
        kind, _, desc = str(shape).partition(":")
        kind = kind.strip()
        cols = n_params if kind == "p x p" else n_hyper
        if n_params * cols > DENSE_MAX_PARAMS ** 2:
            size = (f"n_params = {n_params} > {DENSE_MAX_PARAMS}" if kind == "p x p" else
                    f"n_params x n_hyper = {n_params} x {n_hyper} = {n_params * n_hyper:.3g} entries > "
                    f"{DENSE_MAX_PARAMS}^2")
            return (f"{what} forms a dense {kind} matrix ({desc.strip() or kind}), and {size} "
                    "(the limit hpo_bench.running.suite.DENSE_MAX_PARAMS)")
    return None


def _validate_params(suite: Suite, ck: _Checker) -> None:
    """Check every task's keywords and build every task (once) and tuner, before any cell runs; then
    refuse every cell whose task lacks a tag its tuner requires (:meth:`Tuner.required_tags`) or has a
    tag its tuner refuses (``refused_tags(params) -> {tag: reason}``, e.g. the gradient tuner's
    smooth-only solvers and methods on a ``"non-smooth"`` task), and every cell whose tuner forms a dense
    matrix too large for its task (:func:`dense_refusal`)."""
    built: dict[str, Any] = {}
    for i, e in enumerate(suite.tasks):
        cls = TASKS.get(e.name)
        sig = inspect.signature(cls.__init__)
        known = [p for p in sig.parameters if p not in ("self", "seed", "dtype", "device")]
        has_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        for key in e.params:
            if key in ("seed", "dtype", "device"):
                ck.fail(f"task[{i}].params.{key}", "set at suite level (`seeds`, `dtype`, `device`), not per task",
                        key)
            if not has_kwargs and key not in known:
                ck.fail(f"task[{i}].params.{key}", f"a parameter of task {e.name!r} ({', '.join(known)})", key)
        # Build the task once (first repetition seed, on the CPU: the driver may have no GPU) so that
        # bad values (`n = -5`, a wrong type) are caught now, not as `error` cells after hours of work;
        # a cell in this process with the same instance takes it instead of building it again (_instances)
        try:
            built[e.label] = cls(**e.params, seed=suite.seeds[0], dtype=suite.dtype, device="cpu")
            _instances.offer(_instances.instance_key(e.name, e.params, suite.seeds[0], suite.dtype, "cpu"),
                             built[e.label])
        except DatasetMissingError as exc:  # one line: the dataset, the fetch command and the import command
            raise SuiteError(f"suite file {ck.path!r}: key `task[{i}].params.dataset`: {exc}") from None
        except (TaskParamError, SpaceError, TypeError, ValueError) as exc:
            raise SuiteError(f"suite file {ck.path!r}: key `task[{i}].params`: {exc}") from None
        except MemoryError:
            raise SuiteError(f"suite file {ck.path!r}: key `task[{i}].params` must fit in memory, but building "
                             f"task {e.name!r} with {e.params!r} ran out of memory") from None
    for i, e in enumerate(suite.tuners):
        try:
            TUNERS.get(e.name)(**e.params)
        except TypeError as exc:
            ck.fail(f"tuner[{i}].params", f"keyword arguments of tuner {e.name!r} ({exc})", e.params)
        except (ValueError, UnknownNameError) as exc:
            raise SuiteError(f"suite file {ck.path!r}: key `tuner[{i}].params`: {exc}") from None
    for i, e in enumerate(suite.tuners):  # every combination of the tune step must build
        for combo in suite.tune.combos(e.label) if suite.tune is not None else []:
            try:
                TUNERS.get(e.name)(**e.params, **combo)
            except TypeError as exc:
                ck.fail(f"tuner[{i}].tune", f"knobs of tuner {e.name!r} ({exc})", suite.tune.grids[e.label])
            except (ValueError, UnknownNameError) as exc:
                raise SuiteError(f"suite file {ck.path!r}: key `tuner[{i}].tune` ({combo}): {exc}") from None
    for j, u in enumerate(suite.tuners):  # declared requirements: nothing fails at run time for a knowable reason
        cls = TUNERS.get(u.name)
        variants = [({}, "")] + [(c, f" with tune {c}") for c in (suite.tune.combos(u.label) if suite.tune else [])]
        for t in suite.tasks:
            if u.only_tasks is not None and t.label not in u.only_tasks:
                continue
            for combo, how in variants:
                missing = missing_tags(cls, {**u.params, **combo}, built[t.label])
                if missing:
                    raise SuiteError(
                        f"suite file {ck.path!r}: key `tuner[{j}]`: tuner {u.label!r} ({u.name}{how}) needs task tag "
                        f"{missing[0]!r}, which task {t.label!r} ({t.name}) does not have (its tags: "
                        f"{', '.join(sorted(built[t.label].tags))}); leave the task out with the tuner's "
                        "`tasks = [...]` or choose other params")
                refused = getattr(cls, "refused_tags", None)  # tags a tuner cannot run on (e.g. "non-smooth")
                for tag, why in (refused({**u.params, **combo}) if refused is not None else {}).items():
                    if tag in built[t.label].tags:
                        raise SuiteError(
                            f"suite file {ck.path!r}: key `tuner[{j}]`: tuner {u.label!r} ({u.name}{how}) cannot run "
                            f"task {t.label!r} ({t.name}), which is tagged {tag!r}: {why}; leave the task out with "
                            "the tuner's `tasks = [...]` or choose other params")
                task = built[t.label]
                why = dense_refusal(cls, {**u.params, **combo}, int(task.n_params), int(task.space.dim))
                if why is not None:
                    raise SuiteError(
                        f"suite file {ck.path!r}: key `tuner[{j}]`: tuner {u.label!r} ({u.name}{how}) cannot run "
                        f"task {t.label!r} ({t.name}): {why}; choose a matrix-free method (e.g. method = 'cg') or "
                        "tuner, or leave the task out with the tuner's `tasks = [...]`")
