"""Per-file timings, per-file peak RSS, and the two logs (human line, JSON Lines).

Peak RSS per file, by the best method the platform offers (the record's
`rss_method` says which measured it):
- "vmhwm": Linux keeps the process's high-water mark of resident memory (VmHWM
  in /proc/self/status), and writing "5" to /proc/self/clear_refs resets it to
  the current RSS. Files overlap (a batch has two in flight), so each time a
  file's stage starts or ends the mark is read, credited to every file whose
  stage is running, then reset: a file's peak is the process's peak over
  exactly the time its own stages ran. The resets hide earlier peaks from
  getrusage (and so from `/usr/bin/time -v`): `overall` keeps the true peak.
- "sampled" (/proc without a writable clear_refs: some containers) and
  "psutil" (no /proc: macOS, Windows): a thread samples the current RSS every
  5 ms while some file is active, and stops when none is, so a sampler never
  outlives the work (short spikes between two samples can be missed).
- "getrusage": neither of the above; ru_maxrss is the process's own peak since
  it started, never reset, so a file is credited with the peak so far.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_SAMPLE_S = 0.005


def read_kb(key: str) -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


_process = None


def _psutil_rss() -> int | None:
    global _process
    try:
        if _process is None or _process.pid != os.getpid():  # a forked child is another process
            import psutil

            _process = psutil.Process()
        return int(_process.memory_info().rss)
    except Exception:  # not installed, or the platform refuses: no figure, not a failure
        return None


def _rusage_peak() -> int | None:
    """The process's own peak RSS since it started (Unix). ru_maxrss is in KiB on
    Linux, in bytes on macOS."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024) or None


def rss_bytes() -> int:
    """Current resident set size of this process (0 where unknown)."""
    kb = read_kb("VmRSS:")
    if kb:
        return kb * 1024
    return _psutil_rss() or 0


def _reset_hwm() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_method() -> str | None:
    """Which peak-RSS method this process can use (see the module's doc); None: none."""
    if read_kb("VmHWM:") is not None and _reset_hwm():
        return "vmhwm"
    if read_kb("VmRSS:") is not None:
        return "sampled"
    if _psutil_rss() is not None:
        return "psutil"
    if _rusage_peak() is not None:
        return "getrusage"
    return None


def _sampler(ref: weakref.ref) -> None:
    """Sample while the tracker lives, is open and has an active file. Holds the
    tracker only weakly, so a forgotten tracker does not keep its thread."""
    while True:
        tracker = ref()
        if tracker is None:
            return
        now = rss_bytes()
        with tracker._lock:  # the same lock as _mark's reset: no sample lands in the wrong interval
            if tracker._closed or not any(tracker._active.values()):
                tracker._thread = None
                return
            tracker._sampled = max(tracker._sampled, now)
        del tracker
        time.sleep(_SAMPLE_S)


class PeakTracker:
    """Peak RSS over the interval of each key (a file), intervals may overlap.
    `method`: how it is measured (see the module's doc). close() (or `with`)
    stops its sampling thread at once; the thread also ends by itself whenever
    no file is active."""

    def __init__(self, method: str | None = None):
        self._lock = threading.Lock()
        self._peaks: dict[object, int] = {}
        self._active: dict[object, int] = {}
        self.overall = 0
        self.method = method or rss_method()
        self._sampled = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def exact(self) -> bool:
        return self.method == "vmhwm"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _mark(self) -> int:
        if self.method == "vmhwm":
            hwm = (read_kb("VmHWM:") or 0) * 1024
            _reset_hwm()
            return hwm
        if self.method == "getrusage":
            return _rusage_peak() or 0
        mark, self._sampled = max(self._sampled, rss_bytes()), 0
        # nothing resets the kernel's mark on these paths: the whole run's peak, spikes included
        self.overall = max(self.overall, _rusage_peak() or 0)
        return mark

    def _credit(self):
        mark = self._mark()
        self.overall = max(self.overall, mark)
        for k, n in self._active.items():
            if n:
                self._peaks[k] = max(self._peaks[k], mark)

    def _start_sampler(self):
        if self.method in ("sampled", "psutil") and self._thread is None and not self._closed:
            self._thread = threading.Thread(target=_sampler, args=(weakref.ref(self),),
                                            name="anime-cli-rss", daemon=True)
            self._thread.start()

    @contextmanager
    def active(self, key):
        """Count the process's peak toward `key` while this block runs. A file is
        active while loaded, stylized and written, not while it waits its turn."""
        with self._lock:
            self._credit()
            self._peaks.setdefault(key, rss_bytes())
            self._active[key] = self._active.get(key, 0) + 1
            self._start_sampler()
        try:
            yield
        finally:
            with self._lock:
                self._credit()
                self._active[key] -= 1

    def take(self, key) -> int:
        """Peak RSS in bytes over the active blocks of `key`; forgets `key`."""
        with self._lock:
            self._active.pop(key, None)
            return self._peaks.pop(key, 0)


