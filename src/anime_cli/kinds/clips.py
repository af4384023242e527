"""Videos and animated pictures: the clip kind.

A clip is recognised by content (sniff) while the file is probed. It is then
probed from its header (media.probe: limits checked, nothing decoded), named
with its container's suffix, reserved in the memory ledger like a photo, and
converted frame by frame (media.convert with a FrameStylizer): decode, the
network, faces, encode, one frame at a time, the sound copied unchanged.
"""

from __future__ import annotations

from anime_cli.errors import InputError
from anime_cli.inputs.decode import target_size

from . import media
from .frames import FrameStylizer
from .kind import Context, File


class Clip:
    def __init__(self, ctx: Context, f: File, header: media.Clip, source, size: tuple[int, int]):
        self.ctx, self.f, self.header, self.source, self.size = ctx, f, header, source, size

    @classmethod
    def open(cls, ctx: Context, f: File, kind: str, source) -> Clip | None:
        """Probe the clip and name its output; None when there is nothing to
        compute (placed from the cache)."""
        job, rec, opts = f.job, f.record, ctx.options
        if ctx.folder is None:
            raise InputError(f"{job.input}: a {kind} clip cannot be written to stdout; give -o DIR", "output")
        header = media.probe(source, kind, job.input, max_pixels=opts.max_pixels, max_frames=opts.max_frames,
                             max_side=opts.max_side)
        rec.input_format, rec.input_size = kind, list(header.size)
        if opts.memory_limit and header.hold_bytes > opts.memory_limit:
            # the codecs' frames, an animation's stylized frames or a GIF's grown
            # canvas: held whole, no plan of the engine makes them smaller
            raise InputError(f"{job.input}: converting this {kind} holds ~{header.hold_bytes / 1e6:,.0f} MB at once, "
                             f"over --memory-limit ({opts.memory_limit / 1e6:,.0f} MB)", "over the memory limit")
        size = target_size(header.size, opts.max_side)
        ctx.folder.claim(f, None, size, header.suffix)
        if ctx.folder.from_cache(f, size, source, f.stop):
            return None
        return cls(ctx, f, header, source, size)

    @property
    def units(self) -> float:
        w, h = self.size
        return max(1, self.header.frames) * self.ctx.work(h, w)

    def footprint(self) -> int:
        """A few frames at the working size, the network on its fastest plan,
        the codecs or the stylized frames of an animation (hold_bytes), a face
        render."""
        opts, style = self.ctx.options, self.ctx.style
        w, h = self.size
        need = 12 * w * h + style.fastest_bytes(h, w) + self.header.hold_bytes
        if self.ctx.detector is not None:
            side = opts.face_px(video=True)
            need += style.fastest_bytes(side, side)
        return need

    def plan(self) -> str:
        w, h = self.size
        return f"{self.header.frames} frames, each {self.ctx.style.plan(h, w, self.f.room(0))}"

    def planned_peak(self) -> int:
        """A dry run's estimate: what the ledger reserves for it."""
        return self.footprint()

    def load(self) -> None:
        """Nothing: a clip is decoded frame by frame as it is converted."""

    def convert(self) -> None:
        f, ctx, opts = self.f, self.ctx, self.ctx.options
        rec = f.record
        w, h = self.size
        f.stage = "stylize"
        fs = FrameStylizer(ctx.style, ctx.detector, face_size=opts.face_px(video=True), min_face=opts.min_face,
                           budget_bytes=f.room(4 * w * h), cancel=f.cancel)
        per_frame = ctx.work(h, w)
        advance = f.advance
        progress = (lambda done, total: advance(per_frame)) if advance is not None else None
        res = media.convert(self.header, self.source, f.dest, fs, name=f.job.input, max_side=opts.max_side,
                            max_pixels=opts.max_pixels, max_frames=opts.max_frames, crf=opts.crf,
                            quality=opts.quality, overwrite=opts.overwrite, progress=progress, cancel=f.stop)
        rec.status, rec.output = "ok", str(f.dest)
        rec.output_size = rec.decode_size = list(res.size)
        rec.faces, rec.faces_enhanced = fs.faces, fs.faces_enhanced
        rec.timings.update(res.timings)
        rec.notes += res.notes
        rec.frames, rec.fps, rec.duration, rec.audio = res.frames, res.fps, res.duration, res.audio
        rec.frames_per_second = round(res.frames_per_second, 3)

    def close(self) -> None:
        self.source = None
