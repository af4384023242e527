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

PyAV is the optional extra `anime-cli[video]`; without it a video is a skip
that names the extra.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from anime_cli.folder import files as output
from anime_cli.inputs.decode import target_size
from anime_cli.errors import InputError, OutputError, UnsupportedFormat, first_line
from anime_cli.options import DEFAULT_CRF, DEFAULT_MAX_FRAMES
from anime_cli.inputs.sniff import ANIMATED_KINDS, VIDEO_KINDS, VIDEO_SUFFIXES, sniff  # noqa: F401  (the API in one place)

EXTRA = "anime-cli[video]"

MIN_SIDE = 16  # the network's reflection padding and 4x downsampling need room
# Audio codecs MP4 holds; a clip with any other audio is written as Matroska
# so that its sound is still copied unchanged.
_MP4_AUDIO = {"aac", "mp3", "mp2", "ac3", "eac3", "opus", "flac", "alac"}
_WEBM_AUDIO = {"opus", "vorbis"}


def require_av(name: str):
    """The av module, or a skip naming the extra that provides it."""
    try:
        import av
    except ImportError:
        raise UnsupportedFormat(f"{name}: video needs the extra {EXTRA} (pip install '{EXTRA}')",
                                f"needs {EXTRA}") from None
    av.logging.set_level(None)  # FFmpeg's complaints would land on stderr; the record tells them
    return av


# -- probing ------------------------------------------------------------------
@dataclass
class VideoInfo:
    kind: str
    size: tuple[int, int]  # as stored
    rotation: int  # degrees counterclockwise to show it upright (0, 90, 180, -90)
    rate: Fraction | None  # average frame rate
    frames: int  # claimed by the header; 0 when it does not say
    duration: float | None  # seconds
    codec: str
    audio: list[str] = field(default_factory=list)  # codec names of the audio streams
    estimate: int = 0  # frames declared, or duration x rate: for a progress bar's total
    # the display matrix as the header gives it (see _orientation); upright if none
    orientation: tuple[int, int, int, int] = (1, 0, 0, 1)
    container_duration: float | None = None  # seconds, all streams: what a truncated file falls short of

    @property
    def upright_size(self) -> tuple[int, int]:
        w, h = self.size
        return (h, w) if self.orientation[0] == 0 else (w, h)

    @property
    def suffix(self) -> str:
        """The output's container: WebM for WebM, else MP4 when it can hold the
        audio unchanged, else Matroska."""
        if self.kind == "webm" and all(a in _WEBM_AUDIO for a in self.audio):
            return ".webm"
        return ".mp4" if all(a in _MP4_AUDIO for a in self.audio) else ".mkv"


def probe_video(path: str | os.PathLike, name: str | None = None, kind: str | None = None, *,
                max_pixels: int = 150_000_000, max_frames: int = DEFAULT_MAX_FRAMES) -> VideoInfo:
    """What the container's header says, with the limits checked; no frame decoded."""
    name = name or str(path)
    av = require_av(name)
    with _opened(av, path, name) as c:
        return _info(c, kind or sniff(path) or "?", name, max_pixels, max_frames, path)


def _opened(av, path, name):
    try:
        if hasattr(path, "read"):  # stdin or a pipe, read into memory by the pipeline
            path.seek(0)
            return av.open(path, metadata_errors="replace")
        return av.open(str(path), metadata_errors="replace")
    except av.error.FileNotFoundError:
        raise InputError(f"{name}: file not found (deleted?)", "file not found") from None
    except av.error.PermissionError:
        raise InputError(f"{name}: permission denied", "permission denied") from None
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{name}: not a readable video (corrupt or truncated: {_short(e)})",
                         "corrupt video") from None


def _video_stream(c):
    """The stream converted: the first video stream that is not cover art (an
    attached picture is one frame, not the clip)."""
    from av.stream import Disposition

    for s in c.streams.video:
        if not s.disposition & Disposition.attached_pic:
            return s
    return None


