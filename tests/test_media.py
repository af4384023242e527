"""media.probe/convert (the pipeline's way in) and FrameStylizer with the real
face detector."""

from __future__ import annotations

import pytest
from PIL import Image

from clip_makers import decoded, make_clip, pan_frames, packets

from anime_cli.kinds import media
from anime_cli.errors import InputError
from anime_cli.kinds.frames import VIDEO_FACE_SIZE, FrameStylizer
from anime_cli.inputs.sniff import sniff

pytest.importorskip("av")


def test_probe_then_convert_a_video(tmp_path):
    src = make_clip(tmp_path / "in.mov", n=4, size=(64, 48))
    clip = media.probe(src, sniff(src), max_side=1280)
    assert (clip.kind, clip.suffix, clip.size, clip.frames) == ("mov", ".mp4", (64, 48), 4)
    assert 0 < clip.hold_bytes < 50e6
    res = media.convert(clip, src, tmp_path / f"out{clip.suffix}", lambda x: 255 - x)
    assert res.frames == 4 and res.suffix == ".mp4"
    assert packets(src, "audio") == packets(tmp_path / "out.mp4", "audio")


def test_probe_then_convert_an_animation(tmp_path):
    frames = [Image.fromarray(f) for f in pan_frames(4, (64, 48), step=3)]
    frames[0].save(tmp_path / "in.webp", save_all=True, append_images=frames[1:], duration=[40, 80, 40, 80], loop=0)
    clip = media.probe(tmp_path / "in.webp", sniff(tmp_path / "in.webp"))
    assert (clip.kind, clip.suffix, clip.frames, clip.hold_bytes) == ("webp", ".webp", 4, 4 * 64 * 48 * 4)
    res = media.convert(clip, tmp_path / "in.webp", tmp_path / "out.webp", lambda x: x)
    assert res.frames == 4 and res.duration == 0.24
    with pytest.raises(InputError) as e:
        media.probe(tmp_path / "in.webp", "webp", max_frames=3)
    assert e.value.reason == "too many frames"


def test_frame_stylizer_enhances_faces_and_times_its_stages(tmp_path, stylizer, detector):
    # the astronaut at 240 px high: her face ~40 px, a crop well under 256 px
    src = make_clip(tmp_path / "in.mp4", n=2, size=(320, 240), tile=True, audio=False)
    fs = FrameStylizer(stylizer, detector)
    assert fs.face_size == VIDEO_FACE_SIZE == 256
    clip = media.probe(src, "mp4")
    res = media.convert(clip, src, tmp_path / "out.mp4", fs)
    assert fs.faces >= 2  # at least one a frame
    assert set(res.timings) == {"decode", "stylize", "faces", "encode"}
    assert res.timings["faces"] > 0 and res.timings["stylize"] > 0


_SWEEP = "import sys; from pathlib import Path; from anime_cli.folder.files import remove_stale_temps; " \
         "print(remove_stale_temps(Path(sys.argv[1])))"


def test_another_runs_sweep_never_takes_a_video_being_written(tmp_path):
    """Two runs (two --shard processes) into one folder: the other one's sweep of
    stale temporaries found a video's temporary unlocked once it was 10 s old,
    and deleted it while the encoder was writing it."""
    import os
    import subprocess
    import sys
    import time

    src = make_clip(tmp_path / "in.mov", n=80, size=(64, 48), audio=False)
    out = tmp_path / "out"
    out.mkdir()
    swept = []

    def stylize(x):
        temps = [p for p in out.iterdir() if p.name.endswith(".tmp")]
        if not swept and temps and temps[0].stat().st_size > 0:  # the encoder is writing it: age it, sweep
            old = time.time() - 60
            os.utime(temps[0], (old, old))
            swept.append(subprocess.run([sys.executable, "-c", _SWEEP, out], capture_output=True, text=True))
        return x

    res = media.convert(media.probe(src, "mov"), src, out / "clip.mp4", stylize)
    assert swept and swept[0].returncode == 0, swept and swept[0].stderr
    assert swept[0].stdout.strip() == "0", "the sweep took the live temporary"
    assert res.frames == 80 and len(decoded(out / "clip.mp4")) == 80


def test_a_clip_output_another_run_wrote_first_is_kept(tmp_path):
    """The output appeared while the clip was written: the clip is `skipped
    exists` (OutputExists), and the other run's file is not replaced."""
    from anime_cli.errors import OutputExists

    src = make_clip(tmp_path / "in.mov", n=3, size=(64, 48))
    dest = tmp_path / "out.mp4"

    def stylize(x):
        if not dest.exists():
            dest.write_bytes(b"another run's output")
        return x

    with pytest.raises(OutputExists):
        media.convert(media.probe(src, "mov"), src, dest, stylize)
    assert dest.read_bytes() == b"another run's output"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
