"""The package as a user gets it: a built wheel, installed into a fresh venv,
runs `styles`, installs the weights and converts a picture. Nothing comes from
the checkout at run time (it once did: the manifest was not in the wheel).

No network: the wheel is installed with --no-deps and the fresh venv reaches
this venv's packages (torch, pillow, ...) through a .pth file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT, SHARED, make_photo

pytestmark = pytest.mark.slow


def run(*cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, f"{cmd}: {p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src-copy"  # build from a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist", src)
    [wheel] = (tmp / "dist").glob("animegan_cli-*.whl")  # the distribution; the package is anime_cli
    names = zipfile.ZipFile(wheel).namelist()
    assert "anime_cli/weights/manifest.json" in names and "anime_cli/serve/page/index.html" in names

    env = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    run(sys.executable, "-m", "pip", "--python", env / "bin" / "python", "install", "--no-deps", "--no-index",
        "--quiet", wheel)
    purelib = run(env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout
    Path(purelib.strip(), "_this_venvs_packages.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ANIME_CLI_WEIGHTS")}
    return dict(env, **extra)


def test_the_installed_wheel_lists_styles_installs_weights_and_converts(venv, tmp_path):
    cli = venv / "bin" / "anime-cli"
    weights = tmp_path / "weights"
    env = clean_env(ANIME_CLI_WEIGHTS=str(weights), XDG_DATA_HOME=str(tmp_path / "data"))

    where = run(venv / "bin" / "python", "-c", "import anime_cli; print(anime_cli.__file__)",
                env=env, cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout's

    out = run(cli, "styles", env=env, cwd=tmp_path).stdout
    assert "shinkai" in out and "not installed" in out

    run(cli, "install-weights", SHARED / "weights", env=env, cwd=tmp_path)
    out = run(cli, "styles", env=env, cwd=tmp_path).stdout
    assert "not installed" not in out and all(" ok " in line for line in out.splitlines()[1:]), out

    src = make_photo(tmp_path / "in" / "p.png", size=(96, 64))
    run(cli, "convert", src, "-o", tmp_path / "out", env=env, cwd=tmp_path)
    assert (tmp_path / "out" / "p.png").stat().st_size > 0


def test_a_wheel_without_its_manifest_fails_in_one_line(venv, tmp_path):
    python = venv / "bin" / "python"
    pkg = Path(run(python, "-c", "import anime_cli.weights as w, os; print(os.path.dirname(w.__file__))",
                   env=clean_env(), cwd=tmp_path).stdout.strip())
    moved = pkg / "manifest.json.away"
    os.replace(pkg / "manifest.json", moved)
    try:
        p = subprocess.run([venv / "bin" / "anime-cli", "styles"], capture_output=True, text=True,
                           env=clean_env(), cwd=tmp_path, timeout=120)
    finally:
        os.replace(moved, pkg / "manifest.json")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "manifest not found" in p.stderr, p.stderr
