"""Hostile and broken input: every file accounted for, no traceback, no hang,
nothing lost.

A corpus of bad, odd and good files is generated at test time (nothing is committed)
and run through the real CLI once; the other tests take the probe/decode front, the
Converter and the CLI's usage errors one case at a time.

Unreadable files: as root, mode 000 does not stop a read (CAP_DAC_OVERRIDE), so the
CLI runs with that capability dropped from its bounding set; the test says so when it
can make no file unreadable.
"""

from __future__ import annotations

import ctypes
import io
import os
import random
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from anime_cli.inputs.decode import target_size
from helpers import CLI, files_in, Identity, base, encoded, exif_orientation, invoke, read_log, with_alpha

# ----------------------------------------------------------------------------- helpers


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(w: int, h: int, bitdepth: int, colortype: int, rows: bytes) -> bytes:
    """A PNG written by hand: any declared size, any bit depth, any amount of data."""
    ihdr = struct.pack(">IIBBBBB", w, h, bitdepth, colortype, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def jpeg_with_size(jpg: bytes, w: int, h: int) -> bytes:
    """The same JPEG with its SOF0 header declaring w x h."""
    data = bytearray(jpg)
    i = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, h, w)
    return bytes(data)


def corrupt_exif(exif: bytes) -> bytes:
    """EXIF whose first IFD claims 40 entries: Pillow warns "Corrupt EXIF data"."""
    d = bytearray(exif)
    i = d.find(b"MM\0*")
    end = ">"
    if i < 0:
        i, end = d.find(b"II*\0"), "<"
    struct.pack_into(end + "H", d, i + struct.unpack_from(end + "I", d, i + 4)[0], 40)
    return bytes(d)


def tiff_with_size(tif: bytes, w: int, h: int) -> bytes:
    """The same little-endian TIFF with its first IFD declaring w x h."""
    data = bytearray(tif)
    off = struct.unpack_from("<I", data, 4)[0]
    for e in range(struct.unpack_from("<H", data, off)[0]):
        p = off + 2 + 12 * e
        tag = struct.unpack_from("<H", data, p)[0]
        if tag in (256, 257):
            struct.pack_into("<HHII", data, p, tag, 4, 1, w if tag == 256 else h)
    return bytes(data)


def webp_with_canvas(webp: bytes, w: int, h: int) -> bytes:
    """An animated WebP (VP8X) whose canvas is declared w x h around small frames."""
    data = bytearray(webp)
    i = data.find(b"VP8X")
    data[i + 12:i + 15] = (w - 1).to_bytes(3, "little")
    data[i + 15:i + 18] = (h - 1).to_bytes(3, "little")
    return bytes(data)


def small_anim(fmt: str, **kw) -> bytes:
    frames = [base((32, 24)), base((32, 24)).rotate(90)]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)


def cmyk_icc_profile() -> bytes:
    """A small but real ICC v2 CMYK output profile (lut8 A2B0 over a 9-point grid,
    PCS Lab), built here because littleCMS through Pillow can only create sRGB/Lab/XYZ.
    Its ink model is Pillow's naive one (R = (1-C)(1-K)...), so a picture converted to
    CMYK by Pillow and tagged with it must come back close to the original."""
    g = np.linspace(0, 1, 9)
    c, m, y, k = (a.ravel() for a in np.meshgrid(g, g, g, g, indexing="ij"))
    rgb = np.stack([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], axis=1)
    rgb_im = Image.fromarray((rgb.reshape(1, -1, 3) * 255).round().astype(np.uint8), "RGB")
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = np.asarray(ImageCms.applyTransform(rgb_im, to_lab)).reshape(-1, 3).astype(np.int16)
    lab[:, 1:] = lab[:, 1:].astype(np.uint8).view(np.int8).astype(np.int16) + 128  # Pillow's signed a/b -> ICC's +128
    ramp = bytes(range(256))

    def s15(x):
        return struct.pack(">i", round(x * 65536))

    lut = (b"mft1" + b"\0" * 4 + bytes([4, 3, 9, 0]) + b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
           + ramp * 4 + lab.astype(np.uint8).tobytes() + ramp * 3)
    text = b"anime-cli test CMYK\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    wtpt = b"XYZ " + b"\0" * 4 + s15(0.9642) + s15(1.0) + s15(0.8249)
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", b"text\0\0\0\0none\0"), (b"A2B0", lut)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    header = (struct.pack(">I", offset + len(body)) + b"lcms" + struct.pack(">I", 0x02100000) + b"prtrCMYKLab "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249)
              + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def _drop_dac_override():  # preexec_fn: runs in the child, before exec
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_cli_as_user(*args, timeout=300, cwd=None):
    """The real CLI in a subprocess for which file permissions hold, even as root."""
    preexec = _drop_dac_override if os.geteuid() == 0 else None
    p = subprocess.run([*CLI, *map(str, args)], capture_output=True, timeout=timeout, cwd=cwd,
                       preexec_fn=preexec)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def permissions_hold(path: Path) -> bool:
    """Whether run_cli_as_user really cannot read `path` (mode 000)."""
    preexec = _drop_dac_override if os.geteuid() == 0 else None
    try:
        p = subprocess.run([sys.executable, "-c", f"open({str(path)!r}, 'rb')"], capture_output=True,
                           preexec_fn=preexec, timeout=60)
    except OSError:
        return False
    return p.returncode != 0 and b"PermissionError" in p.stderr


