"""Photos: the still-picture kind.

A probed photo gets its output format and name, is decoded to its working
size (JPEG: DCT-scaled while decoding, then an exact resize), stylized by the
engine within the file's memory budget, its faces re-rendered (face2paint)
with crops from the original file, and written atomically, with its metadata
when asked.
"""

from __future__ import annotations

import io

from PIL import Image

from anime_cli.faces.enhance import FileSource, file_identity
from anime_cli.folder import files
from anime_cli.inputs import metadata, probe
from anime_cli.inputs.decode import decode, target_size
from anime_cli.inputs.discover import STDIN

from .frames import network_then_faces
from .kind import Context, File

# Faces are found on a copy no larger than this (see faces.DETECT_SIDE); MTCNN's
# pyramid holds about this many float32 bytes per pixel of that copy at its peak.
_DETECT_PIXELS = 1280 * 1280
_DETECT_BYTES_PER_PIXEL = 24


def decode_bytes(pr: probe.Probe, max_side: int) -> int:
    """What decoding may hold at once: the decoded picture (JPEG: DCT-scaled
    to at most twice the target) and its converted copy, 4 bytes a pixel each.
    Decoding runs on the stored picture, before it is turned upright."""
    w, h = pr.size
    if pr.format == "JPEG":
        tw, th = target_size(pr.size, max_side)
        w, h = min(w, 2 * tw), min(h, 2 * th)
    return 8 * w * h


