"""The output folder shared by reruns, by two runs at once and by runs that
were killed: nothing clobbered, nothing corrupt, no stale temporaries."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time

from PIL import Image

from helpers import CLI, files_in, invoke, make_photo, read_log, run_cli

FAST = ("--no-face-enhance", "--max-side", "96")


def test_two_runs_into_one_folder_never_fail_nor_clobber(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(8):
        make_photo(src / f"p{i}.png", size=(128, 96))
    procs = [subprocess.Popen([*CLI, "convert", src, "-o", out, "--log-file", tmp_path / f"run{k}.jsonl", *FAST],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k in range(2)]
    errs = [p.communicate(timeout=600)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    logs = [read_log(tmp_path / f"run{k}.jsonl") for k in range(2)]
    for k in range(8):
        statuses = sorted((logs[0][k]["status"], logs[1][k]["status"]))
        # each file written by exactly one run; the other skipped it (or wrote nothing)
        assert statuses in (["ok", "skipped"], ["ok", "ok"]) or statuses == ["skipped", "skipped"], statuses
    for p in files_in(out):
        p = out / p
        with Image.open(p) as im:
            im.load()  # whole, valid pictures
    assert files_in(out) == [f"p{i}.png" for i in range(8)]


def test_a_file_another_run_finished_first_is_skipped_exists(tmp_path):
    """The race's outcome, made deterministic: the output appears between the
    probe and the write. The publish does not replace it and the file is skipped."""
    from anime_cli.errors import OutputExists
    from anime_cli.folder.files import write_atomic

    dest = tmp_path / "p.png"
    dest.write_bytes(b"another run's picture")
    im = Image.new("RGB", (8, 8))
    try:
        write_atomic(im, dest, "PNG", 95, overwrite=False)
    except OutputExists:
        pass
    else:
        raise AssertionError("the write replaced a file that appeared meanwhile")
    assert dest.read_bytes() == b"another run's picture"
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary left


def _stale(folder, name, age=3600):
    p = folder / name
    p.write_bytes(b"half a picture")
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def test_a_rerun_removes_stale_temporaries_of_killed_runs(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "p.png", size=(64, 48))
    out.mkdir()
    stale = _stale(out, ".p.png.k2j4h5g6.tmp")
    code, _, err = invoke("convert", src, "-o", out, *FAST)
    assert code == 0, err
    assert not stale.exists()
    assert files_in(out) == ["p.png"]


def test_a_temporary_a_live_process_holds_is_left_alone(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    make_photo(src / "p.png", size=(64, 48))
    out.mkdir()
    live = _stale(out, ".q.png.abcdefgh.tmp")
    with open(live, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as a writer in another process holds it
        code, _, err = run_cli("convert", src, "-o", out, *FAST)  # its own process: the lock is another's
        assert code == 0, err
        assert live.exists()


def test_only_our_pattern_is_removed(tmp_path):
    from anime_cli.folder.files import remove_stale_temps

    keep = [_stale(tmp_path, n) for n in ("notes.tmp", ".hidden.tmp", ".x.png.SHORT.tmp", "x.png.abcdefgh.tmp")]
    gone = _stale(tmp_path, ".x.png.abcdefgh.tmp")
    fresh = _stale(tmp_path, ".y.png.abcdefgh.tmp", age=0)  # maybe a writer about to lock it
    assert remove_stale_temps(tmp_path) == 1
    assert all(p.exists() for p in keep) and fresh.exists() and not gone.exists()


def test_an_impossible_memory_limit_is_refused_before_any_work(tmp_path):
    src = make_photo(tmp_path / "p.png")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--memory-limit", "50MB",
                          "--log-file", tmp_path / "run.jsonl")
    assert code == 2
    line = err.strip()
    assert line.startswith("anime-cli: --memory-limit 50MB is below what the models need: at least ") and "\n" not in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "run.jsonl").exists()
