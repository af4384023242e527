"""stdin, stdout and stderr as a shell script uses them, broken in every way
a careless pipeline breaks them: each is one error record with a one-line
reason and exit 1, never a traceback, never a silent `ok`."""

from __future__ import annotations

import subprocess

import pytest

from helpers import CLI, files_in, make_photo, read_log

FAST = ("--no-face-enhance", "--max-side", "256")


def _picture(tmp_path):
    return make_photo(tmp_path / "p.png", size=(320, 240))


def _only_record(log):
    (rec,) = read_log(log)
    return rec


def test_reader_that_stops_early_is_an_error_not_ok(tmp_path):
    """`-o - | head -c 100`: the reader goes away with most of the picture unread.

    The pipe is shrunk to one page, so the picture (tens of KB) cannot fit in
    it before the reader closes: otherwise a fast writer wins the race and the
    run is rightly `ok`."""
    import fcntl
    import os

    log = tmp_path / "run.jsonl"
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    assert fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) == 4096
    with os.fdopen(r, "rb", buffering=0) as reader:  # unbuffered: it takes only what it reads
        proc = subprocess.Popen([*CLI, "convert", _picture(tmp_path), "-o", "-", "--log-file", log, *FAST],
                                stdout=w, stderr=subprocess.PIPE)
        os.close(w)
        assert reader.read(100)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    rec = _only_record(log)
    assert rec["status"] == "error" and "reader closed the pipe" in rec["error"]
    assert "Traceback" not in err and "reader closed the pipe" in err


def test_reader_that_never_reads_is_an_error(tmp_path):
    """`-o - | true`"""
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen([*CLI, "convert", _picture(tmp_path), "-o", "-", "--log-file", log, *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    assert _only_record(log)["status"] == "error"
    assert "Traceback" not in err


def test_full_device_on_stdout_is_an_error(tmp_path):
    """`-o - > /dev/full`"""
    log = tmp_path / "run.jsonl"
    with open("/dev/full", "wb") as full:
        p = subprocess.run([*CLI, "convert", _picture(tmp_path), "-o", "-", "--log-file", log, *FAST],
                           stdout=full, stderr=subprocess.PIPE, timeout=120)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    rec = _only_record(log)
    assert rec["status"] == "error" and "No space left" in rec["error"]
    assert "Traceback" not in err


def _shell(cmd: str, tmp_path):
    line = " ".join(f"'{c}'" for c in map(str, CLI)) + " " + cmd
    return subprocess.run(["sh", "-c", line], cwd=tmp_path, capture_output=True, timeout=120)


def test_closed_stdout_is_an_error_and_the_log_gets_no_picture(tmp_path):
    """`-o - >&-`: the next file opened would take fd 1; the picture must not land in it."""
    _picture(tmp_path)
    p = _shell(f"convert p.png -o - --log-file run.jsonl {' '.join(FAST)} >&-", tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 1, err
    rec = _only_record(tmp_path / "run.jsonl")  # the log holds JSON only
    assert rec["status"] == "error" and "stdout is closed" in rec["error"]
    assert "Traceback" not in err


def test_closed_stdin_is_an_error(tmp_path):
    p = _shell(f"convert - -o out --log-file run.jsonl {' '.join(FAST)} <&-", tmp_path)
    assert p.returncode == 1, p.stderr.decode()
    rec = _only_record(tmp_path / "run.jsonl")
    assert rec["status"] == "error" and "stdin is closed" in rec["error"]


def test_non_image_on_stdin_to_stdout_is_an_error_not_an_empty_ok(tmp_path):
    log = tmp_path / "run.jsonl"
    p = subprocess.run([*CLI, "convert", "-", "-o", "-", "--log-file", log, *FAST], input=b"hello, not a picture\n",
                       capture_output=True, timeout=120)
    assert p.returncode == 1 and p.stdout == b""
    rec = _only_record(log)
    assert rec["status"] == "error" and "nothing written to stdout" in rec["error"]


def test_closed_stderr_does_not_stop_the_batch(tmp_path):
    """`2>&1 | head -2`: the reader of stderr goes away; every file is still
    converted and logged."""
    src = tmp_path / "in"
    for i in range(4):
        make_photo(src / f"p{i}.png", size=(64, 48))
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen([*CLI, "convert", src, "-o", tmp_path / "out", "--log-file", log, *FAST],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.stderr.close()
    assert proc.wait(timeout=300) == 0
    assert [r["status"] for r in read_log(log)] == ["ok"] * 4
    assert files_in(tmp_path / "out") == [f"p{i}.png" for i in range(4)]


@pytest.mark.parametrize("kind", ["file", "stdin-bytes", "stdin-stream", "folder"])
def test_the_python_api_converts_every_input_kind(tmp_path, kind, stylizer, monkeypatch):
    import io
    import sys

    from anime_cli.inputs.discover import STDIN, Job, discover
    from anime_cli.run.converter import Converter, Options

    src = make_photo(tmp_path / "in" / "p.png", size=(64, 48))
    options = Options(output_dir=tmp_path / "out", face_enhance=False)
    if kind == "file":
        recs = [Converter(stylizer, options).convert(Job(str(src), src, src.relative_to(src.parent)))]
    elif kind == "stdin-bytes":
        recs = [Converter(stylizer, options, stdin=src.read_bytes()).convert(Job(STDIN, None, __import__("pathlib").Path("stdin")))]
    elif kind == "stdin-stream":
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(src.read_bytes())))
        recs = [Converter(stylizer, options).convert(discover(["-"], False)[0])]
    else:
        recs = list(Converter(stylizer, options).run(discover([str(src.parent)], False)))
    assert [r.status for r in recs] == ["ok"], recs
    assert recs[0].output_size == [64, 48]
