"""--name patterns: every field, every refusal, the default's names, long names."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from anime_cli.folder import names


@pytest.mark.parametrize("pattern,name,fmt,expected", [
    ("{stem}", "photo.jpg", "JPEG", "photo.jpg"),
    ("{stem}_{style}", "photo.jpg", "JPEG", "photo_hayao.jpg"),
    ("{stem}-{width}x{height}", "photo.png", "PNG", "photo-1280x960.png"),
    ("{stem}.{ext}", "photo.png", "WEBP", "photo.webp"),  # the suffix is not added twice
    ("{stem}_{ext}", "photo.png", "WEBP", "photo_webp.webp"),
    ("{stem}_from_{input_ext}", "photo.GIF", "PNG", "photo_from_GIF.png"),
    ("{style}/{stem}".replace("/", "_"), "a.b.tif", "TIFF", "hayao_a.b.tif"),
    ("{stem}_{input_ext}", "README", "PNG", "README_.png"),  # no input suffix: empty field
    ("anime {{{stem}}}", "p.jpg", "JPEG", "anime {p}.jpg"),  # doubled braces are braces
    ("{stem}", "photo.JPEG", "JPEG", "photo.JPEG"),  # the input's own spelling is kept
    ("{stem}_{ext}", "photo.JPEG", "JPEG", "photo_JPEG.JPEG"),
    ("{stem}", "caf\udce9.png", "PNG", "caf\udce9.png"),  # a name that is not UTF-8
])
def test_fields(pattern, name, fmt, expected):
    names.check(pattern)
    assert names.render(pattern, name, fmt, "hayao", (1280, 960)) == expected


@pytest.mark.parametrize("name,fmt,expected", [
    ("photo.jpg", "JPEG", "photo.jpg"), ("photo.JPEG", "JPEG", "photo.JPEG"), ("photo.jpeg", "JPEG", "photo.jpeg"),
    ("photo.jpg", "PNG", "photo.png"), ("scan.TIF", "TIFF", "scan.TIF"), ("a.b.png", "PNG", "a.b.png"),
    ("noext", "PNG", "noext.png"), ("anim.gif", "PNG", "anim.png"), ("x.heic", "JPEG", "x.jpg"),
    (".hidden.png", "PNG", ".hidden.png"), ("photo.bmp", "BMP", "photo.bmp"), ("p.webp", "WEBP", "p.webp"),
    ("p.webp", "TIFF", "p.tif"),
])
def test_the_default_pattern_keeps_the_stem_and_a_suffix_naming_the_format(name, fmt, expected):
    assert names.render(names.DEFAULT, name, fmt, "hayao", (8, 8)) == expected


@pytest.mark.parametrize("pattern,message", [
    ("{nope}", "unknown field {nope}"),
    ("{Stem}", "unknown field {Stem}"),
    ("{0}", "unknown field {0}"),
    ("{}_{stem}", "unknown field {}"),
    ("{stem.__class__}", "unknown field {stem.__class__}"),
    ("{stem.__class__.__mro__}", "unknown field"),
    ("{stem[0]}", "unknown field {stem[0]}"),
    ("{stem!r}", "takes no format spec or conversion"),
    ("{width:>999999999}", "takes no format spec or conversion"),
    ("{width:05}", "takes no format spec or conversion"),
    ("out/{stem}", "path separator"),
    ("{stem}/", "path separator"),
    ("a\0b", "path separator"),
    ("{stem", "unbalanced braces"),
    ("{stem}}", "unbalanced braces"),
    ("", "gives no usable name"),
    ("{input_ext}", "gives no usable name"),
    ("  ", "gives no usable name"),
    ("..", "gives no usable name"),
    ("{stem}\n", "control character"),
    ("\x1b]0;pwned\x07{stem}", "control character"),
])
def test_errors_are_one_line_value_errors(pattern, message):
    with pytest.raises(ValueError) as e:
        names.check(pattern)
    text = str(e.value)
    assert message in text
    assert text.startswith("--name ") and "\n" not in text and "\x1b" not in text


def test_render_falls_back_to_the_default_when_nothing_is_left():
    # check() refuses '{input_ext}'; render() is never left with an empty name anyway
    assert names.render("{input_ext}", "README", "PNG") == "README.png"


def test_windows_separator_is_refused_where_it_is_one(monkeypatch):
    monkeypatch.setattr(names, "_SEPARATORS", names._SEPARATORS | {"\\"})
    with pytest.raises(ValueError, match="path separator"):
        names.check("a\\{stem}")


@pytest.mark.parametrize("stem", ["x" * 300, "é" * 200, "日本" * 100, "🙂" * 90, "caf\udce9" * 80])
def test_long_names_are_shortened_keeping_the_suffix_and_the_pattern(stem, tmp_path):
    name = names.render("{stem}_{style}", stem + ".png", "JPEG", "hayao", (1, 1))
    raw = os.fsencode(name)
    assert len(raw) <= names.NAME_MAX
    assert name.endswith("_hayao.jpg") and stem.startswith(name[: -len("_hayao.jpg")])
    if "\udce9" not in stem:
        raw.decode("utf-8")  # never cut inside a character
    Image.new("RGB", (1, 1)).save(tmp_path / name, "JPEG")  # the file system takes it


def test_a_long_literal_is_cut_too():
    name = names.render("{stem}" + "z" * 300, "p.png", "PNG")
    assert len(os.fsencode(name)) <= names.NAME_MAX and name.startswith("pzz") and name.endswith(".png")


def test_fit_leaves_room_for_a_collision_suffix():
    assert names.fit("é" * 200, "_2.jpg") == "é" * 124 + "_2.jpg"
    assert len(names.fit("é" * 200, "_2.jpg").encode()) == 254
    assert names.cut("aé日🙂", 6) == "aé日" and names.cut("aé日🙂", 5) == "aé" and names.cut("a", 0) == ""


# -- through the CLI: these pass once the CLI has --name (the lead's integration) ------


@pytest.mark.parametrize("pattern", ["{nope}", "out/{stem}", "{input_ext}", "{stem.__class__}"])
def test_cli_refuses_a_bad_pattern_before_any_work(tmp_path, pattern):
    from helpers import invoke, make_photo

    make_photo(tmp_path / "p.jpg", fmt="JPEG")
    code, _, err = invoke("convert", tmp_path / "p.jpg", "-o", tmp_path / "out", "--name", pattern,
                          "--log-file", tmp_path / "run.jsonl", "--no-face-enhance")
    assert code == 2
    assert "--name" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "run.jsonl").exists()


def test_cli_names_outputs_by_the_pattern_and_reruns_skip_them(tmp_path):
    from helpers import files_in, invoke, make_photo, read_log

    make_photo(tmp_path / "in" / "p.jpg", (96, 64), fmt="JPEG")
    make_photo(tmp_path / "in" / "q.png", (64, 64))
    args = ("convert", tmp_path / "in", "-o", tmp_path / "out", "--no-face-enhance",
            "--name", "{stem}_{style}_{width}x{height}_{input_ext}", "--log-file", tmp_path / "run.jsonl")
    code, _, err = invoke(*args)
    assert code == 0, err
    assert files_in(tmp_path / "out") == ["p_hayao_96x64_jpg.jpg", "q_hayao_64x64_png.png"]
    code, _, err = invoke(*args)
    assert code == 0, err
    assert [r["status"] for r in read_log(tmp_path / "run.jsonl")[2:]] == ["skipped", "skipped"]