# ----------------------------------------------------------------------------- the corpus

# name -> (status, reason). reason None: any (ok records have none).
OK = ("ok", None)


def build_corpus(d: Path) -> dict[str, tuple[str, str | None]]:
    d.mkdir(parents=True, exist_ok=True)
    b = base()
    jpg, png = encoded(b, "JPEG", quality=90), encoded(b, "PNG")
    rnd = random.Random(4)
    expect: dict[str, tuple[str, str | None]] = {}

    def put(name, data: bytes, status, reason=None):
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        expect[name] = (status, reason)

    def img(name, im: Image.Image, **kw):
        put(name, encoded(im, kw.pop("format", None) or Image.registered_extensions()[Path(name).suffix], **kw), *OK)

    # good, and broken
    put("good.jpg", jpg, *OK)
    put("trunc.jpg", jpg[: len(jpg) // 2], "error", "corrupt data")
    put("trunc.png", png[: len(png) // 2], "error", "corrupt data")
    put("trunc_header.png", png[:20], "error", "corrupt header")
    tif = encoded(b, "TIFF", compression="tiff_lzw")
    put("trunc.tif", tif[: len(tif) // 2], "error", "corrupt or not an image")  # its IFD is at the end
    put("zero.jpg", b"", "error", "empty file")
    put("random.jpg", rnd.randbytes(3000), "error", "corrupt or not an image")
    put("random.bin", rnd.randbytes(3000), "skipped", "not an image")
    put("notes.txt", b"not a picture\n" * 20, "skipped", "not an image")
    put("notes.jpg", b"not a picture\n" * 20, "error", "corrupt or not an image")
    put("big.jpg", jpg + b"\0" * 1_100_000, "error", "file too large")  # the run uses --max-file-size 1MB
    # decompression bombs: huge declared sizes, a few bytes of data
    put("bomb.png", png_raw(100_000, 100_000, 8, 2, b"\0" * 10), "error", "too many pixels")
    put("bomb_pillow.png", png_raw(20_000, 10_000, 8, 0, b"\0" * 10), "error", "too many pixels")  # > Pillow's 2x
    put("bomb_ours.png", png_raw(13_000, 12_000, 8, 0, b"\0" * 10), "error", "too many pixels")  # 156 MP > 150M
    put("bomb.jpg", jpeg_with_size(jpg, 60_000, 60_000), "error", "too many pixels")
    put("bomb.gif", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\0\0\0"
        + b",\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;", "error", "too many pixels")
    put("bomb.webp", webp_with_canvas(small_anim("WEBP"), 16000, 16000), "error", "too many pixels")
    put("bomb.tif", tiff_with_size(encoded(b, "TIFF"), 65535, 65535), "error", "too many pixels")
    # colour modes
    img("cmyk.jpg", b.convert("CMYK"), format="JPEG")
    img("cmyk_icc.jpg", b.convert("CMYK"), format="JPEG", icc_profile=cmyk_icc_profile())
    img("cmyk.tif", b.convert("CMYK"))
    img("gray.jpg", b.convert("L"), format="JPEG")
    img("gray_alpha.png", with_alpha(b).convert("LA"))
    img("rgba.png", with_alpha(b))
    img("rgba.webp", with_alpha(b), lossless=True)
    img("rgba.tif", with_alpha(b), compression="tiff_lzw")
    pal = b.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img("palette_trns.png", pal, transparency=0)
    img("palette_trns.gif", pal, transparency=0)
    img("bilevel.tif", b.convert("1"), compression="group4")
    gray16 = np.asarray(b.convert("L")).astype(np.uint16) * 257
    img("gray16.png", Image.fromarray(gray16))
    rgb16 = np.asarray(b).astype(">u2") * 257
    put("rgb16.png", png_raw(64, 48, 16, 2, b"".join(b"\0" + rgb16[y].tobytes() for y in range(48))), *OK)
    img("int32.tif", b.convert("I"))
    img("float.tif", b.convert("F"))
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    img("lab.tif", ImageCms.applyTransform(b, to_lab))
    img("srgb_icc.jpg", b, format="JPEG", icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    img("bad_icc.jpg", b, format="JPEG", icc_profile=b"not an icc profile" * 8)
    img("rgb.bmp", b)
    frames = [b.rotate(30 * i) for i in range(3)]
    put("anim.gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]), *OK)
    put("anim.webp", encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:]), *OK)
    put("multi.mpo", encoded(frames[0], "MPO", save_all=True, append_images=frames[1:2]), *OK)
    # EXIF orientation 1..8 on a 64x40 picture
    for o in range(1, 9):
        img(f"orient{o}.jpg", base((64, 40)), format="JPEG", exif=exif_orientation(o))
    img("orient6.png", base((64, 40)), exif=exif_orientation(6))
    img("bad_exif.jpg", base((64, 40)), format="JPEG", exif=corrupt_exif(exif_orientation(6)))
    # content decides, not the extension
    put("png_named.jpg", png, *OK)
    put("jpeg_named.txt", jpg, *OK)
    # formats recognised and refused: never decoded
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
    put("doc.pdf", pdf, "skipped", "unsupported format")
    put("doc_pdf.jpg", pdf, "skipped", "unsupported format")
    put("pic.eps", eps, "skipped", "unsupported format")
    put("eps_named.png", eps, "skipped", "unsupported format")
    put("icon.ico", encoded(b, "ICO"), "skipped", "unsupported format")
    put("layers.psd", b"8BPS\0\x01" + b"\0" * 6 + b"\0\x03\0\0\0\x30\0\0\0\x40\0\x08\0\x03" + b"\0" * 64,
        "skipped", "unsupported format")
    # a video's header and nothing after it: a video that cannot be read
    put("movie.mp4", b"\0\0\0\x18ftypmp42" + b"\0" * 100, "error", "corrupt video")
    put("clip.webm", b"\x1a\x45\xdf\xa3" + b"\0" * 100, "error", "corrupt video")
    put("photo.heic", b"\0\0\0\x18ftypheic" + b"\0" * 100, "skipped" if not _has_heif() else "error",
        "unsupported format" if not _has_heif() else None)
    put("pic.tga", encoded(b, "TGA"), "skipped", "not an image")  # Pillow reads it; we don't
    put("pic.ppm", encoded(b, "PPM"), "skipped", "not an image")
    put("pcx_named.png", encoded(b, "PCX"), "error", "corrupt or not an image")
    put("._good.jpg", b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\0" * 60,  # macOS AppleDouble
        "skipped", "not an image")
    # tiny and extreme shapes: a 1x1 pixel, a 3x2 GIF, a 5000x1 line (1280x1 at the working size)
    img("pixel.png", Image.new("RGB", (1, 1), (200, 30, 30)))
    img("tiny.gif", Image.new("RGB", (3, 2), (30, 200, 30)))
    img("line.png", Image.new("RGB", (5000, 1), (30, 30, 200)))
    # names
    img("with space.jpg", b, format="JPEG")
    img("ünïcödé 写真.png", b)
    img("new\nline.png", b)
    put("bad\nname.jpg", b"junk" * 50, "error", "corrupt or not an image")
    put(os.fsdecode(b"latin1-caf\xe9.jpg"), jpg, *OK)
    # the longest names: a 250-byte stem converts; its collision partner would need
    # 258 bytes (over NAME_MAX), so its stem is shortened (see test_long_collision_names_are_shortened)
    img("L" * 250 + ".gif", b)
    img("L" * 250 + ".png", b)
    # collision: photo.gif -> photo.png (first in walk order), photo.png -> photo_2.png
    img("photo.gif", b)
    img("photo.png", b)
    # a sub-folder, reached also through a symlink, and a symlink loop
    put("sub/deep/inner.png", png, *OK)
    (d / "sub" / "loop").symlink_to("..", target_is_directory=True)
    (d / "sublink").symlink_to("sub", target_is_directory=True)
    (d / "link.jpg").symlink_to("good.jpg")
    expect["link.jpg"] = OK
    (d / "dangling.jpg").symlink_to("nowhere.jpg")
    expect["dangling.jpg"] = ("error", "file not found")
    (d / "self.jpg").symlink_to("self.jpg")
    expect["self.jpg"] = ("error", "symlink loop")
    os.mkfifo(d / "fifo.jpg")  # not a regular file: no record, and above all no hang
    (d / "folder.jpg").mkdir()
    return expect


def _has_heif() -> bool:
    from anime_cli.inputs import probe

    return "HEIF" in probe.FORMATS


ALPHA = {"gray_alpha.png", "rgba.png", "rgba.webp", "rgba.tif", "palette_trns.png", "palette_trns.gif"}


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    """The corpus through the real CLI, once: (expect, code, stderr, records by name, dirs)."""
    root = tmp_path_factory.mktemp("hostile")
    src, out, log = root / "in", root / "out", root / "run.jsonl"
    expect = build_corpus(src)
    locked = src / "locked.jpg"
    locked.write_bytes(encoded(base(), "JPEG"))
    locked.chmod(0)
    lockeddir = src / "lockeddir"
    (lockeddir / "x.jpg").parent.mkdir()
    (lockeddir / "x.jpg").write_bytes(encoded(base(), "JPEG"))
    lockeddir.chmod(0)
    unreadable = permissions_hold(locked)
    if unreadable:
        expect["locked.jpg"] = ("error", "permission denied")
        expect["lockeddir"] = ("error", "permission denied")
    else:
        expect["locked.jpg"] = OK
        expect["lockeddir/x.jpg"] = OK
    t = time.monotonic()
    code, _, err = run_cli_as_user("convert", src, "-r", "-o", out, "--log-file", log, "--quiet",
                                   "--no-face-enhance", "--max-file-size", "1MB", timeout=600)
    seconds = time.monotonic() - t
    lockeddir.chmod(0o755)
    records: dict[str, list[dict]] = {}
    for r in read_log(log) if log.exists() else []:
        records.setdefault(os.path.relpath(r["input"], src), []).append(r)
    return dict(expect=expect, code=code, err=err, records=records, src=src, out=out,
                unreadable=unreadable, seconds=seconds)


def test_long_collision_names_are_shortened(corpus_run):
    (rec,) = corpus_run["records"]["L" * 250 + ".png"]
    name = Path(rec["output"]).name
    assert rec["status"] == "ok" and name.endswith("_2.png") and len(name.encode()) == 255
    (first,) = corpus_run["records"]["L" * 250 + ".gif"]
    assert Path(first["output"]).name == "L" * 250 + ".png"


def test_every_file_gets_exactly_one_record_with_the_right_status(corpus_run):
    expect, records = corpus_run["expect"], corpus_run["records"]
    inner = [k for k in records if k.startswith(("sub/", "sublink/"))]
    assert len(inner) == 1, f"sub/deep/inner.png seen through the symlink loop or link more than once: {inner}"
    records = {("sub/deep/inner.png" if k in inner else k): v for k, v in records.items()}
    assert set(records) == set(expect), (set(records) ^ set(expect))
    wrong = {}
    for name, (status, reason) in expect.items():
        (rec,) = records[name]  # exactly one
        if rec["status"] != status or (reason is not None and rec["reason"] != reason):
            wrong[name] = (rec["status"], rec["reason"], rec["error"])
        if rec["status"] == "error":
            assert rec["error"] and "\n" not in rec["error"].replace(name, ""), rec
    assert not wrong, wrong
    assert corpus_run["code"] == 1  # some files failed; the batch went on to the end


def test_stderr_has_no_traceback_and_no_warning(corpus_run):
    err = corpus_run["err"]
    assert "Traceback" not in err and "Warning" not in err, err
    lines = err.splitlines()
    # --quiet: one line per failed file, then the summary; nothing else (no libtiff chatter)
    failed = sum(1 for rs in corpus_run["records"].values() for r in rs if r["status"] == "error")
    assert failed >= sum(1 for s, _ in corpus_run["expect"].values() if s == "error")
    assert len(lines) == failed + 1, err
    assert all(line.startswith("error ") for line in lines[:-1]), err
    assert lines[-1].startswith("done: ") and f"{failed} failed" in lines[-1], lines[-1]
    assert "bad\\nname.jpg" in err  # a newline in a name is escaped, never breaks a line


def test_outputs_are_whole_and_exactly_the_logged_ones(corpus_run):
    out, records = corpus_run["out"], corpus_run["records"]
    logged = {Path(r["output"]) for rs in records.values() for r in rs if r["status"] == "ok"}
    on_disk = {out / p for p in files_in(out, recursive=True)}
    assert on_disk == logged, on_disk ^ logged  # no temp file, no dot file, nothing unlogged
    for rs in records.values():
        r = rs[0]
        assert (r["status"] == "ok") == (r["output"] is not None)
        if r["status"] != "ok":
            continue
        with Image.open(r["output"]) as im:
            im.load()  # whole, decodable
            assert list(im.size) == r["output_size"] == list(target_size(r["input_size"], 1280))
            assert "icc_profile" not in im.info, r["output"]  # untagged sRGB
            exif = im.getexif()  # a TIFF's own tags show up here: no orientation is what matters
            assert (0x0112 not in exif) if im.format == "TIFF" else not exif, (r["output"], dict(exif))


def test_alpha_is_kept_where_the_format_holds_it(corpus_run):
    records = corpus_run["records"]
    for name in ALPHA:
        (r,) = records[name]
        with Image.open(r["output"]) as im:
            assert im.mode == "RGBA", (name, im.mode)
            assert Path(r["output"]).suffix in (".png", ".webp", ".tif"), r["output"]
            assert np.asarray(im)[:, :, 3].min() < 128  # the transparent part is still there


def test_modes_orientation_and_notes_in_the_records(corpus_run):
    records = {k: v[0] for k, v in corpus_run["records"].items()}
    for o in range(1, 9):
        r = records[f"orient{o}.jpg"]
        assert r["input_size"] == ([40, 64] if o >= 5 else [64, 40]) == r["output_size"], r
    assert records["orient6.png"]["output_size"] == [40, 64]
    assert records["bad_exif.jpg"]["output_size"] in ([40, 64], [64, 40])  # converted, without a warning
    for anim in ("anim.gif", "anim.webp"):  # animations are converted frame by frame
        assert records[anim]["frames"] == 3 and records[anim]["output"].endswith(anim), records[anim]
    mpo = records["multi.mpo"]  # a phone's multi-picture JPEG: decoded and written as the JPEG it is
    assert mpo["input_format"] == "JPEG" and mpo["output"].endswith(".jpg"), mpo
    assert "MPO: first picture of 2" in mpo["notes"]
    assert "ICC profile converted to sRGB" in records["cmyk_icc.jpg"]["notes"]
    assert "ICC profile converted to sRGB" in records["srgb_icc.jpg"]["notes"]
    assert "ICC profile unreadable, ignored" in records["bad_icc.jpg"]["notes"]
    assert any("scaled to 8 bits" in n for n in records["gray16.png"]["notes"])
    assert records["png_named.jpg"]["output"].endswith("png_named.png")  # content decides
    assert records["jpeg_named.txt"]["output"].endswith("jpeg_named.jpg")
    assert records[os.fsdecode(b"latin1-caf\xe9.jpg")]["output"].endswith(os.fsdecode(b"latin1-caf\xe9.jpg"))


def test_colliding_outputs_never_overwrite_each_other(corpus_run):
    records, out = corpus_run["records"], corpus_run["out"]
    gif, png = records["photo.gif"][0], records["photo.png"][0]
    # first in walk order keeps the name; the later one gets _2 (its suffix is the output's)
    assert gif["output"] == str(out / "photo.png")
    assert png["output"] == str(out / "photo_2.png")
    assert records["anim.gif"][0]["output"] == str(out / "anim.gif")  # an animation stays one


def test_corpus_run_is_quick(corpus_run):
    n = sum(len(v) for v in corpus_run["records"].values())
    assert corpus_run["seconds"] < 240, f"{n} files took {corpus_run['seconds']:.0f}s"


# ----------------------------------------------------------------------------- the front, in-process


def _front(data: bytes, name: str, max_pixels=150_000_000, max_side=1280):
    from anime_cli.inputs import decode
    from anime_cli.inputs import probe, read

    src, n = read.read_bytes(data, name, 10**9)
    im, pr = probe.open_image(src, n, name, max_pixels)
    with im:
        return pr, decode.decode(im, pr, max_side, name)


def test_refused_formats_never_reach_a_decoder(monkeypatch):
    """Only the allow-listed plugins are ever asked to open a file: EPS (Ghostscript),
    PDF, PSD, ICO, TGA, JPEG 2000... are recognised by their signature and skipped."""
    from anime_cli.inputs import probe
    from anime_cli.errors import InputError, UnsupportedFormat

    Image.init()
    called = []
    for fmt, (factory, accept) in list(Image.OPEN.items()):
        if fmt not in probe.FORMATS:
            def spy(*a, _fmt=fmt, **k):
                called.append(_fmt)
                raise AssertionError(f"{_fmt} decoder ran")

            monkeypatch.setitem(Image.OPEN, fmt, (spy, lambda prefix, _fmt=fmt: called.append(_fmt + "?") or False))
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: called.append("gs"))
    b = base((32, 24))
    cases = {
        "a.eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "b.eps": b"\xc5\xd0\xd3\xc6" + b"\0" * 60,
        "c.pdf": b"%PDF-1.7\n%%EOF\n",
        "d.psd": b"8BPS\0\x01" + b"\0" * 40,
        "e.ico": encoded(b, "ICO"),
        "f.tga": encoded(b, "TGA"),
        "g.jp2": encoded(b, "JPEG2000"),
        "h.ppm": encoded(b, "PPM"),
        "i.pcx": encoded(b, "PCX"),
        "j.dds": encoded(b, "DDS"),
        "k.mkv": b"\x1a\x45\xdf\xa3" + b"\0" * 60,
        "l.heic": b"\0\0\0\x18ftypheic" + b"\0" * 60,
    }
    from PIL import features

    if features.check("avif"):  # Pillow reads AVIF natively; it is not on our list
        cases["m.avif"] = encoded(b, "AVIF")
    if _has_heif():
        del cases["l.heic"]
    for name, data in cases.items():
        with pytest.raises(UnsupportedFormat):
            _front(data, name)
        with pytest.raises(InputError):  # under an image's name it is still refused, never decoded
            _front(data, name + ".png")
    assert called == [], called


@pytest.mark.parametrize("fmt,data", [
    ("PNG 10 GP", png_raw(100_000, 100_000, 8, 2, b"\0")),
    ("PNG 200 MP", png_raw(20_000, 10_000, 8, 0, b"\0")),
    ("PNG 156 MP", png_raw(13_000, 12_000, 8, 0, b"\0")),
    ("JPEG 3.6 GP", jpeg_with_size(encoded(base((32, 24)), "JPEG"), 60_000, 60_000)),
    ("GIF 4 GP", b"GIF89a\xff\xff\xff\xff\0\0\0,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;"),
    ("BMP 4 GP", b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 65535, 65535, 1, 24, 0, 0, 0, 0, 0, 0)),
    ("TIFF 4 GP", tiff_with_size(encoded(base((32, 24)), "TIFF"), 65535, 65535)),
    ("TIFF LZW 4 GP", tiff_with_size(encoded(base((32, 24)), "TIFF", compression="tiff_lzw"), 65535, 65535)),
    ("WebP 256 MP", webp_with_canvas(small_anim("WEBP"), 16000, 16000)),
])
def test_bombs_are_refused_from_the_header(fmt, data):
    """No pixel is allocated: refused in well under a second, no warning."""
    from anime_cli.logs import telemetry
    from anime_cli.errors import InputError

    rss, t = telemetry.rss_bytes(), time.perf_counter()
    with pytest.raises(InputError) as e:
        _front(data, "bomb.img")
    assert e.value.reason == "too many pixels", (fmt, str(e.value))
    assert time.perf_counter() - t < 1.0
    assert telemetry.rss_bytes() - rss < 50e6


def test_max_pixels_above_pillows_own_limit_is_honoured(monkeypatch):
    """--max-pixels 400M: a 300 MP header passes the probe (Pillow's guard, 2 x 89 MP,
    is raised to agree) and a 500 MP one is refused by ours, cleanly."""
    from anime_cli.inputs import probe
    from anime_cli.errors import InputError

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards

    data = png_raw(20_000, 15_000, 8, 0, b"\0")
    im, pr = probe.open_image(io.BytesIO(data), len(data), "big.png", 400_000_000)
    im.close()
    assert pr.size == (20_000, 15_000)
    data = png_raw(25_000, 20_000, 8, 0, b"\0")
    with pytest.raises(InputError, match="over --max-pixels"):
        probe.open_image(io.BytesIO(data), len(data), "bigger.png", 400_000_000)


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) <= tol


def test_colour_modes_decode_to_srgb():
    b = base()
    rgb, gray = np.asarray(b), np.asarray(b.convert("L").convert("RGB"))
    pr, d = _front(encoded(b.convert("CMYK"), "JPEG", quality=95, icc_profile=cmyk_icc_profile()), "c.jpg")
    assert pr.mode == "CMYK" and "ICC profile converted to sRGB" in d.notes and _close(d.rgb, rgb, 3), d.notes
    pr, d = _front(encoded(b.convert("CMYK"), "JPEG", quality=95), "c.jpg")  # no profile: Pillow's inversion
    assert _close(d.rgb, rgb, 6)
    pr, d = _front(encoded(b.convert("CMYK"), "TIFF"), "c.tif")
    assert _close(d.rgb, rgb, 0.5)
    pr, d = _front(encoded(Image.fromarray(np.asarray(b.convert("L")).astype(np.uint16) * 257), "PNG"), "g16.png")
    assert pr.mode.startswith("I;16") and _close(d.rgb, gray, 0.5)
    rgb16 = np.asarray(b).astype(">u2") * 257
    _, d = _front(png_raw(64, 48, 16, 2, b"".join(b"\0" + rgb16[y].tobytes() for y in range(48))), "c16.png")
    assert _close(d.rgb, rgb, 0.5)
    for mode in ("I", "F"):
        _, d = _front(encoded(b.convert(mode), "TIFF"), f"{mode}.tif")
        assert _close(d.rgb, gray, 1), mode
    _, d = _front(encoded(b.convert("1"), "PNG"), "bw.png")
    assert set(np.unique(d.rgb)) <= {0, 255}
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    _, d = _front(encoded(ImageCms.applyTransform(b, to_lab), "TIFF"), "lab.tif")
    assert _close(d.rgb, rgb, 3)


def test_transparency_is_composited_over_white_and_kept():
    b = base()
    rgba = with_alpha(b)
    a = np.asarray(rgba)[:, :, 3]
    for name, data in {"a.png": encoded(rgba, "PNG"), "a.webp": encoded(rgba, "WEBP", lossless=True),
                       "a.tif": encoded(rgba, "TIFF")}.items():
        _, d = _front(data, name)
        assert np.array_equal(d.alpha, a), name
        assert (d.rgb[:, 0] >= 250).all()  # alpha 0 column: white for the network
    _, d = _front(encoded(rgba.convert("LA"), "PNG"), "la.png")
    assert np.array_equal(d.alpha, a)
    pal = b.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    idx = np.asarray(pal)
    for name, fmt in (("p.png", "PNG"), ("p.gif", "GIF")):
        _, d = _front(encoded(pal, fmt, transparency=int(idx[0, 0])), name)
        assert d.alpha is not None and np.array_equal(d.alpha == 0, idx == idx[0, 0]), name


def test_orientation_with_reduced_decode():
    """A JPEG that is drafted (DCT-scaled) and turned: the working size is the upright one."""
    _, d = _front(encoded(base((400, 240)), "JPEG", exif=exif_orientation(8)), "o.jpg", max_side=100)
    assert d.size == (60, 100)


# ----------------------------------------------------------------------------- files and folders


def test_file_deleted_between_listing_and_reading(tmp_path, stylizer):
    from anime_cli.inputs.discover import discover
    from anime_cli.run.converter import Converter, Options

    for n in ("a", "b", "c"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{n}.jpg").write_bytes(encoded(base((32, 24)), "JPEG"))
    jobs = discover([str(tmp_path / "in")], recursive=False)
    (tmp_path / "in" / "b.jpg").unlink()
    recs = list(Converter(stylizer, Options(output_dir=tmp_path / "out", face_enhance=False)).run(jobs))
    assert [(Path(r.input).name, r.status, r.reason) for r in recs] == [
        ("a.jpg", "ok", None), ("b.jpg", "error", "file not found"), ("c.jpg", "ok", None)]


def test_outputs_never_land_on_inputs(tmp_path, stylizer):
    """-o pointing at the input folder: every output name would be its own input."""
    from anime_cli.inputs.discover import discover
    from anime_cli.run.converter import Converter, Options

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(before := encoded(base((32, 24)), "JPEG"))
    recs = list(Converter(stylizer, Options(output_dir=src, face_enhance=False, overwrite=True)).run(
        discover([str(src)], recursive=False)))
    assert [(r.status, r.reason) for r in recs] == [("error", "output")]
    assert "would overwrite an input" in recs[0].error
    assert (src / "a.jpg").read_bytes() == before


def test_collisions_with_a_forced_format_and_a_rerun(tmp_path, stylizer):
    """--format jpg: photo.jpg, photo.png and photo.webp all want photo.jpg. The first in
    walk order gets it, the others their source suffix; a rerun makes the same choice,
    so it skips all three as existing instead of overwriting one with another."""
    from anime_cli.inputs.discover import discover
    from anime_cli.run.converter import Converter, Options

    src = tmp_path / "in"
    src.mkdir()
    for i, (name, fmt) in enumerate((("photo.jpg", "JPEG"), ("photo.png", "PNG"), ("photo.webp", "WEBP"))):
        (src / name).write_bytes(encoded(base((32, 24), src=["coffee.png", "chelsea.png", "rocket.jpg"][i]), fmt))
    opts = Options(output_dir=tmp_path / "out", face_enhance=False, format="jpg")
    recs = list(Converter(stylizer, opts).run(discover([str(src)], recursive=False)))
    got = {Path(r.input).name: Path(r.output).name for r in recs}
    assert got == {"photo.jpg": "photo.jpg", "photo.png": "photo_png.jpg", "photo.webp": "photo_webp.jpg"}
    pictures = {n: (tmp_path / "out" / o).read_bytes() for n, o in got.items()}
    assert len(set(pictures.values())) == 3
    again = list(Converter(stylizer, opts).run(discover([str(src)], recursive=False)))
    assert [(r.status, r.reason) for r in again] == [("skipped", "exists")] * 3
    assert {n: (tmp_path / "out" / o).read_bytes() for n, o in got.items()} == pictures


def test_unreadable_folder_given_directly_is_an_error(tmp_path):
    """A folder that cannot be listed is not an empty folder: exit 1, not 0."""
    d = tmp_path / "locked"
    d.mkdir()
    (d / "a.jpg").write_bytes(encoded(base((32, 24)), "JPEG"))
    d.chmod(0)
    try:
        if not permissions_hold(d / "a.jpg"):
            pytest.skip("cannot make a folder unreadable here (root without a way to drop CAP_DAC_OVERRIDE)")
        log = tmp_path / "log.jsonl"
        code, _, err = run_cli_as_user("convert", d, "-o", tmp_path / "out", "--log-file", log, "--no-face-enhance")
    finally:
        d.chmod(0o755)
    assert code == 1, err
    (r,) = read_log(log)
    assert (r["status"], r["reason"]) == ("error", "permission denied")
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- output folder: exit 2 before any work


def _read_only_dir(tmp_path: Path) -> Path | None:
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        return d
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], capture_output=True).returncode:
        return None
    return d


@pytest.mark.parametrize("case", ["under a file", "is a file", "read-only"])
def test_unusable_output_folder_is_a_usage_error(tmp_path, case):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(encoded(base((32, 24)), "JPEG"))
    (tmp_path / "file").write_text("x")
    ro = None
    if case == "under a file":
        out = tmp_path / "file" / "out"
    elif case == "is a file":
        out = tmp_path / "file"
    else:
        ro = _read_only_dir(tmp_path)
        if ro is None:
            pytest.skip("no read-only folder: root and mount failed")
        out = ro / "out"
    log = tmp_path / "log.jsonl"
    try:
        t = time.perf_counter()
        code, _, err = invoke("convert", src, "-o", out, "--log-file", log, "--no-face-enhance")
        took = time.perf_counter() - t
    finally:
        if ro is not None and os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], capture_output=True)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("anime-cli: ") and str(out) in err, err
    assert not log.exists() or log.read_text() == ""  # no file was started
    assert took < 5  # before the model loads


