"""`anime-cli serve`: the converter as a web service (anime_cli.serve)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from anime_cli.errors import AnimeCliError
from anime_cli.options import (DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_LIMIT, DEFAULT_STYLE,
                               PRECISIONS, format_bytes, format_count, option_message, parse_bytes, parse_choice,
                               parse_count)

from .convert import complete_style
from .shell import fail, parsed


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; beyond loopback a token is required."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port; 0 picks a free one (printed)."),
    memory_limit: int = typer.Option(format_bytes(DEFAULT_MEMORY_LIMIT), "--memory-limit", metavar="SIZE", parser=parsed(parse_bytes), help="Peak RSS budget for the whole server; requests wait in the queue until their footprint fits."),
    style: List[str] = typer.Option([DEFAULT_STYLE], "--style", autocompletion=complete_style, help="A style to load (repeat, or a comma-separated list); the first is the default."),
    max_file_size: int = typer.Option(format_bytes(DEFAULT_MAX_FILE_SIZE), "--max-file-size", metavar="SIZE", parser=parsed(parse_bytes), help="Refuse pictures larger than this."),
    max_body: Optional[str] = typer.Option(None, "--max-body", metavar="SIZE", help="Refuse request bodies larger than this (413). [default: --max-file-size]"),
    max_pixels: int = typer.Option(format_count(DEFAULT_MAX_PIXELS), "--max-pixels", metavar="N", parser=parsed(parse_count), help="Refuse pictures whose header declares more pixels (422)."),
    queue: int = typer.Option(64, "--queue", min=0, metavar="N", help="Requests that may wait for memory; beyond them 503 with Retry-After."),
    workers: int = typer.Option(2, "--workers", min=1, metavar="N", help="Pictures converted at once, memory allowing."),
    token: Optional[str] = typer.Option(None, "--token", envvar="ANIME_CLI_TOKEN", show_envvar=True, help="Requests must send 'Authorization: Bearer TOKEN'; required beyond loopback."),
    face_enhance: bool = typer.Option(True, "--face-enhance/--no-face-enhance", help="Load the face detector (a request may still turn faces off)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the network. [default: the cores this process may use]"),
    precision: str = typer.Option("auto", "--precision", metavar="P", parser=parsed(parse_choice(PRECISIONS)), help="Network arithmetic: auto, bf16, int8 or fp32 (as for convert)."),
    grace: float = typer.Option(30.0, "--grace", min=0, metavar="S", help="Seconds SIGTERM leaves the conversions in flight."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", metavar="FILE", help="Append one JSON object per request (JSON Lines)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No per-request lines on stderr (server errors still print)."),
):
    """Serve the converter over HTTP: POST /v1/convert, /v1/jobs, /healthz, /metrics and a page at /.
    Needs animegan-cli[serve].

    Examples: anime-cli serve; anime-cli serve --host 0.0.0.0 --token \"$TOKEN\" --memory-limit 2GiB;
    curl --data-binary @photo.jpg -o anime.jpg http://127.0.0.1:8000/v1/convert
    """
    from anime_cli.serve import ServeConfig, serve as run_server

    styles = [s.strip() for entry in style for s in entry.split(",") if s.strip()] or [DEFAULT_STYLE]
    try:
        body = parse_bytes(max_body) if max_body is not None else max_file_size
    except ValueError as e:
        fail(option_message("--max-body", str(e)))
    config = ServeConfig(host=host, port=port, memory_limit=memory_limit, styles=styles, max_body=body,
                         max_pixels=max_pixels, queue=queue, token=token, workers=workers, threads=threads,
                         precision=precision, face_enhance=face_enhance, grace=grace, log_file=log_file, quiet=quiet)
    try:
        code = run_server(config)
    except AnimeCliError as e:
        fail(str(e))
    sys.exit(code)
