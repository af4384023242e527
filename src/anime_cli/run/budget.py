"""The memory budget: what each file may hold, reserved before it is decoded.

A file's footprint is computed from its header (each kind's footprint()); the files in
flight reserve theirs from a `Ledger` holding what --memory-limit leaves after
the models, so together they stay inside the limit. A file too big to share
waits until it is alone and then has the whole budget, within which the
engine plans (streaming if it must).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from anime_cli.errors import Cancelled
from anime_cli.logs.telemetry import rss_bytes

# What the process needs beyond the files' own reservations: encoder buffers,
# the allocator's slack, Python's own churn.
RESERVE = 96 * 1024**2


def room(limit: int, share: int | None, picture: int) -> int | None:
    """What the network may add for a file: its reservation (share) less its
    own `picture` bytes when it shares the budget; alone (share None), what
    the limit leaves now. None: no limit."""
    if not limit:
        return None
    if share is not None:
        return max(0, share - picture)
    return max(0, limit - rss_bytes() - RESERVE)


def estimated_peak_mb(footprint: int) -> float:
    """A dry run's expected peak for a file of this footprint, in MB."""
    return round((rss_bytes() + footprint) / 1e6, 1)


@dataclass
class Grant:
    bytes: int
    alone: bool  # no other file holds memory: this one may use the whole budget


class Ledger:
    """Memory reserved by the files in flight, out of `total` (None: no
    limit). A file waits until its footprint is free; one that does not fit
    beside the others waits until it is alone and then has the whole budget
    to itself. Nothing runs beside it."""

    def __init__(self, total: int | None):
        self.total = self.free = total
        self.holders = 0
        self.cond = threading.Condition()

    def acquire(self, want: int, stop) -> Grant:
        """Block until `want` bytes are free (or the caller is alone); raises
        Cancelled once stop.is_set()."""
        with self.cond:
            while True:
                if stop.is_set():
                    raise Cancelled()
                if self.total is None or want <= self.free:
                    got = Grant(want, alone=False)
                    break
                if self.holders == 0:
                    got = Grant(self.free, alone=True)
                    break
                self.cond.wait()
            self.holders += 1
            if self.total is not None:
                self.free -= got.bytes
            return got

    def release(self, grant: Grant | None) -> None:
        if grant is None:
            return
        with self.cond:
            self.holders -= 1
            if self.total is not None:
                self.free += grant.bytes
            self.cond.notify_all()

    def wake(self) -> None:
        """Let waiters look at their stop flag again."""
        with self.cond:
            self.cond.notify_all()
