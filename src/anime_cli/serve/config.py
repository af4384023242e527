"""The server's settings, and what is checked before anything is loaded."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from anime_cli.errors import UsageError
from anime_cli.options import DEFAULT_MAX_PIXELS, DEFAULT_MEMORY_LIMIT, DEFAULT_STYLE, format_bytes

TOKEN_ENV = "ANIME_CLI_TOKEN"
DEFAULT_QUEUE = 64  # waiting requests: a burst of 32 ordinary photos fits twice
DEFAULT_MAX_BODY = 50 * 1000**2  # a phone's largest photos are ~30 MB


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    styles: list[str] = field(default_factory=lambda: [DEFAULT_STYLE])
    max_body: int = DEFAULT_MAX_BODY
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue: int = DEFAULT_QUEUE
    token: str | None = None
    workers: int = 2  # pictures converted at once, memory allowing (the batch's two lanes)
    threads: int | None = None
    precision: str = "auto"
    face_enhance: bool = True  # load the face detector (a request may still turn faces off)
    grace: float = 30.0  # seconds SIGTERM leaves the conversions in flight
    body_timeout: float = 120.0  # seconds a body may take to arrive (a slow client is answered 408)
    results_ttl: float = 600.0  # seconds a job's result is kept
    results_bytes: int = 256 * 1024**2  # all jobs' results together
    log_file: Path | None = None
    quiet: bool = False

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def check(self) -> None:
        """UsageError (one line, exit 2) for a server that must not start."""
        if not self.token:
            self.token = os.environ.get(TOKEN_ENV) or None
        if not self.loopback and not self.token:
            raise UsageError(f"--host {self.host} is reachable from other machines: give --token TOKEN "
                             f"(or set {TOKEN_ENV}) so that only those who hold it can convert")
        if self.queue < 0:
            raise UsageError("--queue must be 0 or more")
        if self.max_body < 1:
            raise UsageError(f"--max-body {format_bytes(self.max_body)} admits no picture")
        if self.log_file is not None:
            try:
                open(self.log_file, "a").close()
            except OSError as e:
                raise UsageError(f"{self.log_file}: cannot open the log file ({e.strerror or e})") from None


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)
