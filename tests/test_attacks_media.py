"""The red-team pass on clips and metadata (issue 19): each hostile input is
made here, at test time, and gets one clear record, or keeps what it must."""

from __future__ import annotations

import io
import json
import time
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import invoke, make_photo, read_log, run_cli

from anime_cli.kinds import animation as animated
from anime_cli.kinds import media
from anime_cli.inputs import metadata
from anime_cli.errors import InputError
from anime_cli.inputs.sniff import sniff

av = pytest.importorskip("av", reason="the [video] extra (PyAV) is not installed")

from clip_makers import decoded, make_clip  # noqa: E402

from anime_cli.kinds import video  # noqa: E402


# -- animations -----------------------------------------------------------------
def _webp_cut(d: Path) -> Path:
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)) for _ in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (d / "cut.webp").write_bytes(buf.getvalue()[:2801])
    return d / "cut.webp"


def _apng_bad_crc(d: Path) -> Path:
    frames = [Image.new("RGB", (64, 48), (40 * i, 90, 60)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = bytearray(buf.getvalue())
    data[29] ^= 0xFF  # IHDR's CRC
    (d / "bad.png").write_bytes(bytes(data))
    return d / "bad.png"


@pytest.mark.parametrize("make", [_webp_cut, _apng_bad_crc], ids=["webp cut at 2801 bytes", "apng bad IHDR CRC"])
def test_an_animation_whose_header_cannot_be_read_is_a_corrupt_header(tmp_path, make):
    src = make(tmp_path)
    kind = sniff(src)
    assert kind in ("webp", "apng")
    with pytest.raises(InputError) as e:
        media.probe(src, kind)
    assert e.value.reason == "corrupt header" and "\n" not in str(e.value)
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--dry-run", "--log-file", tmp_path / "r.jsonl")
    (rec,) = read_log(tmp_path / "r.jsonl")
    assert (code, rec["status"], rec["reason"]) == (1, "error", "corrupt header"), err
    assert "AttributeError" not in err


def _gif_blocks(im: Image.Image) -> tuple[bytes, bytes]:
    """(header with its global colour table, the image descriptor and data) of a one-frame GIF."""
    buf = io.BytesIO()
    im.save(buf, "GIF")
    g = buf.getvalue()
    n = 3 << ((g[10] & 7) + 1) if g[10] & 0x80 else 0
    head, rest = g[:13 + n], g[13 + n:]
    return head, rest[rest.index(b",") :-1]


def _gce(delay_cs: int) -> bytes:
    return b"\x21\xf9\x04\x00" + delay_cs.to_bytes(2, "little") + b"\x00\x00"


def growing_gif(path: Path, at: tuple[int, int]) -> Path:
    """A 64x48 GIF whose second frame is 1x1 at `at`: the decoder grows its canvas to reach it."""
    head, first = _gif_blocks(Image.new("P", (64, 48), 1))
    _, dot = _gif_blocks(Image.new("P", (1, 1), 1))
    dot = dot[:1] + at[0].to_bytes(2, "little") + at[1].to_bytes(2, "little") + dot[5:]
    path.write_bytes(head + _gce(10) + first + _gce(10) + dot + b";")
    return path


def test_a_gif_frame_that_grows_the_canvas_is_held_to_the_limits(tmp_path):
    src = growing_gif(tmp_path / "grow.gif", (8999, 8999))
    assert len(src.read_bytes()) < 400 and sniff(src) == "gif"
    t = time.perf_counter()
    for call in (lambda: media.probe(src, "gif", max_pixels=1_000_000),
                 lambda: animated.convert_animated(src, tmp_path / "o.gif", "gif", lambda x: x, max_pixels=1_000_000)):
        with pytest.raises(InputError) as e:
            call()
        assert e.value.reason == "too many pixels" and "9000x9000" in str(e.value)
    assert time.perf_counter() - t < 2  # refused from the descriptors, the 81 MP canvas never decoded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grow.gif"]


def test_a_gif_frame_past_the_screen_is_clipped_and_the_size_kept(tmp_path):
    src = growing_gif(tmp_path / "g.gif", (70, 50))  # reaches 71x51 on a 64x48 screen
    clip = media.probe(src, "gif")
    assert clip.size == (64, 48) and clip.hold_bytes > 4 * 64 * 48 * 2
    res = media.convert(clip, src, tmp_path / "o.gif", lambda x: x)
    with Image.open(tmp_path / "o.gif") as im:
        assert res.size == im.size == (64, 48) and im.n_frames == 2


def _still_gif(path: Path, delays_cs: list[int]) -> Path:
    """A still saved as an animation: one picture repeated, each with its delay
    (made by bytes: Pillow's own writer folds identical frames)."""
    head, block = _gif_blocks(Image.new("RGB", (64, 48), (200, 50, 50)).quantize(8))
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    path.write_bytes(head + loop + b"".join(_gce(d) + block for d in delays_cs) + b";")
    return path


def _frames_and_durations(path: Path) -> tuple[int, list[int]]:
    with Image.open(path) as im:
        n = getattr(im, "n_frames", 1)
        out = []
        for i in range(n):
            im.seek(i)
            im.load()
            out.append(round(im.info.get("duration", 0)))
        return n, out


def test_identical_frames_keep_every_frame_and_its_timing(tmp_path):
    gif = _still_gif(tmp_path / "still.gif", [5, 20])
    assert _frames_and_durations(gif) == (2, [50, 200])
    res = animated.convert_animated(gif, tmp_path / "o.gif", "gif", lambda x: x)
    assert res.frames == 2 and _frames_and_durations(tmp_path / "o.gif") == (2, [50, 200])
    # an APNG whose stylized frames come out identical (a network that draws one picture)
    frames = [Image.new("RGB", (64, 48), (40 * i, 90, 60)) for i in range(3)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:], duration=[50, 200, 70], loop=0)
    animated.convert_animated(tmp_path / "a.png", tmp_path / "o.png", "apng", lambda x: np.zeros_like(x))
    assert sniff(tmp_path / "o.png") == "apng"
    assert _frames_and_durations(tmp_path / "o.png") == (3, [50, 200, 70])


# -- video ----------------------------------------------------------------------
def _jpeg(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (100, 120, 140)).save(buf, "JPEG", quality=50)
    return buf.getvalue()


def growing_avi(path: Path, big: tuple[int, int], n=3) -> Path:
    """An MJPEG AVI whose header and first frame say 64x48 and whose later frames are `big`."""
    with av.open(str(path), "w", format="avi") as out:
        s = out.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        for i in range(n):
            p = av.Packet(_jpeg((64, 48) if i == 0 else big))
            p.stream, p.pts, p.dts, p.time_base = s, i, i, Fraction(1, 10)
            out.mux(p)
    return path


@pytest.mark.parametrize("big", [(4000, 4000), (64, 60)], ids=["16 MP", "a few rows more"])
def test_a_video_frame_larger_than_its_header_is_refused(tmp_path, big):
    src = growing_avi(tmp_path / "grow.avi", big)
    out = tmp_path / "out"
    out.mkdir()
    t = time.perf_counter()
    with pytest.raises(InputError) as e:
        video.convert_video(src, out / "o.mp4", lambda x: x, max_pixels=1_000_000)
    assert time.perf_counter() - t < 5
    assert e.value.reason == "too many pixels" and "frame 2" in str(e.value) and "64x48" in str(e.value)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("suffix", [".webm", ".mkv"])
def test_a_truncated_video_without_a_frame_count_is_truncated(tmp_path, suffix):
    full = make_clip(tmp_path / f"full{suffix}", n=24, fps=12, audio=False)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 6 // 10])
    video.convert_video(full, tmp_path / f"whole{suffix}", lambda x: x)  # the whole clip is fine
    with pytest.raises(InputError) as e:
        video.convert_video(cut, tmp_path / f"o{suffix}", lambda x: x)
    assert e.value.reason == "truncated video" and "2.0" in str(e.value)


def test_a_clip_with_audio_longer_than_its_video_is_not_truncated(tmp_path):
    src = make_clip(tmp_path / "in.mkv", n=10, pts=[0, 40, 80, 200, 240, 500, 540, 580, 900, 1000])
    res = video.convert_video(src, tmp_path / "o.mkv", lambda x: x)
    assert res.frames == 10


@pytest.mark.parametrize("rotation,hflip,vflip", [(90, False, False), (-90, False, False), (180, False, False),
                                                  (0, True, False), (0, False, True), (90, True, False),
                                                  (-90, True, False)])
def test_display_matrix_turns_and_mirrors(tmp_path, rotation, hflip, vflip):
    src = make_clip(tmp_path / "in.mp4", n=3, audio=False, rotation=rotation, hflip=hflip, vflip=vflip)
    stored = decoded(src)
    got = list(video.read_frames(src))
    for (_, s), (_, g) in zip(stored, got):
        want = np.rot90(s, rotation // 90)
        if hflip:
            want = want[:, ::-1]
        if vflip:
            want = want[::-1]
        assert g.shape == want.shape and np.abs(g.astype(int) - want).mean() < 3
    assert media.probe(src, "mp4").size == got[0][1].shape[1::-1]


def test_a_phone_rotated_video_reports_and_plans_its_upright_size(tmp_path):
    src = make_clip(tmp_path / "rot.mp4", n=3, rotation=90)
    assert media.probe(src, "mp4").size == (48, 64)
    for extra in (("--dry-run",), ()):
        log = tmp_path / f"r{len(extra)}.jsonl"
        code, _, err = invoke("convert", src, "-o", tmp_path / f"out{len(extra)}", "--name", "{stem}-{width}x{height}",
                              "--no-face-enhance", "--log-file", log, *extra)
        assert code == 0, err
        (rec,) = read_log(log)
        assert rec["input_size"] == [48, 64] and rec["output"].endswith("rot-48x64.mp4")
    assert (tmp_path / "out0" / "rot-48x64.mp4").exists()
    assert decoded(tmp_path / "out0" / "rot-48x64.mp4")[0][1].shape[:2] == (64, 48)


def test_a_second_video_stream_is_named_in_the_note(tmp_path):
    src = tmp_path / "two.mp4"
    with av.open(str(src), "w", format="mp4") as out:
        streams = [out.add_stream("libx264", rate=10) for _ in range(2)]
        for s in streams:
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            for s in streams:
                f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 30 * i, np.uint8), format="rgb24")
                f.pts = i
                out.mux(s.encode(f))
        for s in streams:
            out.mux(s.encode(None))
    res = video.convert_video(src, tmp_path / "o.mp4", lambda x: x)
    assert res.notes == ["1 extra video stream not copied"]


