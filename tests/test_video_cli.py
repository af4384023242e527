"""Videos and animations through the real CLI, beside photos in one folder."""

from __future__ import annotations

import pytest

from helpers import invoke, make_photo, read_log

av = pytest.importorskip("av", reason="the [video] extra (PyAV) is not installed")

from clip_makers import make_clip, packets  # noqa: E402


def test_a_folder_of_a_video_an_animation_and_a_photo(tmp_path):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "clip.mp4", n=6, size=(96, 64))
    frames = [Image.new("RGB", (48, 32), (40 * i, 100, 50)) for i in range(4)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=[100, 200, 100, 300], loop=0)
    make_photo(src / "photo.png", size=(64, 48))
    code, _, err = invoke("convert", src, "-o", tmp_path / "out", "--log-file", tmp_path / "run.jsonl",
                          "--no-face-enhance")
    assert code == 0, err
    recs = {r["input"].rsplit("/", 1)[-1]: r for r in read_log(tmp_path / "run.jsonl")}
    assert {k: r["status"] for k, r in recs.items()} == {"anim.gif": "ok", "clip.mp4": "ok", "photo.png": "ok"}
    clip = recs["clip.mp4"]
    assert clip["frames"] == 6 and clip["audio"] == 1 and clip["output"].endswith("clip.mp4")
    assert packets(tmp_path / "out" / "clip.mp4", "audio") == packets(src / "clip.mp4", "audio")
    with Image.open(tmp_path / "out" / "anim.gif") as im:
        assert im.n_frames == 4 and [im.seek(i) or im.info["duration"] for i in range(4)] == [100, 200, 100, 300]
    assert "frames" not in recs["photo.png"]  # photo records keep their keys


def test_a_video_cannot_go_to_stdout(tmp_path):
    make_clip(tmp_path / "clip.mp4", n=3, size=(64, 48))
    code, out, err = invoke("convert", tmp_path / "clip.mp4", "-o", "-", "--no-face-enhance")
    assert code == 1 and out == "" and "cannot be written to stdout" in err


def test_a_file_named_like_a_video_that_is_not_one_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "holiday.mp4").write_bytes(b"not a video at all" * 20)
    code, _, err = invoke("convert", tmp_path / "in", "-o", tmp_path / "out", "--log-file", tmp_path / "r.jsonl")
    assert code == 1
    (rec,) = read_log(tmp_path / "r.jsonl")
    assert (rec["status"], rec["reason"]) == ("error", "corrupt video")
