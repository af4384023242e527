"""A PNG's chunks read without decoding a pixel.

Two facts Pillow does not give cheaply: an eXIf chunk stored after the image
data (Pillow's getexif decodes the whole picture to reach it), and whether the
zlib stream in IDAT holds every row that IHDR declares (a stream that ends
cleanly after half the rows decodes without complaint, the rest black).
"""

from __future__ import annotations

import struct
import zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A hostile file can hold millions of empty chunks: the walk for a late eXIf
# gives up (orientation 1) after this many (libpng's 8 kB IDAT chunks make
# ~25,000 in a 200 MB file), so it stays well under a second.
MAX_CHUNKS = 50_000
_MAX_EXIF = 1 << 20  # an orientation tag sits near the start of a few-kB block
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _chunks(fp, limit: int | None = None):
    """(type, data length, offset of the data) for each chunk, in file order."""
    fp.seek(0)
    if fp.read(8) != _SIGNATURE:
        return
    pos, n = 8, 0
    while limit is None or n < limit:
        n += 1
        head = fp.read(8)
        if len(head) < 8:
            return
        length, kind = struct.unpack(">I4s", head)
        yield kind, length, pos + 8
        if kind == b"IEND":
            return
        pos += 12 + length
        fp.seek(pos)


def late_exif(fp) -> bytes | None:
    """The data of an eXIf chunk that follows IDAT (PNG 3 puts it before IDAT,
    where Pillow's open already found it; ImageMagick still writes it after).
    `fp`: a binary file positioned anywhere; its position is restored."""
    pos = fp.tell()
    try:
        for kind, length, offset in _chunks(fp, MAX_CHUNKS):
            if kind == b"eXIf":
                if length > _MAX_EXIF:
                    return None
                fp.seek(offset)
                data = fp.read(length)
                return data if len(data) == length else None
        return None
    finally:
        fp.seek(pos)


def raw_size(width: int, height: int, depth: int, colour: int, interlace: int) -> int:
    """Bytes the IDAT stream must inflate to: each row (of each Adam7 pass) is a
    filter byte plus its packed pixels."""
    bits = depth * _CHANNELS.get(colour, 4)

    def rows(w, h):
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    if not interlace:
        return rows(width, height)
    return sum(rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in _ADAM7)


def short_stream(fp, piece: int = 1 << 20) -> tuple[int, int] | None:
    """(bytes inflated, bytes needed) when IDAT's zlib stream ends, properly
    terminated, before it has given every row IHDR declares. None when it is
    whole, and also when it is broken some other way (cut short, bad data): the
    decoder reports those. Inflates the stream once, keeping at most `piece`
    bytes of output at a time; `fp`'s position is restored."""
    pos = fp.tell()
    try:
        need, got, seen, z = None, 0, False, zlib.decompressobj()
        for kind, length, offset in _chunks(fp):
            if kind == b"IHDR" and length >= 13:
                fp.seek(offset)
                w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", fp.read(13))
                need = raw_size(w, h, depth, colour, interlace)
            elif kind == b"IDAT" and need is not None:
                seen = True
                fp.seek(offset)
                left = length
                while left:
                    data = fp.read(min(left, piece))
                    if not data:
                        return None  # the file ends inside the chunk: cut, not clean
                    left -= len(data)
                    while data:
                        got += len(z.decompress(data, piece))
                        data = z.unconsumed_tail
                        if got >= need:
                            return None
                        if z.eof:
                            return got, need
            elif seen:
                return None  # IDAT over and the stream not ended: the decoder says "truncated"
        return None
    except zlib.error:
        return None
    finally:
        fp.seek(pos)
