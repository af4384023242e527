"""The output folder's database under attack: of another version, immutable,
corrupt, on a full disk, planted as a link; cached outputs swapped for links.
The outputs are the user's data and the database our bookkeeping, so each is
one warning line and every output still written (README, "The output folder's
database"). The hostile files are made here, at test time."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from anime_cli.errors import OutputError
from anime_cli.folder.cache import Outputs, place
from anime_cli.folder.database import DB_NAME, Store, StoreError, local_stat
from helpers import files_in, invoke, make_photo, read_log

FAST = ("--no-face-enhance", "--max-side", "64")
WARNING = "cannot use the output folder's database"


def inputs(folder: Path, names=("a.png", "b.png")) -> Path:
    for i, n in enumerate(names):
        make_photo(folder / n, size=(64, 48), src=("coffee.png", "chelsea.png")[i % 2])
    return folder


def convert(src, out, *extra, log=None):
    """The real CLI, in-process (a traceback would fail the test)."""
    args = ["convert", src, "-o", out, *FAST, *extra]
    if log is not None:
        args += ["--log-file", log]
    code, _, err = invoke(*args)
    return code, None, err


def assert_one_warning_and_all_written(code, err, out: Path, names):
    assert code == 0, err
    assert "Traceback" not in err
    assert err.count(WARNING) == 1, err
    assert "nothing is cached" in err
    assert set(names) <= set(files_in(out)), files_in(out)


def test_a_database_of_another_version_is_one_warning_and_the_outputs_are_written(tmp_path):
    src, out = inputs(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    with sqlite3.connect(out / DB_NAME) as db:  # a later version's table, with a column we cannot leave empty
        db.execute("CREATE TABLE cache (key TEXT PRIMARY KEY, path BLOB NOT NULL, size INTEGER NOT NULL, "
                   "mtime_ns INTEGER NOT NULL, version TEXT NOT NULL)")
    code, _, err = convert(src, out, log=tmp_path / "log.jsonl")
    assert_one_warning_and_all_written(code, err, out, ["a.png", "b.png"])
    assert "done: 2 ok" in err
    assert [r["status"] for r in read_log(tmp_path / "log.jsonl")] == ["ok", "ok"]


def test_a_database_whose_trigger_refuses_every_insert_is_one_warning(tmp_path):
    """Another version's constraint the columns do not show: found at the first use."""
    src, out = inputs(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    Store(out).close()
    with sqlite3.connect(out / DB_NAME) as db:
        db.execute("CREATE TRIGGER no BEFORE INSERT ON names BEGIN SELECT RAISE(ABORT, 'refused'); END")
    code, _, err = convert(src, out)
    assert_one_warning_and_all_written(code, err, out, ["a.png", "b.png"])


@contextmanager
def read_only(path: Path):
    """`path` made unwritable even for root (chattr +i), else by its mode and its folder's."""
    chattr = shutil.which("chattr")
    if os.geteuid() == 0:
        if chattr is None or subprocess.run([chattr, "+i", path], capture_output=True).returncode != 0:
            pytest.skip("root, and chattr +i does not work here: nothing makes a file read-only for root")
        try:
            yield
        finally:
            subprocess.run([chattr, "-i", path], check=True)
        return
    path.chmod(0o444)
    path.parent.chmod(0o555)
    try:
        yield
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)


def test_an_immutable_database_is_one_warning_and_overwrite_still_writes(tmp_path):
    src, out = inputs(tmp_path / "in"), tmp_path / "out"
    assert convert(src, out)[0] == 0
    with read_only(out / DB_NAME):
        code, _, err = convert(src, out, "--overwrite")
    assert_one_warning_and_all_written(code, err, out, ["a.png", "b.png"])
    assert "done: 2 ok" in err


def test_a_read_only_database_does_not_fail_new_files(tmp_path):
    """Every new file needs a name claimed: a read-only database used to fail each one."""
    out = tmp_path / "out"
    assert convert(inputs(tmp_path / "in"), out)[0] == 0
    with read_only(out / DB_NAME):
        code, _, err = convert(inputs(tmp_path / "new", ("c.png", "d.png")), out)
    assert_one_warning_and_all_written(code, err, out, ["c.png", "d.png"])


def test_a_corrupt_database_is_one_warning_and_the_outputs_are_written(tmp_path):
    src, out = inputs(tmp_path / "in"), tmp_path / "out"
    assert convert(src, out)[0] == 0
    with open(out / DB_NAME, "r+b") as f:  # page 1 (the schema) kept: it opens, then fails at every use
        f.seek(4096)
        f.write(os.urandom(4 * 4096))
    code, _, err = convert(inputs(tmp_path / "new", ("c.png", "d.png")), out)
    assert_one_warning_and_all_written(code, err, out, ["c.png", "d.png"])


