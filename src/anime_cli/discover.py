"""Turn the command line's inputs into a list of jobs: which file, which output.

Folders are walked in sorted order (sub-folders only with recursive=True),
following symlinks but never entering a folder twice, so a symlink loop ends.
Every regular file found becomes a job, images or not: the probe decides what
it is, and each gets exactly one log record; so does a folder that cannot be
listed, and a dangling or looping symlink. Other non-regular entries (FIFOs,
sockets, devices) are left alone: reading them could block or never end.
The output folder is never walked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import AnimeCliError

STDIN = "-"


@dataclass
class Job:
    input: str  # as shown in logs: the path as given/found, or "-" for stdin
    path: Path | None  # None for stdin
    rel: Path  # the output path relative to the output folder, before its suffix is decided


class MissingInput(AnimeCliError):
    pass


def discover(inputs: list[str], recursive: bool, exclude: tuple[Path | None, ...] = ()) -> list[Job]:
    """Jobs for `inputs`. `exclude`: the output folder and the log file, never inputs of a walk."""
    jobs: list[Job] = []
    skip = {_identity(p) for p in exclude if p is not None} - {None}
    for arg in inputs:
        if arg == STDIN:
            jobs.append(Job(STDIN, None, Path("stdin")))
            continue
        p = Path(arg).expanduser()
        if p.is_dir():
            for f in _walk(p, recursive, skip):
                jobs.append(Job(str(f), f, f.relative_to(p)))
        elif p.exists() or p.is_symlink():
            jobs.append(Job(arg, p, Path(p.name)))
        else:
            raise MissingInput(f"{arg}: no such file or folder")
    return _unique(jobs)


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


def _walk(root: Path, recursive: bool, skip: set):
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
                    if _identity(Path(e.path)) not in skip:
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
