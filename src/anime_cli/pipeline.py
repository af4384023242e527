"""The batch: discover -> probe -> decode -> stylize -> enhance faces -> write -> log.

`Converter` holds the loaded models and the options and turns jobs into
records, in input order. By default two files are in flight (lanes.Lanes),
sharing the cores and the memory budget (budget.Ledger); `--sequential` and
`Converter.convert` carry one file at a time. Whatever a file trips over ends
in its record (see `recorded`), never in an exception out of the batch,
except a disk-full error, which stops it (errors.Fatal).
"""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from PIL import Image

from . import budget, clips, output, photos, probe
from .destinations import Destinations
from .sniff import VIDEO_KINDS, sniff
from .decode import Decoded
from .discover import STDIN, Job
from .faces import file_identity
from .errors import Cancelled, Fatal, InputError, OutputError, OutputExists, UnsupportedFormat, first_line
from .options import Options
from .telemetry import PeakTracker, Record
from .engine import trim_malloc

LANES = 2  # files in flight in a batch


@dataclass(eq=False)  # identity: a key for the peak tracker
class Loaded:
    """One file on its way through the stages."""

    job: Job
    record: Record
    dest: Path | None = None
    fmt: str | None = None
    decoded: Decoded | None = None
    reopen: Callable | None = None
    probe: probe.Probe | None = None
    image: Image.Image | None = None  # probed, not yet decoded
    share: int | None = None  # bytes reserved when sharing the budget; None: alone, on all of it
    cancel: object | None = None  # is_set(): stop this file (the batch stopped before it)
    stage: str = "probe"
    identity: tuple | None = None  # the input file as probed (see faces.file_identity)
    metadata: object | None = None  # metadata.Metadata with --keep-metadata: what goes into the output
    cache_key: str | None = None  # this file computes that cache entry (store.Outputs), then done()
    clip: object | None = None  # a video or an animation (media.Clip): converted frame by frame
    source: object | None = None  # what the clip is read from (a path, or stdin's bytes)

    @property
    def pending(self) -> bool:
        """Probed, with work still to do."""
        return self.image is not None or self.clip is not None
    fatal: bool = False  # its write failed so that no later write can succeed


