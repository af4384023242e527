"""Options, exit codes, the output tree, skip/overwrite, stdin/stdout."""


import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, files_in, invoke, load_rgb, make_photo, read_log, run_cli

FAST = ("--no-face-enhance",)


def test_default_output_folder_is_anime_out(tmp_path, monkeypatch):
    make_photo(tmp_path / "photo.jpg", quality=90)
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("convert", "photo.jpg", *FAST)
    assert code == 0, err
    with Image.open(tmp_path / "anime-out" / "photo.jpg") as im:
        assert im.format == "JPEG" and im.size == (96, 64)


def test_recursive_walk_mirrors_the_tree(tmp_path):
    src = tmp_path / "Pictures"
    make_photo(src / "a.png")
    make_photo(src / "trip" / "b.jpg")
    make_photo(src / "trip" / "day 2" / "c.webp", fmt="WEBP")
    code, _, err = invoke("convert", src, "-r", "-o", tmp_path / "out", *FAST)
    assert code == 0, err
    got = files_in(tmp_path / "out", recursive=True)
    assert got == ["a.png", "trip/b.jpg", "trip/day 2/c.webp"]


def test_without_recursive_sub_folders_are_left_alone(tmp_path):
    make_photo(tmp_path / "in" / "a.png")
    make_photo(tmp_path / "in" / "sub" / "b.png")
    code, _, err = invoke("convert", tmp_path / "in", "-o", tmp_path / "out", *FAST)
    assert code == 0, err
    assert [p.name for p in (tmp_path / "out").rglob("*.png")] == ["a.png"]


def test_existing_output_is_skipped_then_overwritten_on_request(tmp_path):
    src = make_photo(tmp_path / "p.png")
    log = tmp_path / "log.jsonl"
    assert invoke("convert", src, "-o", tmp_path / "out", *FAST)[0] == 0
    first = (tmp_path / "out" / "p.png").stat().st_mtime_ns
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--log-file", log, *FAST)
    assert code == 0
    assert read_log(log)[-1]["status"] == "skipped" and read_log(log)[-1]["reason"] == "exists"
    assert (tmp_path / "out" / "p.png").stat().st_mtime_ns == first
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--log-file", log, "--overwrite", *FAST)
    assert code == 0 and read_log(log)[-1]["status"] == "ok"
    assert (tmp_path / "out" / "p.png").stat().st_mtime_ns != first


@pytest.mark.parametrize("max_side,expected", [("64", (64, 43)), ("0", (300, 200)), ("1280", (300, 200))])
def test_max_side(tmp_path, max_side, expected):
    src = make_photo(tmp_path / "p.png", size=(300, 200))
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--max-side", max_side, *FAST)
    assert code == 0, err
    with Image.open(tmp_path / "out" / "p.png") as im:
        assert im.size == expected


@pytest.mark.parametrize("fmt,pil,suffix", [("png", "PNG", ".png"), ("jpg", "JPEG", ".jpg"), ("webp", "WEBP", ".webp")])
def test_format_option(tmp_path, fmt, pil, suffix):
    src = make_photo(tmp_path / "p.bmp", fmt="BMP")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--format", fmt, *FAST)
    assert code == 0, err
    with Image.open(tmp_path / "out" / f"p{suffix}") as im:
        assert im.format == pil


def test_auto_format_keeps_the_input_format_and_suffix(tmp_path):
    src = make_photo(tmp_path / "p.JPEG", fmt="JPEG")
    make_photo(tmp_path / "q.tif", fmt="TIFF")
    code, _, err = invoke("convert", src, tmp_path / "q.tif", "-o", tmp_path / "out", *FAST)
    assert code == 0, err
    assert Image.open(tmp_path / "out" / "p.JPEG").format == "JPEG"
    assert Image.open(tmp_path / "out" / "q.tif").format == "TIFF"


def test_quality_changes_the_jpeg(tmp_path):
    src = make_photo(tmp_path / "p.jpg", size=(200, 150))
    invoke("convert", src, "-o", tmp_path / "q30", "--quality", "30", *FAST)
    invoke("convert", src, "-o", tmp_path / "q95", *FAST)
    assert (tmp_path / "q30" / "p.jpg").stat().st_size < (tmp_path / "q95" / "p.jpg").stat().st_size


def test_stdin_to_stdout(tmp_path):
    # A real process: the picture goes through the OS's pipes, both ways.
    data = make_photo(tmp_path / "p.png").read_bytes()
    code, out, err = run_cli("convert", "-", "-o", "-", *FAST, input=data)
    assert code == 0, err
    with Image.open(__import__("io").BytesIO(out)) as im:
        assert im.format == "PNG" and im.size == (96, 64)


def test_stdout_needs_exactly_one_input(tmp_path):
    make_photo(tmp_path / "a.png")
    make_photo(tmp_path / "b.png")
    code, _, err = invoke("convert", tmp_path, "-o", "-", *FAST)
    assert code == 2 and "one picture" in err


def test_missing_input_is_a_usage_error(tmp_path):
    code, out, err = invoke("convert", tmp_path / "nope.jpg", "-o", tmp_path / "out")
    assert code == 2
    assert err.strip() == f"anime-cli: {tmp_path / 'nope.jpg'}: no such file or folder"
    assert not (tmp_path / "out").exists()


