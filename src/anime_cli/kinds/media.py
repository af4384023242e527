"""One way in for the pipeline: any clip (video or animation) probed from its
header, then converted frame by frame.

    kind = sniff(path)                      # None: a photo, today's path
    clip = media.probe(path, kind, name, max_pixels=..., max_frames=...)
    dest = out_dir / (stem + clip.suffix)
    result = media.convert(clip, path, dest, FrameStylizer(...), max_side=..., ...)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import animation as animated
from . import video, video_header
from anime_cli.options import DEFAULT_CRF, DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from anime_cli.inputs.sniff import ANIMATED_KINDS, VIDEO_KINDS


@dataclass
class Clip:
    kind: str  # from sniff
    suffix: str  # the output's: .mp4 .mkv .webm .gif .webp .png
    size: tuple[int, int]  # [w, h] upright where the header tells
    frames: int  # declared or estimated; 0 unknown
    # what converting holds besides one frame and its network, for the memory
    # ledger: the codecs of a video; every stylized frame of an animation
    hold_bytes: int = 0


def probe(path: str | os.PathLike, kind: str, name: str | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS,
          max_frames: int = DEFAULT_MAX_FRAMES, max_side: int = DEFAULT_MAX_SIDE) -> Clip:
    """The header's facts, limits checked, no frame decoded. Raises InputError /
    UnsupportedFormat (no PyAV: a skip naming animegan-cli[video])."""
    name = name or str(path)
    if kind in VIDEO_KINDS:
        info = video_header.probe_video(path, name, kind, max_pixels=max_pixels, max_frames=max_frames)
        return Clip(kind, info.suffix, info.upright_size, info.estimate, video_header.codec_bytes(info, max_side))
    if kind in ANIMATED_KINDS:
        with animated.open_animation(path, kind, name) as im:
            n, size, canvas = animated.header(im, kind, path, name)
        w, h = animated.check_limits(n, size, name, max_side, max_pixels, max_frames, canvas=canvas)
        # the stylized frames; and where a GIF frame grows the decoder's canvas
        # past the picture, that canvas and its RGBA copy
        grown = 8 * canvas[0] * canvas[1] if canvas != size else 0
        return Clip(kind, animated.output_suffix(kind), size, n, 4 * w * h * n + grown)
    raise ValueError(f"not a clip kind: {kind!r}")


def convert(clip: Clip, src: str | os.PathLike, dest: str | os.PathLike, stylize_frame, *, name: str | None = None,
            max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS, max_frames: int = DEFAULT_MAX_FRAMES,
            crf: int = DEFAULT_CRF, quality: int = 95, overwrite: bool = False, progress=None,
            cancel=None) -> video.VideoResult:
    kw = dict(name=name, max_side=max_side, max_pixels=max_pixels, max_frames=max_frames, overwrite=overwrite,
              progress=progress, cancel=cancel)
    if clip.kind in VIDEO_KINDS:
        return video.convert_video(src, Path(dest), stylize_frame, crf=crf, **kw)
    return animated.convert_animated(src, Path(dest), clip.kind, stylize_frame, quality=quality, **kw)