class Converter:
    def __init__(self, stylizer, options: Options, detector=None, stdin: bytes | None = None, use_store: bool = True,
                 peaks: PeakTracker | None = None):
        self.stylizer = stylizer
        self.options = options
        self.detector = detector
        # Converters of one process share a tracker: each new one would reset the kernel's mark (vmhwm)
        self.peaks = peaks or PeakTracker()
        self.sink = None  # a binary file that '-' output is encoded into instead of stdout (anime_cli.single)
        self.destinations = Destinations(options, use_store)
        self.names = self.destinations.names  # None: the picture goes to stdout
        self.progress = None  # an observer of work (progress.WorkProgress), set by the caller
        self._stdin = stdin  # the bytes of '-' (None: read sys.stdin when it comes)
        # Set when the batch stops early (disk full, Ctrl-C): no output may appear after it.
        self.halt = threading.Event()

    @property
    def faces_on(self) -> bool:
        return self.options.face_enhance and self.detector is not None

    # -- the batch ---------------------------------------------------------
    def run(self, jobs: Iterable[Job], stdin: bytes | None = None) -> Iterator[Record]:
        """Records for `jobs`, in their order. Raises errors.Fatal (with the
        record of the file that hit it) when a write dooms all later ones."""
        from .lanes import Lanes

        jobs = list(jobs)
        self.destinations.open(self.stylizer, self.faces_on)
        if self.names is not None:
            self.names.inputs |= {output.real_path(j.path) for j in jobs if j.path is not None}
        if stdin is not None:
            self._stdin = stdin
        self.halt.clear()
        pipelined = self.options.pipelined and not self.options.dry_run
        lanes = min(LANES, self.stylizer.threads, len(jobs)) if pipelined else 1
        if lanes > 1:
            yield from Lanes(self, jobs, lanes).records()
            return
        for job in jobs:
            yield self.process(self.load(self.open(job)))

    def convert(self, job: Job) -> Record:
        """One job, start to end, no overlap: the simplest way in from Python.
        Raises errors.Fatal like run()."""
        self.destinations.open(self.stylizer, self.faces_on)
        if self.names is not None and job.path is not None:
            self.names.inputs.add(output.real_path(job.path))
        return self.process(self.load(self.open(job)))

    def close(self) -> None:
        self.destinations.close()

    @property
    def store_error(self) -> str | None:
        return self.destinations.store_error

    def claim(self, loaded: Loaded, fmt: str | None, size: tuple[int, int], suffix: str | None = None) -> None:
        self.destinations.claim(loaded, fmt, size, suffix)

    def from_cache(self, loaded: Loaded, size: tuple[int, int], source) -> bool:
        return self.destinations.from_cache(loaded, size, source, loaded.cancel or self.halt)

    # -- stages ------------------------------------------------------------
    def open(self, job: Job) -> Loaded:
        """probe -> output name -> exists? The image stays open for load()
        when there is work to do. Never raises for input problems."""
        loaded = Loaded(job, Record(input=job.input, style=self.options.style))
        rec = loaded.record
        units = 0
        with self.peaks.active(loaded), recorded(loaded):
            with rec.stage("probe"):
                source, nbytes, kind = _source(job, self.options, self._stdin)
                rec.input_bytes = nbytes
                if kind is not None:  # a video or an animation: frame by frame (clips.py)
                    units = clips.open_clip(self, loaded, kind, source)
                    im = None
                else:
                    im, pr = probe.open_image(source, nbytes, job.input, self.options.max_pixels)
                    loaded.identity = file_identity(job.path) if job.path is not None else None
            if im is not None:
                with _closed_on_error(im):
                    units = photos.open_photo(self, loaded, im, pr, source, reopener)
        if self.progress is not None:
            self.progress.planned(loaded, job.input, units)
        return loaded

    def load(self, loaded: Loaded) -> Loaded:
        """Decode an opened photo to its working size (a dry run: plan it instead).
        A clip is decoded frame by frame as it is converted."""
        if not loaded.pending:
            return loaded
        if self.options.dry_run:
            budget.plan_only(self, loaded)
        elif loaded.image is not None:
            with self.peaks.active(loaded), recorded(loaded, "decode"):
                photos.decode_photo(self, loaded)
        return loaded

    def process(self, loaded: Loaded) -> Record:
        """Stylize, enhance faces and write one loaded file; its record.
        Raises errors.Fatal after the record is complete when the write
        failed for good (disk full)."""
        try:
            if loaded.clip is not None:
                with self.peaks.active(loaded), recorded(loaded, "stylize"):
                    clips.convert_clip(self, loaded)
            if loaded.decoded is not None:
                with self.peaks.active(loaded), recorded(loaded, "stylize"):
                    photos.write_photo(self, loaded, photos.stylize_photo(self, loaded))
        finally:  # stopped (Cancelled) or not, an identical file waiting for this one may go on
            self.destinations.done(loaded)
        rec = self._finish(loaded)
        if loaded.fatal:
            raise Fatal(rec)
        return rec

    def _finish(self, loaded: Loaded) -> Record:
        rec = loaded.record
        if loaded.decoded is not None:
            loaded.decoded = None  # release the pixels now, not when the batch ends
            trim_malloc()  # and give them back: kept by the allocator they would count against the next files
        if self.names is None and rec.status == "skipped" and not self.options.dry_run:
            # `-o -`: the caller waits for a picture on stdout; none is an error
            rec.status, rec.error = "error", f"{rec.input}: nothing written to stdout ({rec.reason})"
        rec.seconds = round(sum(rec.timings.values()), 4)
        rec.peak_rss_mb = round(self.peaks.take(loaded) / 1e6, 1)
        rec.rss_method = self.peaks.method
        if self.progress is not None:
            self.progress.finished(loaded)
        if rec.status not in ("ok", "planned"):
            rec.output = None
        return rec

    # -- helpers -------------------------------------------------------------
    def advance(self, loaded: Loaded):
        """The engine's progress callback for this file, or None."""
        bar = self.progress
        return (lambda units: bar.advance(loaded, units)) if bar is not None else None

    def work(self, h: int, w: int) -> float:
        """The work of converting an h x w picture, in the progress bar's units."""
        work = getattr(self.stylizer, "work", None)
        return work(h, w, None) if work is not None else float(h * w)

    def footprint(self, loaded: Loaded) -> int:
        """What the file holds at once, for the memory ledger (from its header)."""
        if loaded.clip is not None:
            return clips.footprint(self, loaded)
        return budget.footprint(loaded.probe, self.options, self.stylizer, self.faces_on)

    def budget(self, loaded: Loaded, picture: int | None = None) -> int | None:
        """What the network may add for this file (see budget.room)."""
        if picture is None:
            picture = loaded.decoded.rgb.nbytes if loaded.decoded is not None else 0
        return budget.room(self.options.memory_limit, loaded.share, picture)


