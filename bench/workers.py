"""How the network scales on the cores: one 1280x853 photo on one worker, on
all workers, and one picture per worker side by side (what a batch's two files
in flight do). A measurement for the README, not a test.

    .venv/bin/python bench/workers.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
from PIL import Image

from anime_cli.stylize.session import Stylizer
from anime_cli.engine import Engine, default_threads

from bench import PHOTOS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with Image.open(PHOTOS / "rocket.jpg") as im:
        rgb = np.asarray(im.convert("RGB").resize((1280, 853), Image.Resampling.LANCZOS))
    n = default_threads()
    layers = Stylizer.from_style("hayao").layers
    every = Engine(layers, threads=n)
    singles = [Engine(layers, threads=1) for _ in range(n)]
    for e in (every, *singles):
        e.stylize(rgb[:256, :256])  # warm up

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def side_by_side():
        ts = [threading.Thread(target=e.stylize, args=(rgb,)) for e in singles]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    one, all_, apart = [], [], []
    for _ in range(args.runs):
        one.append(timed(lambda: singles[0].stylize(rgb)))
        all_.append(timed(lambda: every.stylize(rgb)))
        apart.append(timed(side_by_side) / n)
    t1, tn, ta = (statistics.median(x) for x in (one, all_, apart))
    print(f"1280x853, {n} cores, medians of {args.runs}: seconds a picture")
    print(f"  one worker                      {t1:6.2f} s")
    print(f"  {n} workers on one picture        {tn:6.2f} s  ({t1 / tn:.2f}x)")
    print(f"  {n} pictures side by side, 1 each {ta:6.2f} s  ({t1 / ta:.2f}x)")


if __name__ == "__main__":
    main()
