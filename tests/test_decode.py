"""Header first, decode reduced, orientation, and colour modes."""

import numpy as np
import pytest
from PIL import Image

from anime_cli.options import DEFAULT_MAX_FILE_SIZE
from anime_cli.inputs import probe, read
from anime_cli.inputs.decode import decode, target_size
from helpers import PHOTOS, exif_orientation, invoke, make_photo, psnr, read_log


def open_probe(path):
    src, n = read.read_source(path, DEFAULT_MAX_FILE_SIZE)
    return probe.open_image(src, n, str(path), probe.DEFAULT_MAX_PIXELS)


@pytest.mark.parametrize("size,max_side,expected", [
    ((4000, 3000), 1280, (1280, 960)),
    ((3000, 4000), 1280, (960, 1280)),
    ((640, 427), 1280, (640, 427)),  # never upscaled
    ((6000, 4000), 0, (6000, 4000)),  # 0 keeps the native size
    ((5000, 3), 1000, (1000, 1)),
])
def test_target_size(size, max_side, expected):
    assert target_size(size, max_side) == expected


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    """A 12 MP JPEG made from a sample photo."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    with Image.open(PHOTOS / "rocket.jpg") as im:
        im.resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=92)
    return path


def test_probe_reads_the_header_without_decoding(big_jpeg):
    im, pr = open_probe(big_jpeg)
    with im:
        assert (pr.format, pr.size, pr.mode) == ("JPEG", (4000, 3000), "RGB")
        assert im._im is None  # no pixel buffer yet: only the header was read


def test_large_jpeg_is_decoded_reduced_and_matches_a_full_decode(big_jpeg):
    im, pr = open_probe(big_jpeg)
    with im:
        d = decode(im, pr, 1280, "big.jpg")
    assert d.decode_size == (2000, 1500)  # DCT-scaled by 1/2: the smallest scale >= 1280x960
    assert d.size == (1280, 960)
    with Image.open(big_jpeg) as full:
        ref = np.asarray(full.convert("RGB").resize((1280, 960), Image.Resampling.LANCZOS))
    assert psnr(d.rgb, ref) > 35


def test_cli_logs_the_reduced_decode(big_jpeg, tmp_path):
    code, _, err = invoke("convert", big_jpeg, "-o", tmp_path, "--log-file", tmp_path / "log.jsonl",
                          "--no-face-enhance", "--max-side", "256")
    assert code == 0, err
    (rec,) = read_log(tmp_path / "log.jsonl")
    assert rec["input_size"] == [4000, 3000]
    assert rec["decode_size"] == [500, 375]  # 1/8 scale: the smallest >= 256x192
    assert rec["output_size"] == [256, 192]
    with Image.open(tmp_path / "big.jpg") as out:
        assert out.size == (256, 192)


def test_cli_rotates_exif_jpeg(tmp_path):
    src = make_photo(tmp_path / "in" / "r.jpg", size=(64, 48), quality=95, exif=exif_orientation(6))
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--no-face-enhance")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "r.jpg") as out:
        assert out.size == (48, 64)
        assert 0x0112 not in out.getexif()  # pixels are upright: no orientation to apply twice


def test_png_alpha_is_kept(tmp_path):
    rgba = Image.open(make_photo(tmp_path / "a.png", size=(64, 48))).convert("RGBA")
    a = np.zeros((48, 64), np.uint8)
    a[:, 32:] = 255
    rgba.putalpha(Image.fromarray(a))
    rgba.save(tmp_path / "in.png")
    code, _, err = invoke("convert", tmp_path / "in.png", "-o", tmp_path / "out", "--no-face-enhance")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "in.png") as out:
        assert out.mode == "RGBA"
        assert np.array_equal(np.asarray(out)[:, :, 3], a)


def test_alpha_goes_to_png_when_the_input_format_cannot_hold_it(tmp_path):
    # A GIF with transparency: GIF is not written; PNG keeps the alpha.
    make_photo(tmp_path / "in.gif", size=(64, 48), mode="P", transparency=0)
    code, _, err = invoke("convert", tmp_path / "in.gif", "-o", tmp_path / "out", "--no-face-enhance")
    assert code == 0, err
    with Image.open(tmp_path / "out" / "in.png") as out:
        assert out.format == "PNG" and out.mode == "RGBA"


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("P", "PNG"), ("LA", "PNG"), ("CMYK", "JPEG"),
                                      ("I;16", "PNG"), ("1", "BMP"), ("RGB", "WEBP"), ("RGB", "TIFF")])
def test_any_mode_converts_to_an_rgb_picture(tmp_path, mode, fmt):
    src = make_photo(tmp_path / f"in.{fmt.lower()}", size=(64, 48), mode="RGB", fmt=fmt) if mode == "RGB" else None
    if src is None:
        im = Image.open(make_photo(tmp_path / "base.png", size=(64, 48)))
        if mode == "I;16":
            im = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
        else:
            im = im.convert(mode)
        src = tmp_path / f"in.{fmt.lower()}"
        im.save(src, format=fmt)
    im, pr = open_probe(src)
    with im:
        d = decode(im, pr, 0, src.name)
    assert d.rgb.shape == (48, 64, 3) and d.rgb.dtype == np.uint8
    if mode in ("L", "I;16"):  # 16-bit is scaled to 8 bits, not clipped to white
        ref = np.asarray(Image.open(tmp_path / "base.png").convert("L"))
        assert np.abs(d.rgb[:, :, 0].astype(int) - ref).max() <= 1
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--no-face-enhance")
    assert code == 0, err