# Characters a terminal acts on instead of showing: C0 (ESC starts the sequences that
# clear the screen or set the window title), DEL, C1 (0x9b is a one-byte CSI), the
# line and paragraph separators, and the bidi controls that make a name read
# backwards ("photo\u202egpj.exe"). Lone surrogates stand for bytes of a name that
# is not UTF-8 and cannot be encoded for the terminal.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = {0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _escape(c: str) -> str:
    o = ord(c)
    if c in _NAMED:
        return _NAMED[c]
    if o < 0x20 or 0x7F <= o <= 0x9F:
        return f"\\x{o:02x}"
    if 0xDC80 <= o <= 0xDCFF:  # os.fsdecode's stand-in for the byte o - 0xDC00
        return f"\\x{o - 0xDC00:02x}"
    return f"\\u{o:04x}"


_UNSAFE = {chr(o) for o in (*range(0x20), *range(0x7F, 0xA0), *_BIDI)}


def safe(text: object) -> str:
    """`text` as it may be shown on a terminal: every control character, bidi control
    and undecodable byte written as a visible escape (\\x1b, \\n, \\u202e, \\xe9).
    For human output only; the JSON Lines log keeps the exact name."""
    text = str(text)
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escape(c) if c in _UNSAFE or 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


# Why a face that was found was not re-rendered (Record.faces_kept's keys).
KEPT_LARGE = "already >= face size"  # its crop is at least --face-size: a re-render would blur it
KEPT_OUTSIDE = "outside the picture"  # its crop does not overlap the picture
KEPT_STOPPED = "batch stopped"

# Optional keys, written to the JSON line only when set (video inputs, dry runs).
_OPTIONAL = ("frames", "fps", "duration", "audio", "frames_per_second", "estimated_peak_mb")


