"""Video: recognised by content, streamed frame by frame through the style.

`sniff` (sniff.py) names a video or an animated picture from its first bytes
(a still GIF, WebP or PNG stays a photo). `convert_video` decodes one frame at a time
straight to the working size (FFmpeg's scaler, through PyAV), turns it
upright, hands it to `stylize_frame`, encodes it and forgets it: memory is
that of one frame plus the codecs' own look-ahead, whatever the clip's
length. The audio streams are copied packet for packet (never re-encoded) and
every frame keeps its timestamp, so sound stays in sync and a variable frame
rate stays variable. The output is written to a hidden temporary file in the
destination folder and renamed at the end: an interrupted or failed clip
leaves nothing. Animated GIF/WebP/APNG are in animated.py.

PyAV is the optional extra `animegan-cli[video]`; without it a video is a skip
that names the extra.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from anime_cli.folder import files as output
from anime_cli.errors import InputError, OutputError
from anime_cli.options import DEFAULT_CRF, DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from anime_cli.inputs.sniff import ANIMATED_KINDS, VIDEO_KINDS, VIDEO_SUFFIXES, sniff  # noqa: F401  (the API in one place)

from .video_header import (VideoInfo, describe_orientation, ffmpeg_words, frame_orientation, opened, read_info,
                           require_av, turned, video_stream, working_size)


# -- decoding -----------------------------------------------------------------
def frames(c, v, size: tuple[int, int], name: str, max_frames: int,
           audio_sink: Callable | None = None, info: VideoInfo | None = None, max_pixels: int | None = None,
           span: list | None = None) -> Iterator[tuple[object, np.ndarray, tuple[int, int, int, int]]]:
    """(decoded frame, its upright working-size RGB, the orientation applied)
    one at a time, in presentation order. `size` is the working size as
    stored; FFmpeg scales each frame to it, then the frame's display matrix
    (phone videos; the header's when the frame has none) turns it upright.
    Audio packets go to `audio_sink` as they come. No frame may be larger than
    the header's (the memory for the clip was reserved from it) or than
    max_pixels: the decoder itself refuses one before it allocates it, and
    each decoded frame is checked again. `span`: [first, last] second any
    packet of any stream covers, for the truncation check."""
    av = require_av(name)
    sw, sh = size
    hw, hh = info.size if info is not None else (v.codec_context.width, v.codec_context.height)
    limit = min(max_pixels or hw * hh, hw * hh)
    # FFmpeg checks the stride-aligned width and may pad the height: the slack
    # lets a frame of the header's own size through, the exact check follows
    v.codec_context.options = {**v.codec_context.options, "max_pixels": str((-(-hw // 64) * 64) * (hh + 16))}
    upright = info.orientation if info is not None else (1, 0, 0, 1)
    count, o, last_turn = 0, upright, None
    try:
        for packet in c.demux():
            if span is not None and packet.pts is not None and packet.time_base:
                t0 = float(packet.pts * packet.time_base)
                t1 = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                span[0], span[1] = min(span[0], t0), max(span[1], t1)
            if packet.stream.index != v.index:
                if audio_sink is not None and packet.stream.type == "audio" and packet.dts is not None:
                    audio_sink(packet)  # not the flush packet at the end
                continue
            try:
                decoded = packet.decode()
            except av.error.ArgumentError:  # EINVAL: a picture size the decoder was told to refuse
                raise InputError(f"{name}: frame {count + 1} is larger than the {hw}x{hh} its header declares "
                                 f"(refused before decoding)", "too many pixels") from None
            for frame in decoded:
                count += 1
                if count > max_frames:
                    raise InputError(f"{name}: more than --max-frames ({max_frames}) frames", "too many frames")
                fw, fh = frame.width, frame.height
                if fw * fh > limit:
                    over = f"over --max-pixels ({max_pixels:,})" if max_pixels and fw * fh > max_pixels else \
                        f"larger than the {hw}x{hh} its header declares"
                    raise InputError(f"{name}: frame {count} is {fw}x{fh}, {over}", "too many pixels")
                # reading a frame's side data keeps that frame alive in PyAV 18
                # (+60 MB over 300 small frames): read it again only when the
                # turn changes, which frame.rotation tells without it
                turn = frame.rotation
                if count == 1 or turn != last_turn:
                    o, last_turn = frame_orientation(frame) or upright, turn
                rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="LANCZOS").to_ndarray()
                yield frame, turned(rgb, o), o
    except av.error.FFmpegError as e:
        raise InputError(f"{name}: corrupt video data at frame {count + 1} ({ffmpeg_words(e)})", "corrupt video") from None


def read_frames(path, max_side: int = 0, max_frames: int = DEFAULT_MAX_FRAMES) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds, upright working-size RGB) of every frame: what convert_video
    hands to stylize_frame. For tests and tools."""
    av = require_av(str(path))
    with opened(av, path, str(path)) as c:
        info = read_info(c, sniff(path) or "?", str(path), 10**12, max_frames, path)
        v = video_stream(c)
        size = working_size(info, max_side, str(path))
        for frame, rgb, _ in frames(c, v, size, str(path), max_frames, info=info):
            yield float(frame.time) if frame.time is not None else None, rgb


# -- converting ---------------------------------------------------------------
@dataclass
class VideoResult:
    frames: int
    fps: float | None  # the input's average frame rate
    duration: float | None  # seconds, of the written video stream
    audio: int  # audio streams copied
    size: tuple[int, int]  # [w, h] written, upright
    input_size: tuple[int, int]  # upright
    suffix: str
    timings: dict[str, float] = field(default_factory=dict)  # per stage, summed over frames
    frames_per_second: float = 0.0  # frames over the summed stage time
    notes: list[str] = field(default_factory=list)


def convert_video(src: str | os.PathLike, dest: str | os.PathLike, stylize_frame: Callable[[np.ndarray], np.ndarray],
                  *, name: str | None = None, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS,
                  max_frames: int = DEFAULT_MAX_FRAMES, crf: int = DEFAULT_CRF, overwrite: bool = False,
                  progress: Callable[[int, int], None] | None = None, cancel=None) -> VideoResult:
    """Stylize every frame of `src` into `dest` (its suffix should be
    probe_video(...).suffix: .mp4, .mkv or .webm). stylize_frame: upright
    HxWx3 uint8 -> same shape. If it has a `timings` dict (FrameStylizer), its
    stages are reported instead of one "stylize" stage. progress(done, total)
    after each frame (total: the header's count or its estimate, 0 unknown). cancel.is_set() is checked between frames
    (errors.Cancelled raised inside stylize_frame passes through too); on any
    exception the temporary file is removed and nothing appears at `dest`."""
    name = name or str(src)
    dest = Path(dest)
    av = require_av(name)
    with opened(av, src, name) as c:
        info = read_info(c, sniff(src) or "?", name, max_pixels, max_frames, src)
        size = working_size(info, max_side, name)
        v = video_stream(c)
        v.thread_type = "AUTO"
        with output.temporary(dest, overwrite, cancel) as (_, tmp):  # the encoder writes it by name
            with _Writer(av, tmp, dest.suffix, v, c.streams.audio, info.rate, crf) as wr:
                res = _run(c, v, info, size, name, max_frames, max_pixels, stylize_frame, wr, progress, cancel)
    res.suffix = dest.suffix
    return res


def _run(c, v, info, size, name, max_frames, max_pixels, stylize_frame, wr, progress, cancel) -> VideoResult:
    timings = {"decode": 0.0, "stylize": 0.0, "encode": 0.0}
    own = getattr(stylize_frame, "timings", None)
    n = first = last = 0
    span = [float("inf"), float("-inf")]
    orientation = info.orientation
    it = frames(c, v, size, name, max_frames, audio_sink=wr.copy_audio, info=info, max_pixels=max_pixels, span=span)
    while True:
        t = time.perf_counter()
        try:
            frame, rgb, o = next(it)
        except StopIteration:
            timings["decode"] += time.perf_counter() - t
            break
        t1 = time.perf_counter()
        timings["decode"] += t1 - t
        if cancel is not None and cancel.is_set():
            from anime_cli.errors import Cancelled

            raise Cancelled()
        out = stylize_frame(rgb)
        if out.shape != rgb.shape:
            raise ValueError(f"stylize_frame gave {out.shape} for {rgb.shape}")
        t2 = time.perf_counter()
        timings["stylize"] += t2 - t1
        pts = wr.encode(out, frame)
        timings["encode"] += time.perf_counter() - t2
        first, last = (pts if n == 0 else first), pts
        if n == 0:
            orientation = o
        n += 1
        if progress is not None:
            progress(n, max(n, info.estimate))
    if n == 0:
        raise InputError(f"{name}: the video stream holds no frame", "no frames")
    if info.frames and n < info.frames * 0.99 - 2:  # edit lists may drop a few: not a truncation
        raise InputError(f"{name}: truncated video (decoded {n} of the {info.frames} frames its header "
                         f"declares)", "truncated video")
    _check_duration(info, span, name)
    t = time.perf_counter()
    wr.finish()
    timings["encode"] += time.perf_counter() - t
    if own:  # the callable timed its own stages (stylize, faces)
        timings.pop("stylize")
        timings.update(own)
    timings = {k: round(s, 4) for k, s in timings.items()}
    total = sum(timings.values())
    duration = float((last - first + wr.last_duration) * v.time_base)
    deg, mirrored = describe_orientation(orientation)
    notes = [("mirrored and " if mirrored else "") + f"turned {deg} degrees upright"] if deg or mirrored else []
    notes += _not_copied(c)
    h, w = wr.shape
    return VideoResult(n, float(info.rate) if info.rate else None, round(duration, 4), len(c.streams.audio),
                       (w, h), info.size[::-1] if orientation[0] == 0 else info.size, "", timings,
                       round(n / total, 3) if total else 0.0, notes)


def _check_duration(info: VideoInfo, span: list, name: str) -> None:
    """A file cut short keeps the header that says how long it was (WebM, MKV
    and fragmented MP4 declare no frame count): its streams must reach within
    1 % and two frames of that. Measured from 0 or an earlier start (audio
    priming), so that a stream that starts late (an empty edit) is no
    shortfall."""
    want = info.container_duration
    if not want or span[1] == float("-inf"):
        return
    got = span[1] - min(0.0, span[0])
    frame = 1 / float(info.rate) if info.rate else 0.04
    if got < want * 0.99 - 2 * frame - 0.05:
        raise InputError(f"{name}: truncated video (its header says {want:.3f} s, the streams end at {got:.3f} s)",
                         "truncated video")


def _not_copied(c) -> list[str]:
    """What of the input is not in the output, said by kind."""
    from av.stream import Disposition

    main = video_stream(c)
    extra = [s for s in c.streams.video if s.index != main.index]
    covers = sum(1 for s in extra if s.disposition & Disposition.attached_pic)
    notes = []
    if len(extra) - covers:
        k = len(extra) - covers
        notes.append(f"{k} extra video stream{'s' if k > 1 else ''} not copied")
    if covers:
        notes.append("cover art not copied")
    other = len(c.streams) - len(c.streams.video) - len(c.streams.audio)
    if other:
        notes.append(f"{other} subtitle/data stream(s) not copied")
    return notes


class _Writer:
    """The output container: the stylized video stream and the copied audio.
    Its streams are made at the first frame, once the upright size is known
    (the display matrix comes with the decoded frames); audio packets that
    come before wait for it."""

    def __init__(self, av, path: str, suffix: str, v, audio, rate, crf: int):
        self.av, self.path, self.v, self.rate, self.crf = av, path, v, rate, crf
        self.fmt = {".webm": "webm", ".mkv": "matroska"}.get(suffix, "mp4")
        opts = {"movflags": "+faststart"} if self.fmt == "mp4" else {}
        try:
            self.out = av.open(path, "w", format=self.fmt, options=opts)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"{path}: cannot write ({ffmpeg_words(e)})") from None
        self.audio_in = list(audio)
        self.audio: dict[int, object] = {}
        self.pending: list = []  # audio packets before the first frame
        self.video = None
        self.last_pts = None
        self.last_duration = 0
        self.shape = (0, 0)

    def _start(self, shape) -> None:
        codec = "libvpx-vp9" if self.fmt == "webm" else "libx264"
        s = self.out.add_stream(codec, rate=self.rate or Fraction(25))
        s.height, s.width = shape[:2]
        s.pix_fmt = "yuv420p"
        s.time_base = self.v.time_base
        s.codec_context.time_base = self.v.time_base
        cc = s.codec_context  # limited-range BT.709: what encode() converts to
        cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1, 1
        if codec == "libx264":
            # x264's look-ahead holds that many frames: 40 (medium's default) took
            # ~200 MB at 720p, 10 takes ~110 MB (decoder included) for a slightly
            # larger file at the same quality
            s.options = {"crf": str(self.crf), "preset": "medium", "rc-lookahead": "10"}
        else:  # VP9's scale runs higher than x264's for the same look
            s.options = {"crf": str(min(63, self.crf + 12)), "b": "0", "row-mt": "1", "cpu-used": "4"}
        self.video = s
        self.audio = {a.index: self.out.add_stream_from_template(a) for a in self.audio_in}
        self.shape = shape[:2]
        for p in self.pending:
            self.copy_audio(p)
        self.pending = []

    def copy_audio(self, packet) -> None:
        if self.video is None:
            self.pending.append(packet)
            return
        packet.stream = self.audio[packet.stream_index]
        self.out.mux(packet)

    def encode(self, rgb: np.ndarray, src_frame) -> int:
        if self.video is None:
            self._start(rgb.shape)
        f = self.av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format="yuv420p", dst_colorspace="ITU709", interpolation="LANCZOS")
        pts = src_frame.pts
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            pts = (self.last_pts + max(1, self.last_duration)) if self.last_pts is not None else 0
        self.last_duration = src_frame.duration or (pts - self.last_pts if self.last_pts is not None else 0)
        f.pts, f.time_base = pts, self.v.time_base
        if src_frame.duration:
            f.duration = src_frame.duration
        self.last_pts = pts
        self.out.mux(self.video.encode(f))
        return pts

    def finish(self) -> None:
        self.out.mux(self.video.encode(None))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.out.close()
        except (self.av.error.FFmpegError, OSError) as e:
            if exc[0] is None:
                raise OutputError(f"{self.path}: cannot write ({ffmpeg_words(e)})") from None
