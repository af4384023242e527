"""The batch: discover -> probe -> decode -> stylize -> enhance faces -> write -> log.

`Converter` holds the loaded models and the options, turns jobs into records,
and overlaps work: while the network stylizes file i, a thread probes and
decodes file i+1 and another encodes and writes file i-1 (Pillow and torch
both release the GIL), the load:proc:save pipelining of batch upscalers.
Records come out in input order.
"""

from __future__ import annotations

import io
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from . import output, probe
from .decode import Decoded, decode, target_size
from .discover import STDIN, Job
from .errors import InputError, OutputError, UnsupportedFormat
from .telemetry import PeakTracker, Record, rss_bytes

DEFAULT_MAX_SIDE = 1280
DEFAULT_MEMORY_LIMIT = 1024**3
# What a file needs beyond the stylizer, besides its own pixels: encoder buffers, the
# prefetched neighbour, Python's own churn.
_RESERVE = 96 * 1024**2
_BIG_DECODE = 64 * 1024**2


@dataclass
class Options:
    output_dir: Path | None = Path("anime-out")  # None: write to stdout
    max_side: int = DEFAULT_MAX_SIDE
    format: str = "auto"
    quality: int = 95
    overwrite: bool = False
    face_enhance: bool = True
    min_face: int | None = None  # None: the face module's default
    face_size: int = 512
    max_file_size: int = probe.DEFAULT_MAX_FILE_SIZE
    max_pixels: int = probe.DEFAULT_MAX_PIXELS
    memory_limit: int = DEFAULT_MEMORY_LIMIT  # bytes of RSS for the whole process; 0: none
    pipelined: bool = True


@dataclass(eq=False)  # identity: a key for the peak tracker
class _Loaded:
    job: Job
    record: Record
    dest: Path | None = None
    fmt: str | None = None
    decoded: Decoded | None = None
    reopen: Callable | None = None
    probe: probe.Probe | None = None


