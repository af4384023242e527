"""Shared fixtures: the real sample photos, the real model, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANIME_CLI_SHARED", ROOT.parent / "shared"))
PHOTOS = SHARED / "photos"
SAMPLES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
CLI = [sys.executable, "-m", "anime_cli"]


@pytest.fixture(scope="session")
def photos() -> Path:
    if not PHOTOS.is_dir():
        pytest.fail(f"sample photos not found at {PHOTOS} (../shared beside the checkout)")
    return PHOTOS


@pytest.fixture(scope="session")
def stylizer():
    from anime_cli.stylize import Stylizer

    return Stylizer.from_style("hayao")


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
    """The CLI in-process (Typer's CliRunner): (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from anime_cli.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
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
