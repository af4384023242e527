"""install-weights and --weights under attack: hostile servers (a manifest
nested 200,000 deep, a Content-Length that is no number, a body without end),
links planted in the weights folder, state dicts of the wrong shapes and
pickles that carry code. Each is one line, never a traceback, and nothing is
written outside the weights folder. Servers are a real http.server on
127.0.0.1, started and stopped by each test; hostile files are made here."""

from __future__ import annotations

import http.server
import os
import pickle
import threading
import time
from pathlib import Path

import pytest
import torch

from anime_cli.weights import download
from anime_cli.weights import catalog as weights
from anime_cli.errors import WeightsError
from anime_cli.weights.install import install
from helpers import SHARED, HTTPThread, invoke

CUTE = "animeganv3_tiny_cute.pt"


def shared(name: str) -> bytes:
    path = SHARED / "weights" / name
    if not path.is_file():
        pytest.fail(f"{path} not found (../shared/weights beside the checkout, or $ANIME_CLI_SHARED)")
    return path.read_bytes()


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch):
    for var in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)


class Server:
    """Serves `routes`: URL path -> bytes (sent whole, with their Content-Length),
    or a function(handler) that answers itself. `sent` counts body bytes."""

    def __init__(self, routes: dict):
        self.routes, self.sent, self.stop = routes, 0, threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                route = server.routes.get(self.path)
                if route is None:
                    return self.send_error(404)
                if callable(route):
                    return route(self)
                self.send_response(200)
                self.send_header("Content-Length", str(len(route)))
                self.end_headers()
                self.wfile.write(route)

            def log_message(self, *args):
                pass

        self.http = HTTPThread(Handler)
        self.url = self.http.url

    def close(self):
        self.stop.set()
        self.http.close()


@pytest.fixture
def server():
    s = Server({})
    yield s
    s.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() or p.is_symlink())


# -- a remote folder's manifest ---------------------------------------------------

@pytest.mark.parametrize("body", [
    b"[" * 200_000,  # was RecursionError
    b'{"files": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",  # was RecursionError
    b'{"files": [1, null, "x"]}',
    b'{"files": [{"file": ["a list"]}]}',
    b'{"files": {"animeganv3_tiny_cute.pt": 1}}',
    b'{"files": "animeganv3_tiny_cute.pt"}',
    b"\xff\xfe not UTF-8",
    b'{"files": [{"file": "a"}], "n": 1' + b"0" * 5000 + b"}",  # int() refuses 5000 digits
])
def test_a_malformed_manifest_is_one_line(server, tmp_path, body):
    server.routes["/w/manifest.json"] = body
    with pytest.raises(WeightsError) as e:
        install(f"{server.url}/w/", tmp_path, progress=False)
    assert "\n" not in str(e.value) and "manifest" in str(e.value)
    assert leftovers(tmp_path) == []


def test_a_manifest_nested_200000_deep_is_one_line_from_the_cli(server, tmp_path):
    server.routes["/w/manifest.json"] = b"[" * 200_000
    code, out, err = invoke("install-weights", f"{server.url}/w/", "--dest", tmp_path)
    assert code == 2 and "not a weights manifest" in err and len(err.strip().splitlines()) == 1, err


# -- headers and bodies ------------------------------------------------------------

def with_length(value: str, body: bytes):
    def answer(h):
        h.send_response(200)
        h.send_header("Content-Length", value)
        h.end_headers()
        h.wfile.write(body)
    return answer


@pytest.mark.parametrize("value", ["abc", "-5", "1e3", "", "0x10", "99999999999999999999999"])
def test_a_content_length_that_is_no_byte_count_is_no_traceback(server, tmp_path, value):
    """Read as 'size unknown' (the body is still bounded and checked); a huge one is
    more than the manifest's size: refused at once."""
    server.routes[f"/w/{CUTE}"] = with_length(value, shared(CUTE))
    try:
        [path] = install(f"{server.url}/w/{CUTE}", tmp_path, progress=False)
    except WeightsError as e:
        assert value == "99999999999999999999999" and "more than the" in str(e), e
        assert leftovers(tmp_path) == []
    else:
        assert path.read_bytes() == shared(CUTE)


def endless(server):
    def answer(h):
        h.send_response(200)
        h.end_headers()
        block = b"\0" * 65536
        try:
            while not server.stop.is_set():
                h.wfile.write(block)
                server.sent += len(block)
        except OSError:
            pass  # the client hung up: the test's point
    return answer


