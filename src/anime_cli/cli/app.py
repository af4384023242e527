"""The command line: a thin layer over the Python API (anime_cli.run.converter).

Every option is checked by the parser (Click types and choices) before
anything touches the disk. Exit codes: 0 every file ok or skipped; 1 at least
one file failed (the batch goes on); 2 nothing could start (bad option,
missing input, unusable output folder or log file, missing weights, an
impossible memory limit); 130 interrupted (Ctrl-C, SIGTERM or SIGHUP).
"""

from __future__ import annotations

import re
import signal
import sys

import typer
from typer.core import TyperGroup

try:  # Typer 0.2x carries its own copy of Click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:
    from click.exceptions import NoArgsIsHelpError, UsageError

from . import convert, install_weights, serve, styles
from .shell import echo_err, hold_closed_std_fds, interrupted_before_work, stop_signals, usage_line

# torch (through weights/stylize) is imported only once a command runs, after main()
# has taken over the signals: an early Ctrl-C exits 130 instead of a traceback.


class _OneLine(UsageError):
    """A usage error shown as one line that names the option (Click's own
    is three lines of usage, hint and error)."""

    def __init__(self, e: UsageError):
        super().__init__(usage_line(e), getattr(e, "ctx", None))

    def show(self, file=None) -> None:
        echo_err(f"anime-cli: {self.message}")


def _ray_value(args: list[str]) -> list[str]:
    """`--ray` takes an optional ADDRESS: read the next word as one only when it
    looks like an address ('auto', ray://head:10001, head:6379), so that
    `--ray --quiet` or `--ray photos/` keep their meaning."""
    out = list(args)
    for i, a in enumerate(out):
        if a == "--":
            break
        if a == "--ray":
            nxt = out[i + 1] if i + 1 < len(out) else ""
            if not (nxt == "auto" or "://" in nxt or re.fullmatch(r"[\w.-]+:\d+", nxt)):
                out[i] = "--ray=local"
    return out


class _Group(TyperGroup):
    def make_context(self, info_name, args, *rest, **kw):
        try:
            return super().make_context(info_name, _ray_value(args), *rest, **kw)
        except NoArgsIsHelpError:
            raise
        except UsageError as e:
            raise _OneLine(e) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (NoArgsIsHelpError, _OneLine):
            raise
        except UsageError as e:  # the subcommand's options
            raise _OneLine(e) from None


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Turn photos into anime-style pictures with AnimeGAN generators, on the CPU.\n\n"
    "Examples:\n\n"
    "  anime-cli convert photo.jpg\n\n"
    "  anime-cli convert ~/Pictures -r -o out/\n\n"
    "  anime-cli styles",
)


app.command()(convert.convert)
app.command()(styles.styles)
app.command("install-weights")(install_weights.install_weights)
app.command()(serve.serve)


def main():
    hold_closed_std_fds()
    for s in stop_signals():
        signal.signal(s, interrupted_before_work)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