# -- metadata -------------------------------------------------------------------
def _xmp(body: str, ns: str = "") -> bytes:
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" {ns}>{body}</rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def test_deeply_nested_xmp_is_dropped_before_the_network_runs(tmp_path):
    deep = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + b"<a>" * 3000 + b"</a>" * 3000 + b"</x:xmpmeta>"
    src = make_photo(tmp_path / "deep.jpg", (64, 48), fmt="JPEG", xmp=deep)
    with Image.open(src) as im:
        assert metadata.read(im) is None  # decided at probe time: nothing left worth carrying
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--keep-metadata", "--no-face-enhance")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "deep.jpg") as im:
        assert "xmp" not in im.info


LOCATED = _xmp(
    '<drone-dji:GpsLatitude>48.8584</drone-dji:GpsLatitude><drone-dji:GpsLongitude>2.2945</drone-dji:GpsLongitude>'
    '<drone-dji:AbsoluteAltitude>+330.5</drone-dji:AbsoluteAltitude>'
    '<xmpDM:shotLocation>Eiffel Tower</xmpDM:shotLocation>'
    '<Iptc4xmpExt:LocationShown><rdf:Bag><rdf:li rdf:parseType="Resource"><Iptc4xmpExt:City>Paris</Iptc4xmpExt:City>'
    '</rdf:li></rdf:Bag></Iptc4xmpExt:LocationShown>'
    '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Tower<rdf:Description exif:GPSLatitude="48,51N"/>'
    '</rdf:li></rdf:Alt></dc:description>'
    '<dc:creator><rdf:Seq><rdf:li>Ann</rdf:li></rdf:Seq></dc:creator><xmp:Rating>4</xmp:Rating>',
    'xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" xmlns:xmpDM="http://ns.adobe.com/xmp/1.0/DynamicMedia/" '
    'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
    'tiff:Make="DJI" photoshop:City="Paris" exif:GPSAltitude="330/1" drone-dji:RelativeAltitude="+50"')


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_xmp_keeps_only_what_carries_no_location(fmt):
    md = metadata.Metadata({}, {}, {}, LOCATED)
    for keep_gps in (False, True):
        buf = io.BytesIO()
        Image.new("RGB", (32, 24)).save(buf, fmt, **metadata.save_args(md, fmt, (32, 24), keep_gps))
        with Image.open(buf) as im:
            im.load()
            xmp = im.info["xmp"]
        xmp = xmp if isinstance(xmp, bytes) else xmp.encode()
        for kept in (b"Ann", b"<xmp:Rating>4", b'tiff:Make="DJI"', b">Tower"):
            assert kept in xmp
        for place in (b"48.8584", b"2.2945", b"330", b"Eiffel", b"Paris", b"48,51N", b"+50"):
            assert (place in xmp) == keep_gps, place


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".mov"])
@pytest.mark.parametrize("rotation,hflip", [(90, False), (-90, True)])
def test_every_container_probes_the_size_its_frames_come_out(tmp_path, suffix, rotation, hflip):
    src = make_clip(tmp_path / f"in{suffix}", n=2, audio=False, rotation=rotation, hflip=hflip)
    first = next(video.read_frames(src))[1]
    assert media.probe(src, sniff(src)).size == (first.shape[1], first.shape[0]) == (48, 64)


