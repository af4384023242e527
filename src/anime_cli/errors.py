"""Errors, and the signals that cross module boundaries.

Errors a user can cause carry one line of text meant for a human; the CLI
prints it without a traceback."""

from __future__ import annotations


def first_line(e: BaseException, limit: int | None = 160) -> str:
    """An exception's message cut to one line (and to `limit` characters; None:
    uncut) for a record or the terminal, its type's name when it has none:
    library messages run over many lines."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


class AnimeCliError(Exception):
    """Base class: str(err) is the whole message, one line."""


class UsageError(AnimeCliError):
    """Nothing can start: a bad option, a missing input, an unusable output
    folder or log file. The CLI exits 2 before any work."""


class MissingInput(UsageError):
    """An input given on the command line does not exist."""


class LogFileIsInput(UsageError):
    """--log-file names an input, or a file a folder walk would convert:
    appending to it would damage the user's file."""


class InputError(AnimeCliError):
    """One input file cannot be converted (bad data, over a limit, unreadable).
    `reason` is the short machine-friendly cause used in logs."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class UnsupportedFormat(InputError):
    """The file is not something we agree to decode: skipped, not failed."""


class WeightsError(AnimeCliError):
    """Weights missing, corrupt, or not plain tensors."""


class OutputError(AnimeCliError):
    """The output cannot be written (folder not creatable, disk full...).
    `fatal`: every later write is doomed too (disk full, read-only), so the
    batch stops."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


class OutputExists(OutputError):
    """Another process wrote this output first: the file is skipped, not failed."""


class Cancelled(Exception):
    """A caller's `cancel` was set while a file was in flight."""


class Fatal(Exception):
    """A write failed in a way that dooms every later write (disk full); it
    carries the record of the file that hit it."""

    def __init__(self, record):
        super().__init__(record.error)
        self.record = record
