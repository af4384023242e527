"""What the routes share (Service): the models, the admission queue, the
jobs, the counters, the request log, the page's files, and the server's
private spool folder, which a later server sweeps if this one is killed."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

from anime_cli.options import Options
from .admission import Admission
from .jobs import Jobs
from .log import RequestLog
from .metrics import Metrics

PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
              "/app.css": ("app.css", "text/css")}


class Service:
    """What the routes share: the models (single.Pictures), the queue, the
    jobs, the counters and the log."""

    def __init__(self, config, pictures, base: Options):
        self.config, self.pictures, self.base = config, pictures, base
        sweep_stale_folders()
        # 0700: only this user reads the spools; the pid lets a later server remove it after a SIGKILL
        self.folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
        self.admission = Admission(config.memory_limit, config.queue, config.workers)
        self.jobs = Jobs(self.folder, config.results_ttl, config.results_bytes)
        self.metrics = Metrics()
        self.log = RequestLog(config.log_file, config.quiet)
        self.stopping = False
        self.stopped_at: float | None = None
        self.banner: str | None = None  # the line saying where it listens, printed once started
        self.loop: asyncio.AbstractEventLoop | None = None
        self.page = {route: (resources.files(__package__).joinpath("page", f).read_bytes(), kind)
                     for route, (f, kind) in PAGE_FILES.items()}

    def begin_shutdown(self) -> None:
        """SIGTERM: no new work; the queued are answered 503."""
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        self.stopping = True
        self.admission.drain()

    def close(self, timeout: float) -> None:
        self.admission.join(timeout)
        self.jobs.close()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


FOLDER_PREFIX = "anime-cli-serve-"


def sweep_stale_folders() -> None:
    """Remove the private folders of servers that are gone (killed): their
    files had no names, so only the empty folder is left."""
    for d in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*-*"):
        try:
            pid = int(d.name[len(FOLDER_PREFIX):].split("-", 1)[0])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:  # alive, another user's
            continue
