"""Long runs keep memory flat: 200 files in one CLI process, mixed formats
and sizes, some of them broken; the peak RSS of each file, as logged, does not grow
from file to file.

The per-record peak_rss_mb is the process's high-water mark over that file's own
stages (anime-cli resets the kernel's mark per file), so a leak of even a few hundred
KB per file would show as a slope over 180 files.
"""

from __future__ import annotations

import statistics
import time

import pytest

from helpers import base, encoded, read_log, run_cli

N = 200


def make_long_batch(folder, n=N):
    folder.mkdir(parents=True)
    sizes = [(64, 48), (48, 64), (160, 120), (60, 45)]
    srcs = ["coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png"]
    fmts = [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")]
    for i in range(n):
        ext, fmt = fmts[i % 3]
        data = encoded(base(sizes[i % 4], src=srcs[(i // 4) % 4]).rotate(3 * i), fmt)
        if i % 10 == 5:  # a truncated one now and then: error paths must not leak either
            data = data[: len(data) // 2]
        (folder / f"f{i:03d}.{ext}").write_bytes(data)


@pytest.mark.slow
def test_200_files_keep_peak_rss_flat(tmp_path):
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "run.jsonl"
    make_long_batch(src)
    t = time.monotonic()
    # One intra-op thread: this measures memory, and on a shared 2-core box torch's two
    # OpenMP threads slow down some 40x whenever another process holds a core.
    code, _, err = run_cli("convert", src, "-o", out, "--log-file", log, "--quiet", "--no-face-enhance",
                           "--threads", "1", timeout=600, env={"OMP_NUM_THREADS": "1"})
    seconds = time.monotonic() - t
    records = read_log(log)
    assert code == 1 and len(records) == N, err  # the truncated files failed, the rest went on
    assert sum(r["status"] == "error" for r in records) == N // 10
    peaks = [r["peak_rss_mb"] for r in records]
    early, late = statistics.median(peaks[10:30]), statistics.median(peaks[-20:])
    slope = statistics.linear_regression(range(19, N), peaks[19:]).slope  # MB per file
    summary = err.strip().splitlines()[-1]
    print(f"\n{N} files in {seconds:.0f}s; peak RSS file 20: {peaks[19]} MB, file 200: {peaks[-1]} MB; "
          f"median 11-30: {early} MB, median 181-200: {late} MB; max {max(peaks)} MB; "
          f"slope {slope * 1000:.1f} KB/file; {summary}")
    assert records[19]["status"] == records[-1]["status"] == "ok"
    assert abs(peaks[-1] - peaks[19]) <= 10, (peaks[19], peaks[-1])
    assert late - early <= 5, (early, late)
    assert slope * 180 <= 5, f"{slope * 1000:.1f} KB per file"