def test_help_states_the_limits_and_their_defaults():
    from typer.testing import CliRunner

    from anime_cli.cli.app import app

    text = " ".join(CliRunner().invoke(app, ["convert", "--help"], terminal_width=200).stdout.split())
    assert "--max-file-size" in text and "default: 200MB" in text, text
    assert "--max-pixels" in text and "default: 150M" in text, text


# ----------------------------------------------------------------------------- weights


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _weights_cases(tmp_path: Path) -> dict[str, Path]:
    import torch

    marker = tmp_path / "pwned"
    cases = {}
    cases["code"] = tmp_path / "code.pt"
    torch.save({"block_a.0.1.weight": torch.zeros(1), "x": _Payload(str(marker))}, cases["code"])
    cases["not tensors"] = tmp_path / "ints.pt"
    torch.save({"a": 1, "b": "two"}, cases["not tensors"])
    cases["garbage"] = tmp_path / "garbage.pt"
    cases["garbage"].write_bytes(os.urandom(4096))
    cases["empty"] = tmp_path / "empty.pt"
    cases["empty"].write_bytes(b"")
    cases["wrong layout"] = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, cases["wrong layout"])
    return cases


def test_bad_weights_are_refused_with_one_line(tmp_path):
    src = tmp_path / "a.jpg"
    src.write_bytes(encoded(base((32, 24)), "JPEG"))
    for case, path in _weights_cases(tmp_path).items():
        code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--weights", path, "--no-face-enhance")
        assert code == 2, (case, err)
        assert err.count("\n") == 1 and err.startswith("anime-cli: ") and str(path) in err, (case, err)
        assert "Traceback" not in err and "weights_only" not in err  # never advice to load it unsafely
        if case == "code":
            assert "refused: it holds pickled code" in err, err
    assert not (tmp_path / "pwned").exists()  # the pickled code never ran
    assert not (tmp_path / "out").exists() or not files_in(tmp_path / "out")


