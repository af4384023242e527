"""`anime-cli convert`: every option parsed by Click before anything touches
the disk, then a batch (anime_cli.run.batch) printed record by record."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from anime_cli.errors import AnimeCliError
from anime_cli.options import (DEFAULT_CRF, DEFAULT_FACE_SIZE, DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_FRAMES,
                               DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, DEFAULT_MEMORY_LIMIT, DEFAULT_OUTPUT,
                               DEFAULT_QUALITY, DEFAULT_STYLE, FORMATS, MAX_SIDE_MIN, PRECISIONS, QUALITY_RANGE,
                               VIDEO_FACE_SIZE, format_bytes,
                               format_count, parse_bytes, parse_choice, parse_count)

from .shell import batch_handlers, completer, fail, parsed, silence


def _check_name(pattern: str) -> str:
    from anime_cli.folder import names

    names.check(pattern)  # ValueError: a usage error naming --name, before any work
    return pattern


def complete_style(incomplete: str):
    try:
        from anime_cli.weights import catalog as weights

        return [w.name for w in weights.manifest().values() if w.kind == "style" and w.name.startswith(incomplete)]
    except Exception:  # completion must never print a traceback into the shell
        return []


def convert(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Pictures, videos and/or folders; '-' reads one picture from stdin."),
    output: str = typer.Option(DEFAULT_OUTPUT, "-o", "--output", metavar="DIR", help="Output folder, mirroring the input tree; '-' writes the one result to stdout."),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Walk sub-folders of folder inputs."),
    max_side: int = typer.Option(DEFAULT_MAX_SIDE, "--max-side", min=MAX_SIDE_MIN, help="Longest side of the output in px; never upscales; 0 keeps the native size."),
    fmt: str = typer.Option("auto", "--format", metavar="FORMAT", parser=parsed(parse_choice(FORMATS, ("jpeg",))), autocompletion=completer(FORMATS), help="auto (keep the input's format; PNG when it can't be written or has alpha), png, jpg or webp."),
    quality: int = typer.Option(DEFAULT_QUALITY, "--quality", min=QUALITY_RANGE[0], max=QUALITY_RANGE[1], help="JPEG/WebP quality."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them, so a rerun resumes)."),
    face_enhance: bool = typer.Option(True, "--face-enhance/--no-face-enhance", help="Re-render each face at --face-size px (face2paint)."),
    min_face: Optional[int] = typer.Option(None, "--min-face", min=1, metavar="PX", help="Smallest face width (px, in the working image) to enhance. [default: the face module's]"),
    face_size: Optional[int] = typer.Option(None, "--face-size", min=64, max=2048, metavar="PX", help=f"Size at which faces are re-rendered. [default: {DEFAULT_FACE_SIZE} for photos, {VIDEO_FACE_SIZE} for video]"),
    style: str = typer.Option(DEFAULT_STYLE, "--style", autocompletion=complete_style, help="Installed style to use (see `anime-cli styles`)."),
    weights_path: Optional[Path] = typer.Option(None, "--weights", metavar="PATH", help="A generator state dict of a known family (overrides --style)."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", metavar="FILE", help="Append one JSON object per input file (JSON Lines)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar, no per-file lines; errors still print."),
    max_file_size: int = typer.Option(format_bytes(DEFAULT_MAX_FILE_SIZE), "--max-file-size", metavar="SIZE", parser=parsed(parse_bytes), help="Refuse photos larger than this, before reading them (videos are streamed; --max-frames bounds them)."),
    max_pixels: int = typer.Option(format_count(DEFAULT_MAX_PIXELS), "--max-pixels", metavar="N", parser=parsed(parse_count), help="Refuse images whose header declares more pixels (decompression bombs)."),
    memory_limit: int = typer.Option(format_bytes(DEFAULT_MEMORY_LIMIT), "--memory-limit", metavar="SIZE", parser=parsed(parse_bytes), help="Peak RSS budget for the whole process; big images are processed in pieces to stay inside. 0: no limit."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the network. [default: the cores this process may use]"),
    precision: str = typer.Option("auto", "--precision", metavar="P", parser=parsed(parse_choice(PRECISIONS)), autocompletion=completer(PRECISIONS), help="Network arithmetic: auto (bf16 where the CPU has native bfloat16, else int8 where the style has a calibration, else fp32), bf16 (about twice as fast, ~55 dB from fp32), int8 (1.3-2.2x, 43-47 dB) or fp32 (exact)."),
    crf: int = typer.Option(DEFAULT_CRF, "--crf", min=0, max=51, metavar="N", help="Video quality (H.264/VP9 constant rate factor): lower is better and bigger; 18 looks lossless on anime."),
    max_frames: int = typer.Option(DEFAULT_MAX_FRAMES, "--max-frames", min=1, metavar="N", help="Refuse videos and animations with more frames (a bomb cannot run for days)."),
    sequential: bool = typer.Option(False, "--sequential", help="One file at a time, on all threads. By default two files are in flight, sharing the cores and the memory budget."),
    name: str = typer.Option("{stem}", "--name", metavar="PATTERN", parser=parsed(_check_name), help="The output file name, without its suffix (the output format's is added): fields {stem} {ext} {style} {width} {height} {input_ext}; e.g. '{stem}_{style}'."),
    keep_metadata: bool = typer.Option(False, "--keep-metadata", help="Copy the photo's EXIF and XMP (camera, lens, date taken, exposure) into the output: orientation 1, no thumbnail, no GPS (see --keep-gps), the output's size."),
    keep_gps: bool = typer.Option(False, "--keep-gps", help="With --keep-metadata, keep the GPS position too."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Walk, probe headers and plan: one 'planned' record per file with its output path, size, engine plan and estimated peak memory. Decodes and writes nothing."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N", help="Convert only the K-th of N parts of the inputs (by a hash of each file's path): N processes or machines split a batch with no coordinator."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run on Ray Data: a local Ray (no ADDRESS) or a cluster ('auto', 'ray://head:10001'); inputs and -o may be s3:// URIs. Needs animegan-cli[ray]."),
    json_out: bool = typer.Option(False, "--json", help="One JSON record per file on stdout as each finishes (the --log-file schema); human lines stay on stderr."),
):
    """Convert photos, videos and animations into anime style.

    Examples:

      anime-cli convert photo.jpg                      # -> anime-out/photo.jpg

      anime-cli convert ~/Pictures -r -o out/          # out/ mirrors the tree

      anime-cli convert a.jpg b.png dir/ -o out --max-side 1024 --log-file run.jsonl --quiet

      cat photo.jpg | anime-cli convert - -o - > anime.jpg
    """
    from anime_cli.inputs.probe import configure_process
    from anime_cli.options import Options

    configure_process(max_pixels)  # warnings, libtiff's stderr, Pillow's bomb guard: the CLI's choices
    _check_together(output, json_out, ray, shard, dry_run)
    options = Options(
        output_dir=None if output == "-" else Path(output).expanduser(), max_side=max_side, format=fmt,
        quality=quality, overwrite=overwrite, face_enhance=face_enhance, min_face=min_face, face_size=face_size,
        max_file_size=max_file_size, max_pixels=max_pixels, memory_limit=memory_limit, pipelined=not sequential,
        dry_run=dry_run, crf=crf, max_frames=max_frames, name=name, keep_metadata=keep_metadata, keep_gps=keep_gps,
        weights=weights_path, style=weights_path.stem if weights_path is not None else style,
    )
    try:
        batch = _start(inputs, output, options, ray, shard, recursive=recursive, log_file=log_file, style=style,
                       weights_path=weights_path, threads=threads, precision=precision)
    except AnimeCliError as e:
        fail(str(e))
    sys.exit(_run(batch, quiet, json_out))


def _check_together(output: str, json_out: bool, ray: str | None, shard: str | None, dry_run: bool) -> None:
    """Options that cannot go together: a usage error before any work."""
    if json_out and output == "-":
        fail("--json writes the records to stdout, where -o - writes the picture; use --log-file instead")
    if ray is not None and (shard is not None or dry_run):
        fail("--ray runs the whole batch on the cluster; it does not take --shard or --dry-run")


def _start(inputs, output: str, options, ray: str | None, shard: str | None, **common):
    """The batch: in this process, or on Ray Data."""
    from anime_cli.run.batch import start, start_ray

    if ray is not None:
        return start_ray(inputs, output, options, address=ray, **common)
    return start(inputs, options, shard=shard, **common)


def _run(batch, quiet: bool, json_out: bool = False) -> int:
    """Run the batch, print each record and the summary; the exit code."""
    from anime_cli.folder.files import remove_temp_files
    from anime_cli.logs.progress import WorkProgress
    from anime_cli.logs.telemetry import safe

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
    previous = {s: signal.signal(s, h) for s, h in batch_handlers().items()}

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
        silence(2)


def _print_json(rec) -> None:
    """A record on stdout for a script reading as we go; a reader that went
    away does not stop the work (the log file, if any, still gets it all)."""
    if sys.stdout is None:
        return
    try:
        sys.stdout.write(rec.to_json() + "\n")
        sys.stdout.flush()
    except OSError:
        silence(1)
