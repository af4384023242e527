"""Interruption and a full disk: no half file, no temporary file, no output
without its record, a summary, and the documented exit code.

Signals go to the CLI in a real subprocess; a full disk needs no process of its own
and is met in-process. The full disk is a small tmpfs mounted by the test, which
needs root (CAP_SYS_ADMIN); elsewhere that test is skipped and says why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from helpers import CLI, files_in, base, encoded, invoke, read_log


def make_batch(folder: Path, n: int, size=(64, 48)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    srcs = ["coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png"]
    fmts = [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")]
    paths = []
    for i in range(n):
        ext, fmt = fmts[i % 3]
        p = folder / f"p{i:03d}.{ext}"
        p.write_bytes(encoded(base(size, src=srcs[i % 4]).rotate(7 * i), fmt))
        paths.append(p)
    return paths


def leftovers(out: Path) -> list[Path]:
    """Temporary or hidden files left in the output tree."""
    return [out / p for p in files_in(out, recursive=True) if Path(p).name.startswith(".") or p.endswith(".tmp")]


def check_outputs_match_log(out: Path, records: list[dict]) -> None:
    logged = {Path(r["output"]) for r in records if r["status"] == "ok"}
    on_disk = {out / p for p in files_in(out, recursive=True)}
    assert on_disk == logged, f"on disk but not logged: {on_disk - logged}; logged but missing: {logged - on_disk}"
    for p in on_disk:
        with Image.open(p) as im:
            im.load()  # whole


def wait_for_records(log: Path, n: int, proc: subprocess.Popen, timeout=180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if log.exists() and log.read_text(errors="replace").count("\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the CLI ended before {n} records: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {n} records within {timeout}s")


@pytest.mark.parametrize("sig,after", [(signal.SIGINT, 1), (signal.SIGTERM, 3), (signal.SIGHUP, 2)],
                         ids=["SIGINT-after-1", "SIGTERM-after-3", "SIGHUP-after-2"])
def test_signal_mid_batch_stops_cleanly(tmp_path, sig, after):
    """A signal while files are being stylized and written: exit 130, the summary so
    far, no traceback, no temporary file, and outputs exactly the files logged ok."""
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "run.jsonl"
    make_batch(src, 24)
    proc = subprocess.Popen([*CLI, "convert", str(src), "-o", str(out), "--log-file", str(log),
                             "--no-face-enhance"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_records(log, after, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode("utf-8", "replace")
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    records = read_log(log)
    assert after <= len(records) < 24, "the signal did not stop the batch"
    summary = err.strip().splitlines()[-1]
    ok = sum(r["status"] == "ok" for r in records)
    assert summary.startswith(f"interrupted: {ok} ok, 0 skipped, 0 failed, {24 - len(records)} not started"), summary
    assert leftovers(out) == []
    check_outputs_match_log(out, records)


def test_interrupt_before_any_work_exits_130_without_traceback(tmp_path):
    """Ctrl-C while torch and the weights load: nothing to clean, one line, 130."""
    src = tmp_path / "in"
    make_batch(src, 2)
    proc = subprocess.Popen([*CLI, "convert", str(src), "-o", str(tmp_path / "out"), "--no-face-enhance"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode("utf-8", "replace")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().startswith(("anime-cli: interrupted", "interrupted:")), err


# ----------------------------------------------------------------------------- ENOSPC


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs with only `free` bytes left: (mount point, set_free)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for the disk-full test")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")

    def set_free(nbytes: int):
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fd)
        os.truncate(filler, max(0, filler.stat().st_size - nbytes))

    try:
        yield mnt, set_free
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("mode", ["pipelined", "sequential"])
def test_disk_full_is_an_error_record_and_stops_the_batch(tmp_path, small_disk, mode):
    mnt, set_free = small_disk
    src, out, log = tmp_path / "in", mnt / "out", tmp_path / "run.jsonl"
    make_batch(src, 12)
    set_free(40 * 1024)  # room for a few small outputs, not for twelve
    code, _, err = invoke("convert", src, "-o", out, "--log-file", log, "--no-face-enhance", "--format", "png",
                          *(["--sequential"] if mode == "sequential" else []))
    assert code == 1, err
    assert "Traceback" not in err, err
    records = read_log(log)
    assert 0 < len(records) < 12, [r["status"] for r in records]
    *before, last = records
    assert all(r["status"] == "ok" for r in before), before
    assert last["status"] == "error" and "No space left on device" in last["error"], last
    assert last["output"] is None
    assert "stopping:" in err and f"{12 - len(records)} not started" in err, err
    assert leftovers(out) == []  # the partial temp file of the failed write is gone
    check_outputs_match_log(out, records)


def test_disk_full_with_the_log_on_it_too(tmp_path, small_disk):
    """The log on the full disk as well: still no traceback, exit 1, and the reason said."""
    mnt, set_free = small_disk
    src, out, log = tmp_path / "in", mnt / "out", mnt / "run.jsonl"
    make_batch(src, 12)
    set_free(24 * 1024)
    code, _, err = invoke("convert", src, "-o", out, "--log-file", log, "--no-face-enhance", "--format", "png")
    assert code == 1, err
    assert "Traceback" not in err and "No space left on device" in err, err
    assert leftovers(out) == []
