"""Where the weights live, and how they are checked, installed and loaded.

Search order for a weights folder: $ANIME_CLI_WEIGHTS, the project's own
weights/ folder (a source checkout), then the user data folder
($XDG_DATA_HOME/anime-cli/weights, by default ~/.local/share/anime-cli/weights).
Every file is checked against the manifest's sha256 before torch.load, and is
loaded with weights_only=True so that nothing but tensors is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .errors import WeightsError

_HERE = Path(__file__).resolve().parent
_MANIFEST_PLACES = (_HERE / "manifest.json", _HERE.parents[1] / "weights" / "manifest.json")
INSTALL_HINT = "install them with `make weights` or `anime-cli install-weights ../shared/weights`"


@dataclass(frozen=True)
class WeightFile:
    name: str
    kind: str
    file: str
    sha256: str
    source: str
    licence: str


@lru_cache(maxsize=1)
def manifest() -> dict[str, WeightFile]:
    for place in _MANIFEST_PLACES:
        if place.is_file():
            entries = json.loads(place.read_text())["files"]
            return {e["name"]: WeightFile(**e) for e in entries}
    raise WeightsError("weights manifest not found (broken installation of anime-cli)")


def user_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "anime-cli" / "weights"


def search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("ANIME_CLI_WEIGHTS"):
        dirs.append(Path(os.environ["ANIME_CLI_WEIGHTS"]).expanduser())
    dirs.append(_HERE.parents[1] / "weights")
    dirs.append(user_data_dir())
    return dirs


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def locate(name: str) -> Path:
    """Path of the installed file for manifest entry `name` (not yet verified)."""
    entry = manifest()[name]
    for d in search_dirs():
        if (d / entry.file).is_file():
            return d / entry.file
    raise WeightsError(f"weights for '{name}' are not installed ({entry.file}); {INSTALL_HINT}")


def load_state_dict(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Verify (when a sha256 is given) and load a state dict of plain tensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if sha256 is not None and sha256_of(path) != sha256:
        raise WeightsError(f"{path}: sha256 does not match the manifest; reinstall the weights ({INSTALL_HINT})")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code with an UnpicklingError
        raise WeightsError(f"{path}: {_refusal(e)}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return sd


def _refusal(e: Exception) -> str:
    """One line for a file torch.load(weights_only=True) refused. torch's own message
    runs over many lines and suggests loading the file unsafely: never repeat that."""
    text = str(e)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"refused: it holds pickled code or objects ({m.group(1)}), not only tensors; it was not run"
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    detail = m.group(1).strip() if m else (text.strip().splitlines() or [type(e).__name__])[0]
    detail = re.sub(r"\x1b\[[0-9;]*m", "", detail)[:100] or type(e).__name__
    return f"not a PyTorch weights file of plain tensors ({detail})"


def load(name: str) -> dict[str, torch.Tensor]:
    """The verified state dict of manifest entry `name`."""
    return load_state_dict(locate(name), manifest()[name].sha256)


def styles() -> list[WeightFile]:
    return [w for w in manifest().values() if w.kind == "style"]


def status(name: str) -> str:
    """'ok', 'missing' or 'sha256 mismatch' for manifest entry `name`."""
    try:
        path = locate(name)
    except WeightsError:
        return "missing"
    return "ok" if sha256_of(path) == manifest()[name].sha256 else "sha256 mismatch"


def install(source_dir: Path, dest_dir: Path | None = None) -> list[Path]:
    """Copy every manifest file from `source_dir` into `dest_dir` (default: the
    first writable search folder), checking sha256 before the file is put in place."""
    source_dir = Path(source_dir)
    dest_dir = Path(dest_dir) if dest_dir else _default_install_dir()
    done = []
    for entry in manifest().values():
        src = source_dir / entry.file
        if not src.is_file():
            raise WeightsError(f"{src}: not found; expected the weights listed in the manifest")
        if sha256_of(src) != entry.sha256:
            raise WeightsError(f"{src}: sha256 does not match the manifest, refusing to install it")
        dst = dest_dir / entry.file
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not (dst.is_file() and sha256_of(dst) == entry.sha256):
            tmp = dst.with_name(dst.name + ".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        lic = src.parent / "LICENSE.md"
        if lic.is_file() and not (dst.parent / "LICENSE.md").exists():
            shutil.copyfile(lic, dst.parent / "LICENSE.md")
        done.append(dst)
    return done


def _default_install_dir() -> Path:
    if os.environ.get("ANIME_CLI_WEIGHTS"):
        return Path(os.environ["ANIME_CLI_WEIGHTS"]).expanduser()
    repo = _HERE.parents[1] / "weights"
    if (repo / "manifest.json").is_file() and os.access(repo, os.W_OK):
        return repo
    return user_data_dir()


if __name__ == "__main__":  # used by the Makefile: python -m anime_cli.weights SRC [DEST]
    import sys

    for p in install(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None):
        print(f"installed {p}")
