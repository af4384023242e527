"""One picture in, its encoded result and its record out, for a caller that
admits work by memory itself (anime_cli.serve): the batch's stages, split
where the batch reserves memory.

`Pictures` holds the loaded models and one peak tracker for the process.
`Pictures.open` probes a picture from its header, exactly as the batch does
(anime_cli.pipeline.Converter.open), and plans its footprint as the batch
plans a file's (budget.footprint); nothing is decoded. `Pending.run` then
decodes, stylizes, re-renders the faces and encodes it, within the grant the
caller reserved from a budget.Ledger. The result is bytes in memory, never a
file: nothing a caller sends names a path that is written.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from anime_cli.inputs.discover import Job
from anime_cli.logs.telemetry import PeakTracker, Record
from anime_cli.options import Options

from .budget import Grant
from .converter import Converter

# What a still picture's output format is served as.
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp",
               "TIFF": "image/tiff"}


class Pictures:
    """stylizers: style name -> a loaded StyleModel; detector: the face
    detector (None: no faces, whatever a request asks)."""

    def __init__(self, stylizers: dict, detector=None):
        self.stylizers = stylizers
        self.detector = detector
        self.peaks = PeakTracker()

    def open(self, path: Path, name: str, options: Options) -> "Pending":
        """Probe the picture at `path` (shown as `name` in its record) for
        `options` (output_dir None: the result stays in memory). A video or an
        animation is refused from its first bytes: a request converts one still picture."""
        conv = Converter(self.stylizers[options.style], options, self.detector if options.face_enhance else None,
                         use_store=False, peaks=self.peaks, stills_only=True)
        conv.context.sink = io.BytesIO()
        loaded = conv.open(Job(name, Path(path), Path(name)))
        if loaded.kind is not None:
            return Pending(conv, loaded, loaded.record, conv.footprint(loaded), getattr(loaded.kind, "fmt", None))
        skipped = loaded.record.status == "skipped"
        rec = conv.process(loaded)  # finishes the record (and forgets its peak)
        if skipped:  # refused from the header (not an image): an error to whoever sent it
            rec.status, rec.error = "error", f"{name}: {rec.reason}"
        return Pending(conv, None, rec, 0)


@dataclass
class Pending:
    """A probed picture: `footprint` bytes to reserve before run(); a record
    already final (an error from the header) when `ready` is False."""

    conv: Converter
    loaded: object | None
    record: Record
    footprint: int
    fmt: str | None = None  # the output's Pillow format
    result: bytes | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.loaded is not None and self.loaded.kind is not None

    @property
    def media_type(self) -> str | None:
        return MEDIA_TYPES.get(self.fmt) if self.fmt else None

    @property
    def suffix(self) -> str:
        from anime_cli.folder.files import WRITABLE

        return WRITABLE[self.fmt][0] if self.fmt in WRITABLE else ""

    def run(self, grant: Grant | None, cancel=None) -> Record:
        """Decode, stylize, enhance faces and encode, within `grant` (shared
        with others unless grant.alone). The encoded picture is in .result when
        the record is ok. Never raises for what the picture trips over."""
        conv, loaded = self.conv, self.loaded
        if self.ready:
            if grant is not None and not grant.alone:
                loaded.share = grant.bytes
            loaded.cancel = cancel
            try:
                with conv.stylizer.cores.busy():
                    self.record = conv.process(conv.load(loaded))
            finally:
                self.close()
        if self.record.status == "ok":
            self.result = conv.context.sink.getvalue()
        conv.context.sink = None
        return self.record

    def close(self) -> None:
        """Let go of the opened picture (a request that will not run)."""
        if self.loaded is not None and self.loaded.kind is not None:
            self.loaded.kind.close()
            self.loaded.kind = None
