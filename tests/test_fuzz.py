"""Fuzzing the probe/decode front: bytes of valid JPEGs and PNGs (and, more
lightly, the other allowed formats) are mutated by hypothesis; whatever comes out, the
front either gives a sane picture or raises the tool's own InputError, never anything
else, and fast.

Derandomized (the same examples every run), no example database. A run of the
suite takes 100 examples in all; `make fuzz` (ANIME_CLI_FUZZ=full) the 2,000.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import Identity, files_in, base, encoded, exif_orientation, with_alpha

MAX_SIDE = 64
MAX_PIXELS = 4_000_000  # mutated headers may declare anything; keep the allocations small
SLOW = 5.0  # seconds: one tiny file taking longer than this is a hang


def _seeds() -> dict[str, bytes]:
    b = base((48, 32))
    pal = b.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return {
        "baseline.jpg": encoded(b, "JPEG", quality=85, exif=exif_orientation(6)),
        "progressive.jpg": encoded(b, "JPEG", quality=85, progressive=True),
        "cmyk.jpg": encoded(b.convert("CMYK"), "JPEG", quality=85),
        "rgb.png": encoded(b, "PNG"),
        "rgba.png": encoded(with_alpha(b), "PNG", exif=exif_orientation(3)),
        "palette.png": encoded(pal, "PNG", transparency=0),
        "gray16.png": encoded(Image.fromarray(np.asarray(b.convert("L")).astype(np.uint16) * 257), "PNG"),
    }


SEEDS = _seeds()
JPEG_PNG = sorted(SEEDS)
_b = base((48, 32))
OTHERS = {
    "a.gif": encoded(_b, "GIF", save_all=True, append_images=[_b.rotate(90)]),
    "a.webp": encoded(with_alpha(_b), "WEBP", quality=80),
    "a.tif": encoded(_b, "TIFF", compression="tiff_lzw"),
    "b.tif": encoded(_b, "TIFF", compression="jpeg"),
    "a.bmp": encoded(_b, "BMP"),
}

# One mutation: (kind, where, bytes). Positions are taken modulo the length; half of
# them fall in the first 256 bytes, where the headers (sizes, modes, tables) are.
_position = st.one_of(st.integers(0, 255), st.integers(0, 1 << 20))
_mutation = st.tuples(st.sampled_from(["set", "flip", "truncate", "insert", "delete", "dup", "ff", "big16"]),
                      _position, st.binary(min_size=1, max_size=16))


def mutate(data: bytes, mutations) -> bytes:
    d = bytearray(data)
    for kind, pos, blob in mutations:
        if not d:
            d = bytearray(blob)
            continue
        p = pos % len(d)
        if kind == "set":
            d[p:p + len(blob)] = blob
        elif kind == "flip":
            d[p] ^= 1 << (blob[0] % 8)
        elif kind == "truncate":
            del d[p:]
        elif kind == "insert":
            d[p:p] = blob
        elif kind == "delete":
            del d[p:p + len(blob)]
        elif kind == "dup":
            d[p:p] = d[p:p + 8 * len(blob)]
        elif kind == "ff":
            d[p:p + len(blob)] = b"\xff" * len(blob)
        elif kind == "big16":  # a 16-bit field (a width, a length) turned huge or zero
            d[p:p + 2] = blob[:1] * 2 if blob[0] % 2 else b"\0\0"
    return bytes(d)


def front(data: bytes, name: str):
    """read -> probe -> decode, as the pipeline does it."""
    from anime_cli.inputs import decode
    from anime_cli.inputs import probe, read

    src, n = read.read_bytes(data, name, 10**8)
    im, pr = probe.open_image(src, n, name, MAX_PIXELS)
    with im:
        return pr, decode.decode(im, pr, MAX_SIDE, name)


def check_front(data: bytes, name: str) -> None:
    from anime_cli.errors import InputError

    t = time.perf_counter()
    try:
        pr, d = front(data, name)
    except InputError as e:
        assert e.reason and "\n" not in str(e), repr(e)
        event(f"{type(e).__name__}: {e.reason}")  # --hypothesis-show-statistics tells the mix
    else:
        event("decoded")  # whatever decoded must be a sane picture
        h, w, c = d.rgb.shape
        assert c == 3 and d.rgb.dtype == np.uint8 and 1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE, d.rgb.shape
        assert d.alpha is None or d.alpha.shape == (h, w)
    assert time.perf_counter() - t < SLOW, f"{name}: {time.perf_counter() - t:.1f}s"


# A quick sample by default; ANIME_CLI_FUZZ=full (`make fuzz`) runs the 2,000 examples.
FULL = os.environ.get("ANIME_CLI_FUZZ") == "full"


def examples(n: int) -> int:
    return n if FULL else max(10, n // 20)


FUZZ = settings(max_examples=examples(1000), deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(name=st.sampled_from(JPEG_PNG), mutations=st.lists(_mutation, min_size=1, max_size=6))
def test_mutated_jpeg_and_png_raise_only_input_errors(name, mutations):
    check_front(mutate(SEEDS[name], mutations), name)


@settings(FUZZ, max_examples=examples(500))
@given(name=st.sampled_from(sorted(OTHERS)), mutations=st.lists(_mutation, min_size=1, max_size=6))
def test_mutated_gif_webp_tiff_bmp_raise_only_input_errors(name, mutations):
    check_front(mutate(OTHERS[name], mutations), name)


@settings(FUZZ, max_examples=examples(300))
@given(data=st.binary(max_size=512), prefix=st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n",
                                                              b"GIF89a", b"RIFF\0\0\0\0WEBP", b"II*\0", b"BM"]))
def test_random_bytes_behind_a_magic_number(data, prefix):
    check_front(prefix + data, "x.jpg")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(FUZZ, max_examples=examples(200))
@given(name=st.sampled_from(JPEG_PNG), mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_files_through_the_converter_give_one_record(fuzz_dir, name, mutations):
    """From the file on disk to the written output: one record, never an exception;
    an ok record's output is a whole picture of the logged size."""
    from anime_cli.inputs.discover import Job
    from anime_cli.run.converter import Converter, Options

    src = fuzz_dir / "in" / name
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(mutate(SEEDS[name], mutations))
    out = fuzz_dir / "out"
    conv = Converter(Identity(), Options(output_dir=out, max_side=MAX_SIDE, max_pixels=MAX_PIXELS,
                                          face_enhance=False, overwrite=True))
    rec = conv.convert(Job(str(src), src, Path(name)))
    assert rec.status in ("ok", "skipped", "error")
    if rec.status == "ok":
        with Image.open(rec.output) as im:
            im.load()
            assert list(im.size) == rec.output_size
        Path(rec.output).unlink()
    else:
        assert rec.output is None and (rec.reason or rec.error)
    assert files_in(out, recursive=True) == []  # no temp file either
