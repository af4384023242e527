"""The command line: a thin layer over the Python API (anime_cli.pipeline).

Every option is checked by the parser (Click types and choices) before
anything touches the disk. Exit codes: 0 every file ok or skipped; 1 at least
one file failed (the batch goes on); 2 nothing could start (bad option,
missing input, unusable output folder or log file, missing weights, an
impossible memory limit); 130 interrupted (Ctrl-C, SIGTERM or SIGHUP).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import List, Optional

# Before torch loads libgomp (it reads this once): a band worker's OpenMP team
# whose idle threads spin holds the cores its own team-mates wait for on a
# busy machine; one two-thread team ran 0.03 MP/s against 0.26 when they sleep
# (2 loaded cores, bench/threads.py --workers 1). The user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402
from rich.console import Console
from typer.core import TyperGroup

try:  # Typer 0.2x carries its own copy of Click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:
    from click.exceptions import NoArgsIsHelpError, UsageError

from .download import TIMEOUT_S
from .errors import AnimeCliError
from .options import (DEFAULT_CRF, DEFAULT_FACE_SIZE, DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS,
                      DEFAULT_MAX_SIDE, DEFAULT_MEMORY_LIMIT, DEFAULT_OUTPUT, DEFAULT_QUALITY, DEFAULT_STYLE, FORMATS,
                      PRECISIONS, VIDEO_FACE_SIZE, format_bytes, format_count, parse_bytes, parse_choice, parse_count)

# torch (through weights/stylize) is imported only once a command runs, after main()
# has taken over the signals: an early Ctrl-C exits 130 instead of a traceback.


class _OneLine(UsageError):
    """A usage error shown as one line that names the option (Click's own
    is three lines of usage, hint and error)."""

    def __init__(self, e: UsageError):
        super().__init__(_usage_line(e), getattr(e, "ctx", None))

    def show(self, file=None) -> None:
        _echo(f"anime-cli: {self.message}")


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


def _parsed(parse):
    """One of the library's parsers as a Click type: Click turns its
    ValueError into a usage error naming the option, before any side effect."""

    def convert(value):
        return value if isinstance(value, int) else parse(value)

    return convert




def _check_name(pattern: str) -> str:
    from . import names

    names.check(pattern)  # ValueError: a usage error naming --name, before any work
    return pattern


def _completer(choices):
    return lambda incomplete: [c for c in choices if c.startswith(incomplete.lower())]


def fail(message: str, code: int = 2):
    from .telemetry import safe

    _echo(f"anime-cli: {safe(message)}")
    raise typer.Exit(code)


def _echo(text: str) -> None:
    try:
        typer.echo(text, err=True)
    except OSError:  # stderr closed: the exit code still tells
        pass


def _complete_style(incomplete: str):
    try:
        from . import weights

        return [w.name for w in weights.manifest().values() if w.kind == "style" and w.name.startswith(incomplete)]
    except Exception:  # completion must never print a traceback into the shell
        return []


@app.command()
def convert(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Pictures, videos and/or folders; '-' reads one picture from stdin."),
    output: str = typer.Option(DEFAULT_OUTPUT, "-o", "--output", metavar="DIR", help="Output folder, mirroring the input tree; '-' writes the one result to stdout."),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Walk sub-folders of folder inputs."),
    max_side: int = typer.Option(DEFAULT_MAX_SIDE, "--max-side", min=0, help="Longest side of the output in px; never upscales; 0 keeps the native size."),
    fmt: str = typer.Option("auto", "--format", metavar="FORMAT", parser=_parsed(parse_choice(FORMATS, ("jpeg",))), autocompletion=_completer(FORMATS), help="auto (keep the input's format; PNG when it can't be written or has alpha), png, jpg or webp."),
    quality: int = typer.Option(DEFAULT_QUALITY, "--quality", min=1, max=100, help="JPEG/WebP quality."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them, so a rerun resumes)."),
    face_enhance: bool = typer.Option(True, "--face-enhance/--no-face-enhance", help="Re-render each face at --face-size px (face2paint)."),
    min_face: Optional[int] = typer.Option(None, "--min-face", min=1, metavar="PX", help="Smallest face width (px, in the working image) to enhance. [default: the face module's]"),
    face_size: Optional[int] = typer.Option(None, "--face-size", min=64, max=2048, metavar="PX", help=f"Size at which faces are re-rendered. [default: {DEFAULT_FACE_SIZE} for photos, {VIDEO_FACE_SIZE} for video]"),
    style: str = typer.Option(DEFAULT_STYLE, "--style", autocompletion=_complete_style, help="Installed style to use (see `anime-cli styles`)."),
    weights_path: Optional[Path] = typer.Option(None, "--weights", metavar="PATH", help="A generator state dict of a known family (overrides --style)."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", metavar="FILE", help="Append one JSON object per input file (JSON Lines)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar, no per-file lines; errors still print."),
    max_file_size: int = typer.Option(format_bytes(DEFAULT_MAX_FILE_SIZE), "--max-file-size", metavar="SIZE", parser=_parsed(parse_bytes), help="Refuse photos larger than this, before reading them (videos are streamed; --max-frames bounds them)."),
    max_pixels: int = typer.Option(format_count(DEFAULT_MAX_PIXELS), "--max-pixels", metavar="N", parser=_parsed(parse_count), help="Refuse images whose header declares more pixels (decompression bombs)."),
    memory_limit: int = typer.Option(format_bytes(DEFAULT_MEMORY_LIMIT), "--memory-limit", metavar="SIZE", parser=_parsed(parse_bytes), help="Peak RSS budget for the whole process; big images are processed in pieces to stay inside. 0: no limit."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the network. [default: the cores this process may use]"),
    precision: str = typer.Option("auto", "--precision", metavar="P", parser=_parsed(parse_choice(PRECISIONS)), autocompletion=_completer(PRECISIONS), help="Network arithmetic: auto (bf16 where the CPU has native bfloat16, else fp32), bf16 (about twice as fast, ~53 dB from fp32) or fp32 (exact)."),
    crf: int = typer.Option(DEFAULT_CRF, "--crf", min=0, max=51, metavar="N", help="Video quality (H.264/VP9 constant rate factor): lower is better and bigger; 18 looks lossless on anime."),
    max_frames: int = typer.Option(DEFAULT_MAX_FRAMES, "--max-frames", min=1, metavar="N", help="Refuse videos and animations with more frames (a bomb cannot run for days)."),
    sequential: bool = typer.Option(False, "--sequential", help="One file at a time, on all threads. By default two files are in flight, sharing the cores and the memory budget."),
    name: str = typer.Option("{stem}", "--name", metavar="PATTERN", parser=_parsed(_check_name), help="The output file name, without its suffix (the output format's is added): fields {stem} {ext} {style} {width} {height} {input_ext}; e.g. '{stem}_{style}'."),
    keep_metadata: bool = typer.Option(False, "--keep-metadata", help="Copy the photo's EXIF and XMP (camera, lens, date taken, exposure) into the output: orientation 1, no thumbnail, no GPS (see --keep-gps), the output's size."),
    keep_gps: bool = typer.Option(False, "--keep-gps", help="With --keep-metadata, keep the GPS position too."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Walk, probe headers and plan: one 'planned' record per file with its output path, size, engine plan and estimated peak memory. Decodes and writes nothing."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N", help="Convert only the K-th of N parts of the inputs (by a hash of each file's path): N processes or machines split a batch with no coordinator."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run on Ray Data: a local Ray (no ADDRESS) or a cluster ('auto', 'ray://head:10001'); inputs and -o may be s3:// URIs. Needs anime-cli[ray]."),
    json_out: bool = typer.Option(False, "--json", help="One JSON record per file on stdout as each finishes (the --log-file schema); human lines stay on stderr."),
):
    """Convert photos, videos and animations into anime style.

    Examples:

      anime-cli convert photo.jpg                      # -> anime-out/photo.jpg

      anime-cli convert ~/Pictures -r -o out/          # out/ mirrors the tree

      anime-cli convert a.jpg b.png dir/ -o out --max-side 1024 --log-file run.jsonl --quiet

      cat photo.jpg | anime-cli convert - -o - > anime.jpg
    """
    from .batch import Batch, start, start_ray
    from .options import Options
    from .probe import configure_process

    configure_process(max_pixels)  # warnings, libtiff's stderr, Pillow's bomb guard: the CLI's choices
    to_stdout = output == "-"
    if json_out and to_stdout:
        fail("--json writes the records to stdout, where -o - writes the picture; use --log-file instead")
    options = Options(
        output_dir=None if to_stdout else Path(output).expanduser(), max_side=max_side, format=fmt,
        quality=quality, overwrite=overwrite, face_enhance=face_enhance, min_face=min_face, face_size=face_size,
        max_file_size=max_file_size, max_pixels=max_pixels, memory_limit=memory_limit, pipelined=not sequential,
        dry_run=dry_run, crf=crf, max_frames=max_frames, name=name, keep_metadata=keep_metadata, keep_gps=keep_gps,
        weights=weights_path,
        style=weights_path.stem if weights_path is not None else style,
    )
    common = dict(recursive=recursive, log_file=log_file, style=style, weights_path=weights_path, threads=threads,
                  precision=precision)
    try:
        if ray is not None:
            if shard is not None or dry_run:
                fail("--ray runs the whole batch on the cluster; it does not take --shard or --dry-run")
            batch: Batch = start_ray(inputs, output, options, address=ray, **common)
        else:
            batch = start(inputs, options, shard=shard, **common)
    except AnimeCliError as e:
        fail(str(e))
    sys.exit(_run(batch, quiet, json_out))


def _run(batch, quiet: bool, json_out: bool = False) -> int:
    """Run the batch, print each record and the summary; the exit code."""
    from .output import remove_temp_files
    from .progress import WorkProgress
    from .telemetry import safe

    console = _Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

    def say(text: str) -> None:
        try:
            console.print(safe(text))
        except OSError:
            console.on_broken_pipe()

    progress = WorkProgress(console, batch.total, enabled=console.is_terminal and not quiet)
    if batch.converter is not None:
        batch.converter.progress = progress
    code = 0
    # During the batch these signals raise KeyboardInterrupt where the main thread is,
    # so the batch unwinds: temp files removed, writes in flight undone, summary printed.
    previous = {s: signal.signal(s, h) for s, h in _batch_handlers().items()}

    def report(rec, line: str | None = None):
        batch.tally(rec)
        if batch.converter is None:  # on Ray: the bar counts files as they come back
            progress.planned(id(rec), rec.input, 1)
            progress.finished(id(rec))
        if json_out:
            _print_json(rec)
        if not quiet or rec.status == "error":
            say(rec.human())
        if line and (not quiet or rec.status == "error" or line.startswith("stopping")):
            say(line)
        if batch.log_error_new():
            say(f"anime-cli: {batch.log.error}; going on without the log")

    if not quiet:
        for note in batch.notes:
            say(f"anime-cli: {note}")
    try:
        with progress:
            for rec, line in batch.records():
                report(rec, line)
    except AnimeCliError as e:  # the batch cannot go on at all (Ray could not be started or joined)
        say(f"anime-cli: {e}")
        return 2
    except KeyboardInterrupt:
        for s in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        remove_temp_files()
        code = 130
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        batch.close()
    if code == 0:
        code = batch.exit_code()
    if not quiet or code:
        say(batch.summary(interrupted=code == 130))
    return code


class _Console(Console):
    """stderr going away (`2>&1 | head -2`) must not stop the work: the JSONL
    log still gets every record. (Rich's own reaction is to exit.)"""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _silence(2)


def _print_json(rec) -> None:
    """A record on stdout for a script reading as we go; a reader that went
    away does not stop the work (the log file, if any, still gets it all)."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.write(rec.to_json() + "\n")
        sys.stdout.flush()
    except OSError:
        _silence(1)


def _silence(fd: int) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:
        pass


def _signals():
    """The stop signals this platform has (no SIGHUP on Windows)."""
    return [s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None]


def _batch_handlers():
    return {s: (signal.default_int_handler if s == signal.SIGINT else _raise_interrupt) for s in _signals()}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _interrupted_before_work(signum, frame):
    """A stop signal outside the batch (loading torch and the weights, walking
    the folders): nothing is written yet, so leave at once, without a traceback."""
    try:
        os.write(2, b"anime-cli: interrupted\n")
    except OSError:
        pass
    os._exit(130)


@app.command()
def styles():
    """List the styles and the face detector: name, family, installed and sha256
    check (ok, not installed, sha256 mismatch), licence and a description."""
    from . import weights

    try:
        entries = list(weights.manifest().values())
    except AnimeCliError as e:
        fail(str(e))
    typer.echo(f"{'name':<10} {'family':<16} {'status':<15} description and licence")
    for w in entries:
        family = w.family or w.kind
        typer.echo(f"{w.name:<10} {family:<16} {weights.status(w.name):<15} {w.description}. "
                   f"Licence: {w.licence}")


@app.command("install-weights")
def install_weights(
    source: str = typer.Argument(..., help="A folder holding weight files, one weights file, or an http(s):// URL "
                                           "of a file or of a folder holding manifest.json."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Where to install. [default: $ANIME_CLI_WEIGHTS, the checkout's weights/, or the user data folder]"),
    timeout: float = typer.Option(TIMEOUT_S, "--timeout", min=0.1,
                                  help="Seconds without data before a download counts as stalled."),
):
    """Install weights from a folder, a file or a URL, checking every sha256 against
    the manifest. An interrupted download resumes when run again; HTTPS_PROXY is honoured.

    Examples: anime-cli install-weights ../shared/weights;
    anime-cli install-weights https://example.org/anime-cli/weights/
    """
    from .install import install

    try:
        for p in install(source, dest, timeout=timeout):
            typer.echo(f"installed {p}")
    except AnimeCliError as e:
        fail(str(e))
    except OSError as e:  # the destination cannot be written
        fail(f"cannot install into {dest or 'the weights folder'}: {e.strerror or e}")


def _hold_closed_std_fds() -> None:
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


def main():
    _hold_closed_std_fds()
    for s in _signals():
        signal.signal(s, _interrupted_before_work)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


def _usage_line(e) -> str:
    """Click's usage error as one line that names the option."""
    from .telemetry import safe

    msg = e.format_message() if not isinstance(e, typer.BadParameter) else e.message
    msg = msg.removeprefix("Value error, ")
    param = getattr(e, "param", None)
    if isinstance(e, typer.BadParameter) and param is not None:
        name = max(param.opts, key=len) if getattr(param, "opts", None) else param.human_readable_name
        if msg.startswith(name):
            return safe(msg)
        return safe(f"{name} {msg}" if msg.startswith("must") else f"{name}: {msg}")
    return safe(msg)
