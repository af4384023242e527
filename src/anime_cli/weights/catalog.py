"""Where the weights live, and how they are checked and loaded.

The manifest (manifest.json beside this module, shipped in the wheel) lists
every file anime-cli knows: the styles with their generator family, and the
face detector; each with its sha256, source and licence.
Search order for a weights folder: $ANIME_CLI_WEIGHTS, the project's own
weights/ folder (a source checkout only), then the user data folder
($XDG_DATA_HOME/anime-cli/weights, by default ~/.local/share/anime-cli/weights).
Every file is checked against the manifest's sha256 before torch.load, and is
loaded with weights_only=True so that nothing but tensors is ever unpickled.
Installing (from a folder, a file or a URL) is install.py's.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from anime_cli.errors import WeightsError, first_line
from anime_cli.folder.files import file_sha256

_HERE = Path(__file__).resolve().parent
MANIFEST = _HERE / "manifest.json"
# src/anime_cli/weights -> the checkout's root; in an installed wheel there is no pyproject.toml there.
_CHECKOUT = _HERE.parents[2] if (_HERE.parents[2] / "pyproject.toml").is_file() else None
INSTALL_HINT = "run `anime-cli install-weights FOLDER|FILE|URL` (e.g. `anime-cli install-weights ../shared/weights`)"


@dataclass(frozen=True)
class WeightFile:
    name: str
    kind: str  # "style" or "face-detector"
    file: str  # path inside a weights folder
    sha256: str
    source: str
    licence: str
    family: str = ""  # a style's generator family (models.FAMILIES)
    description: str = ""
    size: int = 0  # bytes: the bound of a download (0: not known)
    # A style's int8 calibration: layer name -> [low, high] its input took on real
    # photos (engine/int8.py; made by `python -m anime_cli.stylize.calibrate`). None: no int8.
    int8: dict[str, list[float]] | None = None


@lru_cache(maxsize=1)
def manifest() -> dict[str, WeightFile]:
    try:
        entries = json.loads(MANIFEST.read_text())["files"]
        return {e["name"]: WeightFile(**e) for e in entries}
    except FileNotFoundError:
        raise WeightsError(f"weights manifest not found ({MANIFEST}): a broken installation of anime-cli") from None
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{MANIFEST}: not a valid weights manifest ({e}): a broken installation of anime-cli") from None


def user_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "anime-cli" / "weights"


def search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("ANIME_CLI_WEIGHTS"):
        dirs.append(Path(os.environ["ANIME_CLI_WEIGHTS"]).expanduser())
    if _CHECKOUT is not None:
        dirs.append(_CHECKOUT / "weights")
    dirs.append(user_data_dir())
    return dirs


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
    if sha256 is not None and file_sha256(path) != sha256:
        raise WeightsError(f"{path}: sha256 does not match the manifest; reinstall the weights ({INSTALL_HINT})")
    try:
        with warnings.catch_warnings():
            # torch warns of a pickle protocol it did not write before refusing or
            # loading the file: our own verdict follows, in one line
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code with an UnpicklingError
        raise WeightsError(f"{path}: {_refusal(e)}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return sd


def _refusal(e: Exception) -> str:
    """One line for a file torch.load(weights_only=True) refused. torch's own message
    runs over many lines, changes between versions ("Unsupported global: GLOBAL x",
    "unsupported GLOBAL x whose module x is blocked") and suggests loading the file
    unsafely: never repeat it, only the name of what was refused."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return f"refused: it holds pickled code or objects ({m.group(1)[:80]}), not only tensors; it was not run"
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if m:
        detail = m.group(1).strip()
    elif "weights only load failed" in text.lower() or "weights_only" in text:
        detail = "it holds more than plain tensors; it was not run"
    else:
        detail = first_line(e, None)
    return f"not a PyTorch weights file of plain tensors ({detail[:100] or type(e).__name__})"


def load(name: str) -> dict[str, torch.Tensor]:
    """The verified state dict of manifest entry `name`."""
    return load_state_dict(locate(name), manifest()[name].sha256)


def styles() -> list[WeightFile]:
    return [w for w in manifest().values() if w.kind == "style"]


def installed_styles() -> list[str]:
    """Names of the styles whose file is in a search folder (not yet verified)."""
    return [w.name for w in styles() if any((d / w.file).is_file() for d in search_dirs())]


def resolve_style(name: str) -> WeightFile:
    """The manifest entry of style `name`; a one-line WeightsError, naming the
    installed styles, when it is unknown or not installed."""
    known = {w.name: w for w in styles()}
    installed = installed_styles()
    have = f"installed styles: {', '.join(installed)}" if installed else "no style is installed"
    if name not in known:
        raise WeightsError(f"unknown style '{name}' ({have}; known styles: {', '.join(known)}; or use --weights PATH)")
    if name not in installed:
        raise WeightsError(f"style '{name}' is not installed ({have}); {INSTALL_HINT}")
    return known[name]


def status(name: str) -> str:
    """'ok', 'not installed' or 'sha256 mismatch' for manifest entry `name`."""
    try:
        path = locate(name)
    except WeightsError:
        return "not installed"
    return "ok" if file_sha256(path) == manifest()[name].sha256 else "sha256 mismatch"


def default_install_dir() -> Path:
    """$ANIME_CLI_WEIGHTS, else the checkout's weights/ when writable, else the user data folder."""
    if os.environ.get("ANIME_CLI_WEIGHTS"):
        return Path(os.environ["ANIME_CLI_WEIGHTS"]).expanduser()
    if _CHECKOUT is not None and os.access(_CHECKOUT / "weights", os.W_OK):
        return _CHECKOUT / "weights"
    return user_data_dir()


def load_module(name: str):
    """The module of installed style `name` (sha256-checked), for the reference
    eager network. WeightsError, one line naming the installed styles, when it
    is unknown or not installed."""
    from anime_cli import models

    entry = resolve_style(name)
    return models.load(load(name), family=entry.family or None)


def load_module_file(path):
    """The module for a weights file of any known family (`--weights FILE`)."""
    from anime_cli import models

    sd = load_state_dict(path)
    try:
        return models.load(sd)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None


def int8_table(style: str, weights: str | os.PathLike | None = None) -> dict[str, list[float]] | None:
    """The int8 calibration of a style, or of a weights file that is a known
    style's (by its sha256); None where there is none."""
    if not weights:
        entry = manifest().get(style)
        return entry.int8 if entry else None
    sha = file_sha256(Path(weights))
    return next((e.int8 for e in manifest().values() if e.sha256 == sha), None)


def weights_sha256(style: str, weights: str | os.PathLike | None = None) -> str:
    """The sha256 of the generator's weights: the manifest's for a style (checked
    when it was loaded), the file's own for --weights."""
    if weights:
        return file_sha256(Path(weights))
    return manifest()[style].sha256
