"""GET /metrics: the counters in Prometheus' text format (version 0.0.4)."""

from __future__ import annotations

import threading
from collections import Counter

from anime_cli.logs.telemetry import read_kb, rss_bytes


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = Counter()  # HTTP status -> answered requests (conversions and jobs)
        self.admitted = 0
        self.refused = Counter()  # reason -> refused requests
        self.stage_seconds = Counter()  # stage -> seconds
        self.stage_count = Counter()
        self.queue_wait = 0.0
        self.converted = 0

    def answered(self, status: int, record=None, queue_wait: float | None = None) -> None:
        with self.lock:
            self.requests[status] += 1
            if record is not None and record.status == "ok":
                self.converted += 1
                for stage, s in record.timings.items():
                    self.stage_seconds[stage] += s
                    self.stage_count[stage] += 1
            if queue_wait is not None:
                self.queue_wait += queue_wait

    def admit(self) -> None:
        with self.lock:
            self.admitted += 1

    def refuse(self, reason: str) -> None:
        with self.lock:
            self.refused[reason] += 1

    def text(self, depth: int, in_flight: int, peak_bytes: int, ledger_free: int | None) -> str:
        out = []

        def metric(name, kind, help_, samples):
            out.append(f"# HELP anime_cli_{name} {help_}")
            out.append(f"# TYPE anime_cli_{name} {kind}")
            for labels, value in samples:
                lab = "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}" if labels else ""
                out.append(f"anime_cli_{name}{lab} {value}")

        with self.lock:
            metric("queue_depth", "gauge", "Requests waiting for memory.", [({}, depth)])
            metric("in_flight", "gauge", "Conversions running.", [({}, in_flight)])
            metric("admitted_total", "counter", "Requests admitted to the queue.", [({}, self.admitted)])
            metric("refused_total", "counter", "Requests refused, by reason.",
                   [({"reason": r}, n) for r, n in sorted(self.refused.items())])
            metric("requests_total", "counter", "Conversion requests answered, by HTTP status.",
                   [({"status": str(s)}, n) for s, n in sorted(self.requests.items())])
            metric("stage_seconds_total", "counter", "Seconds spent in each stage of the conversions that succeeded.",
                   [({"stage": s}, round(v, 4)) for s, v in sorted(self.stage_seconds.items())])
            metric("stage_runs_total", "counter", "Conversions that ran each stage.",
                   [({"stage": s}, n) for s, n in sorted(self.stage_count.items())])
            metric("queue_wait_seconds_total", "counter", "Seconds requests waited in the queue.",
                   [({}, round(self.queue_wait, 4))])
        metric("resident_memory_bytes", "gauge", "Resident set size now.", [({}, rss_bytes())])
        metric("peak_resident_memory_bytes", "gauge", "The process's peak resident set size.", [({}, peak_bytes)])
        if ledger_free is not None:
            metric("ledger_free_bytes", "gauge", "Memory the ledger can still grant.", [({}, ledger_free)])
        return "\n".join(out) + "\n"


def peak_rss(tracker) -> int:
    """The whole process's peak: the tracker's marks (it resets the kernel's
    high-water mark as files start and end) and the mark since the last reset."""
    hwm = (read_kb("VmHWM:") or 0) * 1024
    return max(tracker.overall, hwm, rss_bytes())


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
