"""Declared option schemas: one rule per option, checked the same way up front and at run time.

A hypergradient method, a tuner or any other component declares its user-settable options
as a small schema, ``{name: Option(...)}``; :func:`check_options` checks values against it
and raises one :class:`OptionError` naming the owner, the option, the rule and the value::

    CG_OPTIONS = {"tol": Option(float, low=0, low_open=True, high=1, high_open=True),
                  "max_iter": Option(int, low=1, optional=True),
                  "precond": Option(str, choices=("auto", "jacobi", "none"))}
    check_options("method 'cg'", CG_OPTIONS, {"tol": -1})
    # OptionError: method 'cg': option `tol` must be in (0, 1) (a finite number), but got -1

Suite validation calls the same function as the component's own run-time check, so the
two cannot drift. Types are strict: ``bool`` is not an ``int``, a ``str`` is never a number,
an ``int`` is accepted where a ``float`` is expected (TOML writes ``1`` for ``1.0``), and
floats must be finite unless ``finite=False``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Option", "OptionError", "check_option", "check_options", "type_rule", "is_type"]


class OptionError(ValueError):
    """An option breaks its declared rule; the message names the owner, the option, the rule and the value."""


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
               dict: "a table"}


def is_type(value: Any, kind: type) -> bool:
    """Whether ``value`` has type ``kind`` in the strict sense of this module (bool is not int).

    ``int`` accepts any integral number (NumPy integers too), ``float`` any real number.
    """
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, kind)


def type_rule(kind: type) -> str:
    """``"an integer"``, ``"a number"``, ... for a type."""
    return _TYPE_WORDS.get(kind, f"of type {kind.__name__}")


@dataclass(frozen=True)
class Option:
    """The rule of one option.

    Attributes:
        kind: ``int``, ``float``, ``bool``, ``str``, ``list`` or ``dict`` (strict; see the module docstring).
        low, high: bounds (inclusive unless ``low_open`` / ``high_open``); ``None``: unbounded.
        choices: the allowed values, if the option is an enumeration.
        optional: ``None`` is allowed (meaning "the default / automatic").
        finite: floats must be finite (``inf`` and ``nan`` are refused).
        doc: a few words for error messages and listings.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    optional: bool = False
    finite: bool = True
    doc: str = ""

    def rule(self) -> str:
        """The rule in words, e.g. ``"an integer >= 1"`` or ``"one of ['auto', 'none']"``."""
        if self.choices is not None:
            return f"one of {list(self.choices)}" + (" or omitted" if self.optional else "")
        bound = ""
        if self.low is not None and self.high is not None:
            bound = (f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                     f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            bound = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            bound = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        if self.kind is float:  # "> 0 (a finite number)": the bound first, as the hand-written rules read
            what = "a finite number" if self.finite else "a number"
            text = f"{bound} ({what})" if bound else what
        else:
            text = f"{type_rule(self.kind)} {bound}".rstrip()
        return text + (" or omitted" if self.optional else "")

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` satisfies the rule."""
        if value is None:
            return self.optional
        if self.choices is not None:
            return is_type(value, self.kind) and value in self.choices
        if not is_type(value, self.kind):
            return False
        if self.kind in (int, float):
            if isinstance(value, float) and math.isnan(value):
                return False
            if self.kind is float and self.finite and not math.isfinite(value):
                return False
            if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
                return False
            if self.high is not None and not (value < self.high if self.high_open else value <= self.high):
                return False
        return True


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def check_option(owner: str, key: str, value: Any, option: Option, *, word: str = "option",
                 error: type[ValueError] = OptionError) -> None:
    """Raise ``error`` (:class:`OptionError`) unless ``value`` satisfies ``option``.

    The message reads ``"<owner>: <word> `key` must be <rule>, but got <value>"``.
    """
    if not option.accepts(value):
        raise error(f"{owner}: {word} `{key}` must be {option.rule()}, but got {value!r}")


def check_options(owner: str, schema: Mapping[str, Option], values: Mapping[str, Any], *,
                  allow_unknown: bool = False, word: str = "option", error: type[ValueError] = OptionError) -> None:
    """Check every value against ``schema``; unknown keys are an error (listing the known ones) unless allowed."""
    if not allow_unknown:
        unknown = sorted(set(values) - set(schema))
        if unknown:
            known = ", ".join(sorted(schema)) or "none"
            raise error(f"{owner}: {word} `{unknown[0]}` must be one of the known {word}s ({known}), "
                        f"but got {unknown[0]!r}")
    for key, value in values.items():
        if key in schema:
            check_option(owner, key, value, schema[key], word=word, error=error)
