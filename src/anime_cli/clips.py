"""Videos and animated pictures in the batch: the pipeline's clip path.

A clip is recognised by content (sniff) while the file is probed. It is then
probed from its header (media.probe: limits checked, nothing decoded), named
with its container's suffix, reserved in the memory ledger like a photo, and
converted frame by frame (media.convert with a FrameStylizer): decode, the
network, faces, encode, one frame at a time, the sound copied unchanged.
"""

from __future__ import annotations

from . import media
from .decode import target_size
from .errors import InputError
from .faces import DEFAULT_MIN_FACE
from .framestyle import FrameStylizer


def open_clip(conv, loaded, kind: str, source) -> float:
    """Probe the clip of `loaded` and name its output; its work in progress units."""
    job, rec, opts = loaded.job, loaded.record, conv.options
    if conv.names is None:
        raise InputError(f"{job.input}: a {kind} clip cannot be written to stdout; give -o DIR", "output")
    clip = media.probe(source, kind, job.input, max_pixels=opts.max_pixels, max_frames=opts.max_frames,
                       max_side=opts.max_side)
    rec.input_format, rec.input_size = kind, list(clip.size)
    if opts.memory_limit and clip.hold_bytes > opts.memory_limit:
        # the codecs' frames, an animation's stylized frames or a GIF's grown
        # canvas: held whole, no plan of the engine makes them smaller
        raise InputError(f"{job.input}: converting this {kind} holds ~{clip.hold_bytes / 1e6:,.0f} MB at once, over "
                         f"--memory-limit ({opts.memory_limit / 1e6:,.0f} MB)", "over the memory limit")
    w, h = target_size(clip.size, opts.max_side)
    conv.claim(loaded, None, (w, h), clip.suffix)
    if conv.from_cache(loaded, (w, h), source):
        return 0
    loaded.clip, loaded.source = clip, source
    return max(1, clip.frames) * conv.work(h, w)


def footprint(conv, loaded) -> int:
    """What converting the clip holds at once: a few frames at the working
    size, the network on its fastest plan, the codecs or the stylized frames
    of an animation (clip.hold_bytes), a face render."""
    clip, opts = loaded.clip, conv.options
    w, h = target_size(clip.size, opts.max_side)
    need = 12 * w * h + conv.stylizer.fastest_bytes(h, w) + clip.hold_bytes
    if conv.faces_on:
        side = opts.face_px(video=True)
        need += conv.stylizer.fastest_bytes(side, side)
    return need


def convert_clip(conv, loaded) -> None:
    """Stylize every frame of the clip into its output; fills the record."""
    clip, rec, opts, job = loaded.clip, loaded.record, conv.options, loaded.job
    w, h = target_size(clip.size, opts.max_side)
    room = conv.budget(loaded, 4 * w * h)
    fs = FrameStylizer(conv.stylizer, conv.detector if conv.faces_on else None, face_size=opts.face_px(video=True),
                       min_face=opts.min_face or DEFAULT_MIN_FACE, budget_bytes=room, cancel=loaded.cancel)
    per_frame = conv.work(h, w)
    bar = conv.progress
    progress = (lambda done, total: bar.advance(loaded, per_frame)) if bar is not None else None
    res = media.convert(clip, loaded.source, loaded.dest, fs, name=job.input, max_side=opts.max_side,
                        max_pixels=opts.max_pixels, max_frames=opts.max_frames, crf=opts.crf, quality=opts.quality,
                        overwrite=opts.overwrite, progress=progress, cancel=loaded.cancel or conv.halt)
    rec.status, rec.output = "ok", str(loaded.dest)
    rec.output_size = rec.decode_size = list(res.size)
    rec.faces, rec.faces_enhanced = fs.faces, fs.faces_enhanced
    rec.timings.update(res.timings)
    rec.notes += res.notes
    rec.frames, rec.fps, rec.duration, rec.audio = res.frames, res.fps, res.duration, res.audio
    rec.frames_per_second = round(res.frames_per_second, 3)
