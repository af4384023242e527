"""Where each output goes, in which format, and how it is written safely.

Writes are atomic: the picture is encoded into a hidden temporary file in the
destination folder, flushed, then renamed over the final name, so a crash,
Ctrl-C or a full disk never leaves a half-written picture under a real name.
"""

from __future__ import annotations

import errno
import io
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import OutputError

# Formats we write, their canonical suffix, and whether they hold alpha.
WRITABLE = {"JPEG": (".jpg", False), "PNG": (".png", True), "WEBP": (".webp", True),
            "BMP": (".bmp", False), "TIFF": (".tif", True)}
CHOICES = {"auto": None, "png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}

_UMASK = os.umask(0o022)
os.umask(_UMASK)
_temp_files: set[str] = set()
_temp_lock = threading.Lock()


def output_format(input_format: str, has_alpha: bool, choice: str = "auto") -> str:
    """The Pillow format to write. auto keeps the input's format unless it can't
    be written (GIF, HEIF) or can't hold the input's alpha: then PNG."""
    if CHOICES.get(choice):
        return CHOICES[choice]
    if input_format in WRITABLE and (not has_alpha or WRITABLE[input_format][1]):
        return input_format
    return "PNG"


def output_name(input_name: str, fmt: str) -> str:
    """Keep the input's stem, and its suffix when that suffix already names `fmt`
    (photo.JPEG stays photo.JPEG); otherwise use the format's usual suffix."""
    p = Path(input_name)
    if p.suffix and Image.registered_extensions().get(p.suffix.lower()) == fmt:
        return p.name
    return p.stem + WRITABLE[fmt][0]


def encode(rgb: np.ndarray, alpha: np.ndarray | None, fmt: str, quality: int) -> Image.Image:
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
                 abort: threading.Event | None = None) -> None:
    """Encode `im` into `dest` atomically. Raises OutputError (disk full: `.fatal`).

    `abort`: set by the batch when it stops early; a write that sees it set, before
    it starts or before its rename, leaves nothing behind. A fatal error sets it,
    so that the file in flight beside this one does not slip through."""
    if abort is not None and abort.is_set():
        raise OutputError(f"{dest}: not written (the batch was stopped)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # the name cut short: a 250-byte output name must not give a temp name over NAME_MAX
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name[:40]}.", suffix=".tmp")
    except OSError as e:
        raise _os_error(dest, e, abort) from None
    with _temp_lock:
        _temp_files.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp's 0600 would stick to the output
            im.save(f, format=fmt, **save_kwargs(fmt, quality))
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and dest.exists():
            raise OutputError(f"{dest}: exists (appeared during the run); not overwritten")
        if abort is not None and abort.is_set():
            raise OutputError(f"{dest}: not written (the batch was stopped)")
        os.replace(tmp, dest)
    except OSError as e:
        raise _os_error(dest, e, abort) from None
    except (ValueError, TypeError) as e:  # the encoder refuses: a 17000 px wide WebP, say
        text = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise OutputError(f"{dest}: cannot encode as {fmt} ({text})") from None
    finally:
        _discard_temp(tmp)


def _os_error(dest: Path, e: OSError, abort: threading.Event | None) -> OutputError:
    err = OutputError(f"{dest}: cannot write ({os.strerror(e.errno) if e.errno else e})")
    err.fatal = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
    if err.fatal and abort is not None:
        abort.set()
    return err


def write_stdout(im: Image.Image, fmt: str, quality: int) -> None:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save_kwargs(fmt, quality))
    sys.stdout.buffer.write(buf.getvalue())
    sys.stdout.buffer.flush()


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


def check_output_dir(out: Path) -> None:
    """Fail early (usage error) if `out` cannot be created or written."""
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

