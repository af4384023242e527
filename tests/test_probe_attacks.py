"""The input side under attack: probing never decodes, truncated data is
an error, devices and pipes are read within the limit, the log file is never an
input, temporary files are skipped; and importing the probe changes nothing global.

The big pictures here are real and valid but tiny on disk: their zlib streams are
one deflated band of zero rows, full-flushed (so it refers to nothing before it)
and repeated, which makes a 144 MP PNG in a fraction of a second.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anime_cli.options import DEFAULT_MAX_FILE_SIZE
from anime_cli.folder import files
from anime_cli.inputs import probe, read
from anime_cli.inputs.decode import decode
from anime_cli.errors import InputError, UnsupportedFormat
from helpers import CLI, PHOTOS, encoded, exif_orientation, invoke, read_log

# ----------------------------------------------------------------------------- makers


def zeros_zlib(row: bytes, rows: int, band: int = 64) -> bytes:
    """A zlib stream of `row` repeated `rows` times, built from one deflated band."""
    assert rows % band == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    seg = c.compress(row * band) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush(zlib.Z_FINISH)
    adler, block = 1, row * band
    for _ in range(rows // band):
        adler = zlib.adler32(block, adler)
    return b"\x78\xda" + seg * (rows // band) + end + struct.pack(">I", adler)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(w: int, h: int, idat: bytes, colour: int = 0, before=b"", after=b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + before + chunk(b"IDAT", idat) + after
            + chunk(b"IEND", b""))


def big_png(w: int, h: int) -> bytes:
    return png(w, h, zeros_zlib(b"\0" * (1 + w), h))  # grey: a filter byte + w pixels a row


def big_tiff(w: int, h: int) -> bytes:
    """A grey TIFF, one deflate strip (Compression 8 is a zlib stream)."""
    strip = zeros_zlib(b"\0" * w, h)
    tags = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 0),
            (277, 3, 1), (278, 4, h), (279, 4, len(strip))]
    ifd_size = 2 + 12 * len(tags) + 4
    data_at = 8 + ifd_size
    ifd = struct.pack("<H", len(tags))
    for tag, typ, value in tags:
        value = data_at if tag == 273 else value
        ifd += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + strip


def gif_screen(w: int, h: int) -> bytes:
    """A GIF whose logical screen is w x h around a 1x1 frame."""
    return (b"GIF89a" + struct.pack("<HH", w, h) + b"\0\0\0"
            + b",\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;")


def webp_canvas(w: int, h: int) -> bytes:
    """An animated WebP (VP8X) declaring a w x h canvas around two small frames."""
    frames = [Image.new("RGB", (32, 24), (200, 30, 30)), Image.new("RGB", (32, 24), (30, 30, 200))]
    data = bytearray(encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:]))
    i = data.find(b"VP8X")
    data[i + 12:i + 15] = (w - 1).to_bytes(3, "little")
    data[i + 15:i + 18] = (h - 1).to_bytes(3, "little")
    return bytes(data)


def pattern(size=(60, 40)) -> Image.Image:
    """An asymmetric picture: every flip and turn of it is a different picture."""
    with Image.open(PHOTOS / "coffee.png") as im:
        return im.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def front(data: bytes, name: str, max_pixels=probe.DEFAULT_MAX_PIXELS):
    src, n = read.read_bytes(data, name, 10**9)
    return probe.open_image(src, n, name, max_pixels)


# ----------------------------------------------------------------------------- 10.1 probing never decodes

BIG = {  # each declares ~144-256 MP; the PNG and TIFF hold every row (144 MB of pixels)
    "PNG": lambda: big_png(12_000, 12_032),
    "TIFF": lambda: big_tiff(12_000, 12_032),
    "WEBP": lambda: webp_canvas(16_000, 16_000),
    "GIF": lambda: gif_screen(16_000, 16_000),
}


@pytest.mark.parametrize("fmt", sorted(BIG))
def test_probing_a_big_picture_decodes_nothing(fmt):
    im, pr = front(BIG[fmt](), "big", max_pixels=300_000_000)
    with im:
        assert pr.format == fmt and pr.size[0] * pr.size[1] > 140e6
        assert im._im is None  # no pixel buffer: only the header was read


_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from anime_cli.inputs import probe, read
    from anime_cli.options import DEFAULT_MAX_FILE_SIZE
    from anime_cli.errors import InputError
    path, max_pixels = sys.argv[1], int(sys.argv[2])
    peak, t = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    try:
        src, n = read.read_source(path, DEFAULT_MAX_FILE_SIZE)
        probe.open_image(src, n, path, max_pixels)[0].close()
        reason = None
    except InputError as e:
        reason = e.reason
    took = time.perf_counter() - t
    print(json.dumps([reason, took, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) * 1024]))
""")


