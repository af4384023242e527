"""What a conversion may be told, with the one copy of every default.

The CLI's option defaults come from here, and so do the parsers of sizes and
pixel counts ("700MB", "1GiB", "150M"): no twin literals that can drift. This
module imports no torch, so the CLI can check its options before loading it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUTPUT = "anime-out"
DEFAULT_MAX_SIDE = 1280
DEFAULT_MAX_FILE_SIZE = 200 * 1000**2  # bytes; the largest phone photos are ~30 MB
DEFAULT_MAX_PIXELS = 150_000_000  # a 200 MP phone JPEG decodes reduced; PNGs that big are bombs
DEFAULT_QUALITY = 95
DEFAULT_FACE_SIZE = 512
VIDEO_FACE_SIZE = 256  # faces in video: a render per face per frame is the bill (see framestyle)
# x264's CRF 18 is the usual "visually lossless" point; for this content it is
# the right one too: AnimeGAN output is flat areas and hard outlines, where
# lower quality shows first as ringing and blocking along the outlines. At 18
# a stylized frame comes back 37-40 dB from itself (tests ask >= 30 dB).
DEFAULT_CRF = 18
DEFAULT_MAX_FRAMES = 100_000  # about an hour at 30 fps: a bomb cannot run for days
DEFAULT_MEMORY_LIMIT = 1024**3
DEFAULT_STYLE = "hayao"
DEFAULT_DOWNLOAD_TIMEOUT = 30.0  # seconds without a byte before a transfer has stalled
PRECISIONS = ("auto", "bf16", "int8", "fp32")
FORMATS = ("auto", "png", "jpg", "webp")  # jpeg is read as jpg
# The ranges of the integer options (the CLI's min/max; what a request to `serve` may set).
MAX_SIDE_MIN = 0
QUALITY_RANGE = (1, 100)

__all__ = ["Options", "parse_bytes", "parse_count", "parse_int", "parse_bool", "option_message", "format_bytes",
           "format_count", "DEFAULT_MAX_FILE_SIZE", "DEFAULT_MAX_PIXELS"]


@dataclass
class Options:
    output_dir: Path | None = Path(DEFAULT_OUTPUT)  # None: write to stdout
    max_side: int = DEFAULT_MAX_SIDE
    format: str = "auto"
    quality: int = DEFAULT_QUALITY
    overwrite: bool = False
    face_enhance: bool = True
    min_face: int | None = None  # None: the face module's default
    face_size: int | None = None  # None: DEFAULT_FACE_SIZE for photos, VIDEO_FACE_SIZE for video
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS
    memory_limit: int = DEFAULT_MEMORY_LIMIT  # bytes of RSS for the whole process; 0: none
    pipelined: bool = True  # two files in flight (False: --sequential)
    dry_run: bool = False  # probe and plan only: decode nothing, write nothing
    name: str = "{stem}"  # the output name pattern (see names.py); checked with names.check
    keep_metadata: bool = False  # copy EXIF/XMP (camera, date taken...) into the output
    keep_gps: bool = False  # ... GPS included
    style: str = DEFAULT_STYLE  # for {style} in names and the records
    weights: Path | None = None  # the --weights file, when not a style (for the cache key)
    crf: int = DEFAULT_CRF  # video quality (H.264/VP9 constant rate factor)
    max_frames: int = DEFAULT_MAX_FRAMES

    def face_px(self, video: bool = False) -> int:
        """The size faces are re-rendered at."""
        return self.face_size or (VIDEO_FACE_SIZE if video else DEFAULT_FACE_SIZE)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.I)
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)\s*$", re.I)


def parse_bytes(text: str) -> int:
    """'700MB', '1GB', '1.5GiB', '200M', '0' -> bytes (powers of 1000, or 1024 with 'i').
    ValueError with a one-line message otherwise."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"must be a size like 700MB or 1GiB (got '{text}')")
    num, unit, binary = m.groups()
    base = 1024 if binary else 1000
    return int(float(num) * base ** " kmgt".index(unit.lower() or " "))


def parse_count(text: str) -> int:
    """'150M', '24000000', '2G' -> a pixel count."""
    m = _COUNT.match(str(text))
    if not m:
        raise ValueError(f"must be a pixel count like 150M (got '{text}')")
    return int(float(m.group(1)) * 1000 ** " kmg".index(m.group(2).lower() or " "))


def parse_choice(choices: tuple[str, ...], aliases: tuple[str, ...] = ()):
    """A parser for one of `choices` (or an alias), case-insensitive."""

    def parse(text: str) -> str:
        if str(text).lower() not in choices + aliases:
            raise ValueError(f"must be one of {', '.join(choices)} (got '{text}')")
        return str(text).lower()

    return parse


def parse_int(lo: int | None = None, hi: int | None = None):
    """A parser for an integer option in [lo, hi], failing with the CLI's own
    messages (Typer validates its integer options with pydantic's words)."""

    def parse(text) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValueError("Input should be a valid integer, unable to parse string as an integer") from None
        if lo is not None and value < lo:
            raise ValueError(f"Input should be greater than or equal to {lo}")
        if hi is not None and value > hi:
            raise ValueError(f"Input should be less than or equal to {hi}")
        return value

    return parse


def parse_bool(text) -> bool:
    """'true', 'false', '1', '0', 'yes', 'no', 'on', 'off' (a flag given as a value)."""
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false (got '{text}')")


def option_message(name: str, message: str) -> str:
    """A parser's message as the CLI shows it, naming the option: '--format must
    be one of ...', '--quality: Input should be ...'."""
    if message.startswith(name):
        return message
    return f"{name} {message}" if message.startswith("must") else f"{name}: {message}"


def format_bytes(n: int) -> str:
    """The shortest exact spelling parse_bytes reads back: 1073741824 -> '1GiB'."""
    for base, suffix in ((1024, "iB"), (1000, "B")):
        for k, unit in reversed(list(enumerate("KMGT", 1))):
            if n and n % base**k == 0:
                return f"{n // base**k}{unit}{suffix}"
    return str(n)


def format_count(n: int) -> str:
    for k, unit in reversed(list(enumerate("KMG", 1))):
        if n and n % 1000**k == 0:
            return f"{n // 1000**k}{unit}"
    return str(n)
