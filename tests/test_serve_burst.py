"""A burst at `anime-cli serve --memory-limit 1GiB`: 40 clients at once, with a
12 MP photo, a 264 MP PNG bomb, corrupt files and a client that sends one byte
a second among small photos. Every request is answered, every admitted one
has its picture and its record, the server's true peak (VmRSS sampled from
outside) stays within the limit, and /healthz answers within 1 s throughout."""

from __future__ import annotations

import http.client
import io
import json
import os
import threading
import time

import pytest
from PIL import Image

from helpers import read_log
from servers import Server, photo_bytes, png_bomb, vm_rss

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

LIMIT = 1024**3


def _slow_client(port: int, data: bytes, answers: dict) -> None:
    """One byte a second."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.putrequest("POST", "/v1/convert?name=slow.bin")
    c.putheader("Content-Length", str(len(data)))
    c.endheaders()
    for b in data:
        c.send(bytes([b]))
        time.sleep(1.0)
    r = c.getresponse()
    answers["slow"] = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    c.close()


@pytest.mark.slow
def test_a_burst_is_answered_within_the_memory_limit(tmp_path):
    small = [photo_bytes(src, size, fmt) for src, size, fmt in
             [("coffee.png", (400, 300), "JPEG"), ("chelsea.png", (360, 240), "PNG"),
              ("rocket.jpg", (320, 213), "JPEG"), ("astronaut.png", (300, 300), "WEBP")]]
    big = photo_bytes("astronaut.png", (4000, 3000), "JPEG", quality=90)  # 12 MP
    jpeg = small[0]
    cases = {f"small{i}": (small[i % len(small)], 200) for i in range(33)}
    cases |= {"12mp": (big, 200), "bomb": (png_bomb(), 422), "truncated": (jpeg[: len(jpeg) // 2], 422),
              "random": (os.urandom(5000), 415), "text": (b"not a picture\n" * 50, 415),
              "broken png": (b"\x89PNG\r\n\x1a\n" + os.urandom(300), 415)}
    assert len(cases) + 1 == 40  # and the slow client

    log = tmp_path / "requests.jsonl"
    server = Server("--memory-limit", "1GiB", "--log-file", log)
    peak, latencies, stop = [0], [], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], vm_rss(server.pid))
            time.sleep(0.003)

    def health():
        while not stop.is_set():
            t = time.monotonic()
            status, _, _ = server.request("GET", "/healthz", token=None, timeout=10)
            latencies.append((time.monotonic() - t, status))
            time.sleep(0.2)

    answers: dict = {}
    go = threading.Barrier(len(cases) + 1)

    def client(key, data):
        go.wait()
        answers[key] = server.convert(data, f"name={key.replace(' ', '_')}", token=None, timeout=300)

    watchers = [threading.Thread(target=sample, daemon=True), threading.Thread(target=health, daemon=True)]
    for w in watchers:
        w.start()
    started = time.monotonic()
    clients = [threading.Thread(target=client, args=(k, d)) for k, (d, _) in cases.items()]
    clients.append(threading.Thread(target=_slow_client, args=(server.port, os.urandom(12), answers)))
    for t in clients:
        t.start()
    go.wait()
    for t in clients:
        t.join(240)
    took = time.monotonic() - started
    stop.set()
    for w in watchers:
        w.join()
    try:
        assert len(answers) == 40, sorted(set(cases) - set(answers))
        for key, (data, want) in cases.items():
            status, h, body = answers[key]
            assert status == want, (key, status, body[:200])
            if status == 200:
                with Image.open(io.BytesIO(body)) as im:
                    im.load()
                    assert list(im.size) == json.loads(h["x-anime-cli-record"])["output_size"]
            else:
                assert "\n" not in json.loads(body)["error"]
        assert answers["slow"][0] == 415
        with Image.open(io.BytesIO(answers["12mp"][2])) as im:
            assert im.size == (1280, 960)
        # nothing lost: one record per request, every picture answered is in the log as ok
        records = read_log(log)
        ids = [h["x-request-id"] for _, h, _ in answers.values()]
        assert sorted(r["request_id"] for r in records) == sorted(ids)
        by_id = {r["request_id"]: r for r in records}
        for status, h, _ in answers.values():
            assert by_id[h["x-request-id"]]["http_status"] == status
            assert (by_id[h["x-request-id"]]["status"] == "ok") == (status == 200)
        assert peak[0] <= LIMIT, f"peak VmRSS {peak[0] / 1e6:.0f} MB over the 1 GiB limit"
        worst = max(t for t, _ in latencies)
        assert worst < 1.0 and all(s == 200 for _, s in latencies), f"/healthz took {worst:.2f}s"
        assert len(latencies) > 10
        ms = sorted(t * 1000 for t, _ in latencies)
        print(f"burst: 40 requests in {took:.0f}s, peak VmRSS {peak[0] / 1e6:.0f} MB, /healthz median "
              f"{ms[len(ms) // 2]:.0f} ms, p99 {ms[int(len(ms) * 0.99)]:.0f} ms, worst {worst * 1000:.0f} ms "
              f"over {len(latencies)} probes")
    finally:
        assert server.stop() == 0, server.stderr