def test_weights_failing_their_sha256_are_refused(tmp_path, monkeypatch):
    from anime_cli.weights import catalog as weights

    good = weights.locate("hayao")
    bad_dir = tmp_path / "weights"
    bad_dir.mkdir()
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad_dir / good.name).write_bytes(bytes(data))
    monkeypatch.setenv("ANIME_CLI_WEIGHTS", str(bad_dir))
    src = tmp_path / "a.jpg"
    src.write_bytes(encoded(base((32, 24)), "JPEG"))
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--no-face-enhance")
    assert code == 2 and err.count("\n") == 1 and "sha256 does not match" in err, err
    code, out, err = invoke("install-weights", bad_dir, "--dest", tmp_path / "dest")
    assert code == 2 and "sha256 does not match" in err and not (tmp_path / "dest" / good.name).exists(), err


@pytest.mark.parametrize("case", ["missing folder", "is a folder"])
def test_unusable_log_file_is_a_usage_error(tmp_path, case):
    src = tmp_path / "a.jpg"
    src.write_bytes(encoded(base((32, 24)), "JPEG"))
    log = tmp_path / "no" / "such" / "log.jsonl" if case == "missing folder" else tmp_path
    t = time.perf_counter()
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--log-file", log, "--no-face-enhance")
    assert code == 2 and err.count("\n") == 1 and "cannot open the log file" in err, err
    assert time.perf_counter() - t < 5 and not files_in(tmp_path / "out")


