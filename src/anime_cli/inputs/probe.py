"""Read what an image is before decoding any pixel.

`open_image` opens a file with Pillow restricted to an allow-list of formats
(so no other decoder, EPS through Ghostscript or PDF, ever runs), checks the
limits that can be checked from the header, and returns the lazily opened
image with a `Probe`: format, stored size, mode, EXIF orientation and the size
once oriented. Nothing here decodes pixels, whatever the format: decoding
happens later, in decode.py, at a reduced size.

Importing this module changes no process-wide state; `configure_process` sets
the policy a command-line program wants (the CLI calls it at start).
"""

from __future__ import annotations

import functools
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from . import pngscan
from anime_cli.errors import InputError, UnsupportedFormat
from anime_cli.options import DEFAULT_MAX_PIXELS
from .sniff import VIDEO_SUFFIXES

FORMATS = ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"]
try:  # optional extra: pip install animegan-cli[heic]; registered with Pillow on first use
    import pillow_heif

    FORMATS.append("HEIF")
except ImportError:
    pillow_heif = None

# Extensions that say "this was meant to be a photo": unreadable data under one
# of these is an error; unreadable data under any other name is skipped.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif",
                  ".tiff", ".gif", ".heic", ".heif", ".avif"}


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
    size: tuple[int, int]  # as the decoder gives it: stored, or upright where Pillow turns it (TIFF)
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



def open_image(source, nbytes: int, name: str, max_pixels: int) -> tuple[Image.Image, Probe]:
    """Open `source` (a path or a binary file object) lazily and probe it.
    Raises UnsupportedFormat (skip) or InputError (fail) with a one-line reason."""
    register_plugins()
    allow_pixels(max_pixels)
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
        w, h = im.size  # checked first: what follows walks the file's structure
        if w < 1 or h < 1:
            raise InputError(f"{name}: image has no pixels ({w}x{h})", "empty image")
        if w * h > max_pixels:
            raise InputError(f"{name}: {w}x{h} is {w * h / 1e6:.0f} MP, over --max-pixels "
                             f"({max_pixels / 1e6:.0f} MP)", "too many pixels")
        try:
            probe = _probe(im, nbytes)
        except Exception as e:  # counting frames, finding EXIF: a hostile file's structure
            raise InputError(f"{name}: corrupt header ({_short(e)})", "corrupt header") from None
    except BaseException:
        im.close()
        raise
    return im, probe


def configure_process(max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Process-wide policy for a program whose stderr is its own (the CLI calls
    this once, at start; a library leaves these choices to its host):
    - Pillow's bomb guard agrees with --max-pixels (see allow_pixels);
    - Pillow's DecompressionBombWarning is silenced: our --max-pixels check makes
      it redundant, and it would land on stderr between our lines;
    - Pillow's UserWarnings about a file ("Corrupt EXIF data", "Tag data larger
      than file", "malformed MPO") name no file and change nothing we do: a broken
      EXIF block just means orientation 1; the file's record tells problems;
    - libtiff's own messages to stderr are silenced (see _quiet_libtiff)."""
    allow_pixels(max_pixels)
    register_plugins()
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    try:
        _quiet_libtiff()
    except Exception:  # never let cosmetics stop the tool
        pass


def allow_pixels(max_pixels: int) -> None:
    """Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS) raises above
    twice its limit, at open and again in some decoders, so a --max-pixels above
    it would be refused by Pillow with the wrong message. open_image calls this
    for correctness: it only ever raises Pillow's limit, to max_pixels."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


@functools.cache
def register_plugins() -> None:
    """The [heic] extra's opener joins Pillow's on first use (open_image), not on
    import; call this first to save or open HEIF with Pillow directly."""
    if pillow_heif is not None:
        pillow_heif.register_heif_opener()


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


def _probe(im: Image.Image, nbytes: int) -> Probe:
    orientation = _orientation(im)
    if im.format == "TIFF" and _pillow_turns_tiff():
        orientation = 1  # Pillow reports the upright size and turns the pixels as it loads
    frames = getattr(im, "n_frames", 1)
    notes = [f"first frame of {frames}"] if frames > 1 else []
    fmt = im.format or "?"
    if fmt == "MPO":  # a phone's JPEG with extra pictures (depth map, preview): a JPEG to us
        fmt = "JPEG"
        notes = [f"MPO: first picture of {frames}"] if frames > 1 else []
    return Probe(format=fmt, size=im.size, mode=im.mode, orientation=orientation,
                 input_bytes=nbytes, frames=frames, notes=notes)


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8 from what the header gave, never decoding: Pillow's
    getexif loads (decodes) a PNG whose eXIf chunk is not before IDAT, so a PNG's
    is read from its chunks. A broken EXIF block does not make a broken picture: 1."""
    try:
        if im.format == "PNG":
            value = _png_orientation(im)
        else:
            value = im.getexif().get(_ORIENTATION, 1)
        orientation = int(value or 1)
    except Exception:
        return 1
    return orientation if orientation in range(1, 9) else 1


def _png_orientation(im: Image.Image) -> int | None:
    """What Pillow's getexif finds, in its order (eXIf; ImageMagick's "Raw profile
    type exif" text; XMP's tiff:Orientation), except that an eXIf chunk after IDAT
    is found by walking the chunks instead of decoding the picture."""
    data = im.info.get("exif")
    raw = im.info.get("Raw profile type exif")
    if data is None and raw is not None:
        data = bytes.fromhex("".join(raw.split("\n")[3:]))
    if data is None:
        data = pngscan.late_exif(im.fp)
    exif = Image.Exif()
    if data:
        exif.load(data)
    return exif.get(_ORIENTATION) or _xmp_orientation(im.info)


def _xmp_orientation(info: dict) -> int | None:
    """tiff:Orientation in an XMP packet (what Pillow's getexif falls back to)."""
    xmp = info.get("XML:com.adobe.xmp") or info.get("xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", "replace")
    m = re.search(rb'tiff:Orientation(="|>)([0-9])', xmp or b"")
    return int(m[2]) if m else None


@functools.cache
def _pillow_turns_tiff() -> bool:
    """Whether this Pillow applies a TIFF's orientation tag itself (13 does, on
    load, and reports the upright size at open; older ones leave it to us).
    Asked of a 2x1 mirrored TIFF in memory, once."""
    im = Image.new("L", (2, 1))
    im.putpixel((0, 0), 255)
    exif = Image.Exif()
    exif[_ORIENTATION] = 2
    buf = io.BytesIO()
    im.save(buf, "TIFF", exif=exif)
    buf.seek(0)
    with Image.open(buf) as t:
        t.load()
        return t.getpixel((0, 0)) == 0


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
            return UnsupportedFormat(f"{name}: unsupported format (HEIF; install animegan-cli[heic])",
                                     "unsupported format")
        if brand in ("avif", "avis"):
            return UnsupportedFormat(f"{name}: unsupported format (AVIF)", "unsupported format")
        return UnsupportedFormat(f"{name}: unsupported format (video or ISO media)", "unsupported format")
    for magic, label in _NOT_IMAGES:
        if head.startswith(magic):
            return UnsupportedFormat(f"{name}: not an image ({label})", "not an image")
    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
        return InputError(f"{name}: not a readable image (corrupt or unknown data)", "corrupt or not an image")
    if Path(name).suffix.lower() in VIDEO_SUFFIXES:  # named a video, and not one (sniff would have said)
        return InputError(f"{name}: not a readable video (corrupt or unknown data)", "corrupt video")
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
