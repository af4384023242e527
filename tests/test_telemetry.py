"""Peak RSS by every method (the /proc ones disabled as on macOS or in a locked-down
container), the sampler's lifetime, the record's keys and the escaping of names."""

from __future__ import annotations

import json
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from anime_cli.logs import telemetry
from anime_cli.logs.telemetry import KEPT_LARGE, PeakTracker, Record, safe

MB = 10**6


def _samplers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "anime-cli-rss"]


def _settle(timeout=2.0) -> list[threading.Thread]:
    end = time.monotonic() + timeout
    while _samplers() and time.monotonic() < end:
        time.sleep(0.01)
    return _samplers()


@pytest.fixture
def no_clear_refs(monkeypatch, tmp_path):
    """/proc readable, clear_refs not writable (some containers)."""
    monkeypatch.setattr(telemetry, "_CLEAR_REFS", str(tmp_path / "absent" / "clear_refs"))


@pytest.fixture
def no_proc(monkeypatch, tmp_path):
    """No /proc at all, as on macOS and Windows."""
    monkeypatch.setattr(telemetry, "_CLEAR_REFS", str(tmp_path / "absent" / "clear_refs"))
    monkeypatch.setattr(telemetry, "_STATUS", str(tmp_path / "absent" / "status"))


def _spike(tracker: PeakTracker, key, nbytes: int) -> int:
    """Hold `nbytes` (touched) for 60 ms inside key's block, freed before it ends."""
    with tracker.active(key):
        a = np.ones(nbytes, np.uint8)
        time.sleep(0.06)
        del a
    return tracker.take(key)


def test_the_proc_method_is_exact_here():
    with PeakTracker() as t:
        assert t.method == "vmhwm" and t.exact
        base = telemetry.rss_bytes()
        assert _spike(t, "a", 150 * MB) >= base + 140 * MB


@pytest.mark.parametrize("env", ["no_clear_refs", "no_proc"])
def test_sampled_methods_see_a_spike_and_say_so(env, request):
    request.getfixturevalue(env)
    with PeakTracker() as t:
        assert t.method == {"no_clear_refs": "sampled", "no_proc": "psutil"}[env]
        assert not t.exact
        base = telemetry.rss_bytes()
        assert base > 0  # rss_bytes() itself works without /proc (psutil)
        assert _spike(t, "a", 150 * MB) >= base + 140 * MB
        assert t.overall >= base + 140 * MB


def test_getrusage_when_nothing_else(no_proc, monkeypatch):
    monkeypatch.setattr(telemetry, "_psutil_rss", lambda: None)
    t = PeakTracker()
    assert t.method == "getrusage"
    peak = _spike(t, "a", 20 * MB)
    assert peak >= 20 * MB  # the process's own peak so far, at least what this block held
    assert not _samplers()


def test_samplers_stop_when_no_file_is_active(no_clear_refs):
    """A leak once: each tracker started a 5 ms thread that never stopped."""
    trackers = [PeakTracker() for _ in range(20)]
    assert not _samplers()  # none before any work
    for i, t in enumerate(trackers):
        with t.active(i):
            assert t._thread is not None and t._thread.is_alive()
        t.take(i)
    assert not _settle()
    # overlapping blocks share one thread per tracker, and it ends after the last one
    t = trackers[0]
    with t.active("a"), t.active("b"):
        assert _samplers() == [t._thread]
    assert not _settle()


def test_close_stops_the_sampler_at_once_and_for_good(no_clear_refs):
    t = PeakTracker()
    block = t.active("a")
    block.__enter__()
    assert _samplers()
    t.close()
    assert not _samplers()  # joined: gone when close returns
    block.__exit__(None, None, None)
    with t.active("b"):
        assert not _samplers()  # a closed tracker measures at the marks only
    assert t.take("b") > 0


def test_a_forgotten_tracker_does_not_keep_its_thread(no_clear_refs):
    t = PeakTracker()
    block = t.active("a")
    block.__enter__()
    del t, block  # never closed, block never left
    import gc

    gc.collect()
    assert not _settle()


def test_the_pipeline_measures_without_proc(no_proc, stylizer, tmp_path, photos):
    from anime_cli.inputs.discover import discover
    from anime_cli.run.converter import Converter, Options

    from helpers import make_photo

    src = make_photo(tmp_path / "in" / "p.jpg", (320, 240), fmt="JPEG")
    conv = Converter(stylizer, Options(output_dir=tmp_path / "out", max_side=320))
    assert conv.peaks.method == "psutil"
    [rec] = list(conv.run(discover([str(src)], False, (tmp_path / "out", None))))
    assert rec.status == "ok", rec.error
    assert rec.peak_rss_mb and rec.peak_rss_mb > 100  # torch and the model are resident
    assert conv.peaks.overall >= (rec.peak_rss_mb - 0.1) * MB  # the record is rounded to 0.1 MB
    assert rec.rss_method in (None, "psutil")  # None until the pipeline fills it in
    conv.peaks.close()
    assert not _settle()