def test_a_body_without_end_is_cut_at_the_manifests_size(server, tmp_path):
    server.routes[f"/w/{CUTE}"] = endless(server)
    size = weights.manifest()["cute"].size
    t = time.monotonic()
    with pytest.raises(WeightsError, match="more than the"):
        install(f"{server.url}/w/{CUTE}", tmp_path, progress=False)
    assert time.monotonic() - t < 20
    assert leftovers(tmp_path) == []  # nothing kept to resume: it was not the file
    assert server.sent < size + (16 << 20)  # it stopped reading (what the socket buffers held aside)


def test_a_length_over_the_manifests_size_is_refused_before_the_body(server, tmp_path):
    server.routes[f"/w/{CUTE}"] = with_length(str(1 << 40), b"")
    with pytest.raises(WeightsError, match="more than the"):
        install(f"{server.url}/w/{CUTE}", tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_every_manifest_entry_has_its_files_size():
    for entry in weights.manifest().values():
        assert entry.size == (SHARED / "weights" / entry.file).stat().st_size, entry.name


def test_a_part_longer_than_the_file_starts_again(server, tmp_path):
    server.routes[f"/w/{CUTE}"] = shared(CUTE)
    download.part_path(tmp_path / CUTE).write_bytes(b"x" * (len(shared(CUTE)) + 10))
    [path] = install(f"{server.url}/w/{CUTE}", tmp_path, progress=False)
    assert path.read_bytes() == shared(CUTE) and leftovers(tmp_path) == [CUTE]


# -- links planted in the weights folder --------------------------------------------

def victim(tmp_path: Path) -> Path:
    v = tmp_path / "elsewhere" / "victim.txt"
    v.parent.mkdir()
    v.write_bytes(b"the user's own file")
    return v


def test_a_planted_part_link_is_removed_not_followed(server, tmp_path):
    server.routes[f"/w/{CUTE}"] = shared(CUTE)
    dest, v = tmp_path / "weights", victim(tmp_path)
    dest.mkdir()
    download.part_path(dest / CUTE).symlink_to(v)
    [path] = install(f"{server.url}/w/{CUTE}", dest, progress=False)
    assert v.read_bytes() == b"the user's own file"
    assert not path.is_symlink() and path.read_bytes() == shared(CUTE)
    assert leftovers(dest) == [CUTE]


def test_a_dangling_part_link_creates_nothing_where_it_points(server, tmp_path):
    server.routes[f"/w/{CUTE}"] = shared(CUTE)
    dest, target = tmp_path / "weights", tmp_path / "elsewhere.bin"
    dest.mkdir()
    download.part_path(dest / CUTE).symlink_to(target)
    install(f"{server.url}/w/{CUTE}", dest, progress=False)
    assert not target.exists() and not (dest / CUTE).is_symlink()


def test_the_final_name_as_a_link_is_replaced_never_written_through(server, tmp_path):
    server.routes[f"/w/{CUTE}"] = shared(CUTE)
    dest, v = tmp_path / "weights", victim(tmp_path)
    dest.mkdir()
    (dest / CUTE).symlink_to(v)
    [path] = install(f"{server.url}/w/{CUTE}", dest, progress=False)
    assert v.read_bytes() == b"the user's own file"
    assert not path.is_symlink() and path.read_bytes() == shared(CUTE)


def test_a_folder_installs_temporary_is_not_followed_either(tmp_path):
    src, dest, v = tmp_path / "src", tmp_path / "weights", victim(tmp_path)
    src.mkdir()
    dest.mkdir()
    (src / CUTE).write_bytes(shared(CUTE))
    (dest / f".{CUTE}.{os.getpid()}.part").symlink_to(v)  # the name _put would write
    install(src, dest)
    assert v.read_bytes() == b"the user's own file"
    assert not (dest / CUTE).is_symlink() and (dest / CUTE).read_bytes() == shared(CUTE)


def test_a_linked_subfolder_of_the_weights_folder_is_refused(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "weights"
    (src / "mtcnn").mkdir(parents=True)
    (src / "mtcnn" / "pnet.pt").write_bytes(shared("mtcnn/pnet.pt"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest.mkdir()
    (dest / "mtcnn").symlink_to(elsewhere)
    with pytest.raises(WeightsError, match="symbolic link"):
        install(src, dest)
    assert list(elsewhere.iterdir()) == []


def test_a_dangling_licence_link_is_not_written_through(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "weights"
    (src / "mtcnn").mkdir(parents=True)
    (src / "mtcnn" / "pnet.pt").write_bytes(shared("mtcnn/pnet.pt"))
    (src / "mtcnn" / "LICENSE.md").write_text("MIT")
    (dest / "mtcnn").mkdir(parents=True)
    target = tmp_path / "planted.md"
    (dest / "mtcnn" / "LICENSE.md").symlink_to(target)
    install(src, dest)
    assert not target.exists()


# -- --weights of every family: shapes and kinds checked at load ----------------------

def altered(tmp_path: Path, name: str, key: str, change) -> Path:
    sd = torch.load(SHARED / "weights" / name, weights_only=True)
    sd[key] = change(sd[key])
    path = tmp_path / f"bad-{name}"
    torch.save(sd, path)
    return path


def picture(tmp_path: Path) -> Path:
    from helpers import make_photo

    return make_photo(tmp_path / "in" / "a.png", size=(64, 48))


@pytest.mark.parametrize("name,key,change", [
    ("animeganv3_hayao36.pt", "b0.conv.weight", lambda w: torch.tensor(1.0)),  # was IndexError
    ("animeganv3_hayao36.pt", "b1.conv.weight", lambda w: w[:16].clone()),  # was: every file failed
    ("animeganv3_hayao36.pt", "ea.mk.weight", lambda w: w[:, :, :, :].repeat(1, 1, 3, 3)),
    ("animeganv3_tiny_cute.pt", "base.0.weight", lambda w: w[:, :2].clone()),
    ("animeganv3_tiny_cute.pt", "main.11.weight", lambda w: w.flatten()),
    ("animeganv1_paprika.pt", "b1.2.sep_s2.dw.weight", lambda w: w.flatten()[: w.shape[0]].clone()),  # was RuntimeError
    ("animeganv1_paprika.pt", "m.1.expand.conv.weight", lambda w: w[: w.shape[0] // 2].clone()),
    ("animeganv1_paprika.pt", "b1.0.norm.weight", lambda w: w[:-1].clone()),
    ("animeganv2_hayao.pt", "block_a.0.1.weight", lambda w: torch.tensor(1.0)),
])
def test_weights_of_the_wrong_shape_are_one_line_at_start(tmp_path, name, key, change):
    bad = altered(tmp_path, name, key, change)
    code, _, err = invoke("convert", picture(tmp_path), "-o", tmp_path / "out", "--weights", bad, "--no-face-enhance")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and key in err and "has shape" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["animeganv3_hayao36.pt", "animeganv1_paprika.pt", "animeganv2_hayao.pt"])
@pytest.mark.parametrize("change,says", [
    (lambda w: w.to(torch.complex64), "no dense real tensor"),
    (lambda w: w.to_sparse(), "no dense real tensor"),
    (lambda w: w.to(torch.int32), "no dense real tensor"),
    (lambda w: torch.full_like(w, float("nan")), "NaN"),
])
def test_weights_that_are_no_real_numbers_are_one_line_at_start(tmp_path, name, change, says):
    sd = torch.load(SHARED / "weights" / name, weights_only=True)
    key = next(k for k, v in sd.items() if v.ndim == 4)
    bad = altered(tmp_path, name, key, change)
    code, _, err = invoke("convert", picture(tmp_path), "-o", tmp_path / "out", "--weights", bad, "--no-face-enhance")
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err


# -- pickles that carry code --------------------------------------------------------

class _Payload:
    """Unpickled without weights_only, it would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # a function of a module torch blocks outright (posix)
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_that_carries_code_is_refused_in_our_words(tmp_path, legacy):
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.pt"
    torch.save({"w": _Payload(marker)}, bad, _use_new_zipfile_serialization=not legacy)
    code, _, err = invoke("convert", picture(tmp_path), "-o", tmp_path / "out", "--weights", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "refused: it holds pickled code" in err and "it was not run" in err, err
    assert "PyTorch 2.6" not in err and "weights_only" not in err  # torch's advice to load it unsafely
    assert not marker.exists()


def test_a_plain_pickle_prints_no_torch_warning_first(tmp_path):
    """Protocol 4 (not torch's): torch warns before it refuses. One line is ours."""
    from helpers import run_cli

    marker = tmp_path / "ran"
    bad = tmp_path / "raw.pt"
    bad.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    code, _, err = run_cli("convert", picture(tmp_path), "-o", tmp_path / "out", "--weights", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "Warning" not in err and err.startswith("anime-cli: ")
    assert not marker.exists()
