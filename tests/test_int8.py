"""int8 (`--precision int8`, and `auto` where bfloat16 is not native):
oneDNN's int8 convolutions with each style's calibration, shipped in the
weights manifest. Within 40 dB of float32 on a photo the calibration never
saw, exact across plans, and refused in one line where a style has none."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anime_cli import models
from anime_cli.engine import Engine, geometry
from anime_cli.engine import plan as planning
from anime_cli.options import DEFAULT_STYLE
from anime_cli.stylize import calibrate
from anime_cli.stylize.session import Stylizer
from anime_cli.weights import catalog
from helpers import invoke, load_rgb, make_photo, psnr

CALIBRATED = [e.name for e in catalog.styles() if e.int8]


def test_the_default_style_has_int8():
    """auto runs int8 on CPUs without native bfloat16 only where a style has a table."""
    assert DEFAULT_STYLE in CALIBRATED


@pytest.mark.parametrize("style", CALIBRATED)
def test_int8_is_within_40_db_of_fp32_on_a_photo_the_calibration_never_saw(style, photos):
    rgb = calibrate.photo(photos / "rocket.jpg", 512)
    assert "rocket.jpg" not in calibrate.CALIBRATION
    exact = Stylizer.from_style(style, threads=2, precision="fp32").stylize(rgb)
    fast = Stylizer.from_style(style, threads=2, precision="int8")
    assert fast.engine.precision == "int8"
    assert psnr(fast.stylize(rgb), exact) >= 40


def test_every_plan_gives_the_same_int8_picture(monkeypatch, photos):
    """The codes of a layer's input depend on its values only, never on the
    strip: any set of stored layers, with strips of a few rows, gives the
    picture of the plan that stores every layer, bit for bit."""
    monkeypatch.setattr(geometry, "STRIP_BYTES", 48 << 10)
    layers = models.layers_for(catalog.load("hayao"))
    engine = Engine(layers, threads=2, precision="int8", int8=catalog.int8_table("hayao"))
    rgb = load_rgb(photos / "coffee.png")[100:172, 200:304]
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0)
    n = len(layers)
    every = engine.run(x, plan=planning.Plan("forced", frozenset(range(n - 1)), 0, 0.0, True))
    for stored in ([], [3], [1, 8, 11, 13, 19, 20, 22], [0, 4, 5, 8, 19, 21, 22, 23]):
        y = engine.run(x, plan=planning.Plan("forced", frozenset(stored), 0, 0.0, True))
        assert torch.equal(y, every), stored


def test_the_shipped_calibration_is_what_the_photos_give(photos):
    """The manifest's table is the calibration of these weights on the
    calibration photos (a stale table, after new weights, fails here)."""
    layers = models.layers_for(catalog.load("hayao"))
    table = calibrate.calibrate(layers, [calibrate.photo(photos / n, calibrate.CALIBRATION_SIDE)
                                         for n in calibrate.CALIBRATION])
    shipped = catalog.int8_table("hayao")
    assert table.keys() == shipped.keys()
    for name in table:
        assert np.allclose(table[name], shipped[name], rtol=1e-3, atol=1e-4), name


def test_cli_int8_converts_and_says_so(tmp_path):
    src = make_photo(tmp_path / "p.png", size=(192, 128))
    out = {}
    for precision in ("int8", "fp32"):
        code, stdout, err = invoke("convert", src, "-o", tmp_path / precision, "--precision", precision,
                                   "--no-face-enhance", "--json")
        assert code == 0, err
        record = json.loads(stdout.splitlines()[0])
        assert record["plan"].endswith(f", {precision})"), record["plan"]
        out[precision] = load_rgb(tmp_path / precision / "p.png")
    assert psnr(out["int8"], out["fp32"]) >= 40


def test_int8_for_a_style_without_calibration_is_exit_2_before_any_output_folder(tmp_path):
    uncalibrated = next(e.name for e in catalog.styles() if not e.int8)
    src = make_photo(tmp_path / "p.png")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--style", uncalibrated, "--precision", "int8")
    assert code == 2
    assert err.startswith(f"anime-cli: --precision int8: style {uncalibrated} has no int8 calibration")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_int8_knows_a_styles_weights_by_their_content_not_their_name(tmp_path):
    src = make_photo(tmp_path / "p.png")
    copy = tmp_path / "my-model.pt"
    copy.write_bytes(catalog.locate("hayao").read_bytes())
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--weights", copy, "--precision", "int8",
                          "--no-face-enhance")
    assert code == 0, err
    changed = catalog.load("hayao")
    next(iter(changed.values())).mul_(1.01)
    torch.save(changed, tmp_path / "tuned.pt")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out2", "--weights", tmp_path / "tuned.pt",
                          "--precision", "int8")
    assert code == 2
    assert "no int8 calibration" in err and err.count("\n") == 1
    assert not (tmp_path / "out2").exists()
