"""Errors of the data layer.

Every error is one line that names the dataset and says what to do. They are shaped like
click's usage errors (``format_message()`` and ``exit_code``), so the ``hpo-bench`` entry point
prints any of them that escapes a command as one ``hpo-bench: error: ...`` line with that exit
status (2 for input that is refused, 1 for a download or file that failed).
"""

from __future__ import annotations

__all__ = ["DataError", "UnknownDatasetError", "DatasetMissingError", "ChecksumError", "UnverifiedSourceError",
           "CorruptDataError", "FetchError"]


class DataError(ValueError):
    """Base class: a dataset request that cannot be met (one line, exit status :attr:`exit_code`)."""

    exit_code = 2

    def format_message(self) -> str:
        return str(self)


class UnknownDatasetError(DataError, KeyError):
    """A name that is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetMissingError(DataError):
    """A registered dataset whose files are not in the data cache (nothing is downloaded implicitly)."""

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        super().__init__(f"dataset {name!r} is not in the data cache ({where}): fetch it with "
                         f"`hpo-bench data fetch {name}` or import a local copy with "
                         f"`hpo-bench data import {name} FILE`")


class ChecksumError(DataError):
    """A file whose checksum differs from the registered one (it is deleted, never used)."""


class UnverifiedSourceError(DataError):
    """A file with no registered checksum, fetched or imported without ``verify=False``."""


class CorruptDataError(DataError):
    """A file that does not parse (truncated, wrong format): it is deleted from the cache, never used."""


class FetchError(DataError):
    """A download that failed after its retries (network, server)."""

    exit_code = 1
