"""The output folder's database: stable names across runs and processes, and the content cache."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from anime_cli.folder.cache import Inflight, cache_key, place
from anime_cli.folder.database import DB_NAME, Store, StoreError, input_key, is_store_file
from anime_cli.folder.files import file_sha256
from anime_cli.folder.names import alternatives as name_candidates
from helpers import make_photo


def claim_for(store: Store, root: Path, rel: str, out_name: str) -> str:
    """What the pipeline does for one input: wanted name = rel with the output suffix."""
    return store.claim(input_key(root / rel), out_name, name_candidates(out_name, Path(rel).suffix))


def test_rerun_keeps_names_and_a_new_input_gets_a_new_one(tmp_path):
    """Issue 10.3: photo.png converted; photo.gif added; on the rerun (photo.gif walks
    first) photo.gif must not take photo.png's name, and photo.png keeps it."""
    src, out = tmp_path / "in", tmp_path / "out"
    out.mkdir()
    make_photo(src / "photo.png")
    with Store(out) as s:
        assert claim_for(s, src, "photo.png", "photo.png") == "photo.png"
    make_photo(src / "photo.gif", fmt="GIF")
    with Store(out) as s:  # a new process: the names come from the file
        assert claim_for(s, src, "photo.gif", "photo.png") == "photo_gif.png"
        assert claim_for(s, src, "photo.png", "photo.png") == "photo.png"
    with Store(out) as s:  # and they stay
        assert claim_for(s, src, "photo.gif", "photo.png") == "photo_gif.png"
        assert claim_for(s, src, "photo.png", "photo.png") == "photo.png"
        assert s.owner("photo.png") == input_key(src / "photo.png")


def test_names_in_subfolders_and_a_format_change(tmp_path):
    with Store(tmp_path) as s:
        assert s.claim("/in/a/x.jpg", "a/x.jpg", name_candidates("a/x.jpg", ".jpg")) == "a/x.jpg"
        assert s.claim("/in2/a/x.jpg", "a/x.jpg", name_candidates("a/x.jpg", ".jpg")) == "a/x_2.jpg"
        # --format png on a rerun: the same input owns a second name, its own
        assert s.claim("/in/a/x.jpg", "a/x.png", name_candidates("a/x.png", ".jpg")) == "a/x.png"
        assert s.claim("/in/a/x.jpg", "a/x.jpg", name_candidates("a/x.jpg", ".jpg")) == "a/x.jpg"


def test_names_that_are_not_utf8(tmp_path):
    odd = os.fsdecode(b"caf\xe9.jpg")
    with Store(tmp_path) as s:
        assert s.claim("/in/" + odd, odd) == odd
        assert s.claim("/other/" + odd, odd, name_candidates(odd, ".jpg")) == os.fsdecode(b"caf\xe9_2.jpg")


def test_candidates_follow_the_pipeline_rule():
    assert list(name_candidates("photo.png", ".gif"))[:3] == ["photo_gif.png", "photo_2.png", "photo_3.png"]
    assert list(name_candidates("d/photo.jpg", ".jpg"))[:2] == ["d/photo_2.jpg", "d/photo_3.jpg"]
    assert next(name_candidates("README", "")) == "README_2"


def _claimer(folder: str, who: int, n: int, queue) -> None:
    with Store(folder) as s:
        got = [s.claim(f"/in{who}/photo{i % 3}.jpg", "photo.jpg", name_candidates("photo.jpg", ".jpg"))
               for i in range(n)]
    queue.put((who, got))


def test_two_processes_never_get_the_same_name(tmp_path):
    """Four processes, three inputs each, all wanting photo.jpg at once: twelve
    distinct inputs, twelve distinct names; each input always gets the same one."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(str(tmp_path), w, 30, q)) for w in range(4)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    owners = {}
    for who, names in results.items():
        for i, name in enumerate(names):
            owners.setdefault(name, set()).add(f"/in{who}/photo{i % 3}.jpg")
    assert len(owners) == 12 and all(len(v) == 1 for v in owners.values())
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM names").fetchone()[0] == 12


def test_the_same_input_from_two_processes_gets_one_name(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(str(tmp_path), 7, 9, q)) for _ in range(2)]
    for p in procs:
        p.start()
    a, b = (q.get(timeout=120)[1] for _ in procs)
    for p in procs:
        p.join(30)
    assert a == b and len(set(a)) == 3


def test_store_files_are_named_for_a_walk_to_skip(tmp_path):
    Store(tmp_path).close()
    assert all(is_store_file(p) for p in tmp_path.iterdir())
    assert not is_store_file(tmp_path / "photo.sqlite") and not is_store_file("anime-cli.sqlite")


def test_cache_hit_stale_and_changed(tmp_path):
    out = tmp_path / "o.png"
    make_photo(out)
    with Store(tmp_path) as s:
        s.record("k1", str(out))
        assert s.lookup("k1") == str(out)
        assert s.lookup("k2") is None
        os.utime(out, ns=(1, 1))  # changed behind our back: stale
        assert s.lookup("k1") is None
        s.record("k1", str(out))
        assert s.lookup("k1") == str(out)
        out.unlink()  # gone: stale, and the entry is dropped
        assert s.lookup("k1") is None
        assert s._db.execute("SELECT count(*) FROM cache").fetchone()[0] == 0
        s.record("k3", str(tmp_path / "never-written.png"))  # nothing true to record
        assert s._db.execute("SELECT count(*) FROM cache").fetchone()[0] == 0


def test_cache_key_changes_with_what_changes_pixels(tmp_path):
    from anime_cli.run.converter import Options

    photo = make_photo(tmp_path / "a.png")
    sha = file_sha256(photo)
    base = cache_key(sha, "w", "bf16", Options(), True, "1")
    assert base == cache_key(sha, "w", "bf16", Options(overwrite=True, memory_limit=1, max_pixels=5), True, "1")
    others = [cache_key(sha, "w", "fp32", Options(), True, "1"), cache_key(sha, "v", "bf16", Options(), True, "1"),
              cache_key(sha, "w", "bf16", Options(max_side=512), True, "1"),
              cache_key(sha, "w", "bf16", Options(face_enhance=False), True, "1"),
              cache_key(sha, "w", "bf16", Options(), False, "1"), cache_key(sha, "w", "bf16", Options(), True, "2"),
              cache_key("0" * 64, "w", "bf16", Options(), True, "1"),
              cache_key(sha, "w", "bf16", Options(format="png"), True, "1")]
    assert len({base, *others}) == len(others) + 1


def test_place_links_or_copies_and_never_clobbers(tmp_path):
    src = make_photo(tmp_path / "cached.png")
    dest = tmp_path / "sub" / "moved.png"
    place(src, dest)
    assert dest.read_bytes() == src.read_bytes()
    other = make_photo(tmp_path / "other.png", size=(40, 30))
    with pytest.raises(FileExistsError):
        place(other, dest)
    assert dest.read_bytes() == src.read_bytes()
    place(other, dest, overwrite=True)
    assert dest.read_bytes() == other.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["moved.png"]  # no temporary left


_KILLED_WRITER = """
import os, sys, time
from anime_cli.folder.database import Store
folder, dest = sys.argv[1], sys.argv[2]
s = Store(folder)
tmp = dest + ".partial"
with open(tmp, "wb") as f:
    f.write(b"half")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)  # SIGKILLed here: before the rename, before record()