class Converter:
    def __init__(self, stylizer, options: Options, detector=None):
        self.stylizer = stylizer
        self.options = options
        self.detector = detector
        self.peaks = PeakTracker()
        self._claimed: dict[Path, str] = {}  # output path -> the input that took it
        # Set while the network is idle. A big neighbour waits for it before decoding,
        # so its pixels never add to the network's own peak.
        self._network_idle = threading.Event()
        self._network_idle.set()
        self._inputs: set[Path] = set()
        # Set when the batch stops early (disk full, Ctrl-C): no output may appear after it.
        self._halt = threading.Event()

    # -- the batch ---------------------------------------------------------
    def run(self, jobs: Iterable[Job], stdin: bytes | None = None) -> Iterator[Record]:
        jobs = list(jobs)
        self._inputs = {output.real_path(j.path) for j in jobs if j.path is not None}
        self._stdin = stdin
        if not self.options.pipelined:
            for job in jobs:
                yield self._process(self._load(job))
            return
        with ThreadPoolExecutor(1, "load") as loader, ThreadPoolExecutor(1, "save") as saver:
            ahead: Future | None = loader.submit(self._load, jobs[0]) if jobs else None
            writing: deque[tuple[_Loaded, Future]] = deque()
            try:
                for i in range(len(jobs)):
                    loaded = ahead.result()
                    ahead = loader.submit(self._load, jobs[i + 1]) if i + 1 < len(jobs) else None
                    self._network_idle.clear()
                    try:
                        image = self._stylize(loaded)
                    finally:
                        self._network_idle.set()
                    writing.append((loaded, saver.submit(self._write, loaded, image)))
                    del image
                    while writing and (writing[0][1].done() or len(writing) > 1):
                        yield self._collect_first(writing)
                while writing:
                    yield self._collect_first(writing)
            except BaseException:
                self._halt.set()
                if ahead is not None:
                    ahead.cancel()
                for loaded, fut in writing:
                    if not fut.cancel():
                        self._unwrite(loaded, fut)
                raise

    def convert(self, job: Job) -> Record:
        """One job, start to end, no overlap: the simplest way in from Python."""
        return self._process(self._load(job))

    # -- stages ------------------------------------------------------------
    def _load(self, job: Job) -> _Loaded:
        """probe -> output name -> exists? -> decode. Never raises for input problems."""
        loaded = _Loaded(job, Record(input=job.input))
        with self.peaks.active(loaded):
            return self._load_inside(loaded)

    def _load_inside(self, loaded: _Loaded) -> _Loaded:
        job, rec = loaded.job, loaded.record
        try:
            with rec.stage("probe"):
                source, nbytes = self._source(job)
                rec.input_bytes = nbytes
                im, pr = probe.open_image(source, nbytes, job.input, self.options.max_pixels)
            with im:
                loaded.probe = pr
                rec.input_format = pr.format
                rec.input_size = list(pr.oriented_size)
                fmt = output.output_format(pr.format, pr.has_alpha or _palette_alpha(im), self.options.format)
                loaded.fmt = fmt
                if self.options.output_dir is not None:
                    loaded.dest = self._claim(job, fmt)
                    if loaded.dest.exists() and not self.options.overwrite:
                        rec.status, rec.reason = "skipped", "exists"
                        rec.output = None
                        return loaded
                if self._decode_bytes(pr) > _BIG_DECODE:
                    self._network_idle.wait()
                with rec.stage("decode"):
                    loaded.decoded = decode(im, pr, self.options.max_side, job.input)
            rec.decode_size = list(loaded.decoded.decode_size)
            rec.notes += loaded.decoded.notes
            loaded.reopen = self._reopener(job, source)
        except UnsupportedFormat as e:
            rec.status, rec.reason = "skipped", e.reason
            rec.error = None
        except InputError as e:
            rec.status, rec.error, rec.reason = "error", str(e), e.reason
        except OutputError as e:
            rec.status, rec.error, rec.reason = "error", str(e), "output"
        except OSError as e:  # on the output side: a name too long (ENAMETOOLONG), an odd folder
            loaded.decoded = None
            rec.status, rec.reason = "error", "output"
            rec.error = f"{e.filename or job.input}: {e.strerror or e}"
        except Exception as e:  # one bad file never stops the batch, whatever it trips
            loaded.decoded = None
            rec.status, rec.reason = "error", "unexpected error"
            rec.error = f"{job.input}: unexpected {type(e).__name__} ({str(e).splitlines()[0][:120] if str(e) else ''})"
        return loaded

    def _stylize(self, loaded: _Loaded) -> np.ndarray | None:
        """The network (and faces) on a loaded file; None when there is nothing to do."""
        d, rec = loaded.decoded, loaded.record
        if d is None:
            return None
        with self.peaks.active(loaded):
            return self._stylize_inside(loaded)

    def _stylize_inside(self, loaded: _Loaded) -> np.ndarray | None:
        d, rec = loaded.decoded, loaded.record
        try:
            with rec.stage("stylize"):
                out = self.stylizer.stylize(d.rgb, budget_bytes=self._budget())
            if self.options.face_enhance and self.detector is not None:
                with rec.stage("faces"):
                    out, rec.faces = self._faces(loaded, out)
            return out
        except MemoryError:
            rec.status, rec.error, rec.reason = "error", f"{rec.input}: out of memory in the network", "out of memory"
            return None
        except Exception as e:  # e.g. a picture too small for the network's padding: this file fails, not the batch
            text = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            rec.status, rec.error, rec.reason = "error", f"{rec.input}: the network failed ({text})", "network failed"
            return None

    def _faces(self, loaded: _Loaded, stylized: np.ndarray):
        from .faces import FileSource, enhance_faces

        d = loaded.decoded
        src = FileSource(loaded.reopen, loaded.probe, d.rgb, self._face_decode_pixels())
        kw = {"face_size": self.options.face_size}
        if self.options.min_face is not None:
            kw["min_face"] = self.options.min_face
        return enhance_faces(self.stylizer, d.rgb, stylized, self.detector, src, **kw)

    def _write(self, loaded: _Loaded, image: np.ndarray | None) -> None:
        rec = loaded.record
        if image is None:
            return
        with self.peaks.active(loaded), rec.stage("write"):
            alpha = loaded.decoded.alpha
            im = output.encode(image, alpha, loaded.fmt, self.options.quality)
            if loaded.dest is None:
                output.write_stdout(im, loaded.fmt, self.options.quality)
                rec.output = STDIN
            else:
                output.write_atomic(im, loaded.dest, loaded.fmt, self.options.quality, self.options.overwrite,
                                    abort=self._halt)
                rec.output = str(loaded.dest)
        rec.status = "ok"
        rec.output_size = [image.shape[1], image.shape[0]]

    def _process(self, loaded: _Loaded) -> Record:
        """Stylize and write one loaded file in this thread: the sequential path."""
        return self._settle(loaded, lambda: self._write(loaded, self._stylize(loaded)))

    def _collect_first(self, writing: deque) -> Record:
        loaded, fut = writing[0]
        record = self._settle(loaded, fut.result)  # still listed while it waits: an interrupt undoes it
        writing.popleft()
        return record

    def _unwrite(self, loaded: _Loaded, fut: Future) -> None:
        """The batch stopped (Ctrl-C, disk full) with this write in flight: its record
        will never be reported, so its output must not stay either. Outputs on disk
        are exactly the files logged ok."""
        try:
            fut.result()
        except Exception:
            return  # failed, or stopped by the halt before its rename: nothing was written
        if loaded.record.status == "ok" and loaded.dest is not None:
            loaded.dest.unlink(missing_ok=True)

    def _settle(self, loaded: _Loaded, write: Callable[[], None]) -> Record:
        """The file's record once `write` has run; a write error is the file's
        error, and a fatal one (disk full) stops the batch."""
        try:
            write()
        except OutputError as e:
            loaded.record.status, loaded.record.error, loaded.record.reason = "error", str(e), "output"
            if getattr(e, "fatal", False):
                raise _Fatal(self._finish(loaded)) from None
        return self._finish(loaded)

    def _finish(self, loaded: _Loaded) -> Record:
        rec = loaded.record
        loaded.decoded = None  # release the pixels now, not when the batch ends
        rec.seconds = round(sum(rec.timings.values()), 4)
        rec.peak_rss_mb = round(self.peaks.take(loaded) / 1e6, 1)
        if rec.status != "ok":
            rec.output = None
        return rec

    # -- helpers -------------------------------------------------------------
    def _source(self, job: Job):
        if job.path is None:
            data = self._stdin if self._stdin is not None else sys.stdin.buffer.read(self.options.max_file_size + 1)
            return probe.read_bytes(data, STDIN, self.options.max_file_size)
        return probe.read_source(job.path, self.options.max_file_size)

    def _reopener(self, job: Job, source):
        if isinstance(source, io.BytesIO):
            data = source.getvalue()
            return lambda: Image.open(io.BytesIO(data), formats=probe.FORMATS)
        return lambda: Image.open(source, formats=probe.FORMATS)

    def _claim(self, job: Job, fmt: str) -> Path:
        """The output path for `job`: its relative path with the output format's
        suffix. Two inputs never share an output: the later one (in walk order)
        gets its source suffix added (photo.png -> photo_png.jpg), then _2, _3..."""
        rel = job.rel.with_name(output.output_name(job.rel.name, fmt))
        dest = self.options.output_dir / rel
        if dest in self._claimed and self._claimed[dest] != job.input:
            src_ext = job.rel.suffix.lstrip(".").lower()
            stem, suffix = dest.stem, dest.suffix
            candidates = ([f"{stem}_{src_ext}{suffix}"] if src_ext and f".{src_ext}" != suffix.lower() else [])
            candidates += [f"{stem}_{n}{suffix}" for n in range(2, 10_000)]
            dest = next(dest.with_name(c) for c in candidates if dest.with_name(c) not in self._claimed)
        if output.real_path(dest) in self._inputs or (job.path is not None and output.same_file(dest, job.path)):
            raise OutputError(f"{job.input}: output {dest} would overwrite an input file; choose another -o")
        self._claimed[dest] = job.input
        return dest

    def _budget(self) -> int | None:
        if not self.options.memory_limit:
            return None
        return max(0, self.options.memory_limit - rss_bytes() - _RESERVE)

    def _decode_bytes(self, pr: probe.Probe) -> int:
        """What decoding `pr` may hold at once: the decoded picture (JPEG: DCT-scaled
        to at most twice the target) and its converted copy, 4 bytes a pixel each."""
        w, h = pr.size
        if pr.format == "JPEG":
            tw, th = target_size(pr.size, self.options.max_side)
            w, h = min(w, 2 * tw), min(h, 2 * th)
        return 8 * w * h

    def _face_decode_pixels(self) -> int:
        budget = self._budget()
        return 10**12 if budget is None else max(1, budget // 8)


class _Fatal(Exception):
    """A write failed in a way that dooms every later write (disk full)."""

    def __init__(self, record: Record):
        super().__init__(record.error)
        self.record = record


def _palette_alpha(im: Image.Image) -> bool:
    return "transparency" in im.info

