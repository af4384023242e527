"""Which files are videos or animations, from their first bytes, not their name.

`sniff` needs no decoder (PyAV or Pillow): it reads a few header bytes, walks
a PNG's chunks up to its first IDAT and a GIF's blocks up to its second frame,
so it is cheap enough to run on every file of a batch before the photo probe.
A still GIF, WebP or PNG is not an animation: it stays on the photo path.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

VIDEO_KINDS = ("mp4", "mov", "mkv", "webm", "avi")
ANIMATED_KINDS = ("gif", "webp", "apng")
# Names that say "this was meant to be a video": unreadable data under one of
# them is an error (corrupt), not a silent skip.
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".qt", ".3gp"}
# ISO media brands that are still pictures (HEIF, AVIF): the photo path's.
_IMAGE_BRANDS = {"heic", "heix", "mif1", "msf1", "heim", "heis", "hevc", "hevx", "avif", "avis"}


def sniff(source: str | os.PathLike | bytes | BinaryIO) -> str | None:
    """The kind of video or animation in `source` (a path, the first bytes, or a
    seekable binary file), one of VIDEO_KINDS + ANIMATED_KINDS, or None for
    anything else (a still picture, text...). Reads a few header bytes; a GIF
    is walked block by block only as far as its second frame."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                return _sniff(f)
        except OSError:
            return None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _sniff(io.BytesIO(bytes(source)))
    pos = source.tell()
    try:
        return _sniff(source)
    finally:
        source.seek(pos)


def _sniff(f: BinaryIO) -> str | None:
    head = f.read(64)
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("latin-1")
        if brand.strip() in _IMAGE_BRANDS:
            return None
        return "mov" if brand == "qt  " else "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide") and len(head) >= 8:
        return "mov"  # an old QuickTime file: no ftyp box
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head else "mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"RIFF") and head[8:16] == b"WEBPVP8X":
        return "webp" if len(head) > 20 and head[20] & 0x02 else None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "apng" if _png_animated(f) else None
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif" if _gif_frames(f, stop=2) >= 2 else None
    return None


def _png_animated(f: BinaryIO) -> bool:
    """An acTL chunk (before the first IDAT) declaring two frames or more."""
    f.seek(8)
    for _ in range(64):
        hdr = f.read(8)
        if len(hdr) < 8:
            return False
        n, kind = int.from_bytes(hdr[:4], "big"), hdr[4:]
        if kind == b"acTL":
            return int.from_bytes(f.read(4), "big") >= 2
        if kind == b"IDAT":
            return False
        f.seek(n + 4, 1)  # data and CRC
    return False


def _gif_frames(f: BinaryIO, stop: int) -> int:
    """Image descriptors in a GIF, counted up to `stop` (a broken GIF: those seen)."""
    return _gif_walk(f, stop)[0]


def gif_extent(source: str | os.PathLike | BinaryIO) -> tuple[int, int]:
    """The canvas a GIF decoder ends up with: the logical screen grown to hold
    every frame's extent (Pillow grows it at the frame that reaches out; a
    1x1 frame at (11999, 11999) makes it 12000x12000). Read from the image
    descriptors, nothing decoded; (0, 0) when it is not a GIF."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _gif_walk(f, None)[1]
    pos = source.tell()
    try:
        return _gif_walk(source, None)[1]
    finally:
        source.seek(pos)


def _skip_to_block(f: BinaryIO) -> bool:
    """Move to the next byte that starts a block (an image, an extension or the
    trailer); False at the end of the file."""
    while True:
        pos = f.tell()
        chunk = f.read(65536)
        if not chunk:
            return False
        hits = [i for i in (chunk.find(b"\x2c"), chunk.find(b"\x21"), chunk.find(b"\x3b")) if i >= 0]
        if hits:
            f.seek(pos + min(hits))
            return True


def _gif_walk(f: BinaryIO, stop: int | None) -> tuple[int, tuple[int, int]]:
    """(image descriptors seen, up to `stop`; the extent of the screen and of
    those frames)."""
    f.seek(0)
    head = f.read(13)
    if len(head) < 13 or head[:6] not in (b"GIF87a", b"GIF89a"):
        return 0, (0, 0)
    w, h = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[10] & 0x80:
        f.seek(3 << ((head[10] & 7) + 1), 1)
    frames = 0
    while stop is None or frames < stop:
        b = f.read(1)
        if b == b"\x2c":
            desc = f.read(9)
            if len(desc) < 9:
                return frames, (w, h)
            x, y, fw, fh = (int.from_bytes(desc[i:i + 2], "little") for i in (0, 2, 4, 6))
            w, h = max(w, x + fw), max(h, y + fh)
            if desc[8] & 0x80:
                f.seek(3 << ((desc[8] & 7) + 1), 1)
            f.read(1)  # LZW minimum code size
            frames += 1
        elif b == b"\x21":
            f.read(1)  # extension label
        elif b in (b"", b"\x3b"):  # the end, or the trailer
            return frames, (w, h)
        else:  # a stray byte: Pillow skips it and reads on, and so must we
            if not _skip_to_block(f):
                return frames, (w, h)
            continue
        while True:  # data sub-blocks
            n = f.read(1)
            if not n or n == b"\x00":
                break
            f.seek(n[0], 1)
        if not n:
            return frames, (w, h)
    return frames, (w, h)