def test_an_animated_webp_canvas_over_pillows_bound_is_too_many_pixels(tmp_path):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)) for _ in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    data = bytearray(buf.getvalue())
    i = data.find(b"VP8X")
    data[i + 12:i + 18] = (15999).to_bytes(3, "little") * 2  # the canvas: 16000x16000
    (tmp_path / "big.webp").write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        media.probe(tmp_path / "big.webp", "webp")
    assert e.value.reason == "too many pixels"


def test_a_gif_canvas_within_max_pixels_but_over_the_memory_limit_is_refused(tmp_path):
    src = growing_gif(tmp_path / "g.gif", (11999, 11999))
    t = time.perf_counter()
    # A process of its own: the peak it logs is the CLI's, not this test session's.
    code, _, err = run_cli("convert", src, "-o", tmp_path / "out", "--no-face-enhance", "--log-file",
                           tmp_path / "r.jsonl")
    (rec,) = read_log(tmp_path / "r.jsonl")
    assert (code, rec["status"], rec["reason"]) == (1, "error", "over the memory limit"), err
    assert time.perf_counter() - t < 30  # the 144 MP canvas was never decoded (that took 2 s and 1.6 GB)
    assert rec["peak_rss_mb"] < 700


def test_webp_frames_libwebp_folds_are_said_in_the_notes(tmp_path):
    frames = [Image.new("RGB", (64, 48), (200, 60 * i, 50)) for i in range(3)]
    frames[0].save(tmp_path / "a.webp", save_all=True, append_images=frames[1:], duration=[50, 200, 70], loop=0,
                   lossless=True)
    res = animated.convert_animated(tmp_path / "a.webp", tmp_path / "o.webp", "webp", lambda x: np.zeros_like(x))
    assert res.frames == 3 and any("written as a still WebP" in n for n in res.notes)
    res = animated.convert_animated(tmp_path / "a.webp", tmp_path / "p.webp", "webp", lambda x: x)
    assert res.notes == ["animated WEBP, loop 0"]


