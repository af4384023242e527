"""Read what an image is before decoding any pixel.

`open_image` opens a file with Pillow restricted to an allow-list of formats
(so no other decoder, EPS through Ghostscript or PDF, ever runs), checks the
limits that can be checked from the header, and returns the lazily opened
image with a `Probe`: format, stored size, mode, EXIF orientation and the size
once oriented. Decoding happens later, in decode.py, at a reduced size.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import InputError, UnsupportedFormat

FORMATS = ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"]
try:  # optional extra: pip install anime-cli[heic]
    import pillow_heif

    pillow_heif.register_heif_opener()
    FORMATS.append("HEIF")
except ImportError:
    pass

# Extensions that say "this was meant to be a photo": unreadable data under one
# of these is an error; unreadable data under any other name is skipped.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif",
                  ".tiff", ".gif", ".heic", ".heif", ".avif"}

DEFAULT_MAX_FILE_SIZE = 200 * 1000**2  # bytes; the largest phone photos are ~30 MB
DEFAULT_MAX_PIXELS = 150_000_000  # a 200 MP phone JPEG decodes reduced; PNGs that big are bombs

# Signatures of formats we recognise but refuse: named in the skip reason.
_REFUSED = [
    (b"%PDF", "PDF"), (b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"), (b"II*\x00\x10\x00\x00\x00CR", "raw (CR2)"),
    (b"\x1a\x45\xdf\xa3", "video (Matroska/WebM)"), (b"PK\x03\x04", "ZIP"),
    (b"\x89HDF", "HDF"),
]
# Not pictures, whatever their name says: skipped as "not an image", never failed.
# macOS leaves a "._photo.jpg" AppleDouble file beside every photo it copies to a
# FAT/exFAT/network drive; a batch over such a folder must not fail on each of them.
_NOT_IMAGES = [(b"\x00\x05\x16\x07", "AppleDouble metadata"), (b"\x00\x05\x16\x00", "AppleSingle metadata")]
_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


@dataclass
class Probe:
    format: str
    size: tuple[int, int]  # as stored in the file
    mode: str
    orientation: int  # EXIF 1..8, 1 when absent
    input_bytes: int
    frames: int = 1
    notes: list[str] = field(default_factory=list)  # e.g. "first frame of 12"

    @property
    def oriented_size(self) -> tuple[int, int]:
        w, h = self.size
        return (h, w) if self.orientation in _SWAPS_AXES else (w, h)

    @property
    def has_alpha(self) -> bool:
        return self.mode in ("RGBA", "LA", "PA", "La", "RGBa")


def read_source(path: str | os.PathLike, max_file_size: int) -> tuple[object, int]:
    """What Image.open should read, and its byte count. Regular files are opened
    by path (Pillow reads them lazily); pipes and stdin are read into memory,
    stopping one byte past the limit."""
    p = Path(path)
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
        with open(p, "rb") as f:
            data = f.read(max_file_size + 1)
    except OSError as e:
        raise os_error(path, e) from None
    return read_bytes(data, str(path), max_file_size)


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
    if len(data) > max_file_size:
        raise InputError(f"{name}: over --max-file-size ({max_file_size / 1e6:.0f} MB)", "file too large")
    if not data:
        raise InputError(f"{name}: empty input", "empty file")
    return io.BytesIO(data), len(data)


def open_image(source, nbytes: int, name: str, max_pixels: int) -> tuple[Image.Image, Probe]:
    """Open `source` (a path or a binary file object) lazily and probe it.
    Raises UnsupportedFormat (skip) or InputError (fail) with a one-line reason."""
    _agree_with_pillow(max_pixels)
    try:
        im = Image.open(source, formats=FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(source, name) from None
    except Image.DecompressionBombError:
        raise InputError(f"{name}: declared size is a decompression bomb", "too many pixels") from None
    except FileNotFoundError:
        raise InputError(f"{name}: file not found (deleted?)", "file not found") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied", "permission denied") from None
    except Exception as e:  # plugins parsing hostile headers raise many types
        raise InputError(f"{name}: corrupt header ({_short(e)})", "corrupt header") from None
    try:
        try:
            probe = _probe(im, nbytes, name)
        except Exception as e:  # counting frames walks a hostile file's structure
            raise InputError(f"{name}: corrupt header ({_short(e)})", "corrupt header") from None
        w, h = probe.size
        if w < 1 or h < 1:
            raise InputError(f"{name}: image has no pixels ({w}x{h})", "empty image")
        if w * h > max_pixels:
            raise InputError(f"{name}: {w}x{h} is {w * h / 1e6:.0f} MP, over --max-pixels "
                             f"({max_pixels / 1e6:.0f} MP)", "too many pixels")
    except BaseException:
        im.close()
        raise
    return im, probe


def _agree_with_pillow(max_pixels: int) -> None:
    """Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS) warns above
    its limit and raises above twice that, at open and again in some decoders.
    --max-pixels is the limit that counts: Pillow's is raised to meet it when the
    user asks for more, and its warning, which our check makes redundant and
    which would land on stderr, is silenced for the whole process."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Pillow's UserWarnings about a file ("Corrupt EXIF data", "Tag data larger than
