"""Where each file's output goes, and whether it must be computed at all.

`Destinations` is one batch's view of its output folder: the output names
(names.Names: the --name pattern, collisions, never an input) kept stable
across runs and processes by the folder's database (store.py), and the
content cache: a file whose content, style and pixel options were converted
before gets that output placed (linked or copied) instead of recomputed.

The outputs are the user's data, the database our bookkeeping: a database
that cannot be opened, or fails at any use (another version, read-only, full,
corrupt, a symbolic link), is one warning (`store_error`) and the batch goes
on without it: names decided as without a database, nothing cached.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from anime_cli.errors import OutputError, OutputExists
from .names import Names


class Destinations:
    def __init__(self, options, use_store: bool = True):
        self.options = options
        self.names = (Names(options.output_dir, set(), options.name, options.style)
                      if options.output_dir is not None else None)
        self.outputs = None  # store.Outputs once open()
        self.use_store = use_store and self.names is not None and not options.dry_run
        self._store_error: str | None = None  # why the folder's database could not be opened, or failed
        self._claiming = threading.Lock()  # names decided in memory (no database) are one lane's at a time

    def open(self, weights_sha: str, precision: str, faces: bool) -> None:
        """The output folder's database: stable names across runs, the content
        cache. Not for a dry run (it writes nothing) nor for stdout. A database
        that cannot be opened (full disk, read-only folder) leaves names in
        memory and no cache, with store_error saying why."""
        if self.outputs is not None or not self.use_store:
            return
        from .cache import Outputs
        from .database import StoreError

        opts = self.options
        try:
            self.outputs = Outputs(opts.output_dir, weights_sha, precision, opts, faces=faces)
        except StoreError as e:
            self._store_error, self.use_store = str(e), False
            return
        self.names.store = self.outputs.store

    @property
    def store_error(self) -> str | None:
        """Why the folder's database is not used (it could not be opened, or
        failed during the batch); None while it works."""
        if self._store_error is None and self.outputs is not None:
            self._store_error = self.outputs.error
        return self._store_error

    def close(self) -> None:
        if self.outputs is not None:
            self._store_error = self.store_error  # kept past the close
            self.outputs.close()
            self.outputs = self.names.store = None

    def claim(self, loaded, fmt: str | None, size: tuple[int, int], suffix: str | None = None) -> None:
        """The file's output path, or OutputExists (skipped) / OutputError."""
        from .database import StoreError

        with self._claiming:
            try:
                dest = self.names.claim(loaded.job, fmt, size, suffix)
            except StoreError:
                store = self.names.store
                if store is None or store.error is None:
                    raise  # not the database: every candidate name taken
                self.names.store = None  # as without a database, from now on
                dest = self.names.claim(loaded.job, fmt, size, suffix)
        loaded.dest = dest
        if dest.is_dir():
            raise OutputError(f"{dest}: cannot write (a folder is in the way)")
        if _taken(dest) and not self.options.overwrite:
            raise OutputExists(f"{dest}: exists")

    def from_cache(self, loaded, size: tuple[int, int], source, cancel) -> bool:
        """Place the output of identical earlier work (same content, style and
        options: store.cache_key) instead of computing it: True when done.
        Otherwise this file computes its key, and done() must follow."""
        if self.outputs is None:
            return False
        data = source.getvalue() if isinstance(source, io.BytesIO) else None
        key = self.outputs.key(loaded.job.path if data is None else None, data=data)
        hit = self.outputs.cached(key, cancel=cancel)
        if hit is None:
            loaded.cache_key = key
            return False
        from .cache import place

        try:
            place(hit, loaded.dest, self.options.overwrite)
        except FileExistsError:
            raise OutputExists(f"{loaded.dest}: exists") from None
        rec = loaded.record
        rec.status, rec.cached, rec.output, rec.output_size = "ok", True, str(loaded.dest), list(size)
        return True

    def done(self, loaded) -> None:
        """The file that computed a cache key has ended (ok: its output is
        complete on disk, after the rename; else nothing is recorded)."""
        if loaded.cache_key is not None:
            self.outputs.done(loaded.cache_key, loaded.dest if loaded.record.status == "ok" else None)
            loaded.cache_key = None


def _taken(dest: Path) -> bool:
    """Whether something already sits at `dest` (a file, a link; a folder is
    claim()'s error, not a skip)."""
    return dest.is_file() or (dest.is_symlink() and not dest.is_dir())