@contextmanager
def tiny_disk(tmp_path: Path, kib: int = 1024):
    """A tmpfs of `kib` KiB (root only, as CI runs)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", mnt], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], check=True)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the filesystem of `folder` until at most `leave` bytes are free."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
                if free <= leave:
                    break
                f.write(b"\0" * min(1 << 16, max(free - leave, 4096)))
                f.flush()
        except OSError:
            pass  # full


class _Opts:
    overwrite = False


def test_a_full_disk_under_the_database_records_nothing_and_raises_nothing(tmp_path):
    with tiny_disk(tmp_path) as disk:
        out = disk / "out"
        outs = Outputs(out, "w", "fp32", _Opts(), faces=False)
        written = out / "a.png"
        written.write_bytes(b"a finished output")
        key = "k" * 64
        assert outs.cached(key) is None  # this file computes it
        fill(disk)
        outs.done(key, written)  # was: sqlite3.OperationalError (database or disk is full) out of a finally
        assert "database or disk is full" in outs.error
        assert outs.cached(key) is None and outs.cached("x" * 64) is None  # no cache from now on, no error
        outs.done("x" * 64, written)
        outs.close()


@pytest.mark.slow
def test_a_nearly_full_disk_never_gives_a_traceback(tmp_path):
    """Whatever is left (room for the database, for the outputs, for neither),
    the run ends in records and at most one warning; what was written is whole."""
    src = inputs(tmp_path / "in")
    with tiny_disk(tmp_path) as disk:
        for left in (92, 100, 108, 116):
            for p in disk.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            fill(disk, left * 1024)
            code, _, err = convert(src, disk / "out")
            assert "Traceback" not in err, (left, err)
            assert code in (0, 1) and err.count(WARNING) <= 1, (left, err)
            assert "done:" in err, err


# -- links ------------------------------------------------------------------------

def test_a_cached_output_replaced_by_a_link_is_neither_served_nor_copied(tmp_path):
    src, out = inputs(tmp_path / "in", ("a.png",)), tmp_path / "out"
    assert convert(src, out)[0] == 0
    cached = out / "a.png"
    victim = tmp_path / "elsewhere.png"
    victim.write_bytes(os.urandom(cached.stat().st_size))  # same size and mtime, other content
    st = cached.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    cached.unlink()
    cached.symlink_to(victim)
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(src / "a.png", again / "z.png")  # identical content: a cache hit, were the link trusted
    code, _, err = convert(again, out, log=tmp_path / "log.jsonl")
    assert code == 0, err
    [rec] = read_log(tmp_path / "log.jsonl")
    assert rec["status"] == "ok" and not rec["cached"]
    assert not (out / "z.png").is_symlink() and (out / "z.png").read_bytes() != victim.read_bytes()


def test_a_cached_output_behind_a_linked_subfolder_is_not_served(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "x.png").write_bytes(b"ours")
    with Store(out) as s:
        s.record("k", str(out / "sub" / "x.png"))
        elsewhere = tmp_path / "elsewhere"
        shutil.copytree(out / "sub", elsewhere, copy_function=shutil.copy2)
        shutil.rmtree(out / "sub")
        (out / "sub").symlink_to(elsewhere)
        assert s.lookup("k") is None


def test_a_linked_database_is_never_opened_and_the_run_goes_on(tmp_path):
    src, out = inputs(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere.sqlite"
    (out / DB_NAME).symlink_to(target)
    code, _, err = convert(src, out)
    assert_one_warning_and_all_written(code, err, out, ["a.png", "b.png"])
    assert "symbolic link" in err
    assert not target.exists()


@pytest.mark.parametrize("companion", ["-wal", "-shm", "-journal"])
def test_a_linked_journal_is_never_written_through(tmp_path, companion):
    out = tmp_path / "out"
    Store(out).close()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's own file")
    Path(f"{out / DB_NAME}{companion}").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        Store(out)
    assert victim.read_bytes() == b"the user's own file"


def test_a_database_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / DB_NAME)
    result = []
    t = threading.Thread(target=lambda: result.append(_open_error(out)), daemon=True)
    t.start()
    t.join(10)
    assert result and "not a regular file" in result[0]


def _open_error(out):
    try:
        Store(out).close()
    except StoreError as e:
        return str(e)
    return None


def test_planted_cache_entries_never_reach_outside_the_folder(tmp_path):
    """A database written by someone else: entries naming a file elsewhere (with
    its true size and mtime) would have place() copy it into the folder."""
    out = tmp_path / "out"
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"private")
    st = local_stat(str(secret))
    with Store(out) as s:
        pass
    with sqlite3.connect(out / DB_NAME) as db:
        for key, path in (("abs", os.fsencode(secret)), ("up", b"./../secret.txt"), ("num", 10**15),
                          ("text", str(secret))):
            db.execute("INSERT INTO cache VALUES (?, ?, ?, ?)", (key, path, st.size, st.mtime_ns))
    with Store(out) as s:
        for key in ("abs", "up", "num", "text"):
            assert s.lookup(key) is None, key


def test_place_copies_no_link_even_one_made_after_the_lookup(tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"not ours")
    link = tmp_path / "cached.png"
    link.symlink_to(victim)
    with pytest.raises(OutputError, match="no longer a regular file"):
        place(link, tmp_path / "out" / "x.png")
    assert files_in(tmp_path / "out") == []


# -- the Ray runner's use of the database ------------------------------------------

def test_the_ray_service_goes_on_without_a_database_it_cannot_use(tmp_path):
    pytest.importorskip("pyarrow")
    from anime_cli.run.ray_actors import Service as _Service, where as _where

    out = tmp_path / "out"
    Store(out).close()
    with open(out / DB_NAME, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(4 * 4096))
    svc = _Service(_where(str(out)), overwrite=False)
    a = svc.claim("/in/a.png", "a.png", ".png")
    b = svc.claim("/in/other/a.png", "a.png", ".png")
    assert (a, b) == ("a.png", "a_2.png") and svc.claim("/in/a.png", "a.png", ".png") == "a.png"
    assert svc.begin("k") == ("compute", None)
    svc.end("k", str(out / "a.png"))
    assert WARNING in svc.warning() and svc.warning() is None  # said once
    svc.close()


def test_a_database_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "out" / DB_NAME).mkdir(parents=True)
    assert "not a regular file" in _open_error(tmp_path / "out")


def test_a_database_whose_names_are_a_view_is_refused_at_open(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with sqlite3.connect(out / DB_NAME) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("CREATE VIEW names AS SELECT x AS name, x AS input FROM t")
    assert WARNING in _open_error(out)
