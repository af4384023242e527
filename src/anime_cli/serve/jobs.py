"""POST /v1/jobs: work that outlives its request, and its results.

A job's result is kept in a file of the server's private folder that has no
name (it dies with the process: a SIGKILL leaves nothing behind), written
whole before the job says `done`, so no reader ever sees part of one. Results
are kept `ttl` seconds after they finish and, all together, within `max_bytes`
(the oldest go first); a job past either is forgotten (404).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(eq=False)
class Job:
    id: str
    status: str = "queued"  # queued | running | done | error
    http_status: int = 202
    error: str | None = None
    record: dict | None = None
    media_type: str | None = None
    suffix: str = ""
    size: int = 0
    created: float = field(default_factory=time.time)
    finished: float | None = None
    file: object | None = field(default=None, repr=False)
    ticket: object | None = field(default=None, repr=False)  # admission.Ticket: whether it has started

    def view(self) -> dict:
        d = {"id": self.id, "status": self.status, "created": round(self.created, 3)}
        if self.finished is not None:
            d["finished"] = round(self.finished, 3)
        if self.status == "done":
            d["result"] = f"/v1/jobs/{self.id}/result"
            d["bytes"] = self.size
        if self.error:
            d["error"], d["http_status"] = self.error, self.http_status
        if self.record is not None:
            d["record"] = self.record
        return d

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self.file.fileno(), n, offset)


class Jobs:
    def __init__(self, folder: Path, ttl: float, max_bytes: int):
        self.folder, self.ttl, self.max_bytes = folder, ttl, max_bytes
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}

    def new(self) -> Job:
        job = Job(uuid.uuid4().hex)
        with self.lock:
            self._sweep()
            self.jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            self._sweep()
            return self.jobs.get(job_id)

    def done(self, job: Job, data: bytes, media_type: str | None, suffix: str, record: dict) -> None:
        """Store the result, then say done."""
        f = tempfile.TemporaryFile(dir=self.folder)
        f.write(data)
        f.flush()
        with self.lock:
            job.file, job.size, job.media_type, job.suffix, job.record = f, len(data), media_type, suffix, record
            job.finished, job.status, job.http_status = time.time(), "done", 200
            self._sweep()

    def failed(self, job: Job, status: int, message: str, record: dict | None) -> None:
        with self.lock:
            job.status, job.http_status, job.error, job.record = "error", status, message, record
            job.finished = time.time()

    def started(self, job: Job) -> None:
        with self.lock:
            if job.status == "queued":
                job.status = "running"

    def _sweep(self) -> None:
        now = time.time()
        for j in [j for j in self.jobs.values() if j.finished is not None and now - j.finished > self.ttl]:
            self._forget(j)
        kept = sorted((j for j in self.jobs.values() if j.file is not None), key=lambda j: j.finished)
        total = sum(j.size for j in kept)
        while kept and total > self.max_bytes:
            j = kept.pop(0)
            total -= j.size
            self._forget(j)

    def _forget(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.file is not None:
            job.file.close()
            job.file = None

    def close(self) -> None:
        with self.lock:
            for j in list(self.jobs.values()):
                self._forget(j)
