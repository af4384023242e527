"""`anime-cli install-weights`: weights from a folder, a file or a URL, sha256-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from anime_cli.errors import AnimeCliError
from anime_cli.options import DEFAULT_DOWNLOAD_TIMEOUT

from .shell import fail


def install_weights(
    source: str = typer.Argument(..., help="A folder holding weight files, one weights file, or an http(s):// URL "
                                           "of a file or of a folder holding manifest.json."),
    dest: Optional[Path] = typer.Option(None, "--dest", help="Where to install. [default: $ANIME_CLI_WEIGHTS, the checkout's weights/, or the user data folder]"),
    timeout: float = typer.Option(DEFAULT_DOWNLOAD_TIMEOUT, "--timeout", min=0.1,
                                  help="Seconds without data before a download counts as stalled."),
):
    """Install weights from a folder, a file or a URL, checking every sha256 against
    the manifest. An interrupted download resumes when run again; HTTPS_PROXY is honoured.

    Examples: anime-cli install-weights ../shared/weights;
    anime-cli install-weights https://example.org/anime-cli/weights/
    """
    from anime_cli.weights.install import install

    try:
        for p in install(source, dest, timeout=timeout):
            typer.echo(f"installed {p}")
    except AnimeCliError as e:
        fail(str(e))
    except OSError as e:  # the destination cannot be written
        fail(f"cannot install into {dest or 'the weights folder'}: {e.strerror or e}")
