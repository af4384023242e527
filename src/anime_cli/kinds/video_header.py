"""A video's header: what the container and its first video stream declare
(size, upright orientation from the display matrix, MP4's tkhd x mvhd or
Matroska's Projection, frame count, duration, audio), read before any frame
is decoded, with the limits checked. video.py streams the frames."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from anime_cli.errors import InputError, UnsupportedFormat, first_line
from anime_cli.inputs.decode import target_size
from anime_cli.inputs.sniff import sniff
from anime_cli.options import DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS


EXTRA = "animegan-cli[video]"

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
                max_pixels: int = DEFAULT_MAX_PIXELS, max_frames: int = DEFAULT_MAX_FRAMES) -> VideoInfo:
    """What the container's header says, with the limits checked; no frame decoded."""
    name = name or str(path)
    av = require_av(name)
    with opened(av, path, name) as c:
        return read_info(c, kind or sniff(path) or "?", name, max_pixels, max_frames, path)

def opened(av, path, name):
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
        raise InputError(f"{name}: not a readable video (corrupt or truncated: {ffmpeg_words(e)})",
                         "corrupt video") from None

def video_stream(c):
    """The stream converted: the first video stream that is not cover art (an
    attached picture is one frame, not the clip)."""
    from av.stream import Disposition

    for s in c.streams.video:
        if not s.disposition & Disposition.attached_pic:
            return s
    return None

def read_info(c, kind: str, name: str, max_pixels: int, max_frames: int, src=None) -> VideoInfo:
    v = video_stream(c)
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
    info = VideoInfo(kind, (w, h), describe_orientation(orientation)[0], Fraction(rate) if rate else None, int(v.frames or 0),
                     duration, v.codec_context.name, [a.codec_context.name for a in c.streams.audio], claimed,
                     orientation, c.duration / 1e6 if c.duration and c.duration > 0 else None)
    working_size(info, 0, name)  # too small or too thin: refused before any frame
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

def describe_orientation(o: tuple[int, int, int, int]) -> tuple[int, bool]:
    """(degrees turned counterclockwise, mirrored): a mirror is applied after
    the turn, to x (av_display_matrix_flip)."""
    a, b, c, d = o
    mirrored = a * d - b * c < 0
    turn = (-a, b, -c, d) if mirrored else o
    return next(deg for deg, t in _TURNS.items() if t == turn), mirrored

def turned(rgb: np.ndarray, o: tuple[int, int, int, int]) -> np.ndarray:
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

def frame_orientation(frame):
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

def working_size(info: VideoInfo, max_side: int, name: str) -> tuple[int, int]:
    """The size frames are scaled to, as stored (the rotation comes after):
    within max_side, never upscaled, both sides even (yuv420p needs it)."""
    tw, th = target_size(info.size, max_side)
    tw, th = tw - tw % 2, th - th % 2
    if min(tw, th) < MIN_SIDE:
        w, h = info.size
        raise InputError(f"{name}: {w}x{h} frames are too small or too thin to stylize "
                         f"(at least {MIN_SIDE} px a side once fitted to --max-side)", "frame too small")
    return tw, th


def ffmpeg_words(e: BaseException) -> str:
    # FFmpeg's own words, without the errno and the path again
    return getattr(e, "strerror", None) or first_line(e, 120)