@contextmanager
def recorded(loaded: Loaded, stage: str | None = None):
    """The one translation of what a file trips over into its record:
    one bad file never stops the batch, whatever it trips."""
    rec, job = loaded.record, loaded.job
    if stage:
        loaded.stage = stage
    try:
        yield
    except Cancelled:
        raise
    except UnsupportedFormat as e:
        rec.status, rec.reason, rec.error = "skipped", e.reason, None
    except OutputExists:
        rec.status, rec.reason, rec.error = "skipped", "exists", None
    except InputError as e:
        rec.status, rec.error, rec.reason = "error", str(e), e.reason
    except OutputError as e:
        rec.status, rec.error, rec.reason = "error", str(e), "output"
        loaded.fatal = e.fatal
    except MemoryError:
        rec.status, rec.reason = "error", "out of memory"
        rec.error = f"{job.input}: out of memory in the {loaded.stage} stage"
    except OSError as e:  # on the output side: a name too long (ENAMETOOLONG), an odd folder
        rec.status, rec.reason = "error", "output"
        rec.error = f"{e.filename or job.input}: {e.strerror or e}"
    except Exception as e:
        text = first_line(e)
        if loaded.stage in ("stylize", "faces"):  # e.g. a picture the network cannot pad
            rec.status, rec.reason = "error", "network failed"
            rec.error = f"{job.input}: the network failed ({text})"
        else:
            rec.status, rec.reason = "error", "unexpected error"
            rec.error = f"{job.input}: unexpected {type(e).__name__} ({text})"
    else:
        return
    if loaded.image is not None:
        loaded.image.close()
    loaded.decoded = loaded.image = loaded.clip = None


def _source(job: Job, options: Options, stdin: bytes | None):
    """(what the probe reads: a path, or the bytes of stdin or a pipe; its
    size; its clip kind from sniff, None for a photo). Videos are streamed
    frame by frame, never held: --max-frames and --max-pixels bound them,
    not --max-file-size."""
    if job.path is None:
        if stdin is not None:
            source, n = probe.read_bytes(stdin, STDIN, options.max_file_size)
        else:
            source, n = probe.read_stdin(options.max_file_size)
        return source, n, sniff(source)
    kind = sniff(job.path) if job.path.is_file() else None  # a FIFO's bytes are sniffed once read
    source, n = probe.read_source(job.path, 1 << 62 if kind in VIDEO_KINDS else options.max_file_size)
    if isinstance(source, io.BytesIO):
        kind = sniff(source)
    return source, n, kind


def reopener(source):
    """A way to open the same picture again (faces re-read the original)."""
    if isinstance(source, io.BytesIO):
        data = source.getvalue()
        return lambda: Image.open(io.BytesIO(data), formats=probe.FORMATS)
    return lambda: Image.open(source, formats=probe.FORMATS)


@contextmanager
def _closed_on_error(im: Image.Image):
    try:
        yield
    except BaseException:
        im.close()
        raise

