"""Installing weights from a folder, a single file, or an http(s):// URL of a
file or of a folder holding manifest.json.

Whatever the source, the sha256 that counts is the one in anime-cli's own
manifest: a file that does not match it is never put in place. A remote
folder's manifest.json only says which files it holds. Files go in through a
temporary name and os.replace, so the destination never holds half a file.
Nothing is written through a symbolic link: not the temporary (one planted
under its name is removed, never followed), not the final name (os.replace
replaces a link), not a subfolder of the weights folder (refused), not the
licence copied beside the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from . import download
from anime_cli.errors import WeightsError
from anime_cli.folder.files import file_sha256
from .catalog import WeightFile, default_install_dir, manifest


def install(source: str | Path, dest_dir: Path | None = None, timeout: float | None = None,
            progress: bool | None = None) -> list[Path]:
    """Install what `source` holds of the manifest's files into `dest_dir`
    (default: weights.default_install_dir()); the installed paths.
    timeout: seconds without data before a download counts as stalled (default download.TIMEOUT_S)."""
    dest_dir = Path(dest_dir) if dest_dir else default_install_dir()
    timeout = download.TIMEOUT_S if timeout is None else timeout
    text = str(source)
    if text.startswith(("http://", "https://")):
        return _from_url(text, dest_dir, timeout, progress)
    source = Path(source).expanduser()
    if source.is_dir():
        return _from_folder(source, dest_dir)
    if source.is_file():
        return [_from_file(source, dest_dir)]
    raise WeightsError(f"{source}: no such file or folder (give a folder, a weights file or an http(s):// URL)")


def _from_folder(folder: Path, dest_dir: Path) -> list[Path]:
    entries = [e for e in manifest().values() if (folder / e.file).is_file()]
    if not entries:
        raise WeightsError(f"{folder}: holds none of the weight files the manifest lists "
                           f"({', '.join(e.file for e in manifest().values())})")
    done = []
    for e in entries:  # check every file before installing any
        if file_sha256(folder / e.file) != e.sha256:
            raise WeightsError(f"{folder / e.file}: sha256 does not match the manifest, refusing to install it")
    for e in entries:
        done.append(_put(folder / e.file, e, dest_dir))
        _copy_licence(folder / e.file, dest_dir / e.file)
    return done


def _from_file(path: Path, dest_dir: Path) -> Path:
    digest = file_sha256(path)
    entry = next((e for e in manifest().values() if e.sha256 == digest), None)
    if entry is None:
        named = next((e for e in manifest().values() if Path(e.file).name == path.name), None)
        if named is not None:
            raise WeightsError(f"{path}: sha256 does not match the manifest, refusing to install it")
        raise WeightsError(f"{path}: not a weights file the manifest lists (its sha256 matches none); "
                           "to run a file of your own, use convert --weights FILE")
    return _put(path, entry, dest_dir)


def _put(src: Path, entry: WeightFile, dest_dir: Path) -> Path:
    """Copy `src` (already verified) to its place, unless an identical file is there."""
    dst = _destination(dest_dir, entry)
    if dst.is_file() and file_sha256(dst) == entry.sha256:
        return dst
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")  # the umask's permissions
    fd = download.open_part(tmp, resume=False)
    try:
        with open(src, "rb") as f:
            h = hashlib.sha256()
            while block := f.read(1 << 20):
                h.update(block)
                download._write_all(fd, block)
        if h.hexdigest() != entry.sha256:  # the source changed while we copied it
            raise WeightsError(f"{src}: changed while it was copied; try again")
        download.publish(fd, tmp, dst)
    finally:
        os.close(fd)
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return dst


def _destination(dest_dir: Path, entry: WeightFile) -> Path:
    """Where `entry` goes, its folders made; WeightsError when a folder below
    dest_dir is a symbolic link (the file would land wherever it points). The
    weights folder itself may be one: the user named it."""
    dst = dest_dir / entry.file
    dst.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(dst.parent, dest_dir)
    if os.path.realpath(dst.parent) != os.path.normpath(os.path.join(os.path.realpath(dest_dir), rel)):
        raise WeightsError(f"{dst.parent}: a symbolic link inside the weights folder; refusing to install through it")
    return dst


def _copy_licence(src: Path, dst: Path) -> None:
    lic = src.parent / "LICENSE.md"
    target = dst.parent / "LICENSE.md"
    if not lic.is_file() or os.path.lexists(target):  # lexists: a dangling link is not written through
        return
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except FileExistsError:
        return
    with open(fd, "wb") as out, open(lic, "rb") as f:
        shutil.copyfileobj(f, out)


def _from_url(url: str, dest_dir: Path, timeout: float, progress: bool | None) -> list[Path]:
    name = Path(urlsplit(url).path).name
    if name.endswith(".pt"):
        by_name = [e for e in manifest().values() if Path(e.file).name == name]
        if len(by_name) != 1:
            raise WeightsError(f"{url}: not a file the manifest lists ({_style_files()})")
        return [_download(url, by_name[0], dest_dir, timeout, progress)]
    base = url if url.endswith("/") else (url[: -len(name)] if name == "manifest.json" else url + "/")
    listed = _remote_manifest(urljoin(base, "manifest.json"), dest_dir, timeout)
    entries = [e for e in manifest().values() if e.file in listed]
    if not entries:
        raise WeightsError(f"{base}manifest.json lists none of the weight files anime-cli knows")
    return [_download(urljoin(base, e.file), e, dest_dir, timeout, progress) for e in entries]


def _download(url: str, entry: WeightFile, dest_dir: Path, timeout, progress) -> Path:
    dst = _destination(dest_dir, entry)
    if dst.is_file() and file_sha256(dst) == entry.sha256:
        return dst
    return download.fetch(url, dst, sha256=entry.sha256, timeout=timeout, progress=progress,
                          max_bytes=entry.size or None)


def _remote_manifest(url: str, dest_dir: Path, timeout: float) -> set[str]:
    """The file names a remote folder's manifest.json lists."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".manifest.") as tmp:
        path = download.fetch(url, Path(tmp) / "manifest.json", timeout=timeout, progress=False,
                              max_bytes=1 << 20)
        try:
            listed = json.loads(path.read_bytes())["files"]
            return {e["file"] for e in listed if isinstance(e, dict) and isinstance(e.get("file"), str)}
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: arrays nested 200,000 deep
            raise WeightsError(f"{url}: not a weights manifest (JSON with a 'files' list)") from None


def _style_files() -> str:
    return "expected one of: " + ", ".join(Path(e.file).name for e in manifest().values())
