"""Admission by memory: the batch's ledger, in front of it a bounded queue.

Every request is probed from its header and its footprint planned as the
batch plans a file's (anime_cli.single, budget.footprint) before it joins the
queue. One dispatcher takes the queue strictly in order of arrival: the
request at its head waits until the ledger has its footprint (or, too big to
share, until it is alone and then has the whole budget), and nothing behind
it overtakes it. So a huge picture is never starved by small ones, and small
ones wait behind it for at most one conversion. A request waiting in the
queue holds no pixel: its body is on disk (body.py) and only its header is
open. Conversions run in worker threads, never on the event loop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from anime_cli.run.budget import RESERVE, Ledger
from anime_cli.errors import Cancelled
from anime_cli.logs.telemetry import rss_bytes


@dataclass(eq=False)
class Ticket:
    """One admitted request. `finished(ticket)` is called once, from a worker
    thread (or from drain() with `refused` set), when it has ended."""

    pending: object  # single.Pending
    finished: Callable[["Ticket"], None]
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None
    ended: float | None = None
    refused: str | None = None  # why it never ran (the server stopped)

    @property
    def queue_wait(self) -> float:
        return round((self.started or self.ended or time.monotonic()) - self.enqueued, 4)


class Admission:
    def __init__(self, memory_limit: int, queue: int, workers: int):
        self.ledger = Ledger(memory_limit - rss_bytes() - RESERVE if memory_limit else None)
        self.max_queue = queue
        self.workers = max(1, workers)
        self.queue: deque[Ticket] = deque()
        self.running: set[Ticket] = set()
        self.cond = threading.Condition()
        self.stop = threading.Event()  # no more admissions
        self.seconds: deque[float] = deque(maxlen=32)  # recent conversions' times, for Retry-After
        self._dispatcher = threading.Thread(target=self._dispatch, name="anime-cli-admission", daemon=True)
        self._dispatcher.start()

    @property
    def depth(self) -> int:
        return len(self.queue)

    @property
    def in_flight(self) -> int:
        return len(self.running)

    def full(self) -> bool:
        return len(self.queue) >= self.max_queue

    def submit(self, ticket: Ticket) -> bool:
        """Join the queue; False when it is full or the server is stopping."""
        with self.cond:
            if self.stop.is_set() or self.full():
                return False
            self.queue.append(ticket)
            self.cond.notify_all()
            return True

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free."""
        with self.cond:
            per = sorted(self.seconds)[len(self.seconds) // 2] if self.seconds else 5.0
            ahead = len(self.queue) + len(self.running)
        return max(1, min(600, round(per * ahead / self.workers)))

    def drain(self) -> list[Ticket]:
        """Stop admitting; the queued tickets, refused (their finished() called)."""
        with self.cond:
            self.stop.set()
            left = list(self.queue)
            self.queue.clear()
            self.cond.notify_all()
        self.ledger.wake()
        for t in left:
            t.refused, t.ended = "the server is shutting down", time.monotonic()
            t.pending.close()
            t.finished(t)
        return left

    def join(self, timeout: float) -> bool:
        """Wait for the conversions in flight; False if some are still running."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    # -- the dispatcher: the head of the queue, in order -------------------
    def _dispatch(self) -> None:
        while True:
            with self.cond:
                while not self.stop.is_set() and (not self.queue or len(self.running) >= self.workers):
                    self.cond.wait()
                if self.stop.is_set():
                    return
                head = self.queue[0]
            try:
                grant = self.ledger.acquire(head.pending.footprint, self.stop)
            except Cancelled:  # stopping: drain() answers the queue
                return
            with self.cond:
                if not self.queue or self.queue[0] is not head:  # drained meanwhile
                    self.ledger.release(grant)
                    return
                self.queue.popleft()
                self.running.add(head)
                head.started = time.monotonic()
            threading.Thread(target=self._work, args=(head, grant), name="anime-cli-convert", daemon=True).start()

    def _work(self, ticket: Ticket, grant) -> None:
        try:
            ticket.pending.run(grant)
        finally:
            self.ledger.release(grant)
            ticket.ended = time.monotonic()
            with self.cond:
                self.running.discard(ticket)
                self.seconds.append(ticket.ended - ticket.started)
                self.cond.notify_all()
            ticket.finished(ticket)