def test_safe_escapes_what_a_terminal_would_act_on():
    assert safe("evil\x1b[2J\x1b]0;pwned.jpg\x07") == "evil\\x1b[2J\\x1b]0;pwned.jpg\\x07"
    assert safe("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert safe("del\x7f c1\x9b\x85") == "del\\x7f c1\\x9b\\x85"
    assert safe("photo\u202egpj.exe") == "photo\\u202egpj.exe"
    assert safe("iso\u2066x\u2069 lrm\u200e ls\u2028") == "iso\\u2066x\\u2069 lrm\\u200e ls\\u2028"
    assert safe("caf\udce9.jpg") == "caf\\xe9.jpg"  # a name that is not UTF-8
    for ok in ("photo.jpg", "café 日本 🙂.png", "C:\\photos\\a b.jpg", "[red]x[/red].jpg"):
        assert safe(ok) == ok
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xDC80)
    shown = safe(every)
    assert not [c for c in shown if unicodedata.category(c) == "Cc" or unicodedata.bidirectional(c)
                in ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI")]


def test_human_line_escapes_and_json_keeps_the_name():
    name = "evil\x1b[2J\x1b]0;pwned.jpg"
    rec = Record(input=name, status="error", error=f"{name}: corrupt data")
    line = rec.human()
    assert "\x1b" not in line and line.count("\\x1b") == 4 and "\n" not in line
    assert json.loads(rec.to_json())["input"] == name


def _ok(**kw) -> Record:
    return Record(input="p.jpg", output="out/p.jpg", status="ok", input_size=[800, 600],
                  decode_size=[800, 600], output_size=[800, 600], peak_rss_mb=400.0, **kw)


@pytest.mark.parametrize("faces,enhanced,kept,text", [
    (0, 0, {}, ""),
    (2, 2, {}, "faces 2"),
    (1, 0, {KEPT_LARGE: 1}, "faces 1 (kept 1: already >= face size)"),
    (3, 1, {KEPT_LARGE: 1, "outside the picture": 1},
     "faces 3 (enhanced 1, kept 2: 1 already >= face size, 1 outside the picture)"),
])
def test_faces_found_enhanced_and_why_kept(faces, enhanced, kept, text):
    rec = _ok(faces=faces, faces_enhanced=enhanced, faces_kept=kept)
    assert rec.faces_text() == text
    assert (text in rec.human()) and (("faces" in rec.human()) == bool(faces))
    d = json.loads(rec.to_json())
    assert (d["faces"], d["faces_enhanced"], d["faces_kept"]) == (faces, enhanced, kept)


def test_json_keys_old_kept_new_added_video_only_when_set():
    old = {"input", "output", "status", "reason", "error", "input_bytes", "input_format", "input_size",
           "decode_size", "output_size", "faces", "timings", "seconds", "peak_rss_mb", "plan", "notes"}
    new = {"faces_enhanced", "faces_kept", "style", "cached", "rss_method"}
    d = json.loads(_ok(style="hayao", rss_method="psutil").to_json())
    assert set(d) == old | new
    assert (d["style"], d["cached"], d["rss_method"]) == ("hayao", False, "psutil")
    v = json.loads(_ok(frames=120, fps=24.0, duration=5.0, audio=1).to_json())
    assert (v["frames"], v["fps"], v["duration"], v["audio"]) == (120, 24.0, 5.0, 1)
    assert "120 frames at 24 fps, 1 audio stream copied" in _ok(frames=120, fps=24.0, audio=1).human()
    assert "cached" in _ok(cached=True).human()


def test_cli_escapes_control_characters_in_names(tmp_path):
    """Issue 10: a name that would clear the screen and set the window title."""
    from helpers import invoke, make_photo, read_log

    name = "evil\x1b[2J\x1b]0;pwned\x07\u202egpj.jpg"
    make_photo(tmp_path / "in" / name, fmt="JPEG")
    (tmp_path / "in" / "bad\x9b31m.jpg").write_bytes(b"not a jpeg")
    code, _, err = invoke("convert", tmp_path / "in", "-o", tmp_path / "out", "--no-face-enhance",
                          "--log-file", tmp_path / "run.jsonl")
    assert code == 1, err  # the bad one fails, the batch goes on
    assert not any(c in err for c in "\x1b\x07\x9b\u202e"), repr(err)
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07\\u202egpj.jpg" in err and "bad\\x9b31m.jpg" in err
    logged = {Path(r["input"]).name: r for r in read_log(tmp_path / "run.jsonl")}
    assert logged[name]["status"] == "ok" and Path(logged[name]["output"]).name == name
    assert logged["bad\x9b31m.jpg"]["status"] == "error"
