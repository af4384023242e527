"""Where each output goes, in which format, and how it is written safely.

Writes are atomic: the picture is encoded into a hidden temporary file in the
destination folder, flushed, then renamed over the final name, so a crash,
Ctrl-C or a full disk never leaves a half-written picture under a real name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from anime_cli.errors import OutputError, OutputExists, first_line

try:
    import fcntl
except ImportError:  # Windows: no flock; stale temporaries are then left alone
    fcntl = None

# Formats we write, their canonical suffix, and whether they hold alpha.
WRITABLE = {"JPEG": (".jpg", False), "PNG": (".png", True), "WEBP": (".webp", True),
            "BMP": (".bmp", False), "TIFF": (".tif", True)}
CHOICES = {"auto": None, "png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}

_UMASK = os.umask(0o022)
os.umask(_UMASK)
_temp_files: set[str] = set()
_temp_lock = threading.Lock()
_swept: set[str] = set()  # folders whose stale temporaries this process has removed
TEMP_SUFFIX = ".tmp"
_STALE_SECONDS = 10  # a live writer locks its temporary within microseconds; this covers the gap


def output_format(input_format: str, has_alpha: bool, choice: str = "auto") -> str:
    """The Pillow format to write. auto keeps the input's format unless it can't
    be written (GIF, HEIF) or can't hold the input's alpha: then PNG."""
    if CHOICES.get(choice):
        return CHOICES[choice]
    if input_format in WRITABLE and (not has_alpha or WRITABLE[input_format][1]):
        return input_format
    return "PNG"


def encode(rgb: np.ndarray, alpha: np.ndarray | None, fmt: str) -> Image.Image:
    im = Image.fromarray(rgb, "RGB")
    if alpha is not None and WRITABLE[fmt][1]:
        im.putalpha(Image.fromarray(alpha, "L"))
    return im


def save_kwargs(fmt: str, quality: int) -> dict:
    if fmt == "JPEG":
        # 4:4:4 at high quality: anime art is all crisp colour edges that 4:2:0 smears.
        return {"quality": quality, "subsampling": 0 if quality >= 90 else 2, "optimize": True}
    if fmt == "WEBP":
        return {"quality": quality, "method": 4}
    if fmt == "PNG":
        return {"compress_level": 6}
    if fmt == "TIFF":
        return {"compression": "tiff_deflate"}
    return {}


def write_atomic(im: Image.Image, dest: Path, fmt: str, quality: int, overwrite: bool,
                 abort: threading.Event | None = None, extra: dict | None = None) -> None:
    """Encode `im` into `dest` atomically (`extra`: more arguments for Pillow's
    save, e.g. metadata), through temporary(): OutputError (disk full:
    fatal), or OutputExists when another process published `dest` first."""
    with temporary(dest, overwrite, abort) as (fd, _):
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                im.save(f, format=fmt, **save_kwargs(fmt, quality), **(extra or {}))
        except (ValueError, TypeError) as e:  # the encoder refuses: a 17000 px wide WebP, say
            raise OutputError(f"{dest}: cannot encode as {fmt} ({first_line(e)})") from None


@contextmanager
def temporary(dest: Path, overwrite: bool, abort: threading.Event | None = None):
    """The one life of an output's temporary, for photos, videos and
    animations: a locked hidden file beside `dest` (see open_temp), given to
    the body as (descriptor, name) for a writer that writes either; when the
    body ends, the file made durable and published under `dest` (see finish);
    on any way out the temporary is gone and the descriptor closed.

    Without `overwrite` the output is published with link(2), which fails
    rather than replace a file that appeared meanwhile: two runs into one
    folder never clobber each other (OutputExists). `abort`: set by the batch
    when it stops early; seen before the write starts or before it
    publishes, it leaves nothing behind. An OSError is one OutputError; a
    fatal one (disk full) sets `abort`, so that the file in flight beside
    this one does not slip through."""
    if abort is not None and abort.is_set():
        raise OutputError(f"{dest}: not written (the batch was stopped)")
    try:
        fd, tmp = open_temp(dest)
    except OSError as e:
        raise _os_error(dest, e, abort) from None
    try:
        yield fd, tmp
        finish(fd, tmp, dest, overwrite, abort)
    except OSError as e:
        raise _os_error(dest, e, abort) from None
    finally:
        _discard_temp(tmp)
        os.close(fd)


def open_temp(dest: Path) -> tuple[int, str]:
    """The folder of `dest` made (and swept of stale temporaries, see
    remove_stale_temps), then a locked temporary in it (see _temp_file):
    its descriptor and its name, for a writer that may also open it by name
    (an encoder). Keep the descriptor open until finish() has published it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest.parent)
    return _temp_file(dest)


def finish(fd: int, tmp: str, dest: Path, overwrite: bool, abort: threading.Event | None = None) -> None:
    """The temporary written, durable, readable as the user's files are, and
    published under its name (see publish) while its lock is still held, so
    that a cleaner never takes it. `abort` set: nothing is published."""
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would stick to the output
    os.fsync(fd)
    if abort is not None and abort.is_set():
        raise OutputError(f"{dest}: not written (the batch was stopped)")
    publish(tmp, dest, overwrite)


def _temp_file(dest: Path) -> tuple[int, str]:
    """A hidden temporary beside `dest`, locked (flock) for as long as this
    process has it open: a later run deletes only the temporaries whose lock
    it can take, so never one a live process is still writing."""
    # the name cut short: a 250-byte output name must not give a temp name over NAME_MAX
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{cut_name(dest.name, 40)}.", suffix=TEMP_SUFFIX)
    with _temp_lock:
        _temp_files.add(tmp)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, tmp


