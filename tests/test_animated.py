"""Animated GIF, WebP and APNG through the real model: frames, durations, loop
count and disposal kept; one undithered palette for a GIF; hostile input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from clip_makers import pan_frames
from helpers import psnr

from anime_cli.kinds import animation as animated
from anime_cli.kinds import video
from anime_cli.errors import InputError
from anime_cli.errors import Cancelled

DURATIONS = [100, 50, 200, 80, 120, 300]


def _animation(path, fmt, loop=0, alpha=False, n=6, size=(64, 48), **kw):
    frames = [Image.fromarray(f) for f in pan_frames(n, size, step=2)]
    if alpha:  # a transparent band down the left side
        band = np.where(np.arange(size[0])[None, :] < 16, 0, 255).repeat(size[1], 0).astype(np.uint8)
        for f in frames:
            f.putalpha(Image.fromarray(band))
    extra = {} if loop is None else {"loop": loop}
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=DURATIONS[:n], **extra, **kw)
    return path


def _read(path):
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            im.load()
            out.append((im.info.get("duration"), getattr(im, "disposal_method", im.info.get("disposal")),
                        np.asarray(im.convert("RGBA"))))
        return im.format, im.info.get("loop"), out


@pytest.mark.parametrize("fmt,kind,loop", [("GIF", "gif", 0), ("GIF", "gif", None), ("GIF", "gif", 3),
                                           ("WEBP", "webp", 0), ("WEBP", "webp", 2), ("PNG", "apng", 5)])
def test_round_trip_keeps_frames_durations_and_loop(tmp_path, stylizer, fmt, kind, loop):
    src = _animation(tmp_path / f"in.{fmt.lower()}", fmt, loop=loop)
    assert video.sniff(src) == kind
    dest = tmp_path / f"out{animated.output_suffix(kind)}"
    res = animated.convert_animated(src, dest, kind, stylizer.stylize)
    assert (res.frames, res.duration, res.size) == (6, sum(DURATIONS) / 1000, (64, 48))
    got_fmt, got_loop, frames = _read(dest)
    assert got_fmt == fmt and got_loop == loop
    assert [round(d) for d, _, _ in frames] == DURATIONS
    _, _, inputs = _read(src)
    for (_, _, a), (_, _, b) in zip(inputs, frames):  # each frame is the still conversion of the same frame
        want = stylizer.stylize(np.ascontiguousarray(a[..., :3]))
        assert psnr(want, b[..., :3]) > 30  # GIF too: 256 colours go far on one small clip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dest.name])


def test_gif_disposal_kept_and_one_palette_without_dither(tmp_path, stylizer):
    src = _animation(tmp_path / "in.gif", "GIF", disposal=1)
    dest = tmp_path / "out.gif"
    animated.convert_animated(src, dest, "gif", stylizer.stylize)
    with Image.open(dest) as im:
        disposals = []
        for i in range(im.n_frames):
            im.seek(i)
            disposals.append(im.disposal_method)
        assert disposals == [1] * 6
    assert _local_colour_tables(dest.read_bytes()) == [False] * 6  # every frame on the global palette
    # a flat area stays flat: no dithering pattern in a uniform frame
    flat = tmp_path / "flat.gif"
    frames = [Image.new("RGB", (64, 48), (120 + 10 * i, 90, 60)) for i in range(3)]
    frames[0].save(flat, save_all=True, append_images=frames[1:], duration=100, loop=0)
    animated.convert_animated(flat, tmp_path / "flat_out.gif", "gif", lambda x: x)
    _, _, out = _read(tmp_path / "flat_out.gif")
    for _, _, rgba in out:
        assert len(np.unique(rgba[8:-8, 8:-8, :3].reshape(-1, 3), axis=0)) == 1


def _local_colour_tables(data: bytes) -> list[bool]:
    """For each image descriptor of a GIF: does it carry its own palette?"""
    pos, flags = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0), []
    while pos < len(data) and data[pos] != 0x3B:
        if data[pos] == 0x2C:
            flags.append(bool(data[pos + 9] & 0x80))
            pos += 10 + (3 << ((data[pos + 9] & 7) + 1) if data[pos + 9] & 0x80 else 0) + 1
        else:
            pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return flags


@pytest.mark.parametrize("fmt,kind", [("GIF", "gif"), ("WEBP", "webp"), ("PNG", "apng")])
def test_transparency_kept(tmp_path, fmt, kind):
    src = _animation(tmp_path / f"in.{fmt.lower()}", fmt, alpha=True)
    dest = tmp_path / f"out{animated.output_suffix(kind)}"
    animated.convert_animated(src, dest, kind, lambda x: 255 - x)
    _, _, frames = _read(dest)
    for _, _, rgba in frames:
        assert (rgba[:, :14, 3] == 0).all() and (rgba[:, 18:, 3] == 255).all()


def test_limits_and_interruption_leave_nothing(tmp_path):
    src = _animation(tmp_path / "in.gif", "GIF")
    out = tmp_path / "out"
    out.mkdir()
    cases = [({"max_pixels": 1000}, "too many pixels"), ({"max_frames": 5}, "too many frames"),
             ({"max_total_pixels": 6 * 64 * 48 - 1}, "animation too large")]
    for kw, reason in cases:
        with pytest.raises(InputError) as e:
            animated.convert_animated(src, out / "a.gif", "gif", lambda x: x, **kw)
        assert e.value.reason == reason and "\n" not in str(e.value)
    stop = threading.Event()

    def stopper(rgb, seen=[]):
        seen.append(1)
        stop.set()
        return rgb

    with pytest.raises(Cancelled):
        animated.convert_animated(src, out / "a.gif", "gif", stopper, cancel=stop)
    data = src.read_bytes()
    (tmp_path / "cut.gif").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        animated.convert_animated(tmp_path / "cut.gif", out / "a.gif", "gif", lambda x: x)
    assert "\n" not in str(e.value)
    assert list(out.iterdir()) == []
