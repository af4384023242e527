"""Downloading one file over HTTP(S): resumable, with a timeout, never a
partial file under the final name.

The bytes go to a hidden `.NAME.part` beside the destination. A transfer
that ends early is resumed at once with an HTTP Range request (a few times);
one that stalls or fails keeps the .part, so the same command run again
resumes it. The file is checked against its sha256 before it is moved into
place (os.replace: atomic); a file that fails the check is deleted.
Every body is bounded (`max_bytes`: the manifest's size of the file): a
server that sends more is cut off and its bytes deleted. The .part is never
opened through a symbolic link (one planted under its name is removed, not
followed), and what is moved into place is the very file that was checked.
Proxies come from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as
urllib's default opener reads them.
"""

from __future__ import annotations

import http.client
import os
import stat
import sys
import urllib.error
import urllib.request
from pathlib import Path

from anime_cli.errors import WeightsError
from anime_cli.options import DEFAULT_DOWNLOAD_TIMEOUT as TIMEOUT_S
from anime_cli.folder.files import file_sha256

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
    max_bytes: refuse a body larger than this (the manifest's size; a manifest's bound)."""
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
    fd = open_part(part, resume=True)
    try:
        if sha256 is not None and file_sha256(fd) != sha256:
            part.unlink()
            raise WeightsError(f"{url}: sha256 does not match the manifest, refusing to install it")
        publish(fd, part, dest)
    finally:
        os.close(fd)
    return dest


def open_part(part: Path, resume: bool) -> int:
    """A descriptor on the partial file `part` for writing: its bytes kept (resume)
    or a new, empty file. Never through a symbolic link nor onto anything but a
    regular file: what sits there otherwise (planted under our name) is removed,
    never followed, and a new file made (O_EXCL: nobody else's)."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if resume:
        try:
            fd = os.open(part, flags | os.O_APPEND)
        except FileNotFoundError:
            pass
        except OSError:  # a link (ELOOP), a folder...
            _remove(part)
        else:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)  # a FIFO or a device under our name
            _remove(part)
    else:
        _remove(part)
    try:
        return os.open(part, flags | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise WeightsError(f"{part}: appeared while it was being replaced (another install at once?); "
                           "try again") from None


def publish(fd: int, tmp: Path, dest: Path) -> None:
    """Move the checked file `tmp` (open as `fd`) to `dest` (os.replace: a link
    there is replaced, never written through), then make sure `dest` is that
    very file: one swapped in under `tmp` meanwhile is removed, not installed."""
    st = os.fstat(fd)
    os.replace(tmp, dest)
    got = os.lstat(dest)
    if (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(got.st_mode):
        os.unlink(dest)
        raise WeightsError(f"{tmp}: replaced by something else while it was installed; try again")


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise WeightsError(f"{path}: a folder is in the way of the download") from None
    except OSError as e:
        if os.path.isdir(path) and not os.path.islink(path):
            raise WeightsError(f"{path}: a folder is in the way of the download") from None
        raise WeightsError(f"{path}: cannot remove it ({e.strerror or e})") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]



def _length(value: str | None) -> int | None:
    """Content-Length as a number of bytes; None when absent or not one (digits only:
    int() would take '-5', ' 7', '1_000')."""
    if value is None or not value.strip().isdigit() or not value.strip().isascii():
        return None
    return int(value.strip())


def _transfer(url, part: Path, timeout, bar, max_bytes) -> tuple[int, int | None]:
    """One request, appending to `part` from its current size.
    (bytes in part, the whole file's size or None when the server does not say)."""
    fd = open_part(part, resume=True)
    try:
        have = os.fstat(fd).st_size
        if max_bytes is not None and have == max_bytes:  # complete already (a run stopped before the check)
            return have, have
        if max_bytes is not None and have > max_bytes:  # nothing of it can be right: start again
            os.close(fd)
            fd = open_part(part, resume=False)
            have = 0
        return _receive(url, part, fd, have, timeout, bar, max_bytes)
    finally:
        os.close(fd)


def _receive(url, part: Path, fd: int, have: int, timeout, bar, max_bytes) -> tuple[int, int | None]:
    req = urllib.request.Request(url, headers={"User-Agent": "anime-cli", "Accept-Encoding": "identity"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = opener().open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our part is no prefix the server can continue: start again
            os.ftruncate(fd, 0)
            return _receive(url, part, fd, 0, timeout, bar, max_bytes)
        raise WeightsError(f"{url}: HTTP {e.code} {str(e.reason)[:100]}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        raise WeightsError(f"{url}: {_reason(e, timeout)}") from None
    with resp:
        if have and resp.status != 206:  # the server ignored the Range: the body is the whole file
            os.ftruncate(fd, 0)
            have = 0
        length = _length(resp.headers.get("Content-Length"))
        total = have + length if length is not None else None
        if max_bytes is not None and total is not None and total > max_bytes:
            _remove(part)
            raise WeightsError(f"{url}: {total} bytes, more than the {max_bytes} expected")
        bar.start(total, have)
        try:
            while block := resp.read(_CHUNK):
                if max_bytes is not None and have + len(block) > max_bytes:
                    os.ftruncate(fd, 0)  # not the file the manifest lists: nothing of it is worth resuming
                    _remove(part)
                    raise WeightsError(f"{url}: more than the {max_bytes} bytes expected; refusing it")
                _write_all(fd, block)
                have += len(block)
                bar.advance(len(block))
        except http.client.IncompleteRead:
            pass  # the body ended early: what arrived is kept, the caller resumes
        except (OSError, http.client.HTTPException, ValueError) as e:
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