def _info(c, kind: str, name: str, max_pixels: int, max_frames: int, src=None) -> VideoInfo:
    v = _video_stream(c)
    if v is None:
        what = "audio only" if c.streams.audio else ("cover art only" if c.streams.video else "no video stream")
        raise UnsupportedFormat(f"{name}: not a video ({what})", "no video stream")
    w, h = v.codec_context.width, v.codec_context.height
    if w < 1 or h < 1:
        raise InputError(f"{name}: video has no frame size ({w}x{h})", "corrupt video")
    if w * h > max_pixels:
        raise InputError(f"{name}: {w}x{h} frames are {w * h:,} pixels, over --max-pixels ({max_pixels:,})",
                         "too many pixels")
    rate = v.average_rate or v.guessed_rate
    duration = float(v.duration * v.time_base) if v.duration and v.time_base else (
        c.duration / 1e6 if c.duration and c.duration > 0 else None)
    claimed = int(v.frames or 0) or (round(duration * rate) if duration and rate else 0)
    if claimed > max_frames:
        said = f"{claimed} frames" if v.frames else f"{duration:.0f} s at {float(rate):.3g} fps, ~{claimed} frames"
        raise InputError(f"{name}: the header declares {said}, over --max-frames ({max_frames})", "too many frames")
    matrix = _header_matrix(src, kind, v.index if kind in ("mkv", "webm") else v.id) if src is not None else None
    orientation = _orientation(matrix) if matrix else _TURNS[_stream_rotation(v)]
    info = VideoInfo(kind, (w, h), _describe(orientation)[0], Fraction(rate) if rate else None, int(v.frames or 0),
                     duration, v.codec_context.name, [a.codec_context.name for a in c.streams.audio], claimed,
                     orientation, c.duration / 1e6 if c.duration and c.duration > 0 else None)
    _working_size(info, 0, name)  # too small or too thin: refused before any frame
    return info


def _stream_rotation(v) -> int:
    """The old `rotate` tag, where FFmpeg still reports one. The display
    matrix itself comes with each decoded frame, used then; an MP4's is also
    read from its header (_header_matrix)."""
    tag = v.metadata.get("rotate") if v.metadata else None
    try:
        return _quarter(-float(tag)) if tag else 0  # the old tag turns clockwise
    except ValueError:
        return 0


def _quarter(deg: float) -> int:
    q = round(deg / 90) % 4
    return (0, 90, 180, -90)[q]


# An orientation is the display matrix's linear part (a, b, c, d), each -1, 0
# or 1: the stored pixel (x, y) is shown at (a*x + c*y, b*x + d*y), image axes
# pointing right and down (FFmpeg's convention, and QuickTime's). Quarter
# turns and mirrors are the eight such; a matrix that turns by another angle
# is taken to the nearest of them.
_TURNS = {0: (1, 0, 0, 1), 90: (0, -1, 1, 0), 180: (-1, 0, 0, -1), -90: (0, 1, -1, 0)}  # counterclockwise


def _orientation(m) -> tuple[int, int, int, int]:
    """The orientation of a display matrix (9 numbers: a b u c d v x y w)."""
    a, b, c, d = m[0], m[1], m[3], m[4]
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return (1 if a >= 0 else -1, 0, 0, 1 if d >= 0 else -1)
    return (0, 1 if b >= 0 else -1, 1 if c >= 0 else -1, 0)


def _describe(o: tuple[int, int, int, int]) -> tuple[int, bool]:
    """(degrees turned counterclockwise, mirrored): a mirror is applied after
    the turn, to x (av_display_matrix_flip)."""
    a, b, c, d = o
    mirrored = a * d - b * c < 0
    turn = (-a, b, -c, d) if mirrored else o
    return next(deg for deg, t in _TURNS.items() if t == turn), mirrored


def _upright(rgb: np.ndarray, o: tuple[int, int, int, int]) -> np.ndarray:
    a, b, c, d = o
    if o == (1, 0, 0, 1):
        return rgb
    if a == 0:  # shown at (c*y, b*x): rows become columns
        rgb = rgb.transpose(1, 0, 2)
        a, d = c, b
    if a < 0:
        rgb = rgb[:, ::-1]
    if d < 0:
        rgb = rgb[::-1]
    return np.ascontiguousarray(rgb)


