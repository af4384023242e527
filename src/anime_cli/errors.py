"""Errors a user can cause. Each carries one line of text meant for a human;
the CLI prints it without a traceback."""


class AnimeCliError(Exception):
    """Base class: str(err) is the whole message, one line."""


class InputError(AnimeCliError):
    """One input file cannot be converted (bad data, over a limit, unreadable).
    `reason` is the short machine-friendly cause used in logs."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class UnsupportedFormat(InputError):
    """The file is not an image format we agree to decode: skipped, not failed."""


class WeightsError(AnimeCliError):
    """Weights missing, corrupt, or not plain tensors."""


class OutputError(AnimeCliError):
    """The output cannot be written (folder not creatable, disk full...)."""
