"""`make bench`: speed and memory figures for anime-cli (a benchmark, not a test).

Speed: a fixed set of ~1 MP JPEGs made from ../shared/photos, converted at
native size without face enhancement, by the naive pipeline (bench/naive.py:
full decode, eager NCHW float32, one photo after another) and by anime-cli,
each as a whole process, alternating, several runs; medians. Peak RSS of each
process; throughput as a fraction of the fp32 compute limit (the generator
costs 0.80 MFLOP per output pixel; large fp32 matrix products run at ~210
GFLOP/s on the reference 2-core machine).

Memory: anime-cli at its defaults, faces on, on a 12 MP JPEG, and on 12 MP
and 24 MP (6000x4000) JPEGs with --max-side 0, under its default
--memory-limit. The peak is the whole process's, sampled from outside
(anime-cli resets the kernel's high-water mark per file, so getrusage and
`/usr/bin/time -v` under-report it).

Pipelining: a folder of photos at the defaults, two files in flight sharing
the cores (the default) against --sequential (one file at a time on all cores).

    .venv/bin/python bench/bench.py [--runs 3] [--threads N] [--skip-speed] [--skip-pipelining] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("ANIME_CLI_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PHOTOS = SHARED / "photos"
FLOP_PER_PIXEL = 0.80e6
LIMIT = 210e9  # FLOP/s: the fp32 compute limit of the issue

# name, size: ~1 MP each, sides multiples of 32 (any size works; these keep
# the naive script free of padding questions).
SPEED_SET = [
    ("coffee.png", (1248, 832)),
    ("rocket.jpg", (1248, 832)),
    ("chelsea.png", (1248, 832)),
    ("astronaut.png", (1024, 1024)),
]


def cli() -> list[str]:
    script = Path(sys.executable).with_name("anime-cli")
    return [str(script)] if script.exists() else [sys.executable, "-m", "anime_cli"]


def make_jpeg(src: str, size: tuple[int, int], dest: Path) -> Path:
    with Image.open(PHOTOS / src) as im:
        im.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(dest, quality=95)
    return dest


class Run:
    def __init__(self, seconds: float, peak: int, log: list[dict]):
        self.seconds, self.peak, self.log = seconds, peak, log


def measure(cmd: list[str], log_file: Path | None = None) -> Run:
    """Wall time and peak RSS of a whole process. anime-cli resets its own
    high-water mark per file (so getrusage misses earlier peaks), and a forked
    child's ru_maxrss counts the parent's pages before exec (a bench process
    that ran models itself would pollute it): the peak is the largest of a
    5 ms sampler of the process's VmRSS after exec and the log's per-file peaks."""
    if log_file is not None and log_file.exists():
        log_file.unlink()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampled = [0]

    def sample():
        status = Path(f"/proc/{p.pid}/status")
        while True:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        sampled[0] = max(sampled[0], int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                return
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    stderr = p.stderr.read()
    _, status, _ = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{stderr.decode(errors='replace')[-2000:]}")
    log = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file else []
    peak = max([sampled[0]] + [int((r.get("peak_rss_mb") or 0) * 1e6) for r in log])
    return Run(seconds, peak, log)


def fraction(mp_per_s: float) -> float:
    return mp_per_s * 1e6 * FLOP_PER_PIXEL / LIMIT


def mb(n: int) -> str:
    return f"{n / 2**20:6.0f} MiB"


def speed(tmp: Path, runs: int, extra: list[str]) -> None:
    src = tmp / "speed"
    src.mkdir()
    inputs = [make_jpeg(name, size, src / (Path(name).stem + ".jpg")) for name, size in SPEED_SET]
    mp = sum(w * h for _, (w, h) in SPEED_SET) / 1e6
    naive_cmd = [sys.executable, str(HERE / "naive.py"), *map(str, inputs), "-o", str(tmp / "naive-out")]
    cli_cmd = [*cli(), "convert", *map(str, inputs), "-o", str(tmp / "cli-out"), "--max-side", "0",
               "--no-face-enhance", "--overwrite", "--quiet", *extra]
    # The network's own time comes from a --sequential run: with two files in flight a
    # file's stylize time is shared with its neighbour's and would count twice.
    log = tmp / "cli-seq.jsonl"
    seq_cmd = [*cli_cmd, "--sequential", "--log-file", str(log)]

    print(f"speed: {len(inputs)} JPEGs, {mp:.2f} MP in all, native size, no face enhancement; {runs} runs each, alternating")
    naive, ours, seq = [], [], []
    for i in range(runs):
        for name, cmd, into in (("naive", naive_cmd, naive), ("anime-cli", cli_cmd, ours),
                                ("anime-cli --sequential", seq_cmd, seq)):
            r = measure(cmd, log if into is seq else None)
            into.append(r)
            print(f"  run {i + 1}  {name:22s} {r.seconds:6.1f} s  peak {mb(r.peak)}", flush=True)

    t_naive = statistics.median(r.seconds for r in naive)
    t_ours = statistics.median(r.seconds for r in ours)
    print()
    print(f"  {'':28s} {'time':>8s} {'MP/s':>7s} {'of limit':>9s} {'peak RSS':>10s}")
    for name, t, rs in (("naive pipeline (whole run)", t_naive, naive), ("anime-cli (whole run)", t_ours, ours)):
        peak = statistics.median(r.peak for r in rs)
        print(f"  {name:28s} {t:6.1f} s {mp / t:7.3f} {fraction(mp / t):8.0%} {mb(peak):>10s}")
    net = [sum(rec["timings"].get("stylize", 0.0) for rec in r.log) for r in seq]
    if all(net):
        t_net = statistics.median(net)
        print(f"  {'network only (--sequential)':28s} {t_net:6.1f} s {mp / t_net:7.3f} {fraction(mp / t_net):8.0%}")
    print(f"\n  speed-up of anime-cli over the naive pipeline: {t_naive / t_ours:.2f}x (medians)")
    print(f"  (limit: {FLOP_PER_PIXEL / 1e6:.2f} MFLOP a pixel at {LIMIT / 1e9:.0f} GFLOP/s; above 100 % means"
          " faster than fp32 arithmetic allows, i.e. bfloat16 convolutions)\n")


def pipelining(tmp: Path, runs: int, extra: list[str]) -> None:
    """A folder of photos at the default settings (1280 px, faces on), two files
    in flight (the default) and one file at a time (--sequential)."""
    src = tmp / "folder"
    src.mkdir()
    for name, size in SPEED_SET:
        for k, scale in enumerate((1.0, 1.6)):
            make_jpeg(name, (round(size[0] * scale), round(size[1] * scale)), src / f"{Path(name).stem}{k}.jpg")
        make_photo_png(name, src / f"{Path(name).stem}.png")
    base = [*cli(), "convert", str(src), "-o", str(tmp / "folder-out"), "--overwrite", "--quiet", *extra]
    print(f"pipelining: a folder of {len(list(src.iterdir()))} photos (JPEG and PNG, 0.5-2.7 MP) at the defaults;"
          f" {runs} runs each, alternating")
    times = {"pipelined": [], "--sequential": []}
    for i in range(runs):
        for name, cmd in (("pipelined", base), ("--sequential", [*base, "--sequential"])):
            r = measure(cmd)
            times[name].append(r.seconds)
            print(f"  run {i + 1}  {name:12s} {r.seconds:6.1f} s  peak {mb(r.peak)}", flush=True)
    piped, seq = (statistics.median(times[k]) for k in ("pipelined", "--sequential"))
    print(f"\n  pipelined {piped:.1f} s, sequential {seq:.1f} s: {seq / piped:.2f}x (medians)\n")


def make_photo_png(src: str, dest: Path) -> Path:
    with Image.open(PHOTOS / src) as im:
        im.convert("RGB").resize((1024, 768), Image.Resampling.LANCZOS).save(dest)
    return dest


def memory(tmp: Path, extra: list[str]) -> None:
    src = tmp / "memory"
    src.mkdir()
    print("memory: anime-cli at its defaults (faces on, 1 GiB limit); the whole process's peak, sampled from outside")
    # photos with a face (the astronaut), so that detection and the face render count
    cases = [
        ("12 MP JPEG (4000x3000), defaults", make_jpeg("astronaut.png", (4000, 3000), src / "photo12.jpg"), []),
        ("12 MP JPEG (4000x3000), --max-side 0", src / "photo12.jpg", ["--max-side", "0"]),
        ("24 MP JPEG (6000x4000), --max-side 0", make_jpeg("astronaut.png", (6000, 4000), src / "photo24.jpg"),
         ["--max-side", "0"]),
    ]
    for label, path, opts in cases:
        out, log = tmp / ("mem-" + path.stem + "-".join(opts)), tmp / (path.stem + ".jsonl")
        r = measure([*cli(), "convert", str(path), "-o", str(out), "--overwrite", "--quiet",
                     "--log-file", str(log), *opts, *extra], log)
        made = next(out.iterdir())
        with Image.open(made) as im:
            size = im.size
        print(f"  {label:40s} peak {mb(r.peak)}  {r.seconds:6.1f} s  output {size[0]}x{size[1]}", flush=True)
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description="anime-cli speed and memory figures (not a test)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each pipeline (medians)")
    ap.add_argument("--threads", type=int, help="passed to anime-cli --threads")
    ap.add_argument("--skip-memory", action="store_true", help="only the speed comparison")
    ap.add_argument("--skip-speed", action="store_true", help="no naive-vs-anime-cli comparison")
    ap.add_argument("--skip-pipelining", action="store_true", help="no pipelined-vs-sequential comparison")
    args = ap.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"sample photos not found at {PHOTOS}")
    extra = ["--threads", str(args.threads)] if args.threads else []
    print(f"cores this process may use: {len(os.sched_getaffinity(0))}\n")
    with tempfile.TemporaryDirectory(prefix="anime-bench-") as tmp:
        if not args.skip_speed:
            speed(Path(tmp), args.runs, extra)
        if not args.skip_pipelining:
            pipelining(Path(tmp), args.runs, extra)
        if not args.skip_memory:
            memory(Path(tmp), extra)


if __name__ == "__main__":
    main()
