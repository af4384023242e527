"""The batch: discover -> probe -> decode -> stylize -> enhance faces -> write -> log.

`Converter` holds the loaded models and the options and turns jobs into
records, in input order. A batch keeps two files in flight (`_Lanes`): each
lane carries one file from probe to write while the other lane works on the
next, and the two share the cores (tiles.Cores). So one file's single-threaded
steps (decode, face detection, encode and write) run beside the other's
network instead of leaving a core idle, and the last file gets every core.
Their memory is reserved up front (`_Ledger`), so the two together stay within
--memory-limit; a file too big to share runs alone, on the whole budget.
"""

from __future__ import annotations

import io
import sys
import threading
from contextlib import contextmanager
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
from .tiles import Cancelled, trim_malloc

DEFAULT_MAX_SIDE = 1280
DEFAULT_MEMORY_LIMIT = 1024**3
# What the process needs beyond the files' own reservations: encoder buffers,
# the allocator's slack, Python's own churn.
_RESERVE = 96 * 1024**2
LANES = 2  # files in flight in a batch


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
    pipelined: bool = True  # two files in flight (False: --sequential)


@dataclass(eq=False)  # identity: a key for the peak tracker
class _Loaded:
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


class Converter:
    def __init__(self, stylizer, options: Options, detector=None):
        self.stylizer = stylizer
        self.options = options
        self.detector = detector
        self.peaks = PeakTracker()
        self._claimed: dict[Path, str] = {}  # output path -> the input that took it
        self._inputs: set[Path] = set()
        # Set when the batch stops early (disk full, Ctrl-C): no output may appear after it.
        self._halt = threading.Event()

    # -- the batch ---------------------------------------------------------
    def run(self, jobs: Iterable[Job], stdin: bytes | None = None) -> Iterator[Record]:
        jobs = list(jobs)
        self._inputs = {output.real_path(j.path) for j in jobs if j.path is not None}
        self._stdin = stdin
        self._halt.clear()
        lanes = min(LANES, self.stylizer.threads, len(jobs)) if self.options.pipelined else 1
        if lanes > 1:
            yield from _Lanes(self, jobs, lanes).records()
            return
        for job in jobs:
            yield self._process(self._load(job))

    def convert(self, job: Job) -> Record:
        """One job, start to end, no overlap: the simplest way in from Python."""
        return self._process(self._load(job))

    # -- stages ------------------------------------------------------------
    def _load(self, job: Job) -> _Loaded:
        return self._decode(self._open(job))

    def _open(self, job: Job) -> _Loaded:
        """probe -> output name -> exists? The image stays open for _decode when
        there is work to do. Never raises for input problems."""
        loaded = _Loaded(job, Record(input=job.input))
        rec = loaded.record
        with self.peaks.active(loaded), self._recorded(loaded):
            with rec.stage("probe"):
                source, nbytes = self._source(job)
                rec.input_bytes = nbytes
                im, pr = probe.open_image(source, nbytes, job.input, self.options.max_pixels)
            with _closed_on_error(im):
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
                        im.close()
                        return loaded
                loaded.reopen = self._reopener(job, source)
            loaded.image = im
        return loaded

    def _decode(self, loaded: _Loaded) -> _Loaded:
        if loaded.image is None:
            return loaded
        rec = loaded.record
        with self.peaks.active(loaded), self._recorded(loaded), loaded.image as im:
            loaded.image = None
            with rec.stage("decode"):
                loaded.decoded = decode(im, loaded.probe, self.options.max_side, loaded.job.input)
            rec.decode_size = list(loaded.decoded.decode_size)
            rec.notes += loaded.decoded.notes
        return loaded

    @contextmanager
    def _recorded(self, loaded: _Loaded):
        """Input problems (and output-name ones) become the file's record, never
        an exception: one bad file never stops the batch, whatever it trips."""
        rec, job = loaded.record, loaded.job
        try:
            yield
        except UnsupportedFormat as e:
            rec.status, rec.reason = "skipped", e.reason
            rec.error = None
        except InputError as e:
            rec.status, rec.error, rec.reason = "error", str(e), e.reason
        except OutputError as e:
            rec.status, rec.error, rec.reason = "error", str(e), "output"
        except OSError as e:  # on the output side: a name too long (ENAMETOOLONG), an odd folder
            rec.status, rec.reason = "error", "output"
            rec.error = f"{e.filename or job.input}: {e.strerror or e}"
        except Exception as e:
            rec.status, rec.reason = "error", "unexpected error"
            rec.error = f"{job.input}: unexpected {type(e).__name__} ({str(e).splitlines()[0][:120] if str(e) else ''})"
        else:
            return
        loaded.decoded = loaded.image = None

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
                out = self.stylizer.stylize(d.rgb, budget_bytes=self._budget(loaded), cancel=loaded.cancel)
            rec.plan = getattr(self.stylizer, "last_plan", None)
            if self.options.face_enhance and self.detector is not None:
                with rec.stage("faces"):
                    out, rec.faces = self._faces(loaded, out)
            return out
        except Cancelled:
            raise
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
        src = FileSource(loaded.reopen, loaded.probe, d.rgb, self._face_decode_pixels(loaded))
        kw = {"face_size": self.options.face_size}
        if self.options.min_face is not None:
            kw["min_face"] = self.options.min_face
        return enhance_faces(self.stylizer, d.rgb, stylized, self.detector, src, cancel=loaded.cancel, **kw)

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
                                    abort=loaded.cancel or self._halt)
                rec.output = str(loaded.dest)
        rec.status = "ok"
        rec.output_size = [image.shape[1], image.shape[0]]

    def _process(self, loaded: _Loaded) -> Record:
        """Stylize and write one loaded file; its record. A write error is the
        file's error, and a fatal one (disk full) stops the batch."""
        try:
            self._write(loaded, self._stylize(loaded))
        except OutputError as e:
            loaded.record.status, loaded.record.error, loaded.record.reason = "error", str(e), "output"
            if getattr(e, "fatal", False):
                raise _Fatal(self._finish(loaded)) from None
        return self._finish(loaded)

    def _finish(self, loaded: _Loaded) -> Record:
        rec = loaded.record
        if loaded.decoded is not None:
            loaded.decoded = None  # release the pixels now, not when the batch ends
            trim_malloc()  # and give them back: kept by the allocator they would count against the next files
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

    def _budget(self, loaded: _Loaded) -> int | None:
        """What the network may add for this file: its reservation less its own
        picture when it shares the budget; alone, what the limit leaves now."""
        if not self.options.memory_limit:
            return None
        if loaded.share is not None:
            return max(0, loaded.share - loaded.decoded.rgb.nbytes)
        return max(0, self.options.memory_limit - rss_bytes() - _RESERVE)

    def _footprint(self, loaded: _Loaded) -> int:
        """The most a file holds at once, from its header: its decode; or its
        picture (working copy, output, the encoder's copy) and the network on
        its fastest plan; or, for faces, the picture, one face render and the
        original decoded again for the crops (8 bytes a pixel, as _decode_bytes)."""
        pr = loaded.probe
        w, h = target_size(pr.size, self.options.max_side)
        px = 4 * w * h  # bytes of the picture, alpha included
        need = max(self._decode_bytes(pr), 3 * px + self.stylizer.fastest_bytes(h, w))
        if self.options.face_enhance and self.detector is not None:
            side = self.options.face_size
            need = max(need, 3 * px + self.stylizer.fastest_bytes(side, side) + 8 * pr.size[0] * pr.size[1])
        return need

    def _decode_bytes(self, pr: probe.Probe) -> int:
        """What decoding `pr` may hold at once: the decoded picture (JPEG: DCT-scaled
        to at most twice the target) and its converted copy, 4 bytes a pixel each."""
        w, h = pr.size
        if pr.format == "JPEG":
            tw, th = target_size(pr.size, self.options.max_side)
            w, h = min(w, 2 * tw), min(h, 2 * th)
        return 8 * w * h

    def _face_decode_pixels(self, loaded: _Loaded) -> int:
        if loaded.share is not None:
            return 10**12  # the file's reservation covers the whole original (see _footprint)
        budget = self._budget(loaded)
        return 10**12 if budget is None else max(1, budget // 8)


class _Lanes:
    """A batch with files in flight side by side. Each lane takes the next file
    in input order and carries it from probe to write; the probes, output names
    and memory reservations happen one file at a time, in input order, so names
    and the order of admission do not depend on timing. Records come out in
    input order; a file's output is on disk only once its record is reported,
    or gone if the batch stops first (outputs on disk are exactly the files
    logged ok)."""

    def __init__(self, conv: Converter, jobs: list[Job], lanes: int):
        self.conv, self.jobs, self.n = conv, jobs, lanes
        self.cond = threading.Condition()
        self.dispatch = threading.Lock()  # probe, name and reserve one file at a time
        self.next = 0  # the next file a lane takes
        self.limit = len(jobs) - 1  # the last file that may be written: lowered by a disk-full error
        self.done: dict[int, tuple[_Loaded, bool] | BaseException] = {}
        limit = conv.options.memory_limit
        self.ledger = _Ledger(limit - rss_bytes() - _RESERVE if limit else None)

    def records(self) -> Iterator[Record]:
        lanes = [threading.Thread(target=self._lane, name=f"lane-{k}", daemon=True) for k in range(self.n)]
        for t in lanes:
            t.start()
        reported = 0
        try:
            for i in range(len(self.jobs)):
                with self.cond:
                    while i not in self.done:
                        self.cond.wait()
                    result = self.done.pop(i)
                if isinstance(result, BaseException):
                    raise result
                loaded, fatal = result
                if fatal:
                    raise _Fatal(loaded.record)
                reported = i + 1
                yield loaded.record
        finally:
            if reported < len(self.jobs):  # stopped early: Ctrl-C, disk full, or the caller stopped reading
                self.conv._halt.set()
                self.ledger.wake()
            while True:
                try:
                    self._wind_up(lanes)
                    break
                except KeyboardInterrupt:  # a second Ctrl-C must not cut the clean-up short
                    continue

    def _wind_up(self, lanes: list[threading.Thread]) -> None:
        """Wait for the lanes (a stopped file stops within a strip of the
        network), then undo the outputs of files finished but never reported."""
        for t in lanes:
            t.join()
        for result in self.done.values():
            if not isinstance(result, BaseException):
                loaded = result[0]
                if loaded.record.status == "ok" and loaded.dest is not None:
                    loaded.dest.unlink(missing_ok=True)

    def _lane(self) -> None:
        conv = self.conv
        while True:
            with self.dispatch:
                with self.cond:
                    i = self.next
                    if i > self.limit or conv._halt.is_set():
                        return
                    self.next += 1
                loaded = grant = None
                try:
                    loaded = conv._open(self.jobs[i])
                    loaded.cancel = _Stop(self, i)
                    if loaded.image is not None:
                        grant = self.ledger.acquire(conv._footprint(loaded), loaded.cancel)
                except BaseException as e:  # stopped while waiting for memory, or a bug: the main thread raises it
                    if loaded is not None and loaded.image is not None:
                        loaded.image.close()
                    self._put(i, e)
                    return
            fatal = False
            try:
                if grant is not None and not grant.alone:
                    loaded.share = grant.bytes
                with conv.stylizer.cores.busy():
                    conv._process(conv._decode(loaded))
            except _Fatal:  # disk full: no file after this one may be written
                fatal = True
                loaded.cancel.set()
            except BaseException as e:  # Cancelled (never reported), or a bug: the main thread raises it
                self._put(i, e)
                return
            finally:
                if loaded.image is not None:
                    loaded.image.close()
                self.ledger.release(grant)
            self._put(i, (loaded, fatal))

    def _put(self, i: int, result) -> None:
        with self.cond:
            self.done[i] = result
            self.cond.notify_all()


class _Stop:
    """Whether file i must stop: the batch was stopped, or a disk-full error
    came at an earlier file. set(): this file's write hit a disk-full error."""

    def __init__(self, lanes: _Lanes, i: int):
        self.lanes, self.i = lanes, i

    def is_set(self) -> bool:
        return self.lanes.conv._halt.is_set() or self.i > self.lanes.limit

    def set(self) -> None:
        with self.lanes.cond:
            self.lanes.limit = min(self.lanes.limit, self.i)


@dataclass
class _Grant:
    bytes: int
    alone: bool  # no other file holds memory: this one may use the whole budget


class _Ledger:
    """Memory reserved by the files in flight, out of what the limit leaves
    after the models (total; None: no limit). A file waits until its
    footprint is free; one that does not fit beside the others waits until it
    is alone and then has the whole budget to itself (the network then plans
    within it, streaming if it must). Nothing runs beside it."""

    def __init__(self, total: int | None):
        self.total = self.free = total
        self.holders = 0
        self.cond = threading.Condition()

    def acquire(self, want: int, stop) -> _Grant:
        with self.cond:
            while True:
                if stop.is_set():
                    raise Cancelled()
                if self.total is None or want <= self.free:
                    got = _Grant(want, alone=False)
                    break
                if self.holders == 0:
                    got = _Grant(self.free, alone=True)
                    break
                self.cond.wait()
            self.holders += 1
            if self.total is not None:
                self.free -= got.bytes
            return got

    def release(self, grant: _Grant | None) -> None:
        if grant is None:
            return
        with self.cond:
            self.holders -= 1
            if self.total is not None:
                self.free += grant.bytes
            self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


@contextmanager
def _closed_on_error(im: Image.Image):
    try:
        yield
    except BaseException:
        im.close()
        raise


class _Fatal(Exception):
    """A write failed in a way that dooms every later write (disk full)."""

    def __init__(self, record: Record):
        super().__init__(record.error)
        self.record = record


def _palette_alpha(im: Image.Image) -> bool:
    return "transparency" in im.info

