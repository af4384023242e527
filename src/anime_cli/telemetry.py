"""Per-file timings, per-file peak RSS, and the two logs (human line, JSON Lines).

Peak RSS per file: Linux keeps the process's high-water mark of resident memory
(VmHWM in /proc/self/status), and writing "5" to /proc/self/clear_refs resets
it to the current RSS. Files overlap (a batch has two in flight), so each
time a file's stage starts or ends the mark is read, credited to every file
whose stage is running, then reset: a file's peak is the process's peak over
exactly the time its own stages ran. Where clear_refs cannot be written, a
sampling thread reads VmRSS every 5 ms instead.
The resets hide earlier peaks from getrusage (and so from `/usr/bin/time -v`):
`overall` keeps the true peak of the whole run.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _read_kb(key: str) -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """Current resident set size of this process (0 where unknown)."""
    kb = _read_kb("VmRSS:")
    return kb * 1024 if kb else 0


def _reset_hwm() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakTracker:
    """Peak RSS over the interval of each key (a file), intervals may overlap."""

    def __init__(self):
        self._lock = threading.Lock()
        self._peaks: dict[object, int] = {}
        self._active: dict[object, int] = {}
        self.overall = 0
        self.exact = _read_kb("VmHWM:") is not None and _reset_hwm()
        self._sampled = 0
        if not self.exact:
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            self._sampled = max(self._sampled, rss_bytes())
            time.sleep(0.005)

    def _mark(self) -> int:
        if self.exact:
            hwm = (_read_kb("VmHWM:") or 0) * 1024
            _reset_hwm()
            return hwm
        mark, self._sampled = max(self._sampled, rss_bytes()), 0
        return mark

    def _credit(self):
        mark = self._mark()
        self.overall = max(self.overall, mark)
        for k, n in self._active.items():
            if n:
                self._peaks[k] = max(self._peaks[k], mark)

    @contextmanager
    def active(self, key):
        """Count the process's peak toward `key` while this block runs. A file is
        active while loaded, stylized and written, not while it waits its turn."""
        with self._lock:
            self._credit()
            self._peaks.setdefault(key, rss_bytes())
            self._active[key] = self._active.get(key, 0) + 1
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


@dataclass
class Record:
    """One input file's outcome: the JSON Lines log holds exactly these keys."""

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
    faces: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float | None = None
    plan: str | None = None  # how the network ran: "strips (~269 MiB)", "stream (..., 3.67 passes)"
    estimated_peak_mb: float | None = None  # --dry-run: the peak RSS the file is expected to reach
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 4)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    def human(self) -> str:
        """The same facts as the JSON line, for a person reading stderr."""
        facts = [x for x in ("x".join(map(str, self.input_size or [])),
                             f"{self.input_bytes / 1e6:.1f} MB" if self.input_bytes is not None else "") if x]
        head = f"{self.status:<7} {self.input}  {' '.join(facts)}".rstrip()
        if self.status == "ok":
            out = "x".join(map(str, self.output_size))
            dec = "x".join(map(str, self.decode_size))
            stages = " ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
            faces = f"  faces {self.faces}" if self.faces else ""
            return (f"{head} (decoded {dec}) -> {out}{faces}  {stages}  total {self.seconds:.2f}s"
                    f"  peak {self.peak_rss_mb:.0f} MB  -> {self.output}")
        if self.status == "planned":
            out = "x".join(map(str, self.output_size))
            return f"{head} -> {out}  plan {self.plan}  est. peak {self.estimated_peak_mb:.0f} MB  -> {self.output}"
        why = self.error if self.status == "error" else self.reason
        return f"{head}  {why}"


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


def safe(text: str) -> str:  # TEMP until the ux branch lands
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))
