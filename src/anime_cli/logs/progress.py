"""The progress bar, counted in work instead of files.

A batch of one 24 MP photo and fifty thumbnails is mostly the photo: counted in
files, the bar sits still for minutes and its ETA means nothing. Here each file
is given an estimate of its work when it is probed (an abstract number: the
engine's estimate of its passes over the output pixels, plus a face render per
face), and advances by the work the engine reports as it goes, from whatever
thread runs it; when the file ends the bar jumps to its full estimate, whatever
the estimate missed. Files not yet probed count as the mean of those probed, so
a batch of 100,000 files need not be probed before the bar means something.
"""

from __future__ import annotations

import threading
from typing import Hashable

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from .telemetry import safe

NAME_CELLS = 32  # each name in the description is cut to this many characters


def short(name: str, cells: int = NAME_CELLS) -> str:
    """`name` escaped for the terminal and cut in the middle to `cells` characters
    (the start and the end of a path tell most)."""
    name = safe(name)
    if len(name) <= cells:
        return name
    head = (cells - 1) // 2
    return name[:head] + "…" + name[len(name) - (cells - 1 - head):]


class _File:
    __slots__ = ("name", "units", "done")

    def __init__(self, name: str, units: float):
        self.name, self.units, self.done = name, float(units), 0.0


class WorkProgress:
    """A transient rich progress bar whose unit is work. Thread-safe: advance()
    may be called from the engine's workers while the batch's thread plans and
    finishes files. Disabled (stderr not a terminal, --quiet): every call is a
    cheap no-op for the display, and nothing is printed.

        with WorkProgress(console, len(jobs), enabled=show_bar) as bar:
            bar.planned(key, name, units)     # when the file is probed
            bar.advance(key, units)           # as the engine works, any thread
            bar.finished(key)                 # the file's record is out
    """

    def __init__(self, console: Console, total_files: int, enabled: bool = True, label: str = "converting"):
        self._lock = threading.Lock()
        self._files: dict[Hashable, _File] = {}  # planned, not finished (in the order planned)
        self._total_files = total_files
        self._label = label
        self._planned_n = 0  # files planned so far (finished ones included)
        self._planned_units = 0.0
        self._completed = 0.0  # work done: finished files' estimates + work reported on the others
        self._finished = 0
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[files]}"), TimeRemainingColumn(),
            console=console, transient=True, disable=not enabled)
        self._task = self._progress.add_task(label, total=None, files=self._files_text())

    # -- the batch's calls -------------------------------------------------------
    def planned(self, key: Hashable, name: str, units: float) -> None:
        """File `key` was probed: it will take about `units` of work (0: none,
        for a file skipped or refused)."""
        with self._lock:
            if key in self._files:
                return
            self._files[key] = _File(name, max(0.0, units))
            self._planned_n += 1
            self._planned_units += max(0.0, units)
            self._update()

    def grow(self, key: Hashable, units: float) -> None:
        """More work for `key` than planned (a face found: one more render)."""
        with self._lock:
            f = self._files.get(key)
            if f is not None and units > 0:
                f.units += units
                self._planned_units += units
                self._update()

    def advance(self, key: Hashable, units: float) -> None:
        """`units` of `key`'s work are done. Work beyond the file's estimate is not
        counted (the estimate is what the total holds); unknown keys are ignored."""
        with self._lock:
            f = self._files.get(key)
            if f is None or units <= 0:
                return
            step = min(units, f.units - f.done)
            if step > 0:
                f.done += step
                self._completed += step
                self._update()

    def finished(self, key: Hashable) -> None:
        """`key` is done (written, skipped or failed): the bar counts its whole
        estimate. A key never planned counts as a file of no work."""
        with self._lock:
            f = self._files.pop(key, None)
            if f is None:
                self._planned_n += 1  # a file that ended before it was probed
            else:
                self._completed += f.units - f.done
            self._finished += 1
            self._update()

    # -- what is shown -------------------------------------------------------------
    @property
    def total(self) -> float | None:
        """The batch's work: planned files' estimates, and the mean of those for
        each file not yet planned; None before any file is planned."""
        with self._lock:
            return self._total()

    @property
    def completed(self) -> float:
        with self._lock:
            return self._completed

    @property
    def description(self) -> str:
        with self._lock:
            return self._description()

    def _total(self) -> float | None:
        if not self._planned_n:
            return None
        unplanned = max(0, self._total_files - self._planned_n)
        return self._planned_units + unplanned * self._planned_units / self._planned_n

    def _description(self) -> str:
        names = [short(f.name) for f, _ in zip(self._files.values(), range(2))]
        more = len(self._files) - len(names)
        return f"{self._label} {', '.join(names)}" + (f" +{more}" if more > 0 else "") if names else self._label

    def _files_text(self) -> str:
        return f"{self._finished}/{self._total_files} files"

    def _update(self) -> None:
        if not self.enabled:
            return
        total = self._total()
        if total is not None and total <= 0:  # only files of no work so far: show them as done
            total = 1.0
        self._progress.update(self._task, total=total, completed=min(self._completed, total or 0),
                              description=self._description(), files=self._files_text())

    # -- lifetime ------------------------------------------------------------------
    def __enter__(self) -> WorkProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()