# file", "malformed MPO") name no file and change nothing we do: a broken EXIF
# block just means orientation 1. The file's record is where problems are told.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def _quiet_libtiff() -> None:
    """libtiff prints its complaints about a corrupt TIFF ("tempfile.tif: Using
    code not yet in table") straight to stderr from C. Pillow turns the failure
    into an exception anyway, which becomes the file's error record, so the
    handlers of the libtiff that Pillow loaded are cleared. Best effort."""
    import ctypes
    import glob

    from PIL import _imaging  # noqa: F401  (loads libtiff)

    paths = []
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "libtiff" in line and "/" in line})
    except OSError:
        pdir = os.path.dirname(Image.__file__)
        paths = glob.glob(os.path.join(pdir, "..", "pillow.libs", "libtiff*")) + \
            glob.glob(os.path.join(pdir, ".dylibs", "libtiff*"))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            for fn in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
                getattr(lib, fn).restype = ctypes.c_void_p
                getattr(lib, fn)(None)
        except (OSError, AttributeError):
            pass


try:
    _quiet_libtiff()
except Exception:  # never let cosmetics stop the tool
    pass


def _probe(im: Image.Image, nbytes: int, name: str) -> Probe:
    try:
        orientation = int(im.getexif().get(_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block does not make a broken picture
        orientation = 1
    if orientation not in range(1, 9):
        orientation = 1
    frames = getattr(im, "n_frames", 1)
    notes = [f"first frame of {frames}"] if frames > 1 else []
    fmt = im.format or "?"
    if fmt == "MPO":  # a phone's JPEG with extra pictures (depth map, preview): a JPEG to us
        fmt = "JPEG"
        notes = [f"MPO: first picture of {frames}"] if frames > 1 else []
    return Probe(format=fmt, size=im.size, mode=im.mode, orientation=orientation,
                 input_bytes=nbytes, frames=frames, notes=notes)


def _unidentified(source, name: str) -> InputError:
    head = _head(source)
    for magic, label in _REFUSED:
        if head.startswith(magic):
            return UnsupportedFormat(f"{name}: unsupported format ({label})", "unsupported format")
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        if brand in ("heic", "heix", "mif1", "msf1", "heim", "heis", "hevc", "hevx"):
            if "HEIF" in FORMATS:  # the extra is there and could not read it
                return InputError(f"{name}: not a readable HEIF image (corrupt)", "corrupt or not an image")
            return UnsupportedFormat(f"{name}: unsupported format (HEIF; install anime-cli[heic])",
                                     "unsupported format")
        if brand in ("avif", "avis"):
            return UnsupportedFormat(f"{name}: unsupported format (AVIF)", "unsupported format")
        return UnsupportedFormat(f"{name}: unsupported format (video or ISO media)", "unsupported format")
    for magic, label in _NOT_IMAGES:
        if head.startswith(magic):
            return UnsupportedFormat(f"{name}: not an image ({label})", "not an image")
    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
        return InputError(f"{name}: not a readable image (corrupt or unknown data)", "corrupt or not an image")
    if _looks_like_text(head):
        return UnsupportedFormat(f"{name}: not an image (text)", "not an image")
    return UnsupportedFormat(f"{name}: not an image", "not an image")


def _head(source, n: int = 64) -> bytes:
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return f.read(n)
        source.seek(0)
        return source.read(n)
    except OSError:
        return b""


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # a character cut by the 64-byte window is fine
            return False
    return b"\x00" not in head


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:120] if text else type(e).__name__
