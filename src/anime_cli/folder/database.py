"""The output folder's own database: who owns which output name, and what was
already computed (the cache's entries; cache.py keys and uses them).

One SQLite file, `.anime-cli.sqlite`, in the output folder (stdlib sqlite3, WAL
journal, a busy timeout), shared by every process that writes into the folder:
two `convert` runs at once, N `--shard` processes, the actors of a local Ray.

Names. A rerun must map each input to the name it had, and a new input to a new
name: `claim` gives an input its recorded name, else the first candidate no
other input holds, in one IMMEDIATE transaction (the write lock is taken before
the read), so two processes never get the same name.

Cache. (input content sha256, style and weights sha256, every option that
changes pixels, anime-cli version) -> the output written. `record` is called
only once the output is complete under its final name, so a SIGKILL at any
moment leaves no entry for a half-written output; `lookup` drops entries whose
output is gone or changed (size or mtime differ from those recorded).

A database problem never costs the user an output: the outputs are their data,
the database only our bookkeeping. The first failure of any statement (a
database of another version, read-only, full, corrupt, locked for longer than
the busy timeout) marks the Store `error` and every later call raises
StoreError at once; callers then go on without it (names decided as without a
database, nothing cached), and the batch says so in one warning line. The file
is never opened through a symbolic link (nor its journals): a link planted in
the folder would have us write wherever it points.

Why the file is never taken for an input: it lives in the output folder, which
discover() never walks; its name starts with a dot and holds no image suffix,
and `is_store_file` names it and its -wal/-shm/-journal companions for a walk
that must skip them (an output folder given as an input of another run).
"""

from __future__ import annotations

import os
import sqlite3
import stat as _stat
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

from anime_cli.errors import OutputError

DB_NAME = ".anime-cli.sqlite"
_COMPANIONS = ("", "-wal", "-shm", "-journal")
_BUSY_MS = 30_000  # a writer holds the lock for microseconds; 30 s only covers a stalled disk
_SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    name  BLOB PRIMARY KEY,   -- output path relative to the output folder, '/'-separated, fsencoded
    input BLOB NOT NULL       -- input_key() of the input that owns it
);
CREATE INDEX IF NOT EXISTS names_by_input ON names(input);
CREATE TABLE IF NOT EXISTS cache (
    key   TEXT PRIMARY KEY,   -- cache_key(): sha256 hex
    path  BLOB NOT NULL,      -- the output written (a path or a URI), fsencoded
    size  INTEGER NOT NULL,   -- its size and mtime when recorded: a changed output is stale
    mtime_ns INTEGER NOT NULL
);
"""


class StoreError(OutputError):
    """The database cannot be opened or written (read-only folder, corrupt file)."""


# Our columns: (name, declared type, NOT NULL, primary key position). A database
# of another version may add columns we can still write beside (nullable, or
# with a default), never change these.
_COLUMNS = {
    "names": {("name", "BLOB", 0, 1), ("input", "BLOB", 1, 0)},
    "cache": {("key", "TEXT", 0, 1), ("path", "BLOB", 1, 0), ("size", "INTEGER", 1, 0),
              ("mtime_ns", "INTEGER", 1, 0)},
}


def is_store_file(path: str | os.PathLike) -> bool:
    """True for the database and its journal files (to skip them in a walk)."""
    return os.path.basename(os.fspath(path)) in {DB_NAME + s for s in _COMPANIONS}


def input_key(path: str | os.PathLike) -> str:
    """Who an input is, for `claim`: its absolute, normalised path (its input root
    joined with its path relative to that root). Symlinks are not resolved: a link
    under another name is another input with its own output, as discover() says."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


@dataclass(frozen=True)
class Stat:
    size: int
    mtime_ns: int


