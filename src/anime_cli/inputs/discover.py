"""Turn the command line's inputs into a list of jobs: which file, which output.

Folders are walked in sorted order (sub-folders only with recursive=True),
following symlinks but never entering a folder twice, so a symlink loop ends.
Every regular file found becomes a job, images or not: the probe decides what
it is, and each gets exactly one log record; so does a folder that cannot be
listed, and a dangling or looping symlink. Other non-regular entries (FIFOs,
sockets, devices) are left alone: reading them could block or never end.
The output folder is never walked.

The log file (--log-file) is never an input, since anime-cli appends to it:
- a log file that IS one of the inputs given, or a file of an input folder
  (one the walk reaches) that is not an anime-cli log (an image, notes.txt),
  is refused before any work: LogFileIsInput, a usage error (exit 2), and the
  file is left untouched;
- a log file in an input folder that is an anime-cli JSON Lines log, or empty
  (`convert . --log-file run.jsonl`, run twice), is left out of the batch, and
  the returned list's `notes` say so; one that does not exist yet is not found
  by the walk, which happens before the log is created.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from anime_cli.errors import LogFileIsInput, MissingInput  # noqa: F401  (raised here)

STDIN = "-"


@dataclass
class Job:
    input: str  # as shown in logs: the path as given/found, or "-" for stdin
    path: Path | None  # None for stdin
    rel: Path  # the output path relative to the output folder, before its suffix is decided


class Jobs(list):
    """The jobs, in order, with `notes`: what the user should hear about the
    inputs before the batch (one line each)."""

    notes: list[str]


def discover(inputs: list[str], recursive: bool, exclude: tuple[Path | None, ...] = (),
             log_file: Path | None = None) -> Jobs:
    """Jobs for `inputs`. `exclude`: folders never walked (the output folder).
    `log_file`: checked and left out as the module's docstring says."""
    jobs: list[Job] = []
    log = _identity(Path(log_file)) if log_file is not None else None
    skip = {_identity(Path(p)) for p in exclude if p is not None} - {None, log}
    met_log: list[Path] = []
    for arg in inputs:
        if arg == STDIN:
            jobs.append(Job(STDIN, None, Path("stdin")))
            continue
        p = Path(arg).expanduser()
        if p.is_dir():
            for f in _walk(p, recursive, skip, log, met_log):
                jobs.append(Job(str(f), f, f.relative_to(p)))
        elif p.exists() or p.is_symlink():
            if log is not None and _identity(p) == log:
                raise LogFileIsInput(f"--log-file {log_file} is the input {arg}: anime-cli would append "
                                     "its log to it; choose another log file")
            jobs.append(Job(arg, p, Path(p.name)))
        else:
            raise MissingInput(f"{arg}: no such file or folder")
    out = Jobs(_unique(jobs))
    out.notes = []
    if met_log:
        if not is_log_file(met_log[0]):
            raise LogFileIsInput(f"--log-file {log_file} is {met_log[0]} in an input folder, and not an "
                                 "anime-cli log: anime-cli would append its log to it; choose another log file")
        out.notes.append(f"{log_file}: the log file is in an input folder; it is not converted")
    return out


def is_log_file(path: Path) -> bool:
    """Whether `path` is empty or starts with an anime-cli JSON Lines record
    (an object with "input" and "status"): what appending a log cannot harm."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
    except OSError:
        return False
    if not first:
        return True  # a run that stopped before its first record
    try:
        rec = json.loads(first)
    except ValueError:
        return False
    return isinstance(rec, dict) and "input" in rec and "status" in rec


def _unique(jobs: list[Job]) -> list[Job]:
    """The same file found twice for the same output (`dir dir/a.jpg`, `a.jpg a.jpg`)
    is one job: a second one would only race the first for its output. A symlink
    to a file under another name is another job (another output, another record)."""
    seen, out = set(), []
    for job in jobs:
        key = None if job.path is None else (os.path.realpath(job.path), job.rel)
        if key is None or key not in seen:
            seen.add(key)
            out.append(job)
    return out


def _walk(root: Path, recursive: bool, skip: set, log=None, met_log: list | None = None):
    """Files under `root`; the log file (identity `log`) goes to `met_log` instead."""
    seen = {_identity(root)}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            # An unreadable folder may hold photos the user expects: it becomes a
            # job of its own, whose record says why it could not be read.
            yield folder
            continue
        subdirs = []
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=True):
                    ident = _identity(Path(e.path))
                    if recursive and ident not in seen and ident not in skip:
                        seen.add(ident)
                        subdirs.append(Path(e.path))
                elif e.is_file(follow_symlinks=True):
                    ident = _identity(Path(e.path))
                    if log is not None and ident == log:
                        met_log.append(Path(e.path))
                    elif ident not in skip:
                        yield Path(e.path)
                elif e.is_symlink() and not os.path.exists(e.path):
                    yield Path(e.path)  # a dangling link is a file the user expects to hear about
            except OSError:
                yield Path(e.path)
        stack.extend(reversed(subdirs))


def _identity(p: Path):
    try:
        st = p.stat()
        return (st.st_dev, st.st_ino)
    except OSError:
        return None
