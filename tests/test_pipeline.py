"""The batch: overlapped decode/write gives the same pictures and records as one file at a time."""

import numpy as np

from conftest import invoke, load_rgb, make_photo, read_log


def test_pipelined_and_sequential_runs_give_identical_outputs(tmp_path):
    src = tmp_path / "in"
    make_photo(src / "a.jpg", size=(160, 120), quality=90)
    make_photo(src / "b.png", size=(96, 64), src="chelsea.png")
    (src / "c.txt").write_text("notes")
    make_photo(src / "d.webp", size=(128, 96), fmt="WEBP", src="rocket.jpg")
    runs = {}
    for name, extra in (("piped", []), ("seq", ["--sequential"])):
        log = tmp_path / f"{name}.jsonl"
        code, _, err = invoke("convert", src, "-o", tmp_path / name, "--log-file", log, "--no-face-enhance", *extra)
        assert code == 0, err
        runs[name] = read_log(log)
    assert [r["input"] for r in runs["piped"]] == [str(src / n) for n in ("a.jpg", "b.png", "c.txt", "d.webp")]
    for a, b in zip(runs["piped"], runs["seq"]):
        assert (a["status"], a["output_size"]) == (b["status"], b["output_size"])
    for name in ("a.jpg", "b.png", "d.webp"):
        assert (tmp_path / "piped" / name).read_bytes() == (tmp_path / "seq" / name).read_bytes()


def test_converter_api_without_the_cli(tmp_path, stylizer):
    from anime_cli.discover import discover
    from anime_cli.pipeline import Converter, Options

    make_photo(tmp_path / "in" / "p.png")
    conv = Converter(stylizer, Options(output_dir=tmp_path / "out", face_enhance=False))
    (rec,) = list(conv.run(discover([str(tmp_path / "in")], recursive=False)))
    assert rec.status == "ok" and rec.output == str(tmp_path / "out" / "p.png")
    direct = stylizer.stylize(load_rgb(tmp_path / "in" / "p.png"))
    assert np.array_equal(load_rgb(tmp_path / "out" / "p.png"), direct)