def local_stat(path: str) -> Stat | None:
    """A regular file's size and mtime; None for anything else. A symbolic link is
    not its target: a cached output replaced by a link (to a file of the same
    size and mtime elsewhere) is no cached output."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not _stat.S_ISREG(st.st_mode):
        return None
    return Stat(st.st_size, st.st_mtime_ns)


class Store:
    """The database of one output folder. Thread-safe (one connection, locked);
    several processes may open the same folder at once."""

    def __init__(self, folder: str | os.PathLike, db_path: str | os.PathLike | None = None, relative: bool = True):
        """relative: keep cached outputs inside `folder` relative to it (False when
        the outputs are not on this machine's filesystem, as for the Ray runner's bucket)."""
        self.folder = Path(folder)
        self.relative = relative
        self.path = Path(db_path) if db_path is not None else self.folder / DB_NAME
        self._lock = threading.Lock()
        self.error: str | None = None  # why the database stopped being usable; then every call raises
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.path.parent}: cannot create the output folder ({e.strerror or e})") from None
        _refuse_links(self.path)
        self._db = None
        try:
            # nofollow: SQLite itself refuses a link put in place after _refuse_links looked
            self._db = sqlite3.connect(_uri(self.path), timeout=_BUSY_MS / 1000, isolation_level=None,
                                       check_same_thread=False, uri=True)
            self._db.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
            self._db.execute("PRAGMA trusted_schema = OFF")  # a planted file's triggers and views run no functions
            # WAL: readers never block the writer. Where the filesystem cannot share
            # memory (NFS), SQLite keeps its rollback journal, still safe, only slower.
            _when_free(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
            self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            other = self._other_version()
        except sqlite3.Error as e:
            self._close_quietly()
            raise StoreError(f"{self.path}: cannot use the output folder's database ({e})") from None
        if other:
            self._close_quietly()
            raise StoreError(f"{self.path}: cannot use the output folder's database (of another version: {other})")

    def _other_version(self) -> str | None:
        """What makes the tables unusable to this version (a changed or missing
        column of ours, or a new one we cannot leave empty), or None."""
        for table, ours in _COLUMNS.items():
            cols = {r[1]: r for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind, notnull, pk in ours:
                r = cols.get(name)
                if r is None or (r[2].upper(), r[3], r[5]) != (kind, notnull, pk):
                    return f"{table}.{name} differs"
            for name, r in cols.items():
                if name not in {c[0] for c in ours} and r[3] and r[4] is None:
                    return f"{table}.{name} is NOT NULL without a default"
        return None

    def _close_quietly(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    @contextmanager
    def _using(self):
        """Hold the lock for one use of the database. The first sqlite3 error
        marks the Store unusable (see the module's docstring): StoreError now and
        at every later call, so that a broken database costs one wait at most."""
        if self.error is not None:
            raise StoreError(self.error)
        with self._lock:
            if self.error is not None:
                raise StoreError(self.error)
            try:
                yield
            except sqlite3.Error as e:
                self.error = f"{self.path}: cannot use the output folder's database ({e})"
                raise StoreError(self.error) from None

    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _transaction(self):
        return _Immediate(self._db)

    # -- names ---------------------------------------------------------------
    def claim(self, key: str, wanted: str, alternatives: Iterable[str] = ()) -> str:
        """The output name (relative to the folder, '/'-separated) for input `key`:
        the candidate (`wanted`, then `alternatives` in order) it already owns,
        else the first one no other input owns, which it then owns."""
        k = os.fsencode(key)
        with self._using(), self._transaction():
            owned = {r[0] for r in self._db.execute("SELECT name FROM names WHERE input = ?", (k,))
                     if isinstance(r[0], bytes)}
            first_free = None
            for name in _chain(wanted, alternatives):
                n = os.fsencode(name)
                if n in owned:
                    return name
                if first_free is None:
                    row = self._db.execute("SELECT 1 FROM names WHERE name = ?", (n,)).fetchone()
                    if row is None:
                        first_free = name
                        if not owned:  # nothing of ours further down the list: take it now
                            break
            if first_free is None:
                raise StoreError(f"{wanted}: every candidate output name is taken")
            self._db.execute("INSERT INTO names (name, input) VALUES (?, ?)", (os.fsencode(first_free), k))
            return first_free

    def owner(self, name: str) -> str | None:
        with self._using():
            row = self._db.execute("SELECT input FROM names WHERE name = ?", (os.fsencode(name),)).fetchone()
        return None if row is None or not isinstance(row[0], bytes) else os.fsdecode(row[0])

    # -- cache ---------------------------------------------------------------
    def lookup(self, key: str, stat: Callable[[str], Stat | None] = local_stat) -> str | None:
        """The output recorded for `key` if it is still there, unchanged; a stale
        entry (output gone, or its size or mtime changed, or no longer a regular
        file of the folder reached without a link) is dropped."""
        with self._using():
            row = self._db.execute("SELECT path, size, mtime_ns FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        path = self._outside(row[0])
        if path is not None and stat(path) == Stat(row[1], row[2]) and self._unlinked(path):
            return path
        with self._using(), self._transaction():  # only if nobody recorded a fresh one meanwhile
            self._db.execute("DELETE FROM cache WHERE key = ? AND path IS ? AND size IS ? AND mtime_ns IS ?",
                             (key, row[0], row[1], row[2]))
        return None

    def record(self, key: str, path: str, stat: Callable[[str], Stat | None] = local_stat) -> None:
        """Remember that `path` holds the output for `key`. Call it only once the
        output is complete under its final name (after the rename)."""
        st = stat(path)
        if st is None:
            return  # gone already (another process replaced it): nothing true to record
        with self._using(), self._transaction():
            self._db.execute("INSERT OR REPLACE INTO cache (key, path, size, mtime_ns) VALUES (?, ?, ?, ?)",
                             (key, os.fsencode(self._inside(path)), st.size, st.mtime_ns))

    # A local output inside the folder is kept relative to it ("./a/x.png"), so the
    # cache survives moving the folder or running from another directory. Anything
    # else (a URI, a path outside) is kept as given.
    def _inside(self, path: str) -> str:
        if self.relative and not _is_uri(path):
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.folder))
            if not rel.startswith(os.pardir):
                return os.path.join(os.curdir, rel)
        return path

    def _outside(self, stored) -> str | None:
        """The path of a stored entry; None for one that is not ours to serve. A
        local folder's entries name a file inside it ("./a/x.png", no "..");
        anything else in a planted or damaged database (a path elsewhere, a
        number) would have place() copy a file from outside into the folder."""
        if not isinstance(stored, bytes):
            return None
        stored = os.fsdecode(stored)
        if not self.relative:
            return stored
        if not stored.startswith(os.curdir + os.sep):
            return None
        rel = stored[2:]
        if any(part in ("", os.curdir, os.pardir) for part in rel.split(os.sep)):
            return None
        return os.path.join(self.folder, rel)

    def _unlinked(self, path: str) -> bool:
        """Whether a local entry's folders are the output folder's own, not a link
        to elsewhere (the file itself is local_stat's to check)."""
        if not self.relative:
            return True
        parent = os.path.dirname(path)
        rel = os.path.relpath(parent, self.folder)
        return os.path.realpath(parent) == os.path.normpath(os.path.join(os.path.realpath(self.folder), rel))


class _Immediate:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the write lock from the start,
    so a read-then-insert cannot interleave with another process's."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _uri(path: Path) -> str:
    """A file: URI that SQLite opens without following a final symbolic link."""
    return "file:" + quote(os.fsencode(os.path.abspath(path))) + "?nofollow=1"


def _refuse_links(path: Path) -> None:
    """StoreError when the database or one of its journals is anything but a
    regular file (a link would be written through; a FIFO would block the open)."""
    for suffix in _COMPANIONS:
        p = f"{path}{suffix}"
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise StoreError(f"{p}: cannot use the output folder's database ({e.strerror or e})") from None
        if not _stat.S_ISREG(st.st_mode):
            what = ("a symbolic link: it is never opened through one" if _stat.S_ISLNK(st.st_mode)
                    else "not a regular file")
            raise StoreError(f"{p}: cannot use the output folder's database ({what})")


def _when_free(statement: Callable[[], object]) -> None:
    """Run `statement`, retrying while another process holds the database.
    Switching to WAL takes an exclusive lock and SQLite answers "database is
    locked" at once instead of calling the busy handler, so two processes opening
    a new folder's database together would see one of them fail."""
    deadline = time.monotonic() + _BUSY_MS / 1000
    pause = 0.001
    while True:
        try:
            statement()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _is_uri(path: str) -> bool:
    return "://" in path


def _chain(first: str, rest: Iterable[str]):
    yield first
    yield from rest
