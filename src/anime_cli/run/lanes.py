"""Two files in flight: each lane carries one file from probe to write.

The probes, output names and memory reservations happen one file at a time,
in input order, so names and the order of admission do not depend on timing.
Records come out in input order; a file's output is on disk only once its
record is reported, or gone if the batch stops first (outputs on disk are
exactly the files logged ok). The lanes share the cores (a pass of the
network runs on total // busy workers), so one file's single-threaded steps
(decode, face detection, encode and write) run beside the other's network
instead of leaving a core idle, and the last file gets every core.
"""

from __future__ import annotations

import threading
from typing import Iterator

from anime_cli.errors import Fatal
from anime_cli.inputs.discover import Job
from anime_cli.logs.telemetry import Record, rss_bytes

from .budget import RESERVE, Ledger


class Lanes:
    """conv: the stages (open, load, process, footprint), the batch's halt
    flag and memory limit, and the style whose cores the lanes share."""

    def __init__(self, conv, jobs: list[Job], lanes: int):
        self.conv, self.jobs, self.n = conv, jobs, lanes
        self.cond = threading.Condition()
        self.dispatch = threading.Lock()  # probe, name and reserve one file at a time
        self.next = 0  # the next file a lane takes
        self.limit = len(jobs) - 1  # the last file that may be written: lowered by a disk-full error
        self.done: dict[int, object] = {}  # index -> kinds.File, or the exception that ended its lane
        limit = conv.options.memory_limit
        self.ledger = Ledger(limit - rss_bytes() - RESERVE if limit else None)

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
                if result.fatal:
                    raise Fatal(result.record)
                reported = i + 1
                yield result.record
        finally:
            if reported < len(self.jobs):  # stopped early: Ctrl-C, disk full, or the caller stopped reading
                self.conv.halt.set()
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
            if not isinstance(result, BaseException) and result.record.status == "ok" and result.dest is not None:
                result.dest.unlink(missing_ok=True)

    def _lane(self) -> None:
        conv = self.conv
        while True:
            with self.dispatch:
                with self.cond:
                    i = self.next
                    if i > self.limit or conv.halt.is_set():
                        return
                    self.next += 1
                loaded = grant = None
                try:
                    loaded = conv.open(self.jobs[i])
                    loaded.cancel = Stop(self, i)
                    if loaded.kind is not None:
                        grant = self.ledger.acquire(conv.footprint(loaded), loaded.cancel)
                except BaseException as e:  # stopped while waiting for memory, or a bug: the main thread raises it
                    if loaded is not None and loaded.kind is not None:
                        loaded.kind.close()
                    self._put(i, e)
                    return
            try:
                if grant is not None and not grant.alone:
                    loaded.share = grant.bytes
                with conv.stylizer.cores.busy():
                    conv.process(conv.load(loaded))
            except Fatal:  # disk full: no file after this one may be written
                loaded.cancel.set()
            except BaseException as e:  # Cancelled (never reported), or a bug: the main thread raises it
                self._put(i, e)
                return
            finally:
                if loaded.kind is not None:
                    loaded.kind.close()
                self.ledger.release(grant)
            self._put(i, loaded)

    def _put(self, i: int, result) -> None:
        with self.cond:
            self.done[i] = result
            self.cond.notify_all()


class Stop:
    """Whether file i must stop: the batch was stopped, or a disk-full error
    came at an earlier file. set(): this file's write hit a disk-full error."""

    def __init__(self, lanes: Lanes, i: int):
        self.lanes, self.i = lanes, i

    def is_set(self) -> bool:
        return self.lanes.conv.halt.is_set() or self.i > self.lanes.limit

    def set(self) -> None:
        with self.lanes.cond:
            self.lanes.limit = min(self.lanes.limit, self.i)
