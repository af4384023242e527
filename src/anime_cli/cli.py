"""The command line: a thin layer over anime_cli.pipeline.

Exit codes: 0 every file ok or skipped; 1 at least one file failed (the batch
goes on); 2 nothing could start (bad option, missing input, unusable output
folder, missing weights); 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from .errors import AnimeCliError

# torch (through weights/stylize) is imported only once a command runs, after main()
# has taken over SIGINT/SIGTERM: an early Ctrl-C exits 130 instead of a traceback.

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Turn photos into anime-style pictures with AnimeGANv2, on the CPU.\n\n"
    "Examples:\n\n"
    "  anime-cli convert photo.jpg\n\n"
    "  anime-cli convert ~/Pictures -r -o out/\n\n"
    "  anime-cli styles",
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.I)


def parse_bytes(text: str) -> int:
    """'700MB', '1GB', '1.5GiB', '200M', '0' -> bytes (powers of 1000, or 1024 with 'i')."""
    m = _SIZE.match(text)
    if not m:
        raise typer.BadParameter(f"'{text}' is not a size like 700MB or 1GB")
    num, unit, binary = m.groups()
    base = 1024 if binary else 1000
    return int(float(num) * base ** " kmgt".index(unit.lower() or " "))


def parse_count(text: str) -> int:
    """'150M', '24000000', '2G' -> a pixel count."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)\s*$", text, re.I)
    if not m:
        raise typer.BadParameter(f"'{text}' is not a pixel count like 150M")
    return int(float(m.group(1)) * 1000 ** " kmg".index(m.group(2).lower() or " "))


