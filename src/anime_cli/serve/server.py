"""Load the models, listen, serve; stop cleanly on SIGTERM.

SIGTERM (or Ctrl-C) stops accepting connections, answers the queued requests
503, lets the conversions in flight finish within --grace seconds, and exits
0 (130 for Ctrl-C). A SIGKILL leaves no partial result: bodies and results
live in files without names (body.py, jobs.py) that die with the process.
"""

from __future__ import annotations

import signal
import socket
import sys

from anime_cli.errors import UsageError
from anime_cli.options import Options, format_bytes


def run(config) -> int:
    try:
        import uvicorn

        from .app import build_app
        from .service import Service
    except ImportError as e:
        raise UsageError(f"anime-cli serve needs the serve extra: pip install 'animegan-cli[serve]' ({e})") from None
    from anime_cli.run import batch
    from anime_cli.inputs.probe import configure_process
    from anime_cli.run.single import Pictures

    config.check()
    for style in config.styles:
        batch.check_precision(config.precision, style)
    configure_process(config.max_pixels)
    sock = _listen(config.host, config.port)  # before the models load: a busy port fails fast
    stylizers = {}
    for style in config.styles:
        if style not in stylizers:
            stylizers[style] = batch.load_stylizer(style, None, config.threads, config.precision)
    detector = None
    if config.face_enhance:
        from anime_cli.faces.enhance import FaceDetector

        detector = FaceDetector.load()
    base = Options(output_dir=None, style=config.styles[0], face_enhance=config.face_enhance,
                   max_file_size=config.max_body, max_pixels=config.max_pixels, memory_limit=config.memory_limit)
    batch.check_memory_limit(base, stylizers[config.styles[0]])
    service = Service(config, Pictures(stylizers, detector), base)
    server = _Server(uvicorn.Config(build_app(service), log_level="warning", access_log=False, lifespan="on",
                                    timeout_graceful_shutdown=config.grace, server_header=False),
                     service)
    host, port = sock.getsockname()[:2]
    ledger = service.admission.ledger.total
    # printed once the app has started (and uvicorn holds the stop signals): a client may go
    service.banner = (f"anime-cli: serving {', '.join(stylizers)} on http://{_url_host(host)}:{port}  (memory limit "
                      f"{format_bytes(config.memory_limit) if config.memory_limit else 'none'}, "
                      f"{f'{ledger / 1e6:.0f} MB for pictures' if ledger else 'no ledger'}, queue {config.queue}, "
                      f"max body {format_bytes(config.max_body)}{', token required' if config.token else ''})")
    # uvicorn restores the handlers it found and raises the signal it caught again once it has
    # stopped: with these ignored, that ends in our exit code instead of the default action.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    # The event loop shares the GIL with the conversions' threads (Python between the
    # network's strips, Pillow's calls): a shorter switch interval lets it answer promptly.
    sys.setswitchinterval(0.001)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    print(f"anime-cli: stopped ({service.metrics.admitted} admitted)", file=sys.stderr, flush=True)
    return 130 if signal.SIGINT in server.caught else 0


class _Server:
    """uvicorn's Server, told first when a stop signal comes, so that the
    queued requests are answered before the connections are waited for."""

    def __new__(cls, config, service):
        import uvicorn

        class Server(uvicorn.Server):
            caught: list = []

            def handle_exit(self, sig, frame):
                self.caught.append(sig)
                loop = service.loop
                if loop is not None and not service.stopping:
                    loop.call_soon_threadsafe(service.begin_shutdown)
                super().handle_exit(sig, frame)

        server = Server(config)
        server.caught = []
        return server


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, *_, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(512)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