def test_cover_art_is_not_the_clip_and_is_named_in_the_note(tmp_path):
    from av.stream import Disposition

    src = tmp_path / "cover.mp4"
    with av.open(str(src), "w", format="mp4") as out:
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = Disposition.attached_pic
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        p = av.Packet(_jpeg((32, 32)))
        p.stream, p.pts, p.dts, p.time_base = cover, 0, 0, Fraction(1, 1)
        out.mux(p)
        for i in range(5):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 30 * i, np.uint8), format="rgb24")
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    res = video.convert_video(src, tmp_path / "o.mp4", lambda x: x)
    assert (res.frames, res.size, res.notes) == (5, (64, 48), ["cover art not copied"])


def test_a_gif_keeps_its_transparency_when_the_picture_is_black_too(tmp_path):
    """The transparent slot of the palette is black: black pixels must not take
    its place, nor it theirs (Pillow remaps a named palette by colour)."""
    frames = []
    for i in range(3):
        f = Image.new("RGBA", (64, 48), (200, 50 * i, 50, 255))
        f.paste((0, 0, 0, 0), (0, 0, 16, 48))
        frames.append(f)
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=[50, 200, 70], loop=0,
                   disposal=2)
    animated.convert_animated(tmp_path / "a.gif", tmp_path / "o.gif", "gif", lambda x: np.zeros_like(x))
    with Image.open(tmp_path / "o.gif") as im:
        assert im.n_frames == 3
        for i in range(3):
            im.seek(i)
            rgba = np.asarray(im.convert("RGBA"))
            assert (rgba[:, :14, 3] == 0).all() and (rgba[:, 18:] == (0, 0, 0, 255)).all(), i


def test_stray_bytes_do_not_hide_a_frame_that_grows_the_canvas(tmp_path):
    data = growing_gif(tmp_path / "g.gif", (2999, 2999)).read_bytes()
    at = data.index(b",", data.rindex(b"\x21\xf9"))  # the second frame's descriptor
    (tmp_path / "g.gif").write_bytes(data[:at] + b"\x07\x07junk" + data[at:])  # Pillow skips these and reads on
    assert sniff(tmp_path / "g.gif") == "gif"
    with pytest.raises(InputError) as e:
        media.probe(tmp_path / "g.gif", "gif", max_pixels=1_000_000)
    assert e.value.reason == "too many pixels" and "3000x3000" in str(e.value)