os.replace(tmp, dest)
s.record("key", dest)
"""


def test_sigkill_mid_write_leaves_no_entry(tmp_path):
    dest = tmp_path / "out.png"
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILLED_WRITER), str(tmp_path), str(dest)],
                         stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        assert p.stdout.readline().strip() == b"writing"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    with Store(tmp_path) as s:
        assert s.lookup("key") is None


def test_inflight_computes_each_key_once():
    import threading

    fl, computed, done = Inflight(), [], []

    def worker(key):
        if fl.begin(key):
            time.sleep(0.05)
            computed.append(key)
            fl.end(key)
        else:
            assert fl.wait(key, 10)
        done.append(key)

    threads = [threading.Thread(target=worker, args=("k" if i < 4 else f"k{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(computed) == ["k", "k4", "k5"] and len(done) == 6 and not fl.pending("k")


def test_outputs_for_a_batch_compute_identical_files_once(tmp_path):
    """What the pipeline will do: two lanes with the same bytes under two names;
    one computes, the other waits and then places the finished output."""
    import threading

    from anime_cli.run.converter import Options
    from anime_cli.folder.cache import Outputs

    src = tmp_path / "in"
    a = make_photo(src / "a.png")
    b = src / "b.png"
    b.write_bytes(a.read_bytes())
    outs = Outputs(tmp_path / "out", "w", "fp32", Options(), faces=True)
    computed, results = [], {}

    def lane(path: Path):
        dest = outs.folder / path.name  # as names.Names.claim gives it: no other input wants it
        key = outs.key(path)
        hit = outs.cached(key)
        if hit is None:
            time.sleep(0.2)  # the network
            computed.append(path.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(b"anime " + path.read_bytes()[:10])
            outs.done(key, dest)
        else:
            place(hit, dest)
        results[path.name] = dest

    threads = [threading.Thread(target=lane, args=(p,)) for p in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1
    assert results["a.png"].read_bytes() == results["b.png"].read_bytes()
    assert results["a.png"].name == "a.png" and results["b.png"].name == "b.png"
    # a later batch: both hit the cache
    again = Outputs(tmp_path / "out", "w", "fp32", Options(), faces=True)
    assert again.cached(again.key(b)) in {str(results["a.png"]), str(results["b.png"])}
    # --overwrite never reuses
    forced = Outputs(tmp_path / "out", "w", "fp32", Options(overwrite=True), faces=True)
    assert forced.cached(forced.key(a)) is None
    for o in (outs, again, forced):
        o.close()


def test_cache_survives_moving_the_output_folder(tmp_path):
    first = tmp_path / "first"
    out = make_photo(first / "sub" / "o.png")
    with Store(first) as s:
        s.record("k", str(out))
        assert s.lookup("k") == str(out)
    stored = sqlite3.connect(first / DB_NAME).execute("SELECT path FROM cache").fetchone()[0]
    assert bytes(stored) == os.fsencode(os.path.join(".", "sub", "o.png"))
    (first).rename(tmp_path / "moved")
    with Store(tmp_path / "moved") as s:
        assert s.lookup("k") == str(tmp_path / "moved" / "sub" / "o.png")


def _opener(folder: str, start, queue) -> None:
    start.wait()
    try:
        Store(folder).close()
        queue.put("ok")
    except StoreError as e:
        queue.put(str(e))


def test_processes_creating_a_new_folders_database_together_all_open_it(tmp_path):
    """Switching a new database to WAL makes SQLite answer "locked" at once to the
    others; a run started beside another must not fail on it."""
    ctx = mp.get_context("fork")
    for i in range(10):
        folder = tmp_path / str(i)
        start, q = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_opener, args=(str(folder), start, q)) for _ in range(6)]
        for p in procs:
            p.start()
        answers = [q.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        assert answers == ["ok"] * 6
