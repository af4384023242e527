"""The memory budget: what each file may hold, reserved before it is decoded.

A file's footprint is computed from its header (see `footprint`); the files in
flight reserve theirs from a `Ledger` holding what --memory-limit leaves after
the models, so together they stay inside the limit. A file too big to share
waits until it is alone and then has the whole budget, within which the
engine plans (streaming if it must).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .decode import target_size
from .errors import Cancelled
from .telemetry import rss_bytes

# What the process needs beyond the files' own reservations: encoder buffers,
# the allocator's slack, Python's own churn.
RESERVE = 96 * 1024**2
# Faces are found on a copy no larger than this (see faces.DETECT_SIDE); MTCNN's
# pyramid holds about this many float32 bytes per pixel of that copy at its peak.
_DETECT_PIXELS = 1280 * 1280
_DETECT_BYTES_PER_PIXEL = 24


def room(limit: int, share: int | None, picture: int) -> int | None:
    """What the network may add for a file: its reservation (share) less its
    own `picture` bytes when it shares the budget; alone (share None), what
    the limit leaves now. None: no limit."""
    if not limit:
        return None
    if share is not None:
        return max(0, share - picture)
    return max(0, limit - rss_bytes() - RESERVE)


def face_decode_pixels(share: int | None, room_now: int | None) -> int:
    """How many pixels of the original the face crops may decode."""
    if share is not None or room_now is None:
        return 10**12  # the file's reservation covers the whole original (see footprint)
    return max(1, room_now // 8)


def decode_bytes(probe, max_side: int) -> int:
    """What decoding may hold at once: the decoded picture (JPEG: DCT-scaled
    to at most twice the target) and its converted copy, 4 bytes a pixel each."""
    w, h = probe.size
    if probe.format == "JPEG":
        tw, th = target_size(probe.size, max_side)
        w, h = min(w, 2 * tw), min(h, 2 * th)
    return 8 * w * h


def footprint(probe, options, stylizer, faces: bool) -> int:
    """The most a file holds at once, from its header: its decode; or its
    picture (working copy, output, the encoder's copy) and the network on its
    fastest plan; or, with faces, the picture, the detection copy and its
    pyramid, one face render and the original decoded again for the crops
    (8 bytes a pixel, as decode_bytes)."""
    w, h = target_size(probe.size, options.max_side)
    px = 4 * w * h  # bytes of the picture, alpha included
    need = max(decode_bytes(probe, options.max_side), 3 * px + stylizer.fastest_bytes(h, w))
    if faces:
        side = options.face_px()
        detect = min(w * h, _DETECT_PIXELS) * _DETECT_BYTES_PER_PIXEL
        crops = 8 * probe.size[0] * probe.size[1]
        need = max(need, 3 * px + max(detect, stylizer.fastest_bytes(side, side) + crops))
    return need


def alone_room(limit: int, held: int, picture: int) -> int | None:
    """room() for a file alone, before it is decoded: what the network will
    get once its picture (`picture` bytes) is held beside `held`."""
    return max(0, limit - held - picture - RESERVE) if limit else None


def planned_peak(probe, options, stylizer, faces: bool, held: int) -> int:
    """The peak RSS of converting one file alone (a dry run's estimate), the
    process holding `held` bytes before it: the most of its phases, each
    with the plan the run will take under its limit (not the fastest one,
    as the ledger's footprint reserves). Decode; the network (the picture,
    the plan within what the limit leaves beside it, the output); the faces
    (the picture and its stylized copy, then detection, or a face render
    with the original decoded again for the crops, as much as the limit
    leaves: face_decode_pixels)."""
    w, h = target_size(probe.size, options.max_side)
    limit = options.memory_limit
    picture = 3 * w * h
    net = alone_room(limit, held, picture)
    sized = getattr(stylizer, "planned_bytes", None)
    engine = sized(h, w, net) if sized is not None else stylizer.fastest_bytes(h, w)
    peak = max(decode_bytes(probe, options.max_side), picture + engine)
    if faces:
        side = options.face_px()
        detect = min(w * h, _DETECT_PIXELS) * _DETECT_BYTES_PER_PIXEL
        face_room = None if net is None else max(0, net - picture)
        face = sized(side, side, face_room) if sized is not None else stylizer.fastest_bytes(side, side)
        ow, oh = probe.size
        crops = 8 * min(ow * oh, face_decode_pixels(None, face_room))
        peak = max(peak, 2 * picture + max(detect, face + crops))
    return held + peak


@dataclass
class Grant:
    bytes: int
    alone: bool  # no other file holds memory: this one may use the whole budget


class Ledger:
    """Memory reserved by the files in flight, out of `total` (None: no
    limit). A file waits until its footprint is free; one that does not fit
    beside the others waits until it is alone and then has the whole budget
    to itself. Nothing runs beside it."""

    def __init__(self, total: int | None):
        self.total = self.free = total
        self.holders = 0
        self.cond = threading.Condition()

    def acquire(self, want: int, stop) -> Grant:
        """Block until `want` bytes are free (or the caller is alone); raises
        Cancelled once stop.is_set()."""
        with self.cond:
            while True:
                if stop.is_set():
                    raise Cancelled()
                if self.total is None or want <= self.free:
                    got = Grant(want, alone=False)
                    break
                if self.holders == 0:
                    got = Grant(self.free, alone=True)
                    break
                self.cond.wait()
            self.holders += 1
            if self.total is not None:
                self.free -= got.bytes
            return got

    def release(self, grant: Grant | None) -> None:
        if grant is None:
            return
        with self.cond:
            self.holders -= 1
            if self.total is not None:
                self.free += grant.bytes
            self.cond.notify_all()

    def wake(self) -> None:
        """Let waiters look at their stop flag again."""
        with self.cond:
            self.cond.notify_all()


def plan_only(conv, loaded) -> None:
    """A dry run's record: what converting would do, from the header alone
    (the output's path and size, the engine's plan, the peak it expects).
    Nothing is decoded; the probed file is closed."""
    rec, opts = loaded.record, conv.options
    if loaded.image is not None:
        loaded.image.close()
        loaded.image = None
    clip = loaded.clip
    w, h = target_size(clip.size if clip is not None else loaded.probe.oriented_size, opts.max_side)
    held = rss_bytes()
    if clip is not None:
        rec.plan = f"{clip.frames} frames, each {conv.stylizer.plan(h, w, conv.budget(loaded))}"
        peak = held + conv.footprint(loaded)
    else:  # the run: alone, its picture decoded beside what the process holds now
        rec.plan = conv.stylizer.plan(h, w, alone_room(opts.memory_limit, held, 3 * w * h))
        peak = planned_peak(loaded.probe, opts, conv.stylizer, conv.faces_on, held)
    rec.estimated_peak_mb = round(peak / 1e6, 1)
    loaded.clip = None
    rec.status, rec.output_size = "planned", [w, h]
    rec.output = str(loaded.dest) if loaded.dest is not None else "-"
