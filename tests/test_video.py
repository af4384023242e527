"""Video: recognised by content, streamed through the real model, sound and
timing kept, hostile clips refused in one line with nothing left behind.
Clips are made at run time (tests/clips.py): a pan over a sample photo and a
sine tone."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clip_makers import decoded, make_clip, packets
from helpers import ROOT, psnr

av = pytest.importorskip("av")

from anime_cli.kinds import video, video_header  # noqa: E402
from anime_cli.errors import InputError, UnsupportedFormat  # noqa: E402
from anime_cli.errors import Cancelled  # noqa: E402


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.startswith("out"))


# -- recognising ---------------------------------------------------------------
@pytest.mark.parametrize("name,kind", [("c.mp4", "mp4"), ("c.mov", "mov"), ("c.m4v", "mp4"), ("c.mkv", "mkv"),
                                       ("c.webm", "webm"), ("c.avi", "avi")])
def test_sniff_by_content_not_suffix(tmp_path, name, kind):
    clip = make_clip(tmp_path / name, n=2, audio=False)
    renamed = clip.rename(tmp_path / "no_suffix")  # the name says nothing
    assert video.sniff(renamed) == kind
    assert video.sniff(renamed.read_bytes()[:64] if kind not in ("gif", "apng") else renamed.read_bytes()) == kind


def test_sniff_leaves_photos_and_text_alone(tmp_path, photos):
    from PIL import Image

    im = Image.open(photos / "coffee.png").convert("RGB").resize((64, 48))
    for fmt in ("PNG", "GIF", "WEBP", "JPEG"):
        im.save(tmp_path / f"still.{fmt}", format=fmt)
        assert video.sniff(tmp_path / f"still.{fmt}") is None, fmt
    assert video.sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") is None  # an iPhone photo
    assert video.sniff(b"hello, not a video") is None
    (tmp_path / "text.mp4").write_text("not a video\n" * 20)
    assert video.sniff(tmp_path / "text.mp4") is None


def test_sniff_never_raises_on_cut_or_random_headers(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    clips = [make_clip(tmp_path / f"c{ext}", n=2, audio=False).read_bytes() for ext in (".mp4", ".mkv", ".avi")]
    frames = [Image.new("RGB", (32, 32), (i * 60, 0, 0)) for i in range(3)]
    for fmt in ("GIF", "PNG", "WEBP"):
        frames[0].save(tmp_path / f"a.{fmt}", format=fmt, save_all=True, append_images=frames[1:], duration=50)
        clips.append((tmp_path / f"a.{fmt}").read_bytes())
    for data in clips:
        for cut in sorted(set(rng.integers(0, len(data), 40))):
            video.sniff(data[:cut])  # whatever it says, it says it without raising
            mangled = bytearray(data[:200])
            mangled[rng.integers(0, len(mangled))] ^= 0xFF
            video.sniff(bytes(mangled))
    for _ in range(200):
        video.sniff(rng.bytes(int(rng.integers(0, 300))))


def test_a_video_from_memory(tmp_path):
    import io

    data = make_clip(tmp_path / "in.mp4", n=3).read_bytes()
    src = io.BytesIO(data)
    assert video.sniff(src) == "mp4" and src.tell() == 0
    res = video.convert_video(src, tmp_path / "out.mp4", lambda x: x, name="-")
    assert res.frames == 3 and res.audio == 1


# -- converting ------------------------------------------------------------------
def test_clip_through_the_real_model_keeps_frames_time_and_sound(tmp_path, stylizer):
    src = make_clip(tmp_path / "in.mp4", n=12, size=(96, 64), fps=12)
    info = video_header.probe_video(src)
    assert (info.kind, info.size, info.frames, info.audio, info.suffix) == ("mp4", (96, 64), 12, ["aac"], ".mp4")
    seen = []
    res = video.convert_video(src, tmp_path / "out.mp4", stylizer.stylize, progress=lambda d, t: seen.append((d, t)))
    assert (res.frames, res.audio, res.size) == (12, 1, (96, 64))
    assert seen[-1] == (12, 12) and len(seen) == 12
    assert set(res.timings) == {"decode", "stylize", "encode"} and res.frames_per_second > 0
    with av.open(str(tmp_path / "out.mp4")) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.codec_context.pix_fmt) == ("h264", "yuv420p")
        out_duration = float(c.duration / 1e6)
    with av.open(str(src)) as c:
        in_duration = float(c.duration / 1e6)
    assert abs(out_duration - in_duration) <= 1 / 12 + 1e-6
    assert abs(res.duration - 1.0) <= 1 / 12 + 1e-6
    ins, outs = decoded(src), decoded(tmp_path / "out.mp4")
    assert [t for t, _ in outs] == pytest.approx([t for t, _ in ins])
    assert packets(src, "audio") == packets(tmp_path / "out.mp4", "audio")  # copied, bit for bit
    # each output frame is the still conversion of the same decoded frame, codec loss included
    for (_, frame), (_, got) in zip(video.read_frames(src), outs):
        assert psnr(stylizer.stylize(frame), got) >= 30
    assert leftovers(tmp_path) == ["out.mp4"]


def test_variable_frame_rate_keeps_every_timestamp(tmp_path):
    pts = [0, 100, 150, 400, 420, 700, 900, 1000, 1100, 1500]  # ms
    src = make_clip(tmp_path / "vfr.mp4", n=len(pts), pts=pts)
    video.convert_video(src, tmp_path / "out.mp4", lambda x: 255 - x)
    assert [round(t * 1000) for t, _ in decoded(tmp_path / "out.mp4")] == pts
    assert packets(src, "audio") == packets(tmp_path / "out.mp4", "audio")


def test_max_side_applies_to_frames(tmp_path):
    src = make_clip(tmp_path / "in.mp4", n=3, size=(160, 96), audio=False)
    res = video.convert_video(src, tmp_path / "out.mp4", lambda x: x, max_side=100)
    assert res.size == (100, 60)  # even sides for yuv420p
    assert decoded(tmp_path / "out.mp4")[0][1].shape == (60, 100, 3)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_phone_rotation_is_applied(tmp_path, rotation):
    src = make_clip(tmp_path / "phone.mp4", n=3, size=(64, 48), rotation=rotation)
    res = video.convert_video(src, tmp_path / "out.mp4", lambda x: x)
    stored = decoded(src)[0][1]
    got = decoded(tmp_path / "out.mp4")[0][1]
    want = np.rot90(stored, rotation // 90)  # the display matrix turns counterclockwise
    assert got.shape == want.shape and res.size == (want.shape[1], want.shape[0])
    assert psnr(got, want) > 35
    with av.open(str(tmp_path / "out.mp4")) as c:  # upright pixels, no matrix left to apply twice
        assert next(c.decode(video=0)).rotation == 0


@pytest.mark.parametrize("name,audio_codec,suffix", [("in.webm", None, ".webm"), ("in.avi", None, ".mkv"),
                                                      ("in.mkv", "pcm_s16le", ".mkv"), ("in.mov", None, ".mp4")])
def test_containers_and_audio_copied(tmp_path, name, audio_codec, suffix):
    src = make_clip(tmp_path / name, n=5, audio_codec=audio_codec)
    info = video_header.probe_video(src)
    assert info.suffix == suffix
    res = video.convert_video(src, tmp_path / f"out{suffix}", lambda x: 255 - x)
    assert res.frames == 5 and res.audio == 1
    assert packets(src, "audio") == packets(tmp_path / f"out{suffix}", "audio")
    assert len(decoded(tmp_path / f"out{suffix}")) == 5


# -- interrupted -------------------------------------------------------------------
def test_cancel_leaves_nothing(tmp_path):
    src = make_clip(tmp_path / "in.mp4", n=10)
    stop = threading.Event()

    def slow(rgb, seen=[]):
        seen.append(1)
        if len(seen) == 3:
            stop.set()
        return rgb

    with pytest.raises(Cancelled):
        video.convert_video(src, tmp_path / "out.mp4", slow, cancel=stop)
    assert leftovers(tmp_path) == []


def test_failing_frame_leaves_nothing(tmp_path):
    src = make_clip(tmp_path / "in.mp4", n=10)

    def boom(rgb, seen=[]):
        seen.append(1)
        if len(seen) == 4:
            raise RuntimeError("the network failed")
        return rgb

    with pytest.raises(RuntimeError):
        video.convert_video(src, tmp_path / "out.mp4", boom)
    assert leftovers(tmp_path) == []


# -- hostile -----------------------------------------------------------------------
def _raw_avi(path: Path, size, n=3) -> Path:
    with av.open(str(path), "w") as o:
        s = o.add_stream("rawvideo", rate=10)
        s.width, s.height = size
        s.pix_fmt = "rgb24"
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.zeros((size[1], size[0], 3), np.uint8), format="rgb24")
            f.pts = i
            o.mux(s.encode(f))
    return path


def _truncated(d: Path) -> Path:
    data = make_clip(d / "full.mp4", n=20).read_bytes()
    (d / "full.mp4").unlink()
    (d / "trunc.mp4").write_bytes(data[: len(data) // 2])
    return d / "trunc.mp4"


def _truncated_faststart(d: Path) -> Path:
    with av.open(str(d / "fs.mp4"), "w", format="mp4", options={"movflags": "+faststart"}) as o:
        s = o.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(40):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), np.uint8), format="rgb24")
            f.pts = i
            o.mux(s.encode(f))
        o.mux(s.encode(None))
    data = (d / "fs.mp4").read_bytes()
    (d / "fs.mp4").unlink()
    (d / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    return d / "cut.mp4"


def _no_frames(d: Path) -> Path:
    with av.open(str(d / "empty.mkv"), "w") as o:
        s = o.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        o.start_encoding()
    return d / "empty.mkv"


def _billion_frames(d: Path) -> Path:
    """An AVI whose headers claim 10**9 frames (it holds 5)."""
    b = bytearray(make_clip(d / "small.avi", n=5, audio=False).read_bytes())
    (d / "small.avi").unlink()
    i = b.find(b"avih")
    b[i + 24:i + 28] = (10**9).to_bytes(4, "little")  # dwTotalFrames
    j = b.find(b"strh")
    b[j + 40:j + 44] = (10**9).to_bytes(4, "little")  # dwLength
    (d / "bomb.avi").write_bytes(bytes(b))
    return d / "bomb.avi"


def _audio_only(d: Path) -> Path:
    with av.open(str(d / "song.m4a"), "w", format="mp4") as o:
        a = o.add_stream("aac", rate=16000)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 16000, 0
        o.mux(a.encode(f))
        o.mux(a.encode(None))
    return d / "song.m4a"


def _by_suffix(d: Path) -> Path:
    (d / "notes.mp4").write_text("not a video, just text\n" * 40)
    return d / "notes.mp4"


HOSTILE = {
    "truncated": (_truncated, "corrupt video"),
    "truncated faststart": (_truncated_faststart, "truncated video"),
    "zero-length stream": (_no_frames, "corrupt video"),
    "1x1": (lambda d: _raw_avi(d / "dot.avi", (1, 1)), "frame too small"),
    "20000x2": (lambda d: _raw_avi(d / "line.avi", (20000, 2)), "frame too small"),
    "claims 10^9 frames": (_billion_frames, "too many frames"),
    "audio only": (_audio_only, "no video stream"),
    "video only by suffix": (_by_suffix, "corrupt video"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_video_is_one_clear_line(tmp_path, case):
    make, reason = HOSTILE[case]
    src = make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    t = time.perf_counter()
    with pytest.raises(InputError) as e:
        video.convert_video(src, out / "clip.mp4", lambda x: x)
    assert time.perf_counter() - t < 20  # no hang
    assert e.value.reason == reason
    assert "\n" not in str(e.value) and str(e.value).startswith(str(src))
    assert list(out.iterdir()) == []
    if case == "audio only":
        assert isinstance(e.value, UnsupportedFormat)


def test_limits_on_pixels_and_frames(tmp_path):
    src = make_clip(tmp_path / "in.mp4", n=20, audio=False)
    with pytest.raises(InputError) as e:
        video.convert_video(src, tmp_path / "o.mp4", lambda x: x, max_pixels=64 * 48 - 1)
    assert e.value.reason == "too many pixels"
    with pytest.raises(InputError) as e:
        video.convert_video(src, tmp_path / "o.mp4", lambda x: x, max_frames=19)
    assert e.value.reason == "too many frames"
    # Matroska declares no frame count: its duration times its rate counts
    mkv = make_clip(tmp_path / "in.mkv", n=20, audio=False)
    with pytest.raises(InputError) as e:
        video.convert_video(mkv, tmp_path / "o.mkv", lambda x: x, max_frames=5)
    assert e.value.reason == "too many frames"
    # and a stream longer than its header says is stopped while decoding
    with av.open(str(src)) as c, pytest.raises(InputError) as e:
        for _ in video.frames(c, c.streams.video[0], (64, 48), str(src), max_frames=5):
            pass
    assert e.value.reason == "too many frames"
    assert leftovers(tmp_path) == []


def test_without_pyav_a_video_is_skipped_naming_the_extra(tmp_path):
    src = make_clip(tmp_path / "in.mp4", n=2, audio=False)
    code = ("import sys; sys.modules['av'] = None\n"
            "from anime_cli.kinds import video, video_header\n"
            f"assert video.sniff({str(src)!r}) == 'mp4'\n"
            "try:\n"
            f"    video_header.probe_video({str(src)!r})\n"
            "except video_header.UnsupportedFormat as e:\n"
            "    print(e.reason, '|', e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src")), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "animegan-cli[video]" in p.stdout and "pip install" in p.stdout


# -- memory ------------------------------------------------------------------------
_RSS_SCRIPT = """
import sys
from anime_cli.kinds import video
from anime_cli.stylize.session import Stylizer
s = Stylizer.from_style("hayao")
video.convert_video(sys.argv[1], sys.argv[2], s.stylize)
"""


def _peak_rss(src: Path, dest: Path) -> int:
    """Peak VmRSS of a whole conversion in its own process, sampled from outside."""
    p = subprocess.Popen([sys.executable, "-c", _RSS_SCRIPT, str(src), str(dest)],
                         env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.01)
    assert p.returncode == 0
    return peak


@pytest.mark.slow
def test_memory_does_not_grow_with_the_clip(tmp_path):
    short = make_clip(tmp_path / "short.mp4", n=30, size=(128, 96), fps=30, step=0.5)
    long = make_clip(tmp_path / "long.mp4", n=300, size=(128, 96), fps=30, step=0.5)
    a = _peak_rss(short, tmp_path / "o1.mp4")
    b = _peak_rss(long, tmp_path / "o2.mp4")
    assert len(decoded(tmp_path / "o2.mp4")) == 300
    assert b <= 1.10 * a, (a / 1e6, b / 1e6)
