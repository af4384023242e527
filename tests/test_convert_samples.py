"""The real CLI, the real weights, the four sample photos."""

import numpy as np
import pytest
from PIL import Image

from helpers import SAMPLES, invoke, load_rgb, psnr, read_log, run_cli

KEYS = {"input", "output", "status", "input_bytes", "input_size", "decode_size", "output_size",
        "faces", "timings", "seconds", "peak_rss_mb", "plan"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("out")
    log = out / "run.jsonl"
    code, _, err = run_cli("convert", photos, "-o", out, "--log-file", log, "--no-face-enhance")
    return code, err, out, read_log(log)


def test_exit_code_and_one_line_per_file(converted):
    code, err, _, records = converted
    assert code == 0, err
    assert len(records) == 5  # four photos and the photos' README (skipped: not an image)
    for name in SAMPLES:
        assert sum(name in line for line in err.splitlines()) == 1
    assert "done: 4 ok, 1 skipped, 0 failed" in err


def test_outputs_exist_with_the_input_size_and_format(converted, photos):
    _, _, out, _ = converted
    for name in SAMPLES:
        with Image.open(photos / name) as src, Image.open(out / name) as dst:
            assert dst.size == src.size
            assert dst.format == src.format


def test_outputs_are_stylized_not_copies(converted, photos):
    _, _, out, _ = converted
    # A copy or a re-encode scores 35 dB and up; the Hayao renderings score 15-22 dB.
    for name in SAMPLES:
        assert psnr(load_rgb(photos / name), load_rgb(out / name)) < 25


def test_log_records_carry_every_key_with_sane_values(converted, photos):
    _, _, out, records = converted
    by_name = {r["input"].rsplit("/", 1)[-1]: r for r in records}
    readme = by_name["README.md"]
    assert readme["status"] == "skipped" and readme["reason"] == "not an image" and readme["output"] is None
    for name in SAMPLES:
        r = by_name[name]
        assert KEYS <= set(r), KEYS - set(r)
        assert r["status"] == "ok"
        assert r["output"] == str(out / name)
        assert r["input_bytes"] == (photos / name).stat().st_size
        with Image.open(photos / name) as im:
            assert r["input_size"] == list(im.size) == r["decode_size"] == r["output_size"]
        assert r["faces"] == 0
        assert {"probe", "decode", "stylize", "write"} <= set(r["timings"])
        assert all(v >= 0 for v in r["timings"].values())
        assert r["seconds"] >= r["timings"]["stylize"] > 0
        assert 50 < r["peak_rss_mb"] < 4000
        assert r["plan"].startswith("strips (~")  # small photos: one pass at the default limit


def test_runs_are_deterministic(converted, photos, tmp_path):
    _, _, out, _ = converted
    code, _, err = invoke("convert", photos / "rocket.jpg", photos / "chelsea.png", "-o", tmp_path,
                          "--no-face-enhance", "--quiet")
    assert code == 0, err
    for name in ("rocket.jpg", "chelsea.png"):
        assert np.array_equal(load_rgb(tmp_path / name), load_rgb(out / name))
