"""What the tests share: where the samples are, the real CLI, image makers,
the untiled reference network and a stand-in stylizer. Fixtures live in
conftest.py; test modules import from here, never from each other."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANIME_CLI_SHARED", ROOT.parent / "shared"))
PHOTOS = SHARED / "photos"
SAMPLES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
CLI = [sys.executable, "-m", "anime_cli"]


def run_cli(*args, cwd=None, input: bytes | None = None, timeout=600, env=None):
    """The real CLI as a subprocess: (returncode, stdout bytes, stderr text)."""
    e = dict(os.environ, **(env or {}))
    p = subprocess.run([*CLI, *map(str, args)], cwd=cwd, input=input, capture_output=True,
                       timeout=timeout, env=e)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    d = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if d == 0 else 10 * np.log10(255.0**2 / d)


def load_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def invoke(*args, input: bytes | None = None):
    """The CLI in-process (Typer's CliRunner): (exit code, stdout, stderr).
    Pillow's bomb limit, which the CLI raises to --max-pixels for its whole
    process, is put back: the tests after it meet Pillow's own bound, as they
    would after a CLI in a subprocess."""
    from PIL import Image
    from typer.testing import CliRunner

    from anime_cli.cli.app import app

    limit = Image.MAX_IMAGE_PIXELS
    try:
        r = CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return r.exit_code, r.stdout, r.stderr


def make_photo(path: Path, size=(96, 64), mode="RGB", fmt=None, src="coffee.png", **save) -> Path:
    """A small real photo (a resized sample) in the given mode and format."""
    with Image.open(PHOTOS / src) as im:
        im = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    if mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, **save)
    return path


def base(size=(64, 48), src="coffee.png") -> Image.Image:
    with Image.open(PHOTOS / src) as im:
        return im.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def with_alpha(im: Image.Image) -> Image.Image:
    """RGBA with a real gradient of transparency (libwebp drops an all-opaque alpha)."""
    w, h = im.size
    a = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    out = im.convert("RGBA")
    out.putalpha(Image.fromarray(a, "L"))
    return out


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_orientation(o: int) -> bytes:
    e = Image.Exif()
    e[0x0112] = o
    return e.tobytes()


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pad right and bottom to multiples of m, as the engine does without copying:
    reflection, or replication where the picture is too small to reflect."""
    h, w = x.shape[-2:]
    ph, pw = -h % m, -w % m
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)


def untiled(generator, rgb: np.ndarray) -> np.ndarray:
    """What the plain generator makes of an RGB picture (the reference for the strip engine)."""
    h, w = rgb.shape[:2]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0)
    with torch.inference_mode():
        y = generator(pad_to_multiple(x, 4))[0, :, :h, :w]
        return y.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


@dataclass
class Rendered:
    image: np.ndarray
    plan_text: str | None = None


class Identity:
    """A stand-in for the network where a test is about the files, not the
    style: returns the picture unchanged; one file at a time."""

    name = "identity"
    threads = 1

    def stylize(self, rgb, budget_bytes=None, cancel=None, progress=None):
        return rgb

    def render(self, rgb, budget_bytes=None, cancel=None, progress=None):
        return Rendered(rgb)

    def fastest_bytes(self, h, w):
        return 3 * h * w

    min_bytes = fastest_bytes

    def work(self, h, w, budget_bytes=None):
        return h * w

    def plan(self, h, w, budget_bytes=None):
        return "identity"


def sampled_peak(cmd: list, timeout: float = 900) -> tuple[int, int, str]:
    """(exit code, peak VmRSS in bytes sampled every 2 ms, stderr) of a command:
    the whole process's peak, which anime-cli's own per-file resets hide from getrusage."""
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]

    def sample():
        status = Path(f"/proc/{p.pid}/status")
        while p.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                return
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = p.communicate(timeout=timeout)
    t.join()
    return p.returncode, peak[0], err.decode("utf-8", "replace")


def files_in(folder: Path, recursive: bool = False) -> list[str]:
    """The names (relative paths) of the files in an output folder, without the
    folder's own database (.anime-cli.sqlite and its journals)."""
    from anime_cli.folder.database import is_store_file

    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p.relative_to(folder).as_posix() for p in found
                  if not is_store_file(p) and (p.is_file() or not recursive))


class HTTPThread:
    """A real http.server on 127.0.0.1 (a free port) answering with `handler`
    in a thread, until close()."""

    def __init__(self, handler):
        import http.server

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