class Photo:
    def __init__(self, ctx: Context, f: File, im: Image.Image, pr: probe.Probe, source, fmt: str,
                 size: tuple[int, int], identity: tuple | None):
        self.ctx, self.f, self.probe, self.fmt, self.size = ctx, f, pr, fmt, size
        self.image: Image.Image | None = im  # probed, not yet decoded
        self.decoded = None
        self.reopen = _reopener(source)  # face crops re-read the original...
        self.identity = identity  # ...unless it changed since the probe (see faces.file_identity)
        self.metadata = metadata.read(im) if ctx.options.keep_metadata else None

    @classmethod
    def open(cls, ctx: Context, f: File, im: Image.Image, pr: probe.Probe, source) -> Photo | None:
        """Name the output of a probed photo; None when there is nothing to
        compute (placed from the cache). The image is closed on any way out
        but a Photo."""
        try:
            identity = file_identity(f.job.path) if f.job.path is not None else None
            rec, opts = f.record, ctx.options
            rec.input_format, rec.input_size = pr.format, list(pr.oriented_size)
            fmt = files.output_format(pr.format, pr.has_alpha or "transparency" in im.info, opts.format)
            size = target_size(pr.oriented_size, opts.max_side)
            if ctx.folder is not None:
                ctx.folder.claim(f, fmt, size)
                if ctx.folder.from_cache(f, size, source, f.stop):
                    im.close()
                    return None
            return cls(ctx, f, im, pr, source, fmt, size, identity)
        except BaseException:
            im.close()
            raise

    @property
    def units(self) -> float:
        w, h = self.size
        return self.ctx.work(h, w)

    def footprint(self) -> int:
        """The most the photo holds at once: its decode; or its picture
        (working copy, output, the encoder's copy) and the network on its
        fastest plan; or, with faces, the picture, the detection copy and its
        pyramid, one face render and the original decoded again for the crops."""
        opts, style = self.ctx.options, self.ctx.style
        w, h = self.size
        px = 4 * w * h  # bytes of the picture, alpha included
        need = max(decode_bytes(self.probe, opts.max_side), 3 * px + style.fastest_bytes(h, w))
        if self.ctx.detector is not None:
            side = opts.face_px()
            detect = min(w * h, _DETECT_PIXELS) * _DETECT_BYTES_PER_PIXEL
            crops = 8 * self.probe.size[0] * self.probe.size[1]
            need = max(need, 3 * px + max(detect, style.fastest_bytes(side, side) + crops))
        return need

    def _alone_room(self) -> int | None:
        """What the network will get alone, once the picture is decoded beside
        what the process holds now (a dry run decodes nothing)."""
        w, h = self.size
        room = self.f.room(0)
        return None if room is None else max(0, room - 3 * w * h)

    def plan(self) -> str:
        w, h = self.size
        return self.ctx.style.plan(h, w, self._alone_room())

    def planned_peak(self) -> int:
        """What converting the photo alone adds to the process at its peak (a
        dry run's estimate): the most of its phases, each with the plan the run
        takes under its limit (not the fastest one, as footprint reserves).
        Decode; the network (the picture, the plan, the output); the faces (the
        picture and its stylized copy, then detection, or a face render with
        the original decoded again for the crops, as much as the limit leaves)."""
        opts, style = self.ctx.options, self.ctx.style
        w, h = self.size
        picture = 3 * w * h
        net = self._alone_room()
        sized = getattr(style, "planned_bytes", None)
        engine = sized(h, w, net) if sized is not None else style.fastest_bytes(h, w)
        peak = max(decode_bytes(self.probe, opts.max_side), picture + engine)
        if self.ctx.detector is not None:
            side = opts.face_px()
            detect = min(w * h, _DETECT_PIXELS) * _DETECT_BYTES_PER_PIXEL
            face_room = None if net is None else max(0, net - picture)
            face = sized(side, side, face_room) if sized is not None else style.fastest_bytes(side, side)
            ow, oh = self.probe.size
            crops = 8 * min(ow * oh, _face_decode_pixels(None, face_room))
            peak = max(peak, 2 * picture + max(detect, face + crops))
        return peak

    def load(self) -> None:
        rec = self.f.record
        with self.image as im:
            self.image = None
            with rec.stage("decode"):
                self.decoded = decode(im, self.probe, self.ctx.options.max_side, self.f.job.input)
        rec.decode_size = list(self.decoded.decode_size)
        rec.notes += self.decoded.notes

    def convert(self) -> None:
        f, ctx, opts = self.f, self.ctx, self.ctx.options
        rec, rgb = f.record, self.decoded.rgb
        room = f.room(rgb.nbytes)
        source = None
        if ctx.detector is not None:  # crops from the original at the resolution they need
            source = FileSource(self.reopen, self.probe, rgb, _face_decode_pixels(f.share, room),
                                identity=self.identity, path=f.job.path)
        out, rec.plan, report = network_then_faces(
            ctx.style, rgb, ctx.detector, face_size=opts.face_px(), min_face=opts.min_face, budget=room,
            cancel=f.cancel, progress=f.advance, source=source, timed=self._stage)
        if report is not None:
            rec.faces, rec.faces_enhanced, rec.faces_kept = report.found, report.enhanced, report.kept
        self._write(out)

    def _stage(self, name: str):
        self.f.stage = name
        return self.f.record.stage(name)

    def _write(self, image) -> None:
        f, opts = self.f, self.ctx.options
        rec = f.record
        with self._stage("write"):
            im = files.encode(image, self.decoded.alpha, self.fmt)
            extra = metadata.save_args(self.metadata, self.fmt, im.size, opts.keep_gps)
            if f.dest is None:
                files.write_stdout(im, self.fmt, opts.quality, extra, stream=self.ctx.sink)
                rec.output = STDIN
            else:
                files.write_atomic(im, f.dest, self.fmt, opts.quality, opts.overwrite, abort=f.stop, extra=extra)
                rec.output = str(f.dest)
        rec.status = "ok"
        rec.output_size = [image.shape[1], image.shape[0]]

    def close(self) -> None:
        if self.image is not None:
            self.image.close()
        self.image = self.decoded = None


def _face_decode_pixels(share: int | None, room: int | None) -> int:
    """How many pixels of the original the face crops may decode."""
    if share is not None or room is None:
        return 10**12  # the file's reservation covers the whole original (see footprint)
    return max(1, room // 8)


def _reopener(source):
    """A way to open the same picture again."""
    if isinstance(source, io.BytesIO):
        data = source.getvalue()
        return lambda: Image.open(io.BytesIO(data), formats=probe.FORMATS)
    return lambda: Image.open(source, formats=probe.FORMATS)
