"""`anime-cli serve` under load: requests per minute and p50/p95 latency for
1 MP photos at 1, 2 and 8 concurrent clients, with the server's peak RSS
(VmRSS sampled every 3 ms from outside). A measurement for the README, not a test.

    .venv/bin/python bench/serve.py [--requests 8] [--memory-limit 1GiB]
"""

from __future__ import annotations

import argparse
import http.client
import io
import sys
import threading
import time
from pathlib import Path

from PIL import Image

from bench import PHOTOS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import Server, vm_rss  # noqa: E402  (the tests' server in a subprocess)

SAMPLES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
SIZE = (1224, 816)  # 1.0 MP, kept whole at the default --max-side 1280


def photos() -> list[bytes]:
    out = []
    for name in SAMPLES:
        with Image.open(PHOTOS / name) as im:
            buf = io.BytesIO()
            im.convert("RGB").resize(SIZE, Image.Resampling.LANCZOS).save(buf, "JPEG", quality=92)
            out.append(buf.getvalue())
    return out


def post(port: int, data: bytes) -> float:
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/convert", body=data, headers={"Content-Type": "image/jpeg"})
    r = c.getresponse()
    r.read()
    c.close()
    if r.status != 200:
        raise SystemExit(f"bench: the server answered {r.status}")
    return time.perf_counter() - t


def phase(port: int, pid: int, pictures: list[bytes], clients: int, requests: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    todo = list(range(requests))
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], vm_rss(pid))
            time.sleep(0.003)

    def client():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            s = post(port, pictures[i % len(pictures)])
            with lock:
                latencies.append(s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    stop.set()
    sampler.join()
    lat = sorted(latencies)
    return {"clients": clients, "requests": requests, "per_minute": 60 * requests / wall,
            "p50": lat[len(lat) // 2], "p95": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
            "peak_mb": peak[0] / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8, help="requests per phase (x2 at 8 clients)")
    ap.add_argument("--memory-limit", default="1GiB")
    args = ap.parse_args()
    server = Server("--quiet", "--memory-limit", args.memory_limit)
    port = server.port
    try:
        pictures = photos()
        post(port, pictures[0])  # warm up
        print(f"1 MP JPEGs ({SIZE[0]}x{SIZE[1]}), defaults (faces on, max side 1280), --memory-limit "
              f"{args.memory_limit}")
        print(f"{'clients':>7} {'requests':>8} {'req/min':>8} {'p50 s':>7} {'p95 s':>7} {'peak RSS MB':>11}")
        for clients in (1, 2, 8):
            r = phase(port, server.pid, pictures, clients, args.requests * (2 if clients == 8 else 1))
            print(f"{r['clients']:>7} {r['requests']:>8} {r['per_minute']:>8.1f} {r['p50']:>7.2f} {r['p95']:>7.2f} "
                  f"{r['peak_mb']:>11.0f}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