def fail(message: str, code: int = 2):
    typer.echo(f"anime-cli: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def convert(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Image files and/or folders; '-' reads one image from stdin."),
    output: str = typer.Option("anime-out", "-o", "--output", metavar="DIR", help="Output folder, mirroring the input tree; '-' writes the one result to stdout."),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Walk sub-folders of folder inputs."),
    max_side: int = typer.Option(1280, "--max-side", min=0, help="Longest side of the output in px; never upscales; 0 keeps the native size."),
    fmt: str = typer.Option("auto", "--format", help="auto (keep the input's format; PNG when it can't be written or has alpha), png, jpg or webp."),
    quality: int = typer.Option(95, "--quality", min=1, max=100, help="JPEG/WebP quality."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them, so a rerun resumes)."),
    face_enhance: bool = typer.Option(True, "--face-enhance/--no-face-enhance", help="Re-render each face at --face-size px (face2paint)."),
    min_face: Optional[int] = typer.Option(None, "--min-face", min=1, metavar="PX", help="Smallest face width (px, in the working image) to enhance. [default: the face module's]"),
    face_size: int = typer.Option(512, "--face-size", min=64, max=2048, metavar="PX", help="Size at which faces are re-rendered."),
    style: str = typer.Option("hayao", "--style", help="Installed style to use (see `anime-cli styles`)."),
    weights_path: Optional[Path] = typer.Option(None, "--weights", metavar="PATH", help="Any AnimeGANv2 generator state dict in the PyTorch-port layout (overrides --style)."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", metavar="FILE", help="Append one JSON object per input file (JSON Lines)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar, no per-file lines; errors still print."),
    max_file_size: str = typer.Option("200MB", "--max-file-size", metavar="SIZE", help="Refuse files larger than this, before reading them."),
    max_pixels: str = typer.Option("150M", "--max-pixels", metavar="N", help="Refuse images whose header declares more pixels (decompression bombs)."),
    memory_limit: str = typer.Option("1GiB", "--memory-limit", metavar="SIZE", help="Peak RSS budget for the whole process; big images are processed in pieces to stay inside. 0: no limit."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the network. [default: the cores this process may use]"),
    precision: str = typer.Option("auto", "--precision", help="Network arithmetic: auto (bf16 where the CPU has native bfloat16, else fp32), bf16 (about twice as fast, ~53 dB from fp32) or fp32 (exact)."),
    sequential: bool = typer.Option(False, "--sequential", help="One file at a time, on all threads. By default two files are in flight, sharing the cores and the memory budget."),
):
    """Convert photos into anime style.

    Examples:

      anime-cli convert photo.jpg                      # -> anime-out/photo.jpg

      anime-cli convert ~/Pictures -r -o out/          # out/ mirrors the tree

      anime-cli convert a.jpg b.png dir/ -o out --max-side 1024 --log-file run.jsonl --quiet

      cat photo.jpg | anime-cli convert - -o - > anime.jpg
    """
    from .discover import MissingInput, discover
    from .output import CHOICES, check_output_dir

    if fmt.lower() not in CHOICES:
        fail(f"--format must be one of auto, png, jpg, webp (got '{fmt}')")
    if precision.lower() not in ("auto", "bf16", "fp32"):
        fail(f"--precision must be one of auto, bf16, fp32 (got '{precision}')")
    to_stdout = output == "-"
    out_dir = None if to_stdout else Path(output).expanduser()
    try:
        jobs = discover(inputs, recursive, (out_dir, log_file))
    except MissingInput as e:
        fail(str(e))
    if inputs.count("-") > 1:
        fail("'-' (stdin) can be given only once")
    if to_stdout and len(jobs) != 1:
        fail(f"-o - writes one picture to stdout, but the inputs hold {len(jobs)} files")
    try:
        if out_dir is not None:
            check_output_dir(out_dir)
    except AnimeCliError as e:
        fail(str(e))
    from .telemetry import JsonlLog

    try:
        log = JsonlLog(log_file)  # before any work: an unusable log file is a usage error
    except OSError as e:
        fail(f"{log_file}: cannot open the log file ({e.strerror or e})")

    from .pipeline import Converter, Options

    options = Options(
        output_dir=out_dir, max_side=max_side, format=fmt.lower(), quality=quality,
        overwrite=overwrite, face_enhance=face_enhance, min_face=min_face, face_size=face_size,
        max_file_size=parse_bytes(max_file_size), max_pixels=parse_count(max_pixels),
        memory_limit=parse_bytes(memory_limit), pipelined=not sequential,
    )
    try:
        converter = Converter(_stylizer(style, weights_path, threads, precision.lower()), options,
                              _detector() if face_enhance else None)
    except AnimeCliError as e:
        log.close()
        fail(str(e))
    sys.exit(_run_batch(converter, jobs, log, quiet))


def _stylizer(style: str, weights_path: Optional[Path], threads: Optional[int], precision: str = "auto"):
    from . import weights
    from .stylize import Stylizer

    if weights_path is not None:
        return Stylizer.from_weights(weights_path, threads=threads, precision=precision)
    if style not in {w.name for w in weights.styles()}:
        names = ", ".join(w.name for w in weights.styles())
        raise AnimeCliError(f"unknown style '{style}' (installed styles: {names}; or use --weights PATH)")
    return Stylizer.from_style(style, threads=threads, precision=precision)


def _detector():
    from .faces import FaceDetector

    return FaceDetector.load()


def _run_batch(converter, jobs, log, quiet) -> int:
    """Run the batch, report each record, print the summary; the exit code.
    `log`: a JsonlLog, or the path of one (None: no log)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .output import remove_temp_files
    from .pipeline import _Fatal
    from .telemetry import JsonlLog

    console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    show_bar = console.is_terminal and not quiet
    counts = {"ok": 0, "skipped": 0, "error": 0}
    if not isinstance(log, JsonlLog):
        log = JsonlLog(log)
    started = time.perf_counter()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console, transient=True, disable=not show_bar)
    task = progress.add_task("converting", total=len(jobs))
    code = 0
    # During the batch both signals raise KeyboardInterrupt where the main thread is,
    # so the batch unwinds: temp files removed, writes in flight undone, summary printed.
    previous = {s: signal.signal(s, h) for s, h in ((signal.SIGINT, signal.default_int_handler),
                                                    (signal.SIGTERM, _raise_interrupt))}

    def report(rec):
        counts[rec.status] += 1
        if not log.write(rec):
            console.print(f"anime-cli: {log.error}; going on without the log")
        if not quiet or rec.status == "error":
            console.print(_one_line(rec.human()))
        progress.advance(task)

    try:
        with progress:
            try:
                for rec in converter.run(jobs):
                    report(rec)
            except _Fatal as stop:
                report(stop.record)
                console.print(f"stopping: {stop.record.error}; nothing after it can be written")
    except KeyboardInterrupt:
        for s in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        remove_temp_files()
        code = 130
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        log.close()
    if code == 0:
        code = 1 if counts["error"] or log.error or len(jobs) > sum(counts.values()) else 0
    if not quiet or code:
        head = "interrupted" if code == 130 else "done"
        left = len(jobs) - sum(counts.values())
        rest = f", {left} not started" if left else ""
        console.print(f"{head}: {counts['ok']} ok, {counts['skipped']} skipped, {counts['error']} failed{rest}"
                      f" in {time.perf_counter() - started:.1f}s, peak RSS {converter.peaks.overall / 1e6:.0f} MB")
    return code


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _interrupted_before_work(signum, frame):
    """SIGINT/SIGTERM outside the batch (loading torch and the weights, walking the
    folders): nothing is written yet, so leave at once, without a traceback."""
    os.write(2, b"anime-cli: interrupted\n")
    os._exit(130)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


@app.command()
def styles():
    """List the installed styles and detectors: name, sha256 check, licence."""
    from . import weights

    for w in weights.manifest().values():
        typer.echo(f"{w.name:<12} {w.kind:<14} {weights.status(w.name):<16} {w.licence}")


@app.command("install-weights")
def install_weights(
    source: Path = typer.Argument(..., help="Folder holding the weight files named in the manifest."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Where to install. [default: $ANIME_CLI_WEIGHTS, the checkout's weights/, or the user data folder]"),
):
    """Install weights from a folder, checking every sha256 against the manifest."""
    from . import weights

    try:
        for p in weights.install(source, dest):
            typer.echo(f"installed {p}")
    except AnimeCliError as e:
        fail(str(e))


def main():
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _interrupted_before_work)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
