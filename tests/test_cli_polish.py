"""The CLI as a new user meets it: --version, help texts, `list` summaries, and the README's shell commands."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import typer

from hpo_bench import cli
from _runs import invoke

ROOT = Path(__file__).resolve().parents[1]


def _commands(group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every command and group under `group` (typer may vendor click: matched by shape), as (argv path, command)."""
    out = [(path, group)]
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += _commands(cmd, (*path, name))
        else:
            out.append(((*path, name), cmd))
    return out


COMMANDS = _commands(typer.main.get_command(cli.app))
IDS = [" ".join(p) or "hpo-bench" for p, _ in COMMANDS]


def _help(monkeypatch, capsys, path: tuple[str, ...]) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    code, out, err = invoke(monkeypatch, capsys, *path, "--help")
    assert code == 0, err
    return out


def _squash(text: str) -> str:
    """`text` without whitespace: help wraps lines at spaces and hyphens."""
    return re.sub(r"\s+", "", text)


def test_version_prints_the_installed_version_and_exits_0(monkeypatch, capsys):
    code, out, err = invoke(monkeypatch, capsys, "--version")
    assert code == 0 and err == ""
    assert out == f"hpo-bench {version('hpo-bench')}\n"


def test_version_is_listed_in_the_top_level_help(monkeypatch, capsys):
    assert "--version" in _help(monkeypatch, capsys, ())


def test_the_commands_cover_the_sweep_subcommands():
    assert {"run", "list", "report", "sweep frontier", "sweep scaling"} <= set(IDS)


@pytest.mark.parametrize("path_cmd", COMMANDS, ids=IDS)
def test_flags_show_no_value_placeholder_in_help(monkeypatch, capsys, path_cmd):
    path, cmd = path_cmd
    out = _help(monkeypatch, capsys, path)
    assert "<bool>" not in out and "BOOLEAN" not in out
    flags = [p for p in cmd.params if getattr(p, "is_flag", False)]
    for flag in flags:  # listed, followed directly by its help text, not by a value placeholder
        opt = re.escape(max(flag.opts, key=len))
        line = next(line for line in out.splitlines() if re.search(rf"(^|\s){opt}(\s|,|$)", line))
        assert re.search(rf"{opt}\s+[^\s<]", line), line


@pytest.mark.parametrize("path_cmd", COMMANDS, ids=IDS)
def test_square_brackets_in_help_texts_survive(monkeypatch, capsys, path_cmd):
    path, cmd = path_cmd
    out = _squash(_help(monkeypatch, capsys, path))
    texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    bracketed = [b for t in texts for b in re.findall(r"\[[^\[\]]*\]", t)]
    for b in bracketed:
        assert _squash(b) in out, f"{b!r} is missing from `{' '.join(('hpo-bench', *path))} --help`"


def test_run_help_keeps_the_dist_extra(monkeypatch, capsys):
    assert "pip install 'hpo-bench[dist]'" in " ".join(_help(monkeypatch, capsys, ("run",)).split())


@pytest.mark.parametrize("doc, plain", [
    ("Optuna TPE; ``multivariate = true`` models the axes jointly.", "Optuna TPE; multivariate = true models the "
                                                                     "axes jointly."),
    ("Uses :class:`~hpo_bench.core.task.Task` and :func:`solve <hpo_bench.core.solvers.solve>`.", "Uses hpo_bench.core.task.Task "
                                                                                        "and solve."),
    ("A *fast* and **exact** `method`; see `optuna <https://optuna.org>`_ and `ref`_.", "A fast and exact method; "
                                                                                       "see optuna and ref."),
    ("\n    First line\n    goes on.\n\n    Second paragraph.\n", "First line goes on."),
    ("alpha * sum_{i<=K} (I - alpha H)^i; T*m <= K", "alpha * sum_{i<=K} (I - alpha H)^i; T*m <= K"),
    (None, ""),
])
def test_plain_summary_strips_rest_inline_markup(doc, plain):
    assert cli.plain_summary(doc) == plain


def test_list_summaries_are_plain_text(monkeypatch, capsys):
    code, out, err = invoke(monkeypatch, capsys, "list", "--json")
    assert code == 0, err
    data = json.loads(out)
    summaries = {r["name"]: r["summary"] for k in ("tasks", "tuners", "methods") for r in data[k]}
    assert summaries["tpe"].startswith("Optuna TPE") and "multivariate = true" in summaries["tpe"]
    for name, s in summaries.items():
        assert s and "``" not in s and ":class:" not in s and "\n" not in s, (name, s)


# ------------------------------------------------------------------ the docs' shell commands
#: Programs that exist only inside the project's virtual environment (a new shell finds the system ones, or none).
VENV_PROGRAMS = {"hpo-bench", "pytest", "python", "python3", "pip", "pip3"}
ACTIVATE = re.compile(r"^\s*(source|\.)\s+\S*bin/activate\b")  # .venv/bin/activate or an absolute path
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


def shell_blocks(text: str) -> list[str]:
    """The bodies of the ```bash / ```sh / ```shell / ```console fenced blocks of a markdown text, in order."""
    return re.findall(r"^```(?:bash|sh|shell|console)\s*\n(.*?)^```", text, flags=re.M | re.S)


def bare_venv_calls(text: str) -> list[str]:
    """Commands of the shell blocks that call a venv program by its bare name before any activate line."""
    bad, active = [], False
    for block in shell_blocks(text):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("$ "):
                line = line[2:]
            if ACTIVATE.match(line):
                active = True
                continue
            for command in re.split(r"&&|\|\||;|\|", line):
                words = [w for w in command.split() if not ENV_ASSIGNMENT.match(w)]
                if words and words[0] in VENV_PROGRAMS and not active:
                    bad.append(command.strip())
    return bad


def test_bare_venv_calls_are_found_before_an_activate_line_only():
    text = ("```bash\npytest -q\nOMP_NUM_THREADS=1 hpo-bench list && .venv/bin/hpo-bench run quick\n```\n"
            "```bash\nsource .venv/bin/activate\nhpo-bench list\n```\n")
    assert bare_venv_calls(text) == ["pytest -q", "OMP_NUM_THREADS=1 hpo-bench list"]


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.relative_to(ROOT).as_posix()
                                                    for p in (ROOT / "docs").glob("*.md"))])
def test_doc_shell_commands_use_the_project_venv(doc):
    assert bare_venv_calls((ROOT / doc).read_text()) == []
