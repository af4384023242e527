"""The work-counted progress bar, rendered by rich into a string as a terminal would see it."""

from __future__ import annotations

import io
import re
import threading

import pytest
from rich.console import Console

from anime_cli.logs.progress import WorkProgress, short


def _console(terminal=True) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=120, color_system=None,
                   highlight=False, markup=False), buf


def _shown(wp: WorkProgress, buf: io.StringIO) -> str:
    wp._progress.refresh()
    return buf.getvalue()


def test_the_bar_moves_inside_a_file():
    console, buf = _console()
    with WorkProgress(console, total_files=1) as wp:
        wp.planned("big", "big.png", 1000)
        seen = []
        for _ in range(10):
            wp.advance("big", 100)
            seen.append(wp.completed / wp.total)
            _shown(wp, buf)
        assert seen == pytest.approx([i / 10 for i in range(1, 11)])
        out = _shown(wp, buf)
    assert "converting big.png" in out and "100%" in out and "0/1 files" in out
    assert {f"{p}%" for p in range(10, 101, 10)} <= set(re.findall(r"\d+%", out))


def test_unprobed_files_count_as_the_mean_of_the_probed():
    console, _ = _console()
    wp = WorkProgress(console, total_files=100_000)
    assert wp.total is None  # nothing probed yet: no guess
    wp.planned(1, "a.jpg", 300)
    wp.planned(2, "b.jpg", 100)
    assert wp.total == pytest.approx(400 + 99_998 * 200)
    wp.finished(1)
    wp.finished(2)
    assert wp.completed == 400 and wp.total == pytest.approx(400 + 99_998 * 200)


def test_finished_jumps_to_the_estimate_and_overshoot_is_not_counted():
    console, _ = _console()
    wp = WorkProgress(console, total_files=2)
    wp.planned("a", "a.jpg", 100)
    wp.advance("a", 30)
    wp.advance("a", 500)  # the engine did more than estimated: the file stops at its estimate
    assert wp.completed == 100
    wp.planned("b", "b.jpg", 100)
    wp.advance("b", 40)
    wp.finished("b")  # the estimate was high: the rest is counted when the file ends
    assert wp.completed == 200
    wp.advance("b", 10)  # late reports of a finished file, and of unknown keys, change nothing
    wp.advance("zzz", 10)
    assert wp.completed == 200


def test_grow_adds_a_face_render():
    console, _ = _console()
    wp = WorkProgress(console, total_files=1)
    wp.planned("a", "a.jpg", 100)
    wp.advance("a", 100)
    wp.grow("a", 50)
    assert (wp.completed, wp.total) == (100, 150)
    wp.advance("a", 50)
    assert wp.completed == 150


def test_files_that_end_before_being_probed_are_files_of_no_work():
    console, _ = _console()
    wp = WorkProgress(console, total_files=4)
    wp.finished("readme")  # skipped: not an image
    wp.planned("a", "a.jpg", 90)
    assert wp.total == pytest.approx(90 + 2 * 45)  # the mean over the two files seen
    assert wp._files_text() == "1/4 files"


def test_description_names_the_files_in_flight_shortened_and_escaped():
    console, buf = _console()
    with WorkProgress(console, total_files=5) as wp:
        wp.planned(1, "holiday/beach.jpg", 10)
        assert wp.description == "converting holiday/beach.jpg"
        wp.planned(2, "evil\x1b[2J\x1b]0;pwned.jpg", 10)
        assert wp.description == "converting holiday/beach.jpg, evil\\x1b[2J\\x1b]0;pwned.jpg"
        wp.planned(3, "x" * 100 + ".jpg", 10)
        assert wp.description.endswith(" +1")
        wp.finished(1)
        long = short("x" * 100 + ".jpg")
        assert wp.description == f"converting evil\\x1b[2J\\x1b]0;pwned.jpg, {long}"
        assert len(long) == 32 and long.startswith("xxx") and long.endswith("xx.jpg") and "…" in long
        out = _shown(wp, buf)
    assert "\x1b[2J" not in out and "\x1b]0;" not in out


def test_advance_is_thread_safe():
    console, _ = _console()
    wp = WorkProgress(console, total_files=2)
    wp.planned("a", "a.jpg", 10**9)
    wp.planned("b", "b.jpg", 10**9)

    def work(key):
        for _ in range(2000):
            wp.advance(key, 1)

    threads = [threading.Thread(target=work, args=("ab"[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wp.completed == 16000


@pytest.mark.parametrize("terminal,enabled", [(True, False), (False, False)])
def test_disabled_prints_nothing(terminal, enabled):
    console, buf = _console(terminal)
    with WorkProgress(console, total_files=1, enabled=enabled) as wp:
        wp.planned("a", "a.jpg", 10)
        wp.advance("a", 5)
        wp.finished("a")
    assert buf.getvalue() == ""
    assert wp.completed == 10  # the counts are still kept


def test_the_bar_is_transient_and_lines_print_above_it():
    console, buf = _console()
    with WorkProgress(console, total_files=1) as wp:
        wp.planned("a", "a.jpg", 10)
        console.print("ok      a.jpg")
        wp.finished("a")
    out = buf.getvalue()
    assert "ok      a.jpg" in out