def publish(tmp: str, dest: Path, overwrite: bool) -> None:
    """Give the complete temporary `tmp` its final name: replace `dest`, or
    without overwrite link(2) it there, which never clobbers (OutputExists)."""
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise OutputExists(f"{dest}: exists (another process wrote it first); not overwritten") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # no hard links here (FAT, some network mounts): check, then rename
        if dest.exists() or dest.is_symlink():
            raise OutputExists(f"{dest}: exists (another process wrote it first); not overwritten") from None
        os.replace(tmp, dest)


def cut_name(text: str, nbytes: int) -> str:
    """The longest start of `text` that encodes in at most `nbytes` bytes as the
    file system sees it (UTF-8, with the bytes of a non-UTF-8 name as they
    were), cut between characters, never inside one."""
    total = 0
    for i, c in enumerate(text):
        total += len(os.fsencode(c))
        if total > nbytes:
            return text[:i]
    return text


# write_atomic's temporary files: mkstemp(prefix=".NAME.", suffix=".tmp"), NAME cut
# to 40 characters, then 8 random ones. Such a file is half a picture: the sweep
# removes stale ones here, and probe skips inputs of this shape.
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def is_temp_name(name: str) -> bool:
    """Whether `name` has the shape of our temporaries (`.NAME.XXXXXXXX.tmp`)."""
    return TEMPORARY.match(name) is not None


def remove_stale_temps(folder: Path) -> int:
    """Delete the temporaries of ours in `folder` that no live process owns
    (their writer was killed: SIGKILL, power loss); once per folder a run.
    Only names of our pattern, only those whose lock we can take and that
    have not changed for a few seconds. Returns how many were removed."""
    key = os.path.realpath(folder)
    with _temp_lock:
        if key in _swept or fcntl is None:
            return 0
        _swept.add(key)
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if not is_temp_name(e.name) or e.path in _temp_files:
            continue
        try:
            fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or time.time() - st.st_mtime < _STALE_SECONDS:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while its writer lives
            os.unlink(e.path)
            removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _os_error(dest: Path, e: OSError, abort: threading.Event | None) -> OutputError:
    fatal = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
    if fatal and abort is not None:
        abort.set()
    return OutputError(f"{dest}: cannot write ({os.strerror(e.errno) if e.errno else e})", fatal=fatal)


def write_stdout(im: Image.Image, fmt: str, quality: int, extra: dict | None = None, stream=None) -> None:
    """The whole encoded picture to fd 1, or an OutputError saying why not: a
    reader that went away (`| head -c 100`: broken pipe), a full device
    (`> /dev/full`), a closed stdout. A short write is never `ok`.
    `stream`: a binary file in memory to encode into instead (a server's answer)."""
    if stream is not None:
        im.save(stream, format=fmt, **save_kwargs(fmt, quality), **(extra or {}))
        return
    if sys.stdout is None:  # closed when the process started (see cli._hold_closed_std_fds)
        raise OutputError("stdout: cannot write the picture (stdout is closed)")
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save_kwargs(fmt, quality), **(extra or {}))
    data = memoryview(buf.getbuffer())
    try:
        sys.stdout.flush()
        while data:
            n = os.write(1, data)
            data = data[n:]
    except OSError as e:
        _silence_stdout()
        why = {errno.EPIPE: "the reader closed the pipe", errno.EBADF: "stdout is closed"}.get(
            e.errno, os.strerror(e.errno) if e.errno else str(e))
        raise OutputError(f"stdout: cannot write the picture ({why}); "
                          f"{len(buf.getbuffer()) - len(data)} of {len(buf.getbuffer())} bytes written") from None


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null: Python's own flush at exit must not print a
    second, raw error about the same broken stdout."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def _discard_temp(tmp: str) -> None:
    with _temp_lock:
        _temp_files.discard(tmp)
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def remove_temp_files() -> None:
    """Delete every temporary file still open (called on interruption)."""
    with _temp_lock:
        pending = list(_temp_files)
    for tmp in pending:
        _discard_temp(tmp)


def check_output_dir(out: Path, create: bool = True) -> None:
    """Fail early (a usage error) if `out` cannot be created or written.
    create=False checks without touching the disk: the folder, or the
    nearest folder above it that exists, must be a writable folder."""
    if not create:
        there = out if out.exists() else next((p for p in out.parents if p.exists() or p.is_symlink()), Path("."))
        if out.exists() and not out.is_dir():
            raise OutputError(f"{out}: output exists and is not a folder")
        if not there.is_dir():
            raise OutputError(f"{out}: cannot create output folder ({os.strerror(errno.ENOTDIR)})")
        if not os.access(there, os.W_OK | os.X_OK):
            what = "output folder is not writable" if there == out else "cannot create output folder"
            raise OutputError(f"{out}: {what} ({os.strerror(errno.EACCES)})")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot create output folder ({e.strerror or e})") from None
    if not out.is_dir():
        raise OutputError(f"{out}: output exists and is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".anime-cli-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{out}: output folder is not writable ({e.strerror or e})") from None


def real_path(p: Path) -> Path:
    """The canonical path of `p`, never raising: Path.resolve() raises
    RuntimeError on a symlink loop (a link to itself), os.path.realpath does not."""
    return Path(os.path.realpath(p))


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def file_sha256(file: str | os.PathLike | int, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (weights checks, the cache's content key);
    `file` a path or an open descriptor (read from its start: the very file
    that was checked is the one installed, whatever a path then names)."""
    h = hashlib.sha256()
    if isinstance(file, int):
        os.lseek(file, 0, os.SEEK_SET)
        while block := os.read(file, chunk):
            h.update(block)
        return h.hexdigest()
    with open(file, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