def test_one_bad_file_fails_the_batch_but_not_the_others(tmp_path):
    make_photo(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all")
    code, _, err = invoke("convert", tmp_path / "in", "-o", tmp_path / "out", *FAST)
    assert code == 1
    assert (tmp_path / "out" / "good.png").is_file()
    assert not (tmp_path / "out" / "bad.jpg").exists()
    assert "bad.jpg" in err and "Traceback" not in err
    assert "1 ok, 0 skipped, 1 failed" in err


def test_failed_write_leaves_no_partial_file(tmp_path):
    src = make_photo(tmp_path / "p.png")
    (tmp_path / "out" / "p.png").mkdir(parents=True)  # the output name is taken by a folder
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--overwrite", *FAST)
    assert code == 1 and "cannot write" in err
    assert files_in(tmp_path / "out") == ["p.png"]  # no temporary file left beside it
    assert (tmp_path / "out" / "p.png").is_dir()


def test_output_never_overwrites_an_input(tmp_path):
    src = make_photo(tmp_path / "p.png")
    before = src.read_bytes()
    code, _, err = invoke("convert", src, "-o", tmp_path, "--overwrite", *FAST)
    assert code == 1 and "would overwrite an input" in err
    assert src.read_bytes() == before


def test_quiet_prints_nothing_on_success(tmp_path):
    # A real process: its whole stderr, C libraries' and warnings included, must stay empty.
    src = make_photo(tmp_path / "p.png")
    code, out, err = run_cli("convert", src, "-o", tmp_path / "out", "--quiet", *FAST)
    assert code == 0 and err == "" and out == b""


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path):
    src = make_photo(tmp_path / "p.png")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", *FAST)
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("ok") and lines[1].startswith("done: 1 ok")
    assert "\x1b[" not in err  # no terminal control codes


def test_styles_lists_weights_with_checksum_and_licence():
    code, out, _ = invoke("styles")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("hayao"))
    assert " ok " in line and "non-commercial" in line


def test_unknown_style_is_a_usage_error(tmp_path):
    src = make_photo(tmp_path / "p.png")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--style", "nope")
    assert code == 2 and "unknown style 'nope'" in err


def test_missing_weights_say_how_to_install(tmp_path, monkeypatch):
    from anime_cli.weights import catalog as weights

    monkeypatch.setattr(weights, "search_dirs", lambda: [tmp_path / "nowhere"])
    src = make_photo(tmp_path / "p.png")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out")
    assert code == 2
    assert "not installed" in err and "install-weights" in err


def convert_options() -> list[str]:
    """Every option of `convert`, as Click declares it: its spellings, longest first."""
    import typer.main

    from anime_cli.cli.app import app

    cmd = typer.main.get_command(app).commands["convert"]
    return [" ".join(sorted(p.opts + p.secondary_opts, key=len, reverse=True))
            for p in cmd.params if p.param_type_name == "option"]


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(title)
    return text[start:text.index("\n### ", start + len(title))]


@pytest.mark.parametrize("option", convert_options())
def test_every_convert_option_is_in_the_readme_table_with_an_example(option):
    longest, *spellings = option.split()
    section = readme_section("### `convert` options")
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    examples = [line for line in section.splitlines() if line.startswith("anime-cli ")]
    assert any(longest in row.split("|")[1] for row in rows), f"{longest} has no row in the README's options table"
    assert any(f" {s}" in line for s in (longest, *spellings) for line in examples), \
        f"{longest} has no example under the README's options table"


def test_help_shows_every_option_with_examples():
    code, out, _ = invoke("convert", "--help")
    assert code == 0
    for opt in [*(o.split()[0] for o in convert_options()), "anime-cli convert photo.jpg"]:
        assert opt in out, opt


def test_precision_fp32_gives_the_untiled_network_exactly(tmp_path):
    from anime_cli.models.animeganv2 import load_generator
    from anime_cli.weights.catalog import load
    from helpers import untiled

    src = make_photo(tmp_path / "p.png", size=(136, 100), src="astronaut.png")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--no-face-enhance", "--precision", "fp32")
    assert code == 0, err
    ref = untiled(load_generator(load("hayao")), load_rgb(src))
    assert np.abs(load_rgb(tmp_path / "out" / "p.png").astype(int) - ref).max() <= 1


def test_unknown_precision_is_one_line_and_exit_2(tmp_path):
    src = make_photo(tmp_path / "p.png")
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--precision", "fp16")
    assert code == 2
    assert err.strip() == "anime-cli: --precision must be one of auto, bf16, int8, fp32 (got 'fp16')"


@pytest.mark.parametrize("option,value", [("--memory-limit", "lots"), ("--max-file-size", "big"),
                                          ("--max-pixels", "many"), ("--format", "gif"), ("--precision", "fp16"),
                                          ("--quality", "500"), ("--max-side", "-1")])
def test_a_bad_option_value_touches_nothing_and_names_the_option(tmp_path, option, value):
    src = make_photo(tmp_path / "in" / "p.png")
    code, _, err = invoke("convert", src.parent, option, value, "-o", tmp_path / "anime-out",
                         "--log-file", tmp_path / "run.jsonl")
    assert code == 2
    assert err.startswith(f"anime-cli: {option}") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no anime-out/, no run.jsonl


def test_defaults_shown_in_help_come_from_the_library():
    from anime_cli import options

    code, out, _ = invoke("convert", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for text in (options.format_bytes(options.DEFAULT_MEMORY_LIMIT), options.format_bytes(options.DEFAULT_MAX_FILE_SIZE),
                 options.format_count(options.DEFAULT_MAX_PIXELS)):
        assert f"[default: {text}]" in flat
