"""A request's picture to a spool file, never past --max-body.

A body announced larger than the limit (Content-Length) is refused before a
byte is read; a chunked one is cut off at the limit. The spool is a file in
the server's private folder (mode 0700) that has no name where the system
allows it (O_TMPFILE), so it dies with the process, even on SIGKILL; it is
read by the pipeline through /proc/self/fd. A multipart form's file field is
copied into a spool of its own, as a raw body is.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from starlette.requests import Request

from anime_cli.options import format_bytes


class BodyError(Exception):
    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status, self.reason = status, reason


class Spool:
    """An open spool file and the path the pipeline reads it by."""

    def __init__(self, folder: Path):
        self.file = tempfile.TemporaryFile(dir=folder)
        proc = Path(f"/proc/self/fd/{self.file.fileno()}")
        if proc.exists():
            self.path = proc
        else:  # no /proc: a named file, removed on close
            self.file.close()
            self.file = tempfile.NamedTemporaryFile(dir=folder, prefix="body-", suffix=".bin")
            self.path = Path(self.file.name)
        self.size = 0

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass


def too_large(n: int, limit: int) -> BodyError:
    return BodyError(413, f"the body is {n / 1e6:.1f} MB, over --max-body ({format_bytes(limit)})",
                     "body too large")


def announced(request: Request, limit: int) -> None:
    """Refuse from Content-Length alone, before reading."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise BodyError(400, f"Content-Length '{length}' is not a number", "bad request") from None
        if n > limit:
            raise too_large(n, limit)


def _limited(request: Request, limit: int, timeout: float):
    """The request's receive(), counting body bytes: BodyError past `limit`
    or when the body has not all arrived `timeout` seconds from now."""
    receive = request.receive
    deadline = time.monotonic() + timeout
    seen = 0

    async def limited():
        nonlocal seen
        left = deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(receive(), max(0.001, left))
        except asyncio.TimeoutError:
            raise BodyError(408, f"the body did not arrive within {timeout:g} s", "body timeout") from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyError(413, f"the body is over --max-body ({format_bytes(limit)}); stopped reading there",
                                "body too large")
        elif message["type"] == "http.disconnect":
            raise BodyError(400, "the client went away before its body arrived", "client gone")
        return message

    return limited


async def receive(request: Request, folder: Path, limit: int, timeout: float) -> tuple[Spool, str | None]:
    """(the spooled picture, the file name a multipart form gave it)."""
    announced(request, limit)
    limited = Request(request.scope, _limited(request, limit, timeout))
    spool = Spool(folder)
    name = None
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            name = await _multipart(limited, spool, limit)
        else:
            async for chunk in limited.stream():
                if chunk:
                    spool.file.write(chunk)
                    spool.size += len(chunk)
        spool.file.flush()
    except BaseException:
        spool.close()
        raise
    if spool.size == 0:
        spool.close()
        raise BodyError(400, "the body is empty: send a picture", "empty body")
    return spool, name


async def _multipart(request: Request, spool: Spool, limit: int) -> str | None:
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=64 * 1024)
    except BodyError:
        raise
    except Exception as e:  # python-multipart on a malformed form
        raise BodyError(400, f"malformed multipart body ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})",
                        "bad request") from None
    try:
        upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise BodyError(400, "the multipart form holds no file: send the picture as a file field",
                            "bad request")
        await asyncio.to_thread(shutil.copyfileobj, upload.file, spool.file, 1 << 20)
        spool.size = spool.file.tell()
        return os.path.basename(upload.filename or "") or None
    finally:
        await form.close()
