"""`anime-cli serve`: the real server in a subprocess on 127.0.0.1, plain HTTP,
real pictures and real bad input."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from helpers import ROOT, invoke, read_log
from servers import TOKEN, Server, photo_bytes, png_bomb

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

SLOW_PICTURE = dict(src="astronaut.png", size=(1200, 900))  # ~1 MP at max_side=0: seconds of work


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "requests.jsonl"
    s = Server("--token", TOKEN, "--max-body", "3MB", "--queue", "1", "--workers", "1", "--log-file", log)
    s.log = log
    yield s
    assert s.stop() == 0, s.stderr


def _error(body: bytes) -> dict:
    e = json.loads(body)
    assert "\n" not in e["error"] and e["error"], e
    return e


def test_convert_answers_the_picture_and_its_record(server):
    status, h, body = server.convert(photo_bytes(size=(320, 240)), "max_side=160")
    assert status == 200, body
    assert h["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(body)) as im:
        assert im.format == "JPEG" and im.size == (160, 120)
    rec = json.loads(h["x-anime-cli-record"])
    assert rec["status"] == "ok" and rec["output_size"] == [160, 120] and rec["input_size"] == [320, 240]
    assert rec["request_id"] == h["x-request-id"] and rec["http_status"] == 200 and rec["client"] == "127.0.0.1"


def test_the_record_comes_as_json_on_request(server):
    status, h, body = server.convert(photo_bytes(size=(200, 150)), "max_side=100&format=png&json=1")
    assert status == 200 and h["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["media_type"] == "image/png" and answer["record"]["output_size"] == [100, 75]
    with Image.open(io.BytesIO(base64.b64decode(answer["image"]))) as im:
        assert im.format == "PNG" and im.size == (100, 75)


def test_a_multipart_form_is_read_with_its_file_name(server):
    data = photo_bytes(size=(120, 90), fmt="PNG")
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cat.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--XyZ--\r\n")
    status, h, out = server.convert(body, "faces=false", headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert status == 200, out
    rec = json.loads(h["x-anime-cli-record"])
    assert rec["input"] == "cat.png" and rec["output_size"] == [120, 90] and h["content-type"] == "image/png"


def test_not_an_image_is_415(server):
    status, _, body = server.convert(b"hello, this is text, not a picture\n" * 20)
    assert status == 415
    assert _error(body)["reason"] == "not an image"


def test_an_animation_is_415_a_still_picture_is_what_a_request_converts(server):
    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "blue")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    status, _, body = server.convert(gif.getvalue())
    assert status == 415
    e = _error(body)
    assert e["reason"] == "not a still picture" and "a video or an animation (gif)" in e["error"], e


def test_a_corrupt_photo_is_refused_in_one_line(server):
    jpeg = photo_bytes(size=(320, 240))
    status, _, body = server.convert(jpeg[: len(jpeg) // 2], "faces=false")  # header intact, data cut
    assert status == 422
    assert _error(body)["reason"] in ("corrupt data", "truncated data")


def test_a_png_bomb_is_422_from_its_header(server):
    t = time.monotonic()
    status, _, body = server.convert(png_bomb())
    assert status == 422
    assert _error(body)["reason"] == "too many pixels"
    assert time.monotonic() - t < 10  # refused from the header, never decoded


@pytest.mark.parametrize("query, args", [
    ("quality=101", ["--quality", "101"]),
    ("quality=abc", ["--quality", "abc"]),
    ("max_side=-1", ["--max-side", "-1"]),
    ("format=gif", ["--format", "gif"]),
])
def test_a_bad_option_is_422_with_the_cli_message(server, tmp_path, query, args):
    status, _, body = server.convert(photo_bytes(), query)
    assert status == 422
    code, _, err = invoke("convert", tmp_path / "x.jpg", "-o", tmp_path / "out", *args)
    assert code == 2
    assert _error(body)["error"] == err.strip().removeprefix("anime-cli: ")


def test_an_unknown_style_is_422_with_the_cli_message(server, tmp_path):
    status, _, body = server.convert(photo_bytes(), "style=nope")
    assert status == 422
    src = tmp_path / "x.jpg"
    src.write_bytes(photo_bytes())
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--style", "nope")
    assert code == 2 and _error(body)["error"] == err.strip().removeprefix("anime-cli: ")


def test_no_option_names_a_path(server):
    status, _, body = server.convert(photo_bytes(), "output=/etc/passwd")
    assert status == 422 and "unknown option 'output'" in _error(body)["error"]


def test_a_body_announced_over_the_limit_is_413_unread(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/convert HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                  b"\r\nContent-Length: 1000000000\r\n\r\n")
        answer = b""
        while b"}" not in answer:  # answered without a byte of the body sent
            piece = s.recv(4096)
            if not piece:
                break
            answer += piece
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"is 1000.0 MB, over --max-body (3MB)" in answer


def test_a_chunked_body_is_cut_off_at_the_limit(server):
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    c.putrequest("POST", "/v1/convert")
    c.putheader("Authorization", f"Bearer {TOKEN}")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    piece = os.urandom(256 * 1024)
    try:
        for _ in range(40):  # 10 MB, over the 3 MB limit
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
    except OSError:  # the server answered and closed while we were still sending
        pass
    r = c.getresponse()
    assert r.status == 413
    assert "stopped reading there" in _error(r.read())["error"]
    c.close()


def test_a_full_queue_is_503_with_retry_after(server):
    answers = {}

    def send(key, data, query):
        answers[key] = server.convert(data, query)

    first = threading.Thread(target=send, args=("first", photo_bytes(**SLOW_PICTURE), "max_side=0&faces=false"))
    first.start()
    server.wait_for(lambda h: h["in_flight"] == 1)
    second = threading.Thread(target=send, args=("second", photo_bytes(), "faces=false"))
    second.start()
    server.wait_for(lambda h: h["queue"] == 1)  # --queue 1: now full
    status, h, body = server.convert(photo_bytes())
    assert status == 503 and int(h["retry-after"]) >= 1
    assert _error(body)["reason"] == "queue full"
    first.join()
    second.join()
    assert answers["first"][0] == 200 and answers["second"][0] == 200
    assert json.loads(answers["second"][1]["x-anime-cli-record"])["queue_wait"] > 0


def test_requests_need_the_token(server):
    data = photo_bytes()
    status, h, body = server.convert(data, token=None)
    assert status == 401 and h["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in _error(body)["error"]
    assert server.convert(data, token="wrong")[0] == 401
    assert server.request("GET", "/metrics", token=None)[0] == 401
    assert server.request("GET", "/v1/jobs/x", token=None)[0] == 401
    assert server.request("GET", "/healthz", token=None)[0] == 200  # health checks hold no token


def test_beyond_loopback_a_token_is_required_to_start():
    env = {k: v for k, v in os.environ.items() if k != "ANIME_CLI_TOKEN"}
    p = subprocess.run([sys.executable, "-m", "anime_cli", "serve", "--host", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "--token" in p.stderr and "ANIME_CLI_TOKEN" in p.stderr


def test_jobs_lifecycle(server):
    status, h, body = server.request("POST", "/v1/jobs?max_side=128", photo_bytes(size=(256, 192)))
    assert status == 202, body
    job = json.loads(body)
    assert h["location"] == f"/v1/jobs/{job['id']}" and job["status"] in ("queued", "running")
    deadline = time.monotonic() + 120
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
        status, job = server.json(f"/v1/jobs/{job['id']}")
        assert status == 200
    assert job["status"] == "done", job
    assert job["record"]["output"] == job["result"] == f"/v1/jobs/{job['id']}/result"
    status, h, data = server.request("GET", job["result"])
    assert status == 200 and int(h["content-length"]) == len(data) == job["bytes"]
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (128, 96)
    assert server.request("GET", "/v1/jobs/0123456789abcdef")[0] == 404
    assert server.request("GET", "/v1/jobs/0123456789abcdef/result")[0] == 404


def test_a_job_refused_by_its_header_is_answered_at_once(server):
    status, _, body = server.request("POST", "/v1/jobs", b"not a picture at all" * 10)
    assert status == 415 and _error(body)["reason"] == "not an image"


def test_metrics_in_prometheus_text(server):
    server.convert(b"text, not a picture" * 4)
    status, h, body = server.request("GET", "/metrics")
    text = body.decode()
    assert status == 200 and h["content-type"].startswith("text/plain")
    for name in ("anime_cli_queue_depth 0", "anime_cli_in_flight ", "anime_cli_admitted_total ",
                 'anime_cli_refused_total{reason="not an image"} ', 'anime_cli_requests_total{status="415"} ',
                 "# TYPE anime_cli_stage_seconds_total counter", "anime_cli_peak_resident_memory_bytes "):
        assert name in text, name
    peak = int(next(line for line in text.splitlines() if line.startswith("anime_cli_peak_resident")).split()[1])
    assert peak > 100e6


def test_every_request_has_one_record(server):
    ids = []
    for data, token in ((photo_bytes(size=(96, 64)), TOKEN), (b"text" * 10, TOKEN), (photo_bytes(), None)):
        status, h, _ = server.convert(data, "faces=false", token=token)
        ids.append((h["x-request-id"], status))
    records = {r["request_id"]: r for r in read_log(server.log)}
    for rid, status in ids:
        rec = records[rid]
        assert rec["http_status"] == status and rec["client"] == "127.0.0.1" and "queue_wait" in rec
        assert {"input", "status", "error", "timings", "peak_rss_mb", "input_size"} <= rec.keys()
    assert [r["request_id"] for r in read_log(server.log)].count(ids[0][0]) == 1
    assert "ok      upload  96x64" in server.stderr  # the human line


def test_help_loads_neither_torch_nor_the_server():
    code = ("import sys; sys.argv = ['anime-cli', '--help']\nfrom anime_cli.cli import main\ntry: main()\n"
            "except SystemExit: pass\nprint([m for m in ('torch', 'starlette', 'uvicorn', 'fastapi') if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.stdout.strip().endswith("[]"), p.stdout + p.stderr
    assert "serve" in p.stdout


@pytest.mark.slow
def test_sigterm_finishes_in_flight_answers_the_queued_503_and_exits_0():
    s = Server("--workers", "1", "--grace", "120")
    answers = {}

    def send(key, data):
        answers[key] = s.convert(data, "max_side=0&faces=false", token=None)

    threads = [threading.Thread(target=send, args=("running", photo_bytes(**SLOW_PICTURE)))]
    threads[0].start()
    s.wait_for(lambda h: h["in_flight"] == 1)
    threads.append(threading.Thread(target=send, args=("queued", photo_bytes())))
    threads[1].start()
    s.wait_for(lambda h: h["queue"] == 1)
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    assert s.proc.wait(120) == 0, s.stderr
    status, h, body = answers["running"]
    assert status == 200
    with Image.open(io.BytesIO(body)) as im:
        im.load()  # the whole picture
        assert im.size == (1200, 900)
    assert answers["queued"][0] == 503 and "shutting down" in _error(answers["queued"][2])["error"]
    assert "Traceback" not in s.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()


@pytest.mark.slow
def test_sigkill_leaves_no_partial_result(tmp_path):
    s = Server("--workers", "1", tmp=tmp_path)
    t = threading.Thread(target=lambda: _quietly(s.convert, photo_bytes(**SLOW_PICTURE), "max_side=0&faces=false",
                                                 token=None))
    t.start()
    s.wait_for(lambda h: h["in_flight"] == 1)
    folders = list(tmp_path.glob("anime-cli-serve-*"))
    assert len(folders) == 1
    s.stop(signal.SIGKILL)
    t.join()
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []  # bodies and results had no names
    again = Server("--workers", "1", tmp=tmp_path)  # and the next server removes the empty folder
    try:
        assert not folders[0].exists()
    finally:
        assert again.stop() == 0


def _quietly(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except OSError:
        pass


class _Picture:
    """A stand-in for single.Pending: a footprint, and a run that notes when
    it started, how many ran beside it and whether it had the budget alone."""

    def __init__(self, name, footprint, log, lock, running):
        self.name, self.footprint, self.log, self.lock, self.running = name, footprint, log, lock, running

    def run(self, grant):
        with self.lock:
            self.running.append(self.name)
            self.log.append((self.name, grant.alone, len(self.running)))
        time.sleep(0.05)
        with self.lock:
            self.running.remove(self.name)

    def close(self):
        pass


def test_admission_is_first_come_first_served():
    from anime_cli.run.budget import RESERVE
    from anime_cli.serve.admission import Admission, Ticket
    from anime_cli.logs.telemetry import rss_bytes

    adm = Admission(rss_bytes() + RESERVE + 100 * 10**6, queue=16, workers=2)  # a ledger of ~100 MB
    log, lock, running, ended = [], threading.Lock(), [], threading.Semaphore(0)
    names = ["s1", "s2", "s3", "huge", "s4", "s5", "s6"]
    for n in names:
        p = _Picture(n, 10**9 if n == "huge" else 10 * 10**6, log, lock, running)
        assert adm.submit(Ticket(p, lambda t: ended.release()))
    for _ in names:
        assert ended.acquire(timeout=30)
    assert [n for n, _, _ in log] == names  # started in order of arrival: nobody overtakes the huge one
    huge = next(entry for entry in log if entry[0] == "huge")
    assert huge[1] and huge[2] == 1  # and it had the whole budget, alone
    assert adm.drain() == []
