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
from typing import Iterable, Iterator

from anime_cli.engine import trim_malloc
from anime_cli.errors import Cancelled, Fatal, InputError, OutputError, OutputExists, UnsupportedFormat, first_line
from anime_cli.folder import files
from anime_cli.folder.destinations import Destinations
from anime_cli.inputs import probe, read
from anime_cli.inputs.discover import STDIN, Job
from anime_cli.inputs.sniff import VIDEO_KINDS, sniff
from anime_cli.kinds.clips import Clip
from anime_cli.kinds.kind import Context, File
from anime_cli.kinds.photo import Photo
from anime_cli.logs.telemetry import PeakTracker, Record
from anime_cli.options import Options
from anime_cli.weights import catalog as weights

from . import budget

LANES = 2  # files in flight in a batch


class Converter:
    def __init__(self, stylizer, options: Options, detector=None, stdin: bytes | None = None, use_store: bool = True,
                 peaks: PeakTracker | None = None, stills_only: bool = False):
        self.stylizer = stylizer
        self.stills_only = stills_only  # a video or an animation is an error (the server converts pictures)
        self.options = options
        self.detector = detector
        # Converters of one process share a tracker: each new one would reset the kernel's mark (vmhwm)
        self.peaks = peaks or PeakTracker()
        self.destinations = Destinations(options, use_store)
        self.names = self.destinations.names  # None: the picture goes to stdout
        self.progress = None  # an observer of work (progress.WorkProgress), set by the caller
        self._stdin = stdin  # the bytes of '-' (None: read sys.stdin when it comes)
        # Set when the batch stops early (disk full, Ctrl-C): no output may appear after it.
        self.halt = threading.Event()
        self.context = Context(options, stylizer, detector if options.face_enhance else None,
                               self.destinations if self.names is not None else None, self.halt)

    @property
    def faces_on(self) -> bool:
        return self.context.detector is not None

    # -- the batch ---------------------------------------------------------
    def run(self, jobs: Iterable[Job], stdin: bytes | None = None) -> Iterator[Record]:
        """Records for `jobs`, in their order. Raises errors.Fatal (with the
        record of the file that hit it) when a write dooms all later ones."""
        from .lanes import Lanes

        jobs = list(jobs)
        self._begin(jobs)
        if stdin is not None:
            self._stdin = stdin
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
        self._begin([job])
        return self.process(self.load(self.open(job)))

    def close(self) -> None:
        self.destinations.close()

    def _begin(self, jobs: list[Job]) -> None:
        self.destinations.open(self._weights_sha(), _precision(self.stylizer), self.faces_on)
        if self.names is not None:
            self.names.inputs |= {files.real_path(j.path) for j in jobs if j.path is not None}
        self.halt.clear()

    def _weights_sha(self) -> str:
        """What the cache keys name the network by: its weights' sha256."""
        opts = self.options
        try:
            return weights.weights_sha256(opts.style, opts.weights)
        except (KeyError, OSError):  # a stylizer of the caller's own, not a style of the manifest
            return f"{type(self.stylizer).__qualname__}:{opts.style}"

    # -- stages ------------------------------------------------------------
    def open(self, job: Job) -> File:
        """probe -> the kind of media -> output name -> exists, or cached? The
        file keeps its kind for load() when there is work to do. Never raises
        for input problems."""
        f = File(job, Record(input=job.input, style=self.options.style), self.halt)
        f.room = lambda picture: budget.room(self.options.memory_limit, f.share, picture)
        if self.progress is not None:
            bar = self.progress
            f.advance = lambda units: bar.advance(f, units)
        rec = f.record
        with self.peaks.active(f), recorded(f):
            with rec.stage("probe"):
                source, nbytes, kind = _source(job, self.options, self._stdin)
                rec.input_bytes = nbytes
                if kind is not None and self.stills_only:
                    raise InputError(f"{job.input}: a video or an animation ({kind}); convert it with "
                                     "anime-cli convert", "not a still picture")
                if kind is not None:  # a video or an animation: frame by frame
                    f.kind = Clip.open(self.context, f, kind, source)
                else:
                    im, pr = probe.open_image(source, nbytes, job.input, self.options.max_pixels)
            if kind is None:
                f.kind = Photo.open(self.context, f, im, pr, source)
        if self.progress is not None:
            self.progress.planned(f, job.input, f.kind.units if f.kind is not None else 0)
        return f

    def load(self, f: File) -> File:
        """Decode an opened photo to its working size (a dry run: plan it instead)."""
        if f.kind is None:
            return f
        if self.options.dry_run:
            self._plan(f)
        else:
            with self.peaks.active(f), recorded(f, "decode"):
                f.kind.load()
        return f

    def process(self, f: File) -> Record:
        """Stylize, enhance faces and write one loaded file; its record.
        Raises errors.Fatal after the record is complete when the write
        failed for good (disk full)."""
        try:
            if f.kind is not None:
                with self.peaks.active(f), recorded(f, "stylize"):
                    f.kind.convert()
        finally:  # stopped (Cancelled) or not, an identical file waiting for this one may go on
            self.destinations.done(f)
        rec = self._finish(f)
        if f.fatal:
            raise Fatal(rec)
        return rec

    def footprint(self, f: File) -> int:
        """What the file holds at once, for the memory ledger (from its header)."""
        return f.kind.footprint()

    def _plan(self, f: File) -> None:
        """A dry run's record: what converting would do, from the header alone
        (the output's path and size, the engine's plan, the peak it expects:
        the plan the run takes under its limit, alone)."""
        rec = f.record
        rec.plan = f.kind.plan()
        rec.estimated_peak_mb = budget.estimated_peak_mb(f.kind.planned_peak())
        rec.status, rec.output_size = "planned", list(f.kind.size)
        rec.output = str(f.dest) if f.dest is not None else "-"
        f.kind.close()
        f.kind = None

    def _finish(self, f: File) -> Record:
        rec = f.record
        if f.kind is not None:
            f.kind.close()  # release the pixels now, not when the batch ends
            f.kind = None
            trim_malloc()  # and give them back: kept by the allocator they would count against the next files
        if self.names is None and rec.status == "skipped" and not self.options.dry_run:
            # `-o -`: the caller waits for a picture on stdout; none is an error
            rec.status, rec.error = "error", f"{rec.input}: nothing written to stdout ({rec.reason})"
        rec.seconds = round(sum(rec.timings.values()), 4)
        rec.peak_rss_mb = round(self.peaks.take(f) / 1e6, 1)
        rec.rss_method = self.peaks.method
        if self.progress is not None:
            self.progress.finished(f)
        if rec.status not in ("ok", "planned"):
            rec.output = None
        return rec


@contextmanager
def recorded(loaded: File, stage: str | None = None):
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
    if loaded.kind is not None:
        loaded.kind.close()
        loaded.kind = None


def _source(job: Job, options: Options, stdin: bytes | None):
    """(what the probe reads: a path, or the bytes of stdin or a pipe; its
    size; its clip kind from sniff, None for a photo). Videos are streamed
    frame by frame, never held: --max-frames and --max-pixels bound them,
    not --max-file-size."""
    if job.path is None:
        if stdin is not None:
            source, n = read.read_bytes(stdin, STDIN, options.max_file_size)
        else:
            source, n = read.read_stdin(options.max_file_size)
        return source, n, sniff(source)
    kind = sniff(job.path) if job.path.is_file() else None  # a FIFO's bytes are sniffed once read
    source, n = read.read_source(job.path, 1 << 62 if kind in VIDEO_KINDS else options.max_file_size)
    if isinstance(source, io.BytesIO):
        kind = sniff(source)
    return source, n, kind


def _precision(stylizer) -> str:
    """The precision the network really runs at ("auto" differs by CPU)."""
    engine = getattr(stylizer, "engine", None)
    return getattr(engine, "precision", None) or getattr(stylizer, "precision", "fp32")
