"""Styles as data, and installing weights from a folder, a file or a URL.

Downloads run against a real http.server on 127.0.0.1 that each test starts
in a thread and stops: whole transfers, a transfer cut short (resumed with a
Range request), a wrong file, a server that stalls, and a forwarding proxy."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from pathlib import Path

import pytest

from anime_cli import models
from anime_cli.weights import download
from anime_cli.weights import catalog as weights
from anime_cli.errors import WeightsError
from anime_cli.folder.files import file_sha256
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
    """Serves `files` (URL path -> bytes) with Range support. `cut`: paths whose
    next N responses stop halfway (path -> N); `stall`: paths that send a few
    bytes and then nothing; `ranges`: whether Range requests are honoured.
    `requests` records (path, Range header) of every request."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.cut, self.stall, self.ranges, self.requests = files, {}, set(), True, []
        self.stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    return self.send_error(404)
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m and server.ranges:
                    start = int(m.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                rest = body[start:]
                if self.path in server.stall:
                    self.wfile.write(rest[:1000])
                    self.wfile.flush()
                    server.stop.wait(10)
                    return
                if server.cut.get(self.path, 0) > 0:
                    server.cut[self.path] -= 1
                    rest = rest[: len(rest) // 2]
                self.wfile.write(rest)

            def log_message(self, *args):
                pass

        self.http = HTTPThread(Handler)
        self.url = self.http.url

    def close(self):
        self.stop.set()
        self.http.close()


@pytest.fixture
def server():
    s = Server({"/w/" + CUTE: shared(CUTE)})
    yield s
    s.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_a_file_url_is_downloaded_checked_and_installed(server, tmp_path):
    [path] = install(f"{server.url}/w/{CUTE}", tmp_path, progress=False)
    assert path == tmp_path / CUTE and path.read_bytes() == shared(CUTE)
    assert leftovers(tmp_path) == [CUTE]


def test_a_folder_url_installs_what_its_manifest_lists(server, tmp_path):
    server.files["/w/mtcnn/pnet.pt"] = shared("mtcnn/pnet.pt")
    server.files["/w/manifest.json"] = json.dumps(
        {"files": [{"file": CUTE}, {"file": "mtcnn/pnet.pt"}, {"file": "something-else.bin"}]}).encode()
    done = install(f"{server.url}/w/", tmp_path, progress=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in done) == [CUTE, "mtcnn/pnet.pt"]
    assert (tmp_path / "mtcnn" / "pnet.pt").read_bytes() == shared("mtcnn/pnet.pt")
    assert [p for p, _ in server.requests] == ["/w/manifest.json", f"/w/{CUTE}", "/w/mtcnn/pnet.pt"]


def test_a_transfer_cut_short_resumes_with_a_range_request(server, tmp_path):
    server.cut[f"/w/{CUTE}"] = 1
    [path] = install(f"{server.url}/w/{CUTE}", tmp_path, progress=True)  # the bar follows the resume
    assert path.read_bytes() == shared(CUTE)
    (_, first), (_, second) = server.requests
    assert first is None and second == f"bytes={len(shared(CUTE)) // 2}-"


def test_a_transfer_that_keeps_failing_leaves_no_file_and_resumes_next_time(server, tmp_path):
    server.cut[f"/w/{CUTE}"] = 100
    server.ranges = False  # every answer is the whole file, cut in half
    with pytest.raises(WeightsError, match="kept ending early") as e:
        install(f"{server.url}/w/{CUTE}", tmp_path, progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / CUTE).exists()
    assert download.part_path(tmp_path / CUTE).exists()  # kept, hidden, for the next run
    server.cut.clear()
    server.ranges = True
    server.requests.clear()
    install(f"{server.url}/w/{CUTE}", tmp_path, progress=False)
    assert (tmp_path / CUTE).read_bytes() == shared(CUTE) and leftovers(tmp_path) == [CUTE]
    assert server.requests[0][1] is not None  # it resumed


def test_a_file_that_fails_its_sha256_is_never_installed(server, tmp_path):
    bad = bytearray(shared(CUTE))
    bad[len(bad) // 3] ^= 0xFF
    server.files[f"/w/{CUTE}"] = bytes(bad)
    with pytest.raises(WeightsError, match="sha256 does not match the manifest"):
        install(f"{server.url}/w/{CUTE}", tmp_path, progress=False)
    assert leftovers(tmp_path) == []  # no file, no .part: a bad file is not resumed


def test_a_stalled_server_times_out_in_one_line(server, tmp_path):
    server.stall.add(f"/w/{CUTE}")
    t = time.monotonic()
    code, out, err = invoke("install-weights", f"{server.url}/w/{CUTE}", "--dest", tmp_path, "--timeout", "0.5")
    assert time.monotonic() - t < 8
    assert code == 2 and err.count("\n") == 1 and "stalled (no data for 0.5 s)" in err, err
    assert "Traceback" not in err and not (tmp_path / CUTE).exists()


def test_a_missing_url_is_one_line(server, tmp_path):
    code, _, err = invoke("install-weights", f"{server.url}/nothing/", "--dest", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "HTTP 404" in err, err
    code, _, err = invoke("install-weights", f"{server.url}/w/unknown.pt", "--dest", tmp_path)
    assert code == 2 and "not a file the manifest lists" in err


def test_downloads_go_through_the_proxy_from_the_environment(server, tmp_path, monkeypatch):
    # Our server doubles as a forwarding proxy: a client talking to a proxy asks
    # for the absolute URL, which we answer for a host that does not exist.
    server.files[f"http://weights.example.invalid/w/{CUTE}"] = shared(CUTE)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    install(f"http://weights.example.invalid/w/{CUTE}", tmp_path, progress=False)
    assert (tmp_path / CUTE).read_bytes() == shared(CUTE)
    assert server.requests[0][0] == f"http://weights.example.invalid/w/{CUTE}"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    [handler] = [h for h in download.opener().handlers if h.__class__.__name__ == "ProxyHandler"]
    assert handler.proxies["https"] == "http://proxy.example:3128"


def test_a_folder_installs_the_files_it_holds(tmp_path):
    src = tmp_path / "src"
    (src / "mtcnn").mkdir(parents=True)
    (src / CUTE).write_bytes(shared(CUTE))
    (src / "mtcnn" / "onet.pt").write_bytes(shared("mtcnn/onet.pt"))
    done = install(src, tmp_path / "dest")
    assert sorted(p.name for p in done) == [CUTE, "onet.pt"]
    assert leftovers(tmp_path / "dest") == [CUTE, "onet.pt"]
    with pytest.raises(WeightsError, match="holds none of the weight files"):
        (tmp_path / "empty").mkdir()
        install(tmp_path / "empty", tmp_path / "y")


def test_a_single_file_is_recognised_by_its_sha256(tmp_path):
    renamed = tmp_path / "my-download.bin"
    renamed.write_bytes(shared(CUTE))
    assert install(renamed, tmp_path / "dest") == [tmp_path / "dest" / CUTE]
    bad = tmp_path / CUTE
    bad.write_bytes(shared(CUTE)[:-1])
    code, _, err = invoke("install-weights", bad, "--dest", tmp_path / "dest2")
    assert code == 2 and "sha256 does not match" in err and not (tmp_path / "dest2").exists()
    other = tmp_path / "other.pt"
    other.write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="matches none.*--weights FILE"):
        install(other, tmp_path / "dest")


@pytest.fixture
def only_cute(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / CUTE).write_bytes(shared(CUTE))
    monkeypatch.setattr(weights, "search_dirs", lambda: [folder])
    return folder


def test_an_unknown_style_names_the_installed_ones(only_cute):
    with pytest.raises(WeightsError) as e:
        weights.resolve_style("nope")
    assert str(e.value).startswith("unknown style 'nope' (installed styles: cute;")


def test_an_uninstalled_style_says_what_to_run(only_cute):
    with pytest.raises(WeightsError) as e:
        weights.resolve_style("shinkai")
    assert "style 'shinkai' is not installed (installed styles: cute)" in str(e.value)
    assert "anime-cli install-weights" in str(e.value)
    assert weights.resolve_style("cute").family == "animeganv3-tiny"
    assert models.family_for(weights.load_module("cute")).name == "animeganv3-tiny"


def test_with_no_weights_at_all_the_message_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "search_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(WeightsError, match="no style is installed.*anime-cli install-weights"):
        weights.resolve_style("hayao")


def test_styles_shows_family_status_licence_and_description(only_cute):
    code, out, _ = invoke("styles")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) >= {"hayao", "hayao-v3", "shinkai", "cute", "paprika"}
    assert rows["cute"].split()[1:3] == ["animeganv3-tiny", "ok"]
    assert "not installed" in rows["paprika"] and "animeganv1" in rows["paprika"]
    for name in ("hayao-v3", "shinkai", "cute", "paprika"):
        assert "non-commercial" in rows[name] and "AnimeGAN" in rows[name]


def test_styles_without_a_manifest_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "MANIFEST", tmp_path / "gone.json")
    weights.manifest.cache_clear()
    try:
        code, out, err = invoke("styles")
    finally:
        weights.manifest.cache_clear()
    assert code == 2 and out == "" and err.count("\n") == 1 and "manifest not found" in err


def test_the_manifest_lists_every_shared_file_with_its_sha256():
    for entry in weights.manifest().values():
        assert file_sha256(SHARED / "weights" / entry.file) == entry.sha256, entry.name
        if entry.kind == "style":
            assert entry.family in models.FAMILIES and entry.description and "non-commercial" in entry.licence


def test_a_weights_file_of_any_known_family_is_recognised(tmp_path):
    path = tmp_path / "mine.pt"
    path.write_bytes(shared("animeganv1_paprika.pt"))
    assert models.family_for(weights.load_module_file(path)).name == "animeganv1"
