"""The generator families against ../shared/weights/README.md: layer lists
(strict loads, parameter counts), the TensorFlow conventions (legacy resize,
padding), family recognition, and real renders of a real photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anime_cli import models
from anime_cli.errors import WeightsError
from anime_cli.models.tf_ops import lade, resize_legacy, same_padding
from helpers import PHOTOS, SHARED, psnr

FILES = {  # file, family, parameters (the README's figures)
    "hayao": ("animeganv2_hayao.pt", "animeganv2", 2_143_552),
    "hayao-v3": ("animeganv3_hayao36.pt", "animeganv3", 1_043_776),
    "shinkai": ("animeganv3_shinkai37.pt", "animeganv3", 1_043_776),
    "cute": ("animeganv3_tiny_cute.pt", "animeganv3-tiny", 605_616),
    "paprika": ("animeganv1_paprika.pt", "animeganv1", 3_956_096),
}


def state_dict(style):
    path = SHARED / "weights" / FILES[style][0]
    if not path.is_file():
        pytest.fail(f"{path} not found (../shared/weights beside the checkout, or $ANIME_CLI_SHARED)")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def loaded():
    return {s: models.load(state_dict(s)) for s in FILES}


@pytest.mark.parametrize("style", FILES)
def test_each_file_is_recognised_and_loads_strictly(style, loaded):
    sd = state_dict(style)
    _, family, params = FILES[style]
    assert models.family_of(sd) == family
    assert models.family_for(loaded[style]).name == family
    assert sum(v.numel() for v in sd.values()) == params
    assert set(loaded[style].state_dict()) == set(sd)


def test_unknown_keys_fail_in_one_line():
    with pytest.raises(WeightsError) as e:
        models.family_of({"conv.weight": torch.zeros(3, 3, 1, 1)})
    assert "not an AnimeGANv2 generator" in str(e.value) and "'conv.weight'" in str(e.value)
    assert "\n" not in str(e.value)


def test_an_incomplete_file_of_a_known_family_is_refused():
    sd = state_dict("shinkai")
    del sd["d3.lade.weight"]
    with pytest.raises(WeightsError, match="not a complete AnimeGANv3 generator") as e:
        models.load(sd)
    assert "\n" not in str(e.value)


def test_a_family_given_must_match_the_keys():
    with pytest.raises(WeightsError, match="AnimeGAN \\(v1\\) generator, not AnimeGANv3"):
        models.load(state_dict("paprika"), family="animeganv3")


def legacy_resize_reference(a: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """The README's definition, one output pixel at a time (2-D array)."""
    h, w = a.shape
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            y, x = i * h / oh, j * w / ow
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            top = a[y0, x0] * (1 - fx) + a[y0, x1] * fx
            bottom = a[y1, x0] * (1 - fx) + a[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("size,out", [((5, 7), (10, 14)), ((8, 6), (4, 3)), ((5, 7), (3, 11))])
def test_legacy_resize_is_tensorflows(size, out):
    a = np.random.default_rng(0).standard_normal(size)
    got = resize_legacy(torch.from_numpy(a)[None, None], out)[0, 0].numpy()
    np.testing.assert_allclose(got, legacy_resize_reference(a, *out), atol=1e-12)


def test_legacy_resize_x2_copies_and_averages_and_x05_takes_every_second_pixel():
    x = torch.arange(4.0).view(1, 1, 1, 4)
    assert resize_legacy(x, (1, 8)).flatten().tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3]
    assert resize_legacy(x, (1, 2)).flatten().tolist() == [0, 2]


def test_padding_puts_the_odd_pixel_top_left():
    assert same_padding(3, 2) == (1, 0, 1, 0)
    assert same_padding(7, 1) == (3, 3, 3, 3)
    assert same_padding(3, 1) == (1, 1, 1, 1)
    assert same_padding(1, 1) == (0, 0, 0, 0)