@dataclass
class Record:
    """One input file's outcome: the JSON Lines log holds exactly these keys
    (those of _OPTIONAL only when not None)."""

    input: str
    output: str | None = None
    status: str = "error"  # ok | skipped | error | planned (--dry-run)
    reason: str | None = None  # for skipped
    error: str | None = None  # for error: the one-line message
    input_bytes: int | None = None
    input_format: str | None = None
    input_size: list[int] | None = None  # [w, h] from the header, upright
    decode_size: list[int] | None = None  # [w, h] actually decoded
    output_size: list[int] | None = None
    faces: int = 0  # faces found (>= --min-face)
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float | None = None
    plan: str | None = None  # how the network ran: "strips (~269 MiB)", "stream (..., 3.67 passes)"
    estimated_peak_mb: float | None = None  # --dry-run: the peak RSS the file is expected to reach
    notes: list[str] = field(default_factory=list)
    faces_enhanced: int = 0  # faces re-rendered
    faces_kept: dict[str, int] = field(default_factory=dict)  # found, not re-rendered: why -> how many
    style: str | None = None  # the style's name ("hayao"), or the --weights file's stem
    cached: bool = False  # the output came from the content cache, not the network
    rss_method: str | None = None  # how peak_rss_mb was measured: vmhwm, sampled, psutil, getrusage
    frames: int | None = None  # video: frames written
    fps: float | None = None
    duration: float | None = None  # video: seconds
    audio: int | None = None  # video: audio streams copied unchanged
    frames_per_second: float | None = None  # video: frames over the summed stage time

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 4)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in _OPTIONAL:
            if d[k] is None:
                del d[k]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def faces_text(self) -> str:
        """'faces 2', 'faces 3 (enhanced 2, kept 1: already >= face size)', or ''."""
        if not self.faces:
            return ""
        kept = sum(self.faces_kept.values())
        if not kept:
            return f"faces {self.faces}"
        why = ", ".join(f"{n} {r}" if len(self.faces_kept) > 1 else r for r, n in self.faces_kept.items())
        enhanced = f"enhanced {self.faces_enhanced}, " if self.faces_enhanced else ""
        return f"faces {self.faces} ({enhanced}kept {kept}: {why})"

    def human(self) -> str:
        """The same facts as the JSON line, for a person reading stderr: one line,
        every control character escaped (see safe)."""
        facts = [x for x in ("x".join(map(str, self.input_size or [])),
                             f"{self.input_bytes / 1e6:.1f} MB" if self.input_bytes is not None else "") if x]
        head = f"{self.status:<7} {self.input}  {' '.join(facts)}".rstrip()
        if self.status == "ok":
            out = "x".join(map(str, self.output_size or []))
            dec = f" (decoded {'x'.join(map(str, self.decode_size))})" if self.decode_size else ""
            stages = " ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
            extra = [x for x in (self.faces_text(), self._video_text(), "cached" if self.cached else "") if x]
            extra = "".join(f"  {x}" for x in extra)
            peak = f"  peak {self.peak_rss_mb:.0f} MB" if self.peak_rss_mb is not None else ""
            line = (f"{head}{dec} -> {out}{extra}  {stages}  total {self.seconds:.2f}s"
                    f"{peak}  -> {self.output}")
        elif self.status == "planned":
            out = "x".join(map(str, self.output_size))
            line = f"{head} -> {out}  plan {self.plan}  est. peak {self.estimated_peak_mb:.0f} MB  -> {self.output}"
        else:
            line = f"{head}  {self.error if self.status == 'error' else self.reason}"
        return safe(line)

    def _video_text(self) -> str:
        if self.frames is None:
            return ""
        rate = f" at {self.fps:.3g} fps" if self.fps else ""
        sound = f", {self.audio} audio stream{'s' if self.audio > 1 else ''} copied" if self.audio else ""
        speed = f", {self.frames_per_second:.2f} frames/s" if self.frames_per_second else ""
        return f"{self.frames} frames{rate}{sound}{speed}"


class JsonlLog:
    """Append-only JSON Lines file, flushed per record so an interrupted run keeps its lines."""

    def __init__(self, path):
        # A file name that is not UTF-8 (b"caf\xe9.jpg") reaches us as a lone surrogate
        # ("caf\udce9.jpg"); backslashreplace writes it as the JSON escape \udce9, so
        # the line stays valid UTF-8 JSON and json.loads + os.fsencode give the name back.
        self._f = open(path, "a", encoding="utf-8", errors="backslashreplace") if path else None

    error: str | None = None  # set when a write failed (disk full...): the log stops there

    def write(self, record: Record) -> bool:
        """Append one line; False (once, with .error set) when the log cannot be written."""
        if not self._f:
            return True
        try:
            self._f.write(record.to_json() + "\n")
            self._f.flush()
            return True
        except OSError as e:
            self.error = f"cannot write the log file {self._f.name} ({e.strerror or e})"
            self.close()
            return False

    def close(self) -> None:
        if self._f:
            f, self._f = self._f, None
            try:
                f.close()
            except OSError:
                pass