def _frame_orientation(frame):
    """The display matrix that came with a decoded frame, or None."""
    from av.sidedata.sidedata import Type

    try:
        sd = frame.side_data.get(Type.DISPLAYMATRIX)
        return _orientation(struct.unpack("=9i", bytes(sd))) if sd is not None else None
    except (ValueError, struct.error, TypeError, KeyError):
        return None


def _header_matrix(src, kind: str, track_id: int):
    """The display matrix of an MP4/MOV track from its header (tkhd, times the
    movie's mvhd), as FFmpeg builds it; None elsewhere or when absent. FFmpeg
    hands it to each decoded frame, not to the probe, so the probe reads it
    itself: the upright size must be known before the first frame."""
    read = {"mp4": _mp4_matrix, "mov": _mp4_matrix, "mkv": _mkv_matrix, "webm": _mkv_matrix}.get(kind)
    if read is None:
        return None
    try:
        if hasattr(src, "read"):
            pos = src.tell()
            try:
                return read(src, track_id)
            finally:
                src.seek(pos)
        with open(src, "rb") as f:
            return read(f, track_id)
    except (OSError, ValueError, struct.error, IndexError):
        return None


def _ebml(f, start: int, end: int):
    """(id, payload start, payload end) of the EBML elements in [start, end)."""
    pos, n = start, 0
    while pos < end and n < 10_000:
        f.seek(pos)
        head = f.read(12)
        if not head:
            return
        ilen = 9 - head[0].bit_length() if head[0] else 9
        if ilen > 4 or len(head) < ilen + 1:
            return
        eid = int.from_bytes(head[:ilen], "big")
        slen = 9 - head[ilen].bit_length() if head[ilen] else 9
        if slen > 8 or len(head) < ilen + slen:
            return
        raw = int.from_bytes(head[ilen:ilen + slen], "big") & ((1 << (7 * slen)) - 1)
        body = pos + ilen + slen
        size = end - body if raw == (1 << (7 * slen)) - 1 else raw  # all ones: unknown size
        yield eid, body, min(body + size, end)
        pos = body + size
        n += 1


