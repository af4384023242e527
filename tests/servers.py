"""The real `anime-cli serve` in a subprocess, and plain HTTP to it (http.client):
what the test_serve*.py files share."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import subprocess
import threading
import time
import zlib
import struct
from pathlib import Path

from helpers import CLI, PHOTOS

TOKEN = "s3cret-token"


class Server:
    """`anime-cli serve --port 0 ARGS`, waited for until it prints its address."""

    def __init__(self, *args, env: dict | None = None, tmp: Path | None = None, timeout: float = 240):
        e = dict(os.environ, **(env or {}))
        e.pop("ANIME_CLI_TOKEN", None)
        if tmp is not None:
            e["TMPDIR"] = str(tmp)
        self.proc = subprocess.Popen([*CLI, "serve", "--port", "0", *map(str, args)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=e)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or self.port is None:
            self.proc.kill()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.lines))

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            m = re.search(r"serving .* on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self._ready.set()
        self._ready.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, method: str, path: str, body=None, headers: dict | None = None, token: str | None = TOKEN,
                timeout: float = 300) -> tuple[int, dict, bytes]:
        """(status, headers with lower-case names, body)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token:
            h.setdefault("Authorization", f"Bearer {token}")
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def convert(self, data: bytes, query: str = "", **kw):
        return self.request("POST", f"/v1/convert{'?' + query if query else ''}", data, **kw)

    def json(self, path: str, **kw) -> tuple[int, dict]:
        status, _, body = self.request("GET", path, **kw)
        return status, json.loads(body)

    def wait_for(self, check, timeout: float = 60.0) -> dict:
        """Poll /healthz until check(its JSON) holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, h = self.json("/healthz", token=None)
            if check(h):
                return h
            time.sleep(0.02)
        raise AssertionError(f"/healthz never got there: {h}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def photo_bytes(src: str = "coffee.png", size: tuple[int, int] | None = (160, 120), fmt: str = "JPEG",
                **save) -> bytes:
    from PIL import Image

    with Image.open(PHOTOS / src) as im:
        im = im.convert("RGB")
        if size is not None:
            im = im.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def png_bomb(side: int = 16248) -> bytes:
    """A valid 1-bit PNG of side x side white-free pixels (264 MP for the default):
    about 30 KB on the wire, 264 MB once decoded to 8 bits, ~1 GB as RGB."""
    row = b"\0" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def vm_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
