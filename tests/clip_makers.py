"""Small real clips made at test time with PyAV: a slow pan over a sample
photo, with a sine tone on an audio track."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import PHOTOS

_FORMATS = {".mp4": "mp4", ".mov": "mov", ".m4v": "mp4", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}


def pan_frames(n: int, size=(64, 48), src="astronaut.png", step=1.0, top: int | None = None, tile=False):
    """n frames of a window sliding `step` px a frame across the photo (scaled so
    that the whole pan stays inside it). tile: the photo scaled to the frame's
    height and repeated side by side instead (its faces stay small)."""
    w, h = size
    with Image.open(PHOTOS / src) as im:
        im = im.convert("RGB")
        need = w + (n - 1) * step + 2
        scale = h / im.height if tile else max(h * 1.1 / im.height, need / im.width)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    arr = np.asarray(im)
    if tile:
        arr = np.concatenate([arr] * int(np.ceil(need / arr.shape[1])), axis=1)
    top = (arr.shape[0] - h) // 2 if top is None else min(top, arr.shape[0] - h)
    for i in range(n):
        x = i * step
        x0 = int(x)
        frac = x - x0  # sub-pixel pan: blend two neighbouring windows
        a = arr[top:top + h, x0:x0 + w].astype(np.float32)
        b = arr[top:top + h, x0 + 1:x0 + 1 + w].astype(np.float32)
        yield np.clip(np.rint(a * (1 - frac) + b * frac), 0, 255).astype(np.uint8)


def make_clip(path: Path, n=10, size=(64, 48), fps=10, audio=True, rotation=0, codec=None, pts=None,
              src="astronaut.png", step=1.0, audio_codec=None, top: int | None = None, tile=False,
              hflip=False, vflip=False) -> Path:
    """Write a clip; pts: explicit timestamps (in 1/1000 s) for variable frame rate;
    rotation (counterclockwise) and the flips go into its display matrix."""
    import av

    path = Path(path)
    fmt = _FORMATS[path.suffix]
    codec = codec or {"webm": "libvpx-vp9", "avi": "mjpeg"}.get(fmt, "libx264")
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream(codec, rate=fps)
        v.width, v.height = size
        v.pix_fmt = {"mjpeg": "yuvj420p", "rawvideo": "rgb24"}.get(codec, "yuv420p")
        if pts is not None:
            v.codec_context.time_base = Fraction(1, 1000)
            v.time_base = Fraction(1, 1000)
        if codec == "libx264":
            v.options = {"crf": "10"}
        if rotation or hflip or vflip:
            v.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        a = None
        if audio:
            acodec = audio_codec or {"webm": "libopus", "avi": "pcm_s16le"}.get(fmt, "aac")
            rate = 48000 if acodec == "libopus" else 16000
            a = out.add_stream(acodec, rate=rate)
            a.layout = "mono"
        for i, rgb in enumerate(pan_frames(n, size, src, step, top, tile)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = pts[i] if pts is not None else i
            if pts is not None:
                f.time_base = Fraction(1, 1000)
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        if a is not None:
            seconds = (pts[-1] / 1000 + 0.1) if pts is not None else n / fps
            rate = a.codec_context.sample_rate
            total = int(seconds * rate)
            fmt_a = a.codec_context.format.name
            t = 0
            while t < total:
                k = min(1024 if acodec != "libopus" else 960, total - t)
                if acodec == "libopus" and k < 960:
                    break
                tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(t, t + k) / rate)
                arr = (tone * 32767).astype(np.int16)[None] if fmt_a == "s16" else tone.astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(arr, format=fmt_a, layout="mono")
                af.sample_rate, af.pts = rate, t
                out.mux(a.encode(af))
                t += k
            out.mux(a.encode(None))
    return path


def packets(path: Path, kind: str) -> list[bytes]:
    """The raw packets of the first stream of `kind`, in order."""
    import av

    with av.open(str(path)) as c:
        s = [x for x in c.streams if x.type == kind][0]
        return [bytes(p) for p in c.demux(s) if p.size]


def decoded(path: Path) -> list[tuple[float, np.ndarray]]:
    """(seconds, RGB) of every frame, as stored (no rotation applied)."""
    import av

    with av.open(str(path)) as c:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
