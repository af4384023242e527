"""Downloading one file over HTTP(S): resumable, with a timeout, never a
partial file under the final name.

The bytes go to a hidden `.NAME.part` beside the destination. A transfer
that ends early is resumed at once with an HTTP Range request (a few times);
one that stalls or fails keeps the .part, so the same command run again
resumes it. The file is checked against its sha256 before it is moved into
place (os.replace: atomic); a file that fails the check is deleted.
Proxies come from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as
urllib's default opener reads them.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from anime_cli.errors import WeightsError

TIMEOUT_S = 30.0  # without a byte for this long, a transfer has stalled
RESUMES = 5  # Range requests after a transfer that ended early, per download
_CHUNK = 1 << 16


def opener() -> urllib.request.OpenerDirector:
    """urllib's default handlers, whose ProxyHandler reads the proxy variables now."""
    return urllib.request.build_opener(urllib.request.ProxyHandler())


def part_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


def fetch(url: str, dest: Path, sha256: str | None = None, timeout: float = TIMEOUT_S,
          progress: bool | None = None, max_bytes: int | None = None) -> Path:
    """Download `url` to `dest` (checked against `sha256` when given).
    progress: a progress bar on stderr (default: when stderr is a terminal).
    max_bytes: refuse a body larger than this (for small files such as a manifest)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    show = sys.stderr.isatty() if progress is None else progress
    with _Bar(dest.name, show) as bar:
        for attempt in range(RESUMES + 1):
            done, total = _transfer(url, part, timeout, bar, max_bytes)
            if total is None or done == total:
                break
            if attempt == RESUMES:
                raise WeightsError(f"{url}: the transfer kept ending early ({done} of {total} bytes); "
                                   "run the command again to resume")
    from anime_cli.folder.database import file_sha256  # not at import: the CLI imports this module to start

    if sha256 is not None and file_sha256(part) != sha256:
        part.unlink()
        raise WeightsError(f"{url}: sha256 does not match the manifest, refusing to install it")
    os.replace(part, dest)
    return dest


def _transfer(url, part: Path, timeout, bar, max_bytes) -> tuple[int, int | None]:
    """One request, appending to `part` from its current size.
    (bytes in part, the whole file's size or None when the server does not say)."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "anime-cli", "Accept-Encoding": "identity"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = opener().open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our part is no prefix the server can continue: start again
            part.unlink()
            return _transfer(url, part, timeout, bar, max_bytes)
        raise WeightsError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise WeightsError(f"{url}: {_reason(e, timeout)}") from None
    with resp:
        if have and resp.status != 206:  # the server ignored the Range: the body is the whole file
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise WeightsError(f"{url}: {total} bytes, more than the {max_bytes} expected")
        bar.start(total, have)
        with open(part, "ab" if have else "wb") as f:
            try:
                while block := resp.read(_CHUNK):
                    f.write(block)
                    have += len(block)
                    bar.advance(len(block))
                    if max_bytes is not None and have > max_bytes:
                        raise WeightsError(f"{url}: more than the {max_bytes} bytes expected")
            except http.client.IncompleteRead:
                pass  # the body ended early: what arrived is kept, the caller resumes
            except (OSError, http.client.HTTPException) as e:
                raise WeightsError(f"{url}: {_reason(e, timeout)}; "
                                   "run the command again to resume") from None
    return have, total


def _reason(e: Exception, timeout: float) -> str:
    inner = getattr(e, "reason", e)
    if isinstance(inner, TimeoutError) or isinstance(e, TimeoutError):
        return f"the server stalled (no data for {timeout:g} s)"
    return " ".join(str(inner).split()) or type(inner).__name__


class _Bar:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, name: str, show: bool):
        self.name, self.show, self.progress, self.task = name, show, None, None

    def __enter__(self):
        if self.show:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=True)
            self.progress.start()
        return self

    def start(self, total, done):
        if self.progress is not None:
            if self.task is None:
                self.task = self.progress.add_task(self.name, total=total)
            self.progress.update(self.task, total=total, completed=done)

    def advance(self, n):
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