def _mkv_matrix(f, track_index: int):
    """The display matrix of a Matroska file's `track_index`-th track (FFmpeg
    makes its streams in track order), as FFmpeg builds it from the track's
    Projection: a turn by ProjectionPoseRoll (clockwise), mirrored when
    ProjectionPoseYaw is 180; None when it has none."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    seg = next(((b, e) for i, b, e in _ebml(f, 0, end) if i == 0x18538067), None)
    if seg is None:
        return None
    for eid, b, e in _ebml(f, *seg):
        if eid == 0x1F43B675:  # a Cluster: the tracks come before the data
            return None
        if eid != 0x1654AE6B:
            continue
        entries = [(tb, te) for tid, tb, te in _ebml(f, b, e) if tid == 0xAE]
        for number, (tb, te) in enumerate(entries):
            pose = {}
            for k, kb, ke in _ebml(f, tb, te):
                if k == 0xE0:
                    for p, pb, pe in _ebml(f, kb, ke):
                        if p == 0x7670:
                            for q, qb, qe in _ebml(f, pb, pe):
                                if q in (0x7673, 0x7674, 0x7675) and qe - qb in (4, 8):
                                    f.seek(qb)
                                    pose[q] = struct.unpack(">f" if qe - qb == 4 else ">d", f.read(qe - qb))[0]
            if number != track_index:
                continue
            yaw, pitch, roll = pose.get(0x7673, 0.0), pose.get(0x7674, 0.0), pose.get(0x7675, 0.0)
            if pitch != 0.0 or yaw not in (0.0, 180.0, -180.0) or roll != roll:
                return None  # not a flat picture's pose: FFmpeg ignores it too
            a, b_, c, d = _TURNS[_quarter(-roll)]
            if yaw:
                a, c = -a, -c
            return (a, b_, 0, c, d, 0, 0, 0, 1)
        return None
    return None


def _boxes(f, start: int, end: int):
    """(type, payload start, payload end) of the ISO boxes in [start, end)."""
    pos, n = start, 0
    while pos + 8 <= end and n < 10_000:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head[:8])
        body = pos + 8
        if size == 1:
            if len(head) < 16:
                return
            size, body = struct.unpack(">Q", head[8:16])[0], pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos:
            return
        yield kind, body, min(pos + size, end)
        pos += size
        n += 1


def _mp4_matrix(f, track_id: int):
    f.seek(0, os.SEEK_END)
    end = f.tell()
    moov = next(((b, e) for k, b, e in _boxes(f, 0, end) if k == b"moov"), None)
    if moov is None:
        return None
    movie = track = None
    for kind, b, e in _boxes(f, *moov):
        if kind == b"mvhd":
            f.seek(b)
            v = f.read(1)[0]
            f.seek(b + (4 + 28 if v == 1 else 4 + 16) + 16)
            movie = struct.unpack(">9i", f.read(36))
        elif kind == b"trak" and track is None:
            for k2, b2, _ in _boxes(f, b, e):
                if k2 == b"tkhd":
                    f.seek(b2)
                    v = f.read(1)[0]
                    f.seek(b2 + 4 + (16 if v == 1 else 8))
                    tid = struct.unpack(">I", f.read(4))[0]
                    if tid == track_id:
                        f.seek(b2 + 4 + (32 if v == 1 else 20) + 16)
                        track = struct.unpack(">9i", f.read(36))
                    break
    if track is None:
        return None
    if movie is None:
        return track
    ta, tb, tc, td = track[0], track[1], track[3], track[4]
    ma, mb, mc, md = movie[0], movie[1], movie[3], movie[4]
    # row vectors: the track's matrix first, then the movie's
    return (ta * ma + tb * mc, ta * mb + tb * md, 0, tc * ma + td * mc, tc * mb + td * md, 0, 0, 0, 1)


def codec_bytes(info: VideoInfo, max_side: int) -> int:
    """What the decoder and encoder hold besides the frame being stylized, for
    the memory ledger: the decoder's reference and threaded frames (yuv420p,
    1.5 bytes a pixel, up to 16) at the stored size, and x264's look-ahead and
    references at the working size (measured: ~110 MB for 720p in and out)."""
    w, h = target_size(info.size, max_side)
    return int(24 * info.size[0] * info.size[1] + 100 * w * h)


def _working_size(info: VideoInfo, max_side: int, name: str) -> tuple[int, int]:
    """The size frames are scaled to, as stored (the rotation comes after):
    within max_side, never upscaled, both sides even (yuv420p needs it)."""
    tw, th = target_size(info.size, max_side)
    tw, th = tw - tw % 2, th - th % 2
    if min(tw, th) < MIN_SIDE:
        w, h = info.size
        raise InputError(f"{name}: {w}x{h} frames are too small or too thin to stylize "
                         f"(at least {MIN_SIDE} px a side once fitted to --max-side)", "frame too small")
    return tw, th


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
                    o, last_turn = _frame_orientation(frame) or upright, turn
                rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="LANCZOS").to_ndarray()
                yield frame, _upright(rgb, o), o
    except av.error.FFmpegError as e:
        raise InputError(f"{name}: corrupt video data at frame {count + 1} ({_short(e)})", "corrupt video") from None


def read_frames(path, max_side: int = 0, max_frames: int = DEFAULT_MAX_FRAMES) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds, upright working-size RGB) of every frame: what convert_video
    hands to stylize_frame. For tests and tools."""
    av = require_av(str(path))
    with _opened(av, path, str(path)) as c:
        info = _info(c, sniff(path) or "?", str(path), 10**12, max_frames, path)
        v = _video_stream(c)
        size = _working_size(info, max_side, str(path))
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
                  *, name: str | None = None, max_side: int = 1280, max_pixels: int = 150_000_000,
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
    with _opened(av, src, name) as c:
        info = _info(c, sniff(src) or "?", name, max_pixels, max_frames, src)
        size = _working_size(info, max_side, name)
        v = _video_stream(c)
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
    deg, mirrored = _describe(orientation)
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

    main = _video_stream(c)
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
            raise OutputError(f"{path}: cannot write ({_short(e)})") from None
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
                raise OutputError(f"{self.path}: cannot write ({_short(e)})") from None


def _short(e: BaseException) -> str:
    # FFmpeg's own words, without the errno and the path again
    return getattr(e, "strerror", None) or first_line(e, 120)
