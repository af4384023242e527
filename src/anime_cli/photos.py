"""Photos in the batch: the pipeline's still-picture path.

A probed photo gets its output format and name, is decoded to its working
size (JPEG: DCT-scaled while decoding, then an exact resize), stylized by the
engine within the file's memory budget, its faces re-rendered (face2paint),
and written atomically, with its metadata when asked.
"""

from __future__ import annotations

import numpy as np

from . import metadata, output
from .decode import decode, target_size
from .discover import STDIN
from .faces import FileSource, enhance_faces
from .budget import face_decode_pixels


def open_photo(conv, loaded, im, pr, source, reopener) -> float:
    """Output format and name of a probed photo; its work in progress units.
    The image stays open for decode_photo (or is closed: skipped, cached)."""
    rec, opts = loaded.record, conv.options
    loaded.probe = pr
    rec.input_format = pr.format
    rec.input_size = list(pr.oriented_size)
    loaded.fmt = output.output_format(pr.format, pr.has_alpha or "transparency" in im.info, opts.format)
    w, h = target_size(pr.oriented_size, opts.max_side)
    if conv.names is not None:
        conv.claim(loaded, loaded.fmt, (w, h))
        if conv.from_cache(loaded, (w, h), source):
            im.close()
            return 0
    loaded.reopen = reopener(source)
    if opts.keep_metadata:
        loaded.metadata = metadata.read(im)
    loaded.image = im
    return conv.work(h, w)


def decode_photo(conv, loaded) -> None:
    rec = loaded.record
    with loaded.image as im:
        loaded.image = None
        with rec.stage("decode"):
            loaded.decoded = decode(im, loaded.probe, conv.options.max_side, loaded.job.input)
    rec.decode_size = list(loaded.decoded.decode_size)
    rec.notes += loaded.decoded.notes


def stylize_photo(conv, loaded) -> np.ndarray:
    """The network, then the faces."""
    rec, rgb = loaded.record, loaded.decoded.rgb
    with rec.stage("stylize"):
        rendered = conv.stylizer.render(rgb, budget_bytes=conv.budget(loaded), cancel=loaded.cancel,
                                        progress=conv.advance(loaded))
    rec.plan = rendered.plan_text
    out = rendered.image
    if conv.faces_on:
        loaded.stage = "faces"
        with rec.stage("faces"):
            out, report = _faces(conv, loaded, out)
        rec.faces, rec.faces_enhanced, rec.faces_kept = report.found, report.enhanced, report.kept
    return out


def _faces(conv, loaded, stylized: np.ndarray):
    opts, rgb = conv.options, loaded.decoded.rgb
    # crops come from the original file at the resolution they need, unless it changed since the probe
    pixels = face_decode_pixels(loaded.share, conv.budget(loaded))
    src = FileSource(loaded.reopen, loaded.probe, rgb, pixels,
                     identity=loaded.identity, path=loaded.job.path)
    kw = {"face_size": opts.face_px()}
    if opts.min_face is not None:
        kw["min_face"] = opts.min_face
    return enhance_faces(conv.stylizer, rgb, stylized, conv.detector, src, cancel=loaded.cancel, **kw)


def write_photo(conv, loaded, image: np.ndarray) -> None:
    rec, opts = loaded.record, conv.options
    loaded.stage = "write"
    with rec.stage("write"):
        im = output.encode(image, loaded.decoded.alpha, loaded.fmt)
        extra = metadata.save_args(loaded.metadata, loaded.fmt, im.size, opts.keep_gps)
        if loaded.dest is None:
            output.write_stdout(im, loaded.fmt, opts.quality, extra, stream=getattr(conv, "sink", None))
            rec.output = STDIN
        else:
            output.write_atomic(im, loaded.dest, loaded.fmt, opts.quality, opts.overwrite,
                                abort=loaded.cancel or conv.halt, extra=extra)
            rec.output = str(loaded.dest)
    rec.status = "ok"
    rec.output_size = [image.shape[1], image.shape[0]]