def test_lade_gives_x_the_statistics_of_tx():
    g = torch.Generator().manual_seed(1)
    x, tx = torch.randn(1, 4, 9, 11, generator=g) * 3 + 1, torch.randn(1, 4, 9, 11, generator=g) * 0.5 - 2
    y = lade(x, tx)
    torch.testing.assert_close(y.mean(dim=(2, 3)), tx.mean(dim=(2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(2, 3), correction=0), tx.std(dim=(2, 3), correction=0), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family,size,expected", [
    ("animeganv3", (17, 30), (24, 32)), ("animeganv3-tiny", (17, 30), (32, 32)),
    ("animeganv1", (17, 30), (20, 32)), ("animeganv2", (3, 400), (8, 400)),
])
def test_padded_size_is_the_familys_multiple(family, size, expected):
    assert models.padded_size(*size, family) == expected


def test_the_padding_is_at_the_right_and_bottom_only():
    x = torch.arange(30.0).view(1, 1, 5, 6)
    p = models.pad_right_bottom(x, 8, 8)
    assert torch.equal(p[..., :5, :6], x)  # the picture stays at the top left
    assert torch.equal(p[..., 5, :6], x[..., 3, :])  # reflected, not replicated


def small_chelsea() -> np.ndarray:
    with Image.open(PHOTOS / "chelsea.png") as im:
        im = im.convert("RGB")
        im.thumbnail((230, 230))  # 230 x 153: no side a multiple of 8
        return np.asarray(im)


@pytest.fixture(scope="module")
def chelsea():
    return small_chelsea()


@pytest.mark.parametrize("style", FILES)
def test_a_real_photo_becomes_a_clean_rendering_of_itself(style, loaded, chelsea):
    out = models.render_rgb(loaded[style], chelsea)
    assert out.shape == chelsea.shape and out.dtype == np.uint8
    # The same picture (its structure survives: the grey levels correlate), but
    # restyled (far from a copy) and not colour garbage (no channel saturated).
    grey = lambda a: a.astype(np.float64).mean(axis=2).ravel()  # noqa: E731
    assert np.corrcoef(grey(out), grey(chelsea))[0, 1] > 0.75
    assert psnr(out, chelsea) < 30
    for c in range(3):
        assert 20 < out[..., c].mean() < 235 and out[..., c].std() > 15


@pytest.mark.parametrize("style", FILES)
def test_pictures_smaller_than_the_network_render_at_their_size(style, loaded):
    rgb = np.random.default_rng(2).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    assert models.render_rgb(loaded[style], rgb).shape == (5, 3, 3)


FINGERPRINTS = Path(__file__).parent / "data" / "render_fingerprints.json"


def fingerprint(out: np.ndarray) -> np.ndarray:
    """16 x 16 block means of a render: fine enough to see a convention change."""
    h, w = out.shape[0] // 16 * 16, out.shape[1] // 16 * 16
    return out[:h, :w].reshape(h // 16, 16, w // 16, 16, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("style", FILES)
def test_renders_match_the_ones_checked_by_eye(style, loaded, chelsea):
    # Recorded from renders looked at one by one (as in docs/styles.jpg). Padding
    # the odd pixel bottom/right instead of top/left, or PyTorch's bilinear x2
    # instead of TensorFlow's legacy one, moves some blocks by 6 to 25 levels;
    # float differences between CPUs stay far below 1.
    expected = np.array(json.loads(FINGERPRINTS.read_text())[style])
    got = fingerprint(models.render_rgb(loaded[style], chelsea))
    assert np.abs(got - expected).max() < 1.0


if __name__ == "__main__":  # record the fingerprints: PYTHONPATH=src:tests python tests/test_models.py
    prints = {s: np.round(fingerprint(models.render_rgb(models.load(state_dict(s)), small_chelsea())), 2).tolist()
              for s in FILES}
    FINGERPRINTS.write_text(json.dumps(prints, separators=(",", ":")) + "\n")
