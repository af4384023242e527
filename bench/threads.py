"""How the network scales with threads, and what memory it plans: one
2000x1500 picture at 1, 2, 4, 8, 16 threads and the machine's own count, in
one process, bf16 (where it runs), int8 and fp32, each at the default budget. A
measurement for the README, not a test.

    .venv/bin/python bench/threads.py [--runs 2] [--threads 1,2,4] [--workers N]

MP/s is the median of --runs; peak is the process's VmRSS sampled every
2 ms during the runs (the whole process: torch, the weights, the picture).
--workers overrides cpu.MAX_WORKERS (band workers a pass), to compare designs.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI runs (cli.py), before torch loads
import statistics
import threading
import time

import numpy as np
from PIL import Image

from anime_cli.run import budget
from anime_cli.engine import bf16_works, cpu, default_threads
from anime_cli.logs.telemetry import rss_bytes
from anime_cli.options import DEFAULT_MEMORY_LIMIT
from anime_cli.stylize.session import Stylizer
from anime_cli.weights import catalog

from bench import PHOTOS

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni", "avx512_vnni")


class Peak:
    def __init__(self):
        self.peak, self.done = 0, False

    def __enter__(self):
        self.peak, self.done = rss_bytes(), False

        def sample():
            while not self.done:
                self.peak = max(self.peak, rss_bytes())
                time.sleep(0.002)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done = True
        self.thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default 1,2,4,8,16 and the machine's)")
    ap.add_argument("--workers", type=int, default=None, help="band workers a pass (default cpu.MAX_WORKERS)")
    ap.add_argument("--precision", default=None, help="bf16, int8 or fp32 only")
    args = ap.parse_args()
    if args.workers:
        cpu.MAX_WORKERS = args.workers
    own = default_threads()
    counts = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, 2, 4, 8, 16, own})
    flags = cpu.cpu_flags()
    print(f"CPU: {cpu.cpu_model()}; {os.cpu_count()} logical CPUs, {own} usable; "
          f"flags: {' '.join(f for f in FLAGS if f in flags) or 'none of ' + ', '.join(FLAGS)}")
    import torch

    print(f"torch {torch.__version__} ({'CUDA build' if torch.version.cuda else 'CPU build'}), "
          f"bf16 {'native' if cpu.native_bf16() else 'runs, emulated' if bf16_works() else 'does not run'}; "
          f"at most {cpu.MAX_WORKERS} band workers a pass")
    with Image.open(PHOTOS / "rocket.jpg") as im:
        rgb = np.asarray(im.convert("RGB").resize((2000, 1500), Image.Resampling.LANCZOS))
    mp = rgb.shape[0] * rgb.shape[1] / 1e6
    layers = Stylizer.from_style("hayao").layers
    table = catalog.int8_table("hayao")
    precisions = [args.precision] if args.precision else (["bf16"] if bf16_works() else []) + ["int8", "fp32"]
    print(f"2000x1500 hayao, the default budget ({DEFAULT_MEMORY_LIMIT >> 20} MiB less what the process holds), "
          f"median of {args.runs}")
    print(f"  {'precision':9s} {'threads':>7s} {'workers':>9s} {'MP/s':>6s} {'x 2 thr':>7s} {'peak MiB':>8s}  plan")
    for precision in precisions:
        base = None
        for t in counts:
            st = Stylizer(layers, "hayao", threads=t, precision=precision, int8=table)
            st.stylize(rgb[:128, :128])  # warm up: oneDNN primitives, the team of each worker
            room = budget.room(DEFAULT_MEMORY_LIMIT, None, 0)
            times = []
            with Peak() as peak:
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    out = st.render(rgb, room)
                    times.append(time.perf_counter() - t0)
            speed = mp / statistics.median(times)
            if t == 2:
                base = speed
            ratio = f"{speed / base:6.2f}x" if base else ""
            print(f"  {precision:9s} {t:7d} {str(cpu.split(t)):>9s} {speed:6.2f} {ratio:>7s} "
                  f"{peak.peak / 2**20:8.0f}  {out.plan.describe()}")


if __name__ == "__main__":
    main()