def test_the_same_file_given_twice_is_one_job(tmp_path):
    """`dir dir/a.jpg ./dir/a.jpg`: one record, not a race for one output that fails."""
    from anime_cli.inputs.discover import discover

    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.jpg").write_bytes(encoded(base((32, 24)), "JPEG"))
    (d / "link.jpg").symlink_to("a.jpg")  # another name: another output, kept
    jobs = discover([str(d), str(d / "a.jpg"), str(tmp_path / "." / "dir" / "a.jpg")], recursive=False)
    assert [(Path(j.input).name, str(j.rel)) for j in jobs] == [("a.jpg", "a.jpg"), ("link.jpg", "link.jpg")]


def test_an_encoder_refusal_fails_that_file_only(tmp_path):
    """--format webp --max-side 0 on a 17000 px wide picture: WebP stops at 16383.
    That file is an error record (no temp file left), the next one converts."""
    from anime_cli.inputs.discover import discover
    from anime_cli.run.converter import Converter, Options

    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (17000, 4), (90, 120, 150)).save(src / "a_wide.png")
    (src / "b.jpg").write_bytes(encoded(base((32, 24)), "JPEG"))
    opts = Options(output_dir=tmp_path / "out", face_enhance=False, format="webp", max_side=0)
    recs = list(Converter(Identity(), opts).run(discover([str(src)], recursive=False)))
    assert [(r.status, r.reason) for r in recs] == [("error", "output"), ("ok", None)]
    assert "cannot encode as WEBP" in recs[0].error
    assert files_in(tmp_path / "out") == ["b.webp"]