@pytest.mark.parametrize("fmt", sorted(BIG))
@pytest.mark.parametrize("max_pixels", [100_000_000, 300_000_000])  # refused, and let through
def test_probe_time_and_memory_are_bounded(tmp_path, fmt, max_pixels):
    """In a fresh process: the peak RSS grows by less than a tenth of the pixels'
    size whether the picture is refused (over --max-pixels) or let through."""
    path = tmp_path / f"big.{fmt.lower()}"
    path.write_bytes(BIG[fmt]())
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(max_pixels)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    reason, took, grew = json.loads(out.stdout)
    assert reason == ("too many pixels" if max_pixels < 140e6 else None)
    assert grew < 15e6, f"the probe's peak RSS grew by {grew / 1e6:.0f} MB"
    assert took < 1.0  # milliseconds on a quiet machine; a PNG decoded to read its EXIF took seconds


# ----------------------------------------------------------------------------- orientation, from the header


def _stored(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores so that applying `orientation` shows `upright`."""
    inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_270}
    return upright.transpose(inverse[orientation]) if orientation in inverse else upright


@pytest.mark.parametrize("fmt,kw,tol", [("JPEG", {"quality": 100, "subsampling": 0}, 3),
                                        ("PNG", {}, 0), ("WEBP", {"lossless": True}, 0), ("TIFF", {}, 0)])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_once(fmt, kw, tol, orientation):
    upright = pattern()
    data = encoded(_stored(upright, orientation), fmt, exif=exif_orientation(orientation), **kw)
    im, pr = front(data, "o." + fmt.lower())
    with im:
        assert im._im is None
        assert pr.oriented_size == (60, 40)
        d = decode(im, pr, 0, "o")
    assert d.size == (60, 40)
    assert np.abs(d.rgb.astype(int) - np.asarray(upright)).mean() <= tol


def test_png_exif_after_the_image_data_is_found_without_decoding():
    """ImageMagick writes eXIf after IDAT: found by walking the chunks."""
    upright = pattern()
    plain = encoded(_stored(upright, 6), "PNG")
    iend = plain.rindex(b"IEND") - 4
    data = plain[:iend] + chunk(b"eXIf", exif_orientation(6)[6:]) + plain[iend:]  # the chunk has no "Exif\0\0"
    im, pr = front(data, "late.png")
    with im:
        assert im._im is None and pr.orientation == 6
        d = decode(im, pr, 0, "late.png")
    assert np.array_equal(d.rgb, np.asarray(upright))


def test_png_xmp_orientation_is_read():
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    data = encoded(_stored(pattern(), 8), "PNG")
    i = data.index(b"IDAT") - 4
    data = data[:i] + chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp) + data[i:]
    im, pr = front(data, "xmp.png")
    with im:
        assert im._im is None and pr.orientation == 8


# ----------------------------------------------------------------------------- 10.8 truncated data


def _rebuilt_png(data: bytes, keep_rows) -> bytes:
    """`data` (a Pillow-written PNG, one IDAT) with its IDAT re-deflated to hold
    only the first `keep_rows` rows, in a correctly ended zlib stream, CRC right."""
    i = data.index(b"IDAT") - 4
    (n,) = struct.unpack(">I", data[i:i + 4])
    raw = zlib.decompress(data[i + 8:i + 8 + n])
    w, h = struct.unpack(">II", data[16:24])
    row = len(raw) // h
    return data[:i] + chunk(b"IDAT", zlib.compress(raw[:row * keep_rows])) + data[i + 12 + n:]


def test_png_whose_data_ends_cleanly_halfway_is_truncated():
    whole = encoded(pattern((64, 48)), "PNG")
    im, pr = front(_rebuilt_png(whole, 24), "half.png")
    with im, pytest.raises(InputError) as e:
        decode(im, pr, 0, "half.png")
    assert e.value.reason == "truncated data"
    assert "ends after 50% of its rows" in str(e.value)
    im, pr = front(_rebuilt_png(whole, 48), "whole.png")  # the same rebuild, every row: fine
    with im:
        assert decode(im, pr, 0, "whole.png").size == (64, 48)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG"])
def test_a_file_cut_mid_stream_is_still_an_error(fmt):
    data = encoded(pattern((64, 48)), fmt)
    with pytest.raises(InputError):
        im, pr = front(data[: len(data) * 2 // 3], "cut." + fmt.lower())
        with im:
            decode(im, pr, 0, "cut")


def test_adam7_raw_size():
    from anime_cli.inputs.pngscan import raw_size

    # 8x8 RGB: passes of 1x1, 1x1, 2x1, 2x2, 4x2, 4x4, 8x4 pixels, each row with a filter byte
    assert raw_size(8, 8, 8, 2, 1) == 4 + 4 + 7 + 2 * 7 + 2 * 13 + 4 * 13 + 4 * 25
    assert raw_size(1, 1, 8, 6, 1) == 5  # only the first pass has a pixel
    assert raw_size(10, 3, 1, 0, 0) == 3 * 3  # 10 one-bit pixels: 2 bytes, plus the filter byte


# ----------------------------------------------------------------------------- 10.11 devices, pipes, stdin


class _Endless:
    """A stream that never ends (what /dev/zero or `yes |` give), counting reads."""

    def __init__(self):
        self.read_bytes = 0

    def read(self, n=-1):
        assert n > 0, "an unbounded read"
        self.read_bytes += n
        return b"\0" * n


def test_a_device_is_refused_unread():
    t = time.perf_counter()
    with pytest.raises(InputError) as e:
        read.read_source("/dev/zero", DEFAULT_MAX_FILE_SIZE)
    assert e.value.reason == "not a file" and "character device" in str(e.value)
    assert time.perf_counter() - t < 0.5


def test_a_regular_file_over_the_limit_is_refused_from_its_size(tmp_path):
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as f:
        f.truncate(300_000_000)  # sparse: nothing on disk, nothing that could be read quickly
    with pytest.raises(InputError) as e:
        read.read_source(big, DEFAULT_MAX_FILE_SIZE)
    assert e.value.reason == "file too large" and "300.0 MB" in str(e.value)


def test_a_stream_is_read_no_further_than_the_limit_plus_one():
    s = _Endless()
    with pytest.raises(InputError) as e:
        read.read_stream(s, "pipe", 3_000_000)
    assert e.value.reason == "file too large"
    assert s.read_bytes == 3_000_001


def test_a_fifo_given_directly_is_read(tmp_path):
    import threading

    fifo = tmp_path / "photo.fifo"
    os.mkfifo(fifo)
    data = encoded(pattern(), "JPEG")
    writer = threading.Thread(target=lambda: fifo.write_bytes(data))
    writer.start()
    src, n = read.read_source(fifo, DEFAULT_MAX_FILE_SIZE)
    writer.join()
    im, pr = probe.open_image(src, n, str(fifo), probe.DEFAULT_MAX_PIXELS)
    with im:
        assert (n, pr.format, pr.size) == (len(data), "JPEG", (60, 40))


def test_stdin_is_read_no_further_than_the_limit_plus_one():
    s = _Endless()
    with pytest.raises(InputError, match="more than --max-file-size"):
        read.read_stdin(1000, s)
    assert s.read_bytes == 1001


def test_stdin_on_a_terminal_is_refused_not_waited_for():
    master, slave = os.openpty()
    try:
        with open(slave, "rb", buffering=0, closefd=False) as tty, pytest.raises(InputError) as e:
            read.read_stdin(1000, tty)
        assert e.value.reason == "stdin is a terminal"
    finally:
        os.close(master)
        os.close(slave)


_STDIN = textwrap.dedent("""
    from anime_cli.inputs import read
    from anime_cli.errors import InputError
    try:
        read.read_stdin(1000)
    except InputError as e:
        print(e.reason, "|", e)
""")


@pytest.mark.parametrize("how", ["closed", "write-only"])
def test_a_closed_stdin_is_one_line(how):
    kw = {"stdin": open(os.devnull, "w")} if how == "write-only" else {"preexec_fn": lambda: os.close(0)}
    out = subprocess.run([sys.executable, "-c", _STDIN], capture_output=True, text=True, timeout=60, **kw)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.startswith("stdin closed | -: stdin is closed"), out.stdout


# ----------------------------------------------------------------------------- 10.4 the log file is never an input


@pytest.fixture
def photos_dir(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "rocket.jpg").write_bytes(encoded(pattern(), "JPEG"))
    (d / "notes.txt").write_text("my notes\n")
    return d


@pytest.mark.parametrize("as_folder", [False, True], ids=["file", "folder"])
def test_a_log_file_that_is_an_input_picture_is_refused(photos_dir, as_folder):
    from anime_cli.inputs.discover import LogFileIsInput, discover

    before = (photos_dir / "rocket.jpg").read_bytes()
    arg = photos_dir if as_folder else photos_dir / "rocket.jpg"
    with pytest.raises(LogFileIsInput, match="choose another log file"):
        discover([str(arg)], False, log_file=photos_dir / "rocket.jpg")
    assert (photos_dir / "rocket.jpg").read_bytes() == before


def test_a_log_file_that_is_a_users_file_in_an_input_folder_is_refused(photos_dir):
    from anime_cli.inputs.discover import LogFileIsInput, discover

    with pytest.raises(LogFileIsInput, match="not an anime-cli log"):
        discover([str(photos_dir)], False, log_file=photos_dir / "notes.txt")


def test_an_anime_cli_log_in_an_input_folder_is_left_out_and_said(photos_dir):
    from anime_cli.inputs.discover import discover

    log = photos_dir / "run.jsonl"
    log.write_text(json.dumps({"input": "x/rocket.jpg", "status": "ok"}) + "\n")
    jobs = discover([str(photos_dir)], False, log_file=log)
    assert sorted(Path(j.input).name for j in jobs) == ["notes.txt", "rocket.jpg"]
    assert jobs.notes == [f"{log}: the log file is in an input folder; it is not converted"]
    log.write_text("")  # a run stopped before its first record
    assert len(discover([str(photos_dir)], False, log_file=log)) == 2


def test_a_new_log_file_in_an_input_folder_is_fine(photos_dir):
    from anime_cli.inputs.discover import discover

    jobs = discover([str(photos_dir)], False, log_file=photos_dir / "run.jsonl")
    assert len(jobs) == 2 and jobs.notes == []


def test_a_log_file_in_a_sub_folder_that_is_not_walked_is_not_an_input(photos_dir):
    from anime_cli.inputs.discover import discover

    (photos_dir / "sub").mkdir()
    (photos_dir / "sub" / "a.jpg").write_bytes(encoded(pattern(), "JPEG"))
    assert len(discover([str(photos_dir)], False, log_file=photos_dir / "sub" / "a.jpg")) == 2


# ----------------------------------------------------------------------------- 10.6 temporary files


@pytest.mark.parametrize("name,temporary", [(".rocket.jpg.k3j_9xq2.tmp", True),
                                            (".anime-cli-check.abcd1234.tmp", True),
                                            (".rocket.jpg", False), ("rocket.tmp", False)])
def test_our_temporary_files_are_skipped(tmp_path, name, temporary):
    path = tmp_path / name
    path.write_bytes(encoded(pattern(), "JPEG"))
    if temporary:
        with pytest.raises(UnsupportedFormat) as e:
            read.read_source(path, DEFAULT_MAX_FILE_SIZE)
        assert e.value.reason == "temporary"
    else:
        assert read.read_source(path, DEFAULT_MAX_FILE_SIZE)[1] > 0


def test_the_temporary_pattern_matches_what_the_writer_makes(tmp_path, monkeypatch):
    from anime_cli.folder import files as output

    seen, link = [], os.link  # a write that may not overwrite publishes with link(2)
    monkeypatch.setattr(os, "link", lambda a, b: (seen.append(Path(a).name), link(a, b)))
    output.write_atomic(pattern(), tmp_path / ("L" * 200 + ".png"), "PNG", 95, False)
    assert seen and files.is_temp_name(seen[0]), seen


# ----------------------------------------------------------------------------- no process policy on import

_GLOBALS = textwrap.dedent("""
    import json, warnings
    import numpy  # noqa: F401  (numpy adds its own filters on import)
    from PIL import Image, ImageCms  # noqa: F401
    def state():
        return [repr(warnings.filters), Image.MAX_IMAGE_PIXELS, sorted(Image.OPEN)]
    before = state()
    from anime_cli.inputs import decode
    from anime_cli.inputs import discover
    from anime_cli.inputs import pngscan
    from anime_cli.inputs import probe, read
    imported = state()
    probe.configure_process(400_000_000)
    print(json.dumps([before == imported, Image.MAX_IMAGE_PIXELS,
                      any(f[2] is Image.DecompressionBombWarning and f[0] == "ignore" for f in warnings.filters),
                      ("HEIF" in Image.OPEN) == ("HEIF" in probe.FORMATS)]))
""")


def test_importing_the_probe_changes_no_global_state_and_configure_process_does():
    out = subprocess.run([sys.executable, "-c", _GLOBALS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [True, 400_000_000, True, True]


def test_heic_opens_without_registering_by_hand():
    """The [heic] extra joins Pillow on the first open_image, not on import."""
    pytest.importorskip("pillow_heif", reason="the [heic] extra (pillow-heif) is not installed")
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(pattern()).save(buf, quality=90)
    im, pr = front(buf.getvalue(), "phone.heic")
    with im:
        assert (pr.format, pr.size) == ("HEIF", (60, 40))


# ----------------------------------------------------------------------------- through the real CLI
# The first two pass once cli.py passes log_file= to discover and calls
# probe.configure_process, and pipeline's _source calls probe.read_stdin.


def test_cli_refuses_a_log_file_that_is_an_input(photos_dir, tmp_path):
    before = (photos_dir / "rocket.jpg").read_bytes()
    code, _, err = invoke("convert", photos_dir / "rocket.jpg", "-o", tmp_path / "o",
                          "--log-file", photos_dir / "rocket.jpg", "--no-face-enhance")
    assert code == 2 and err.count("\n") == 1 and "choose another log file" in err, err
    assert (photos_dir / "rocket.jpg").read_bytes() == before


def test_cli_closed_stdin_is_an_error_record(tmp_path):
    log = tmp_path / "log.jsonl"
    p = subprocess.run([*CLI, "convert", "-", "-o", str(tmp_path / "o"), "--log-file", str(log),
                        "--no-face-enhance", "--quiet"], capture_output=True, text=True, timeout=300,
                       preexec_fn=lambda: os.close(0))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    (rec,) = read_log(log)
    assert (rec["status"], rec["reason"]) == ("error", "stdin closed")


def test_cli_device_and_truncated_png_are_error_records(tmp_path):
    half = tmp_path / "half.png"
    half.write_bytes(_rebuilt_png(encoded(pattern((64, 48)), "PNG"), 24))
    log = tmp_path / "log.jsonl"
    code, _, err = invoke("convert", "/dev/zero", half, "-o", tmp_path / "o", "--log-file", log,
                          "--no-face-enhance", "--quiet")
    assert code == 1 and "Traceback" not in err, err
    assert [(r["status"], r["reason"]) for r in read_log(log)] == [("error", "not a file"),
                                                                   ("error", "truncated data")]
    assert not (tmp_path / "o" / "half.png").exists()

