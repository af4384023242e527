"""What every subcommand shares on the terminal: one-line failures, the
library's parsers as Click types, the stop signals, stdio that may be closed."""

from __future__ import annotations

import os
import signal

import typer

from anime_cli.options import option_message


def fail(message: str, code: int = 2):
    from anime_cli.logs.telemetry import safe

    echo_err(f"anime-cli: {safe(message)}")
    raise typer.Exit(code)


def echo_err(text: str) -> None:
    try:
        typer.echo(text, err=True)
    except OSError:  # stderr closed: the exit code still tells
        pass


def parsed(parse):
    """One of the library's parsers as a Click type: Click turns its
    ValueError into a usage error naming the option, before any side effect."""

    def convert(value):
        return value if isinstance(value, int) else parse(value)

    return convert


def completer(choices):
    return lambda incomplete: [c for c in choices if c.startswith(incomplete.lower())]


def usage_line(e) -> str:
    """Click's usage error as one line that names the option."""
    from anime_cli.logs.telemetry import safe

    msg = e.format_message() if not isinstance(e, typer.BadParameter) else e.message
    msg = msg.removeprefix("Value error, ")
    param = getattr(e, "param", None)
    if isinstance(e, typer.BadParameter) and param is not None:
        name = max(param.opts, key=len) if getattr(param, "opts", None) else param.human_readable_name
        return safe(option_message(name, msg))
    return safe(msg)


def silence(fd: int) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:
        pass


def stop_signals():
    """The stop signals this platform has (no SIGHUP on Windows)."""
    return [s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None]


def batch_handlers():
    return {s: (signal.default_int_handler if s == signal.SIGINT else _raise_interrupt) for s in stop_signals()}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def interrupted_before_work(signum, frame):
    """A stop signal outside the batch (loading torch and the weights, walking
    the folders): nothing is written yet, so leave at once, without a traceback."""
    try:
        os.write(2, b"anime-cli: interrupted\n")
    except OSError:
        pass
    os._exit(130)


def hold_closed_std_fds() -> None:
    """Started with stdin, stdout or stderr closed (`>&-`): put /dev/null on
    that descriptor, so that no file opened later takes its number (a picture
    meant for stdout must never land in the log file). Python has already
    set sys.stdout (or stdin, stderr) to None, which is how the writers know."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