def test_heic_through_the_optional_extra(tmp_path):
    """pip install animegan-cli[heic]: HEIF joins the allow-list; a HEIC photo converts
    (written as PNG: HEIF is not a format we write). Skipped without pillow-heif."""
    pytest.importorskip("pillow_heif", reason="the [heic] extra (pillow-heif) is not installed")
    from anime_cli.inputs import probe
    from anime_cli.inputs.discover import discover
    from anime_cli.run.converter import Converter, Options

    assert "HEIF" in probe.FORMATS
    probe.register_plugins()  # Pillow learns HEIF on the first open; this test encodes one before that
    src = tmp_path / "in"
    src.mkdir()
    (src / "phone.heic").write_bytes(encoded(base((64, 48)), "HEIF", quality=90))
    (src / "broken.heic").write_bytes(encoded(base((64, 48)), "HEIF", quality=90)[:200])
    pr, d = _front((src / "phone.heic").read_bytes(), "phone.heic")
    assert pr.format == "HEIF" and d.size == (64, 48)
    recs = list(Converter(Identity(), Options(output_dir=tmp_path / "out", face_enhance=False)).run(
        discover([str(src)], recursive=False)))
    assert [(Path(r.input).name, r.status) for r in recs] == [("broken.heic", "error"), ("phone.heic", "ok")]
    assert recs[1].output.endswith("phone.png")
