"""Video figures: frames per second at 480p and 720p with and without faces,
and flicker.

    PYTHONPATH=src .venv/bin/python bench/video.py [--frames N] [--photo astronaut.png]

The clip is a slow pan (1 px a frame, whole pixels) across a real photo
scaled to the frame's height and repeated side by side (the astronaut's face,
~110 px at 480p and ~170 px at 720p, is in every frame), with a tone on an
audio track, made here with PyAV. Flicker is the mean absolute difference between
consecutive frames (0-255 scale): of the input frames, of the stylized frames
as the network gives them, and of the written video decoded again. The pan
itself changes every pixel, so the figure is given twice: raw (the issue's
measure), and aligned (frame k+1 shifted back by the pan's 1 px before the
difference; the input's aligned figure is ~0, so the output's is what the
network adds: flicker proper).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from clip_makers import make_clip  # noqa: E402

from anime_cli.kinds import video  # noqa: E402
from anime_cli.kinds.frames import FrameStylizer  # noqa: E402
from anime_cli.stylize.session import Stylizer  # noqa: E402

SIZES = {"480p": (854, 480), "720p": (1280, 720)}


def mad(frames: list[np.ndarray], shift: int = 0) -> float:
    """Mean |frame k+1 - frame k|; shift: compare k+1's column x with k's x + shift."""
    w = frames[0].shape[1]
    return float(np.mean([np.abs(b[:, : w - shift].astype(np.int16) - a[:, shift:]).mean()
                          for a, b in zip(frames, frames[1:])]))


def run(stylizer, detector, clip: Path, out: Path) -> dict:
    fs = FrameStylizer(stylizer, detector)
    got = []

    def keep(rgb):
        o = fs(rgb)
        got.append(o)
        return o

    keep.timings = fs.timings
    t = time.perf_counter()
    res = video.convert_video(clip, out, keep, max_side=0, overwrite=True)
    wall = time.perf_counter() - t
    return {"fps": res.frames / wall, "wall": wall, "timings": res.timings, "faces": fs.faces,
            "frames": got, "written": [f for _, f in video.read_frames(out)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--photo", default="astronaut.png")
    ap.add_argument("--sizes", default="480p,720p")
    args = ap.parse_args()
    from anime_cli.faces.enhance import FaceDetector

    stylizer = Stylizer.from_style("hayao")
    detector = FaceDetector.load()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.sizes.split(","):
            w, h = SIZES[name]
            clip = make_clip(tmp / f"{name}.mp4", n=args.frames, size=(w, h), fps=30, src=args.photo,
                             step=1, tile=True)
            inputs = [f for _, f in video.read_frames(clip)]
            for faces in (False, True):
                r = run(stylizer, detector if faces else None, clip, tmp / "out.mp4")
                per = {k: round(v / args.frames, 3) for k, v in r["timings"].items()}
                print(f"{name} {w}x{h} faces={'on (256 px)' if faces else 'off'}: {r['fps']:.3f} frames/s "
                      f"({r['wall']:.1f} s for {args.frames} frames; per frame {per}; faces enhanced {r['faces']})")
                for shift, what in ((0, "raw"), (1, "aligned")):
                    fi, fo, fw = mad(inputs, shift), mad(r["frames"], shift), mad(r["written"], shift)
                    print(f"  flicker {what} (mean |frame - previous|): input {fi:.2f}, stylized {fo:.2f}, "
                          f"written H.264 {fw:.2f}")


if __name__ == "__main__":
    main()
