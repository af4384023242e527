"""The progress bar as a user sees it: the real CLI on a pseudo-terminal.

The bar counts work, reported by the engine strip by strip, so it moves
inside one big file (it once read 0/1 for the whole conversion). The parser
the test relies on is checked against real rich output of WorkProgress on a pty.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time

import pytest
from PIL import Image

from helpers import CLI, PHOTOS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no pty on Windows")

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3})%")


def bar_fractions(text: str) -> list[int]:
    """The completed percentages the bar showed, in order, from what a terminal
    received (escape sequences removed)."""
    return [int(p) for p in _PERCENT.findall(_ANSI.sub("", text))]


def run_on_pty(argv: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
    """Run argv with stdin, stdout and stderr on a pseudo-terminal, 160 columns
    wide; (exit status, everything the terminal received)."""
    e = {k: v for k, v in os.environ.items() if k not in ("TTY_INTERACTIVE", "TTY_COMPATIBLE", "TERM")}
    e.update(TERM="xterm-256color", COLUMNS="160", LINES="40", **(env or {}))
    main, sub = pty.openpty()
    proc = subprocess.Popen(argv, stdin=sub, stdout=sub, stderr=sub, env=e, close_fds=True)
    os.close(sub)
    chunks, end = [], time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    data = os.read(main, 65536)
                except OSError:  # EIO: every writer of the terminal has gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{argv} did not end within {timeout}s")
    finally:
        os.close(main)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


_RECORDER = textwrap.dedent("""
    import time
    from rich.console import Console
    from anime_cli.logs.progress import WorkProgress

    console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    assert console.is_terminal
    with WorkProgress(console, total_files=1, enabled=True) as bar:
        bar.planned("big", "BIG.png", 1000)
        for _ in range(20):
            time.sleep(0.1)
            bar.advance("big", 50)
        bar.finished("big")
        console.print("ok      BIG.png  1600x1600 -> anime-out/BIG.png")
""")


def test_parser_reads_a_recorded_workprogress_bar():
    code, out = run_on_pty([sys.executable, "-c", _RECORDER], timeout=60)
    assert code == 0, out
    before = out[: out.index("ok      BIG.png")]
    seen = bar_fractions(before)
    assert len(set(seen)) >= 5, (seen, before[-500:])
    assert seen == sorted(seen) and max(seen) <= 100
    assert "converting BIG.png" in _ANSI.sub("", before)


def test_parser_ignores_escape_sequences_and_other_numbers():
    text = "\x1b[2K\x1b[1Gconverting a.jpg \x1b[38;5;197m━━━━\x1b[0m  37% 0/1 files \x1b]0;t 12%\x07 1.5% x"
    assert bar_fractions(text) == [37]


@pytest.mark.slow
def test_the_cli_bar_moves_inside_one_big_file(tmp_path):
    # passes after integration: the CLI's bar counts work (progress.WorkProgress)
    big = tmp_path / "BIG.png"
    with Image.open(PHOTOS / "astronaut.png") as im:
        im.convert("RGB").resize((1600, 1600), Image.Resampling.LANCZOS).save(big)
    code, out = run_on_pty([*CLI, "convert", str(big), "--max-side", "0", "--no-face-enhance",
                            "-o", str(tmp_path / "out")], timeout=600)
    assert code == 0, out[-2000:]
    plain = _ANSI.sub("", out)
    assert re.search(r"ok\s+\S*BIG\.png", plain), plain[-2000:]
    before = plain[: re.search(r"ok\s+\S*BIG\.png", plain).start()]
    seen = bar_fractions(before)
    assert len(set(seen)) >= 5, f"the bar showed {sorted(set(seen))} before the file ended"
    assert "BIG.png" in before  # the description names the file in progress
