"""Read an input's bytes within --max-file-size, before anything parses them.

A regular file is opened by path (Pillow reads it lazily); a pipe, a socket or
stdin is read into memory a piece at a time, never more than the limit plus one
byte; a device, a folder or anime-cli's own temporary file is refused unread.
Every OSError becomes one line (InputError) with a short reason for the log.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import sys
from pathlib import Path

from anime_cli.errors import InputError, UnsupportedFormat
from anime_cli.folder.files import is_temp_name


def read_source(path: str | os.PathLike, max_file_size: int) -> tuple[object, int]:
    """What Image.open should read, and its byte count. Regular files are opened
    by path (Pillow reads them lazily) and a size over the limit is refused from
    stat, unread; pipes and sockets are read into memory, never more than the
    limit plus one byte; devices are refused unread (/dev/zero never ends, a
    terminal waits for a person)."""
    p = Path(path)
    if is_temp_name(p.name):
        raise UnsupportedFormat(f"{path}: a temporary file of anime-cli (a write in progress, "
                                "or left by a killed run)", "temporary")
    try:
        st = p.stat()
    except OSError as e:
        raise os_error(path, e) from None
    if stat.S_ISDIR(st.st_mode):
        # discover() hands over a folder only when it could not list it
        try:
            os.listdir(p)
        except OSError as e:
            raise InputError(f"{path}: cannot list folder ({os.strerror(e.errno) if e.errno else e})",
                             os_error(path, e).reason) from None
        raise InputError(f"{path}: is a folder", "is a folder")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "character" if stat.S_ISCHR(st.st_mode) else "block"
        raise InputError(f"{path}: is a {kind} device, not a file; not read", "not a file")
    if stat.S_ISREG(st.st_mode):
        if st.st_size > max_file_size:
            raise InputError(f"{path}: {st.st_size / 1e6:.1f} MB is over --max-file-size "
                             f"({max_file_size / 1e6:.0f} MB)", "file too large")
        if st.st_size == 0:
            raise InputError(f"{path}: empty file", "empty file")
        try:  # open it now: access() would not see every reason a read fails
            with open(p, "rb"):
                pass
        except OSError as e:
            raise os_error(path, e) from None
        return p, st.st_size
    try:
        with open(p, "rb", buffering=0) as f:
            return read_stream(f, str(path), max_file_size)
    except OSError as e:
        raise os_error(path, e) from None


def read_stream(stream, name: str, max_file_size: int, piece: int = 1 << 20) -> tuple[io.BytesIO, int]:
    """Read a pipe into memory a piece at a time, stopping one byte past the
    limit: the buffer grows with what arrives, never with what the limit allows."""
    buf = io.BytesIO()
    while buf.tell() <= max_file_size:
        data = stream.read(min(piece, max_file_size + 1 - buf.tell()))
        if not data:
            break
        buf.write(data)
    if buf.tell() > max_file_size:
        raise InputError(f"{name}: more than --max-file-size ({max_file_size / 1e6:.0f} MB); "
                         "stopped reading there", "file too large")
    if buf.tell() == 0:
        raise InputError(f"{name}: empty input", "empty file")
    n = buf.tell()
    buf.seek(0)
    return buf, n


def read_stdin(max_file_size: int, stream=None) -> tuple[io.BytesIO, int]:
    """The picture on stdin ('-'), read as read_stream does. A closed stdin
    (`<&-`, or fd 0 opened write-only) or a terminal is one line, not a
    traceback or a wait.
    `stream`: a binary file to read instead of sys.stdin's."""
    if stream is None:
        stream = getattr(sys.stdin, "buffer", sys.stdin)
    if stream is None:
        raise InputError("-: stdin is closed; nothing to read", "stdin closed")
    try:
        if getattr(stream, "isatty", bool)():  # reading would wait for a person to type a picture
            raise InputError("-: stdin is a terminal; pipe a picture in (cat photo.jpg | anime-cli "
                             "convert - ...)", "stdin is a terminal")
        return read_stream(stream, "-", max_file_size)
    except ValueError:  # "I/O operation on closed file"
        raise InputError("-: stdin is closed; nothing to read", "stdin closed") from None
    except OSError as e:
        if e.errno == errno.EBADF:
            raise InputError("-: stdin is closed or not readable", "stdin closed") from None
        raise os_error("-", e) from None


_OS_REASONS = {errno.ENOENT: "file not found", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied", errno.ELOOP: "symlink loop",
               errno.ENOTDIR: "file not found", errno.EISDIR: "is a folder"}


def os_error(path, e: OSError) -> InputError:
    """One line for an OSError met while reading an input file."""
    reason = _OS_REASONS.get(e.errno, "read error")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return InputError(f"{path}: file not found (deleted?)", reason)
    text = os.strerror(e.errno) if e.errno else str(e)
    return InputError(f"{path}: {text[:1].lower()}{text[1:]}", reason)


def read_bytes(data: bytes, name: str, max_file_size: int) -> tuple[object, int]:
    """Bytes already in memory (the library's `stdin=` data) as a source."""
    if len(data) > max_file_size:
        raise InputError(f"{name}: over --max-file-size ({max_file_size / 1e6:.0f} MB)", "file too large")
    if not data:
        raise InputError(f"{name}: empty input", "empty file")
    return io.BytesIO(data), len(data)
