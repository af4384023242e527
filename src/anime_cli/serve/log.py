"""One record per conversion request: the batch's JSON Lines schema
(telemetry.Record) plus who asked, how long it waited and what it was
answered; and the human line on stderr."""

from __future__ import annotations

import sys
import threading
from dataclasses import asdict, dataclass, replace

from anime_cli.logs.telemetry import JsonlLog, Record, safe


@dataclass
class ServedRecord(Record):
    request_id: str = ""
    client: str | None = None
    queue_wait: float | None = None  # seconds between admission and the start of its conversion
    http_status: int = 0

    @classmethod
    def of(cls, rec: Record, **extra) -> "ServedRecord":
        return cls(**asdict(rec), **extra)

    def human(self) -> str:
        wait = f" waited {self.queue_wait:.2f}s" if self.queue_wait else ""
        line = Record.human(replace(self, output=self.output or "response"))
        return f"{line}  [{self.http_status} {self.request_id} {safe(self.client)}{wait}]"


class RequestLog:
    def __init__(self, path, quiet: bool = False):
        self.jsonl = JsonlLog(path)
        self.quiet = quiet
        self.lock = threading.Lock()

    def write(self, rec: ServedRecord) -> None:
        with self.lock:
            self.jsonl.write(rec)
            if not self.quiet or rec.status == "error" and rec.http_status >= 500:
                try:
                    print(rec.human(), file=sys.stderr, flush=True)
                except (OSError, ValueError):
                    pass

    def close(self) -> None:
        self.jsonl.close()
