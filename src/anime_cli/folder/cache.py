"""The content cache: a file whose content, style and pixel options were
converted before gets that output placed (linked or copied) instead of
recomputed. Its entries live in the folder's database (database.Store);
`Outputs` is what one batch asks of both, `Inflight` the identical files of
one batch waiting for the first of them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat as _stat
import tempfile
import threading
from pathlib import Path

from anime_cli.errors import OutputError, OutputExists

from .database import Store, StoreError
from .files import cut_name, file_sha256, publish


# -- cache keys ------------------------------------------------------------------
# Options that change the bytes written (pixels, or metadata). Not here, on purpose: limits that only
# refuse files (max_file_size, max_pixels), overwrite, threads and the memory
# limit (they change float rounding at most, PSNR >= 45 dB, never the picture).
PIXEL_OPTIONS = ("max_side", "format", "quality", "face_enhance", "min_face", "face_size", "crf", "keep_metadata",
                 "keep_gps")


def version() -> str:
    try:
        from importlib.metadata import version as v

        return v("animegan-cli")
    except Exception:  # running from a source tree that was never installed
        return "0+unknown"


def cache_key(content_sha256: str, weights_sha256: str, precision: str, options, detector: bool,
              anime_version: str | None = None) -> str:
    """sha256 of a canonical JSON of everything that decides the output's bytes.
    `options`: a pipeline.Options (or any object with the PIXEL_OPTIONS attributes);
    `precision`: the resolved one ("bf16"/"fp32", not "auto": auto differs by CPU);
    `detector`: whether faces are enhanced at all (face_enhance with a detector)."""
    doc = {
        "content": content_sha256,
        "weights": weights_sha256,
        "precision": precision,
        "options": {k: getattr(options, k) for k in PIXEL_OPTIONS},
        "faces": bool(detector and options.face_enhance),
        "version": anime_version or version(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def place(cached: str | os.PathLike, dest: str | os.PathLike, overwrite: bool = False) -> None:
    """Put a copy of the cached output `cached` at `dest` atomically: a hard link
    when both are on one filesystem (no bytes copied), else a copy into a hidden
    temporary beside `dest`, then renamed. Without overwrite an existing `dest`
    is kept and FileExistsError raised (a concurrent run got there first).
    Only a regular file is placed, never what a symbolic link points to (it
    may have become one since lookup() looked): OutputError."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{cut_name(dest.name, 40)}.", suffix=".tmp")
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(cached, tmp, follow_symlinks=False)  # a link is linked as itself, then refused below
            linked = True
        except OSError:  # another filesystem, or links not allowed: copy the bytes
            linked = False
            _copy_regular(cached, tmp)
        if linked and not _stat.S_ISREG(os.lstat(tmp).st_mode):
            raise OutputError(f"{cached}: the cached output is no longer a regular file; not placed")
        try:
            publish(tmp, dest, overwrite)  # never clobbers another run's output
        except OutputExists:
            raise FileExistsError(errno.EEXIST, "exists", str(dest)) from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _copy_regular(src, tmp) -> None:
    """Copy the regular file `src` to the new file `tmp`, opening neither through a link."""
    try:
        fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f"{src}: the cached output is no longer a regular file; not placed") from None
        raise
    with open(fin, "rb") as f:
        if not _stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OutputError(f"{src}: the cached output is no longer a regular file; not placed")
        fout = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                       0o666)
        with open(fout, "wb") as g:
            shutil.copyfileobj(f, g, 1 << 20)
            g.flush()
            os.fsync(g.fileno())


class Inflight:
    """Identical files in one batch are computed once: the first file with a key
    computes it, the others wait for it, then place() its output. Thread-safe,
    for one process (the Ray runner keeps one in its name service)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}

    def begin(self, key: str) -> bool:
        """True: compute `key` now, then call end(key). False: another file is computing it."""
        with self._lock:
            if key in self._events:
                return False
            self._events[key] = threading.Event()
            return True

    def wait(self, key: str, timeout: float | None = None) -> bool:
        with self._lock:
            ev = self._events.get(key)
        return True if ev is None else ev.wait(timeout)

    def end(self, key: str) -> None:
        """The computing file is done (ok or failed: the waiters then look up the cache)."""
        with self._lock:
            ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()

    def pending(self, key: str) -> bool:
        with self._lock:
            return key in self._events


class Outputs:
    """Everything a Converter asks of the output folder's database, for one batch:

        outs = Outputs(options.output_dir, weights.weights_sha256(style, path), precision,
                       options, faces=detector is not None)
        dest = ...                                # names.Names.claim, through outs.store: the stable name
        key = outs.key(job.path)                  # after the probe, before the decode
        hit = outs.cached(key)                    # a finished output to place(), or None: compute it
        ...write_atomic(...) -> outs.done(key, dest)   # done(key, None) when it failed
    """

    def __init__(self, folder: str | os.PathLike, weights_sha: str, precision: str, options, faces: bool):
        self.folder = Path(folder)
        self.store = Store(folder)
        self.inflight = Inflight()
        self.overwrite = bool(getattr(options, "overwrite", False))
        self._base = (weights_sha, precision, options, faces)

    def close(self) -> None:
        self.store.close()

    def key(self, path: str | os.PathLike | None = None, data: bytes | None = None) -> str:
        """The cache key of a file (or of stdin's bytes) under this batch's options."""
        sha = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
        return cache_key(sha, *self._base)

    @property
    def error(self) -> str | None:
        """Why the database stopped being usable during the batch (None: it works)."""
        return self.store.error

    def cached(self, key: str, cancel=None) -> str | None:
        """A complete output for `key` (place() it), or None: compute it, then done().
        An identical file in flight is waited for (until cancel.is_set(): then
        errors.Cancelled); --overwrite never reuses. A database that fails is no
        cache (its error says why)."""
        while True:
            if not self.overwrite:
                try:
                    hit = self.store.lookup(key)
                except StoreError:
                    if self.store.error is None:
                        raise
                    hit = None
                if hit is not None:
                    return hit
            if self.inflight.begin(key):
                return None
            while not self.inflight.wait(key, 0.2):
                if cancel is not None and cancel.is_set():
                    from anime_cli.errors import Cancelled

                    raise Cancelled()

    def done(self, key: str, written: str | os.PathLike | None) -> None:
        """The output of `key` is complete at `written` (after the rename), or was
        not written. A database that fails records nothing (its error says why):
        the output is written all the same."""
        try:
            if written is not None:
                self.store.record(key, os.fspath(written))
        except StoreError:
            if self.store.error is None:
                raise
        finally:
            self.inflight.end(key)
