"""The batch: discover -> probe -> decode -> stylize -> enhance faces -> write -> log.

`Converter` holds the loaded models and the options and turns jobs into
records, in input order. By default two files are in flight (lanes.Lanes),
sharing the cores and the memory budget (budget.Ledger); `--sequential` and
`Converter.convert` carry one file at a time. Whatever a file trips over ends
in its record (see `_recorded`), never in an exception out of the batch,
except a disk-full error, which stops it (errors.Fatal).
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from . import budget, clips, metadata, output, probe
from .names import Names
from .sniff import VIDEO_KINDS, sniff
from .decode import Decoded, decode, target_size
from .discover import STDIN, Job
from .faces import file_identity
from .errors import Cancelled, Fatal, InputError, OutputError, OutputExists, UnsupportedFormat
from .options import Options
from .telemetry import PeakTracker, Record, rss_bytes
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
    metadata: metadata.Metadata | None = None  # with --keep-metadata: what goes into the output
    cache_key: str | None = None  # this file computes that cache entry (store.Outputs), then done()
    clip: object | None = None  # a video or an animation (media.Clip): converted frame by frame
    source: object | None = None  # what the clip is read from (a path, or stdin's bytes)

    @property
    def pending(self) -> bool:
        """Probed, with work still to do."""
        return self.image is not None or self.clip is not None
    fatal: bool = False  # its write failed so that no later write can succeed


class Converter:
    def __init__(self, stylizer, options: Options, detector=None, stdin: bytes | None = None, use_store: bool = True):
        self.stylizer = stylizer
        self.options = options
        self.detector = detector
        self.peaks = PeakTracker()
        self.names = (Names(options.output_dir, set(), options.name, options.style)
                      if options.output_dir is not None else None)
        self.progress = None  # an observer of work (progress.WorkProgress), set by the caller
        self.outputs = None  # the output folder's names and cache (store.Outputs), opened by run()
        self._use_store = use_store
        self.store_error: str | None = None  # why the output folder's database could not be used
        self._stdin = stdin  # the bytes of '-' (None: read sys.stdin when it comes)
        import threading

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
        self.open_store()
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
        self.open_store()
        if self.names is not None and job.path is not None:
            self.names.inputs.add(output.real_path(job.path))
        return self.process(self.load(self.open(job)))

    def open_store(self) -> None:
        """The output folder's database: stable names across runs, the content
        cache. Not for a dry run (it writes nothing) nor for stdout."""
        if self.outputs is None and self.names is not None and self._use_store and not self.options.dry_run:
            from .store import Outputs, StoreError, weights_sha256

            opts = self.options
            try:
                sha = weights_sha256(opts.style, opts.weights)
            except (KeyError, OSError):  # a stylizer of the caller's own, not a style of the manifest
                sha = f"{type(self.stylizer).__qualname__}:{opts.style}"
            try:
                self.outputs = Outputs(opts.output_dir, sha, self._precision(), opts, faces=self.faces_on)
            except StoreError as e:  # a full disk, a read-only folder: names in memory, no cache
                self.store_error = str(e)
                self._use_store = False
                return
            self.names.store = self.outputs.store

    def close(self) -> None:
        if self.outputs is not None:
            self.outputs.close()
            self.outputs = self.names.store = None

    def _precision(self) -> str:
        engine = getattr(self.stylizer, "engine", None)
        return getattr(engine, "precision", None) or getattr(self.stylizer, "precision", "fp32")

    # -- stages ------------------------------------------------------------
    def open(self, job: Job) -> Loaded:
        """probe -> output name -> exists? The image stays open for load()
        when there is work to do. Never raises for input problems."""
        loaded = Loaded(job, Record(input=job.input, style=self.options.style))
        rec = loaded.record
        units = 0
        with self.peaks.active(loaded), self._recorded(loaded):
            with rec.stage("probe"):
                source, nbytes = self._source(job)
                rec.input_bytes = nbytes
                kind = sniff(source)
                if kind is not None:  # a video or an animation: frame by frame (clips.py)
                    units = clips.open_clip(self, loaded, kind, source)
                    im = None
                else:
                    im, pr = probe.open_image(source, nbytes, job.input, self.options.max_pixels)
                    loaded.identity = file_identity(job.path) if job.path is not None else None
            if im is not None:
                units = self._open_photo(loaded, im, pr, source)
        if self.progress is not None:
            self.progress.planned(loaded, job.input, units)
        return loaded

    def _open_photo(self, loaded: Loaded, im, pr, source) -> float:
        """Output format and name of a probed photo; its work in progress units.
        The image stays open for load()."""
        rec, opts = loaded.record, self.options
        with _closed_on_error(im):
            loaded.probe = pr
            rec.input_format = pr.format
            rec.input_size = list(pr.oriented_size)
            loaded.fmt = output.output_format(pr.format, pr.has_alpha or "transparency" in im.info, opts.format)
            w, h = target_size(pr.oriented_size, opts.max_side)
            if self.names is not None:
                self.claim(loaded, loaded.fmt, (w, h))
                if self.from_cache(loaded, (w, h), source):
                    im.close()
                    return 0
            loaded.reopen = self._reopener(source)
            if opts.keep_metadata:
                loaded.metadata = metadata.read(im)
        loaded.image = im
        return self._work(h, w)

    def claim(self, loaded: Loaded, fmt: str | None, size: tuple[int, int], suffix: str | None = None) -> None:
        """The file's output path (or an OutputExists/OutputError)."""
        dest = loaded.dest = self.names.claim(loaded.job, fmt, size, suffix)
        if dest.is_dir():
            raise OutputError(f"{dest}: cannot write (a folder is in the way)")
        if _taken(dest) and not self.options.overwrite:
            raise OutputExists(f"{dest}: exists")

    def from_cache(self, loaded: Loaded, size: tuple[int, int], source) -> bool:
        """Place the output of identical earlier work (same content, style and
        options: store.cache_key) instead of computing it: True when done.
        Otherwise this file is the one computing its key (process() ends it)."""
        if self.outputs is None:
            return False
        data = source.getvalue() if isinstance(source, io.BytesIO) else None
        key = self.outputs.key(loaded.job.path if data is None else None, data=data)
        hit = self.outputs.cached(key, cancel=loaded.cancel or self.halt)
        if hit is None:
            loaded.cache_key = key
            return False
        from .store import place

        try:
            place(hit, loaded.dest, self.options.overwrite)
        except FileExistsError:
            raise OutputExists(f"{loaded.dest}: exists") from None
        rec = loaded.record
        rec.status, rec.cached, rec.output, rec.output_size = "ok", True, str(loaded.dest), list(size)
        return True

    def load(self, loaded: Loaded) -> Loaded:
        """Decode an opened photo to its working size (a dry run: plan it instead).
        A clip is decoded frame by frame as it is converted."""
        if not loaded.pending:
            return loaded
        if self.options.dry_run:
            return self._plan(loaded)
        if loaded.clip is not None:
            return loaded
        rec = loaded.record
        with self.peaks.active(loaded), self._recorded(loaded, "decode"), loaded.image as im:
            loaded.image = None
            with rec.stage("decode"):
                loaded.decoded = decode(im, loaded.probe, self.options.max_side, loaded.job.input)
            rec.decode_size = list(loaded.decoded.decode_size)
            rec.notes += loaded.decoded.notes
        return loaded

    def process(self, loaded: Loaded) -> Record:
        """Stylize, enhance faces and write one loaded file; its record.
        Raises errors.Fatal after the record is complete when the write
        failed for good (disk full)."""
        try:
            if loaded.clip is not None:
                with self.peaks.active(loaded), self._recorded(loaded, "stylize"):
                    clips.convert_clip(self, loaded)
            if loaded.decoded is not None:
                with self.peaks.active(loaded), self._recorded(loaded, "stylize"):
                    self._write(loaded, self._stylize(loaded))
        finally:  # stopped (Cancelled) or not, an identical file waiting for this one may go on
            if loaded.cache_key is not None:
                done = loaded.dest if loaded.record.status == "ok" else None
                self.outputs.done(loaded.cache_key, done)  # after the rename: complete on disk
                loaded.cache_key = None
        rec = self._finish(loaded)
        if loaded.fatal:
            raise Fatal(rec)
        return rec

    def _plan(self, loaded: Loaded) -> Loaded:
        """What converting would do, from the header alone: the output's path
        and size, the engine's plan and the peak memory it expects."""
        rec = loaded.record
        if loaded.image is not None:
            loaded.image.close()
            loaded.image = None
        size = loaded.clip.size if loaded.clip is not None else loaded.probe.oriented_size
        w, h = target_size(size, self.options.max_side)
        room = self._budget(loaded)
        rec.plan = self.stylizer.plan(h, w, room)
        if loaded.clip is not None:
            rec.plan = f"{loaded.clip.frames} frames, each {rec.plan}"
            loaded.clip = None
        rec.estimated_peak_mb = round((rss_bytes() + self.footprint(loaded)) / 1e6, 1)
        rec.status, rec.output_size = "planned", [w, h]
        rec.output = str(loaded.dest) if loaded.dest is not None else STDIN
        return loaded

    def _stylize(self, loaded: Loaded) -> np.ndarray:
        rec, rgb = loaded.record, loaded.decoded.rgb
        with rec.stage("stylize"):
            rendered = self.stylizer.render(rgb, budget_bytes=self._budget(loaded), cancel=loaded.cancel,
                                            progress=self._advance(loaded))
        rec.plan = rendered.plan_text
        out = rendered.image
        if self.faces_on:
            loaded.stage = "faces"
            with rec.stage("faces"):
                out, report = self._faces(loaded, out)
            rec.faces, rec.faces_enhanced, rec.faces_kept = report.found, report.enhanced, report.kept
        return out

    def _faces(self, loaded: Loaded, stylized: np.ndarray):
        from .faces import FileSource, enhance_faces

        d = loaded.decoded
        src = FileSource(loaded.reopen, loaded.probe, d.rgb, self._face_decode_pixels(loaded),
                         identity=loaded.identity, path=loaded.job.path)
        kw = {"face_size": self.options.face_px()}
        if self.options.min_face is not None:
            kw["min_face"] = self.options.min_face
        return enhance_faces(self.stylizer, d.rgb, stylized, self.detector, src, cancel=loaded.cancel, **kw)

    def _write(self, loaded: Loaded, image: np.ndarray) -> None:
        rec = loaded.record
        loaded.stage = "write"
        with rec.stage("write"):
            im = output.encode(image, loaded.decoded.alpha, loaded.fmt)
            extra = metadata.save_args(loaded.metadata, loaded.fmt, im.size, self.options.keep_gps)
            if loaded.dest is None:
                output.write_stdout(im, loaded.fmt, self.options.quality, extra)
                rec.output = STDIN
            else:
                output.write_atomic(im, loaded.dest, loaded.fmt, self.options.quality, self.options.overwrite,
                                    abort=loaded.cancel or self.halt, extra=extra)
                rec.output = str(loaded.dest)
        rec.status = "ok"
        rec.output_size = [image.shape[1], image.shape[0]]

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

    @contextmanager
    def _recorded(self, loaded: Loaded, stage: str | None = None):
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
            text = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
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

    # -- helpers -------------------------------------------------------------
    def _source(self, job: Job):
        if job.path is None:
            if self._stdin is not None:
                return probe.read_bytes(self._stdin, STDIN, self.options.max_file_size)
            return probe.read_stdin(self.options.max_file_size)
        limit = self.options.max_file_size
        if job.path.is_file() and sniff(job.path) in VIDEO_KINDS:
            limit = 1 << 62  # streamed frame by frame, never held: --max-frames and --max-pixels bound it
        return probe.read_source(job.path, limit)

    @staticmethod
    def _reopener(source):
        if isinstance(source, io.BytesIO):
            data = source.getvalue()
            return lambda: Image.open(io.BytesIO(data), formats=probe.FORMATS)
        return lambda: Image.open(source, formats=probe.FORMATS)

    def _advance(self, loaded: Loaded):
        """The engine's progress callback for this file, or None."""
        bar = self.progress
        return (lambda units: bar.advance(loaded, units)) if bar is not None else None

    def _work(self, h: int, w: int) -> float:
        """The work of converting an h x w picture, in the progress bar's units."""
        work = getattr(self.stylizer, "work", None)
        return work(h, w, None) if work is not None else float(h * w)

    def footprint(self, loaded: Loaded) -> int:
        if loaded.clip is not None:
            return clips.footprint(self, loaded)
        return budget.footprint(loaded.probe, self.options, self.stylizer, self.faces_on)

    def _budget(self, loaded: Loaded) -> int | None:
        return self._budget_for(loaded, loaded.decoded.rgb.nbytes if loaded.decoded is not None else 0)

    def _budget_for(self, loaded: Loaded, picture: int) -> int | None:
        """What the network may add for this file: its reservation less its own
        `picture` bytes when it shares the budget; alone, what the limit leaves now."""
        if not self.options.memory_limit:
            return None
        if loaded.share is not None:
            return max(0, loaded.share - picture)
        return max(0, self.options.memory_limit - rss_bytes() - budget.RESERVE)

    def _face_decode_pixels(self, loaded: Loaded) -> int:
        if loaded.share is not None:
            return 10**12  # the file's reservation covers the whole original (see budget.footprint)
        room = self._budget(loaded)
        return 10**12 if room is None else max(1, room // 8)


def _taken(dest: Path) -> bool:
    """Whether something already sits at `dest` (a file, a link, even a
    folder: the write will then fail with a clear error, not skip)."""
    return dest.is_file() or (dest.is_symlink() and not dest.is_dir())


@contextmanager
def _closed_on_error(im: Image.Image):
    try:
        yield
    except BaseException:
        im.close()
        raise

