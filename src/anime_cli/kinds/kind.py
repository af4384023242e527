"""What every media kind is given, and the one interface it implements.

A kind (kinds.photo.Photo, kinds.clips.Clip) is opened from a probed input by
its class's `open(ctx, f, ...)`, which names the output and looks in the
cache: None means there is nothing left to do (skipped, or placed from the
cache). Otherwise the batch reserves `footprint()` bytes, then calls `load()`
(a photo decodes; a clip decodes frame by frame later), and `convert()`, or
`plan()` and `planned_peak()` for a dry run. `close()` lets go of whatever the kind still holds.

A kind sees a `Context` (the batch's options, style, detector, output folder)
and its own `File`, never the batch around it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from anime_cli.inputs.discover import Job
from anime_cli.logs.telemetry import Record
from anime_cli.options import Options


@dataclass
class Context:
    """What a batch shares with every file it converts."""

    options: Options
    style: object  # stylize.StyleModel
    detector: object | None  # faces.FaceDetector; None: no face enhancement
    folder: object | None  # folder.destinations.Destinations; None: the picture goes to stdout
    halt: threading.Event = field(default_factory=threading.Event)  # the batch stopped early
    sink: object | None = None  # a binary file '-' output is encoded into instead of stdout (run.single)

    def work(self, h: int, w: int, budget: int | None = None) -> float:
        """The work of an h x w picture, in progress units."""
        work = getattr(self.style, "work", None)
        return work(h, w, budget) if work is not None else float(h * w)


@dataclass(eq=False)  # identity: a key for the peak tracker
class File:
    """One input on its way through the stages: its record, and what the
    batch decided for it (output path, memory, whether to stop)."""

    job: Job
    record: Record
    halt: threading.Event
    room: Callable[[int], int | None] = lambda picture: None  # what the network may add, less `picture` bytes
    advance: Callable[[float], None] | None = None  # progress, in work units
    dest: Path | None = None  # the output path (folder.Destinations.claim); None: stdout
    cache_key: str | None = None  # this file computes that cache entry (Destinations), then done()
    share: int | None = None  # bytes reserved when sharing the budget; None: alone, on all of it
    cancel: object | None = None  # is_set(): stop this file (the batch stopped before it)
    stage: str = "probe"
    fatal: bool = False  # its write failed so that no later write can succeed
    kind: "Kind | None" = None  # the photo or clip while it has work to do

    @property
    def stop(self):
        """What stops this file: its own flag once it has one, else the batch's."""
        return self.cancel or self.halt


class Kind(Protocol):
    size: tuple[int, int]  # the working size, upright: (w, h)
    units: float  # its work in progress units

    def footprint(self) -> int:
        """The most it holds at once, from its header: what the ledger reserves."""

    def load(self) -> None:
        """Decode what the conversion starts from (a photo's pixels)."""

    def plan(self) -> str:
        """A dry run's account of how the network would run it."""

    def planned_peak(self) -> int:
        """A dry run's estimate of what converting it adds to the process at its peak."""

    def convert(self) -> None:
        """The network, the faces and the write; fills the file's record."""

    def close(self) -> None:
        """Let go of the pixels and handles it holds (idempotent)."""
