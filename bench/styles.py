"""`make bench`, styles: fidelity, speed and memory of every style (a
benchmark, not a test).

Fidelity: the strip engine (bf16 and fp32, the default memory budget and a
tight one that streams) against one eager float32 pass of the style's own
module over the whole picture, on two photos and a close-up portrait: PSNR.

Speed: the whole `convert --max-side 0 --no-face-enhance` process on ~1 MP
photos against the naive way (bench/naive.py: decode whole, one eager float32
pass, save), alternated, medians.

Memory: a 12 MP JPEG at the defaults (faces on), and at --max-side 0 under
the default 1 GiB limit, in bf16 (where it runs), int8 (for the styles with a
calibration: what `auto` runs on CPUs without native bfloat16) and fp32: the
whole process's peak, sampled from outside.

    .venv/bin/python bench/styles.py [--styles shinkai,paprika] [--runs 3] [--skip-speed] [--skip-memory]
        [--precisions bf16,int8,fp32] [--skip-max-side-0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import PHOTOS, cli, make_jpeg, mb, measure  # noqa: E402

STYLES = ["hayao", "hayao-v3", "shinkai", "cute", "paprika"]
SPEED_SET = [("coffee.png", (1248, 832)), ("rocket.jpg", (1248, 832)), ("chelsea.png", (1248, 832))]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    d = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if d == 0 else 10 * np.log10(255.0**2 / d)


def pictures() -> dict[str, np.ndarray]:
    def load(name, size):
        with Image.open(PHOTOS / name) as im:
            return np.asarray(im.convert("RGB").resize(size, Image.Resampling.LANCZOS))

    with Image.open(PHOTOS / "astronaut.png") as im:  # the face, upscaled: smooth skin, soft light
        portrait = np.asarray(im.convert("RGB").crop((130, 0, 330, 200)).resize((512, 512), Image.Resampling.BICUBIC))
    return {"coffee 601x403": load("coffee.png", (601, 403)), "rocket 640x427": load("rocket.jpg", (640, 427)),
            "portrait 512x512": portrait}


def fidelity(styles: list[str], precisions: list[str]) -> None:
    from anime_cli import models
    from anime_cli.weights import catalog as weights
    from anime_cli.stylize.session import Stylizer

    print("fidelity: the strip engine against one eager float32 pass of the style's module (PSNR, dB)")
    print("  (least memory: the budget of min_bytes, a stream plan whose stored layers may be kept in 8 bits)")
    print(f"  {'style':10s} {'picture':18s} {'bf16':>7s} {'int8':>7s} {'fp32':>7s} {'fp32 least memory':>18s}")
    for style in styles:
        module = weights.load_module(style)
        runs = {p: Stylizer.from_style(style, precision=p) for p in set(precisions) | {"fp32"}
                if p != "int8" or weights.int8_table(style)}
        for label, rgb in pictures().items():
            ref = models.render_rgb(module, rgb)
            # nan: bf16 does not run here, or the style has no int8 calibration
            got = [psnr(runs[p].stylize(rgb), ref) if p in runs else float("nan") for p in ("bf16", "int8", "fp32")]
            got.append(psnr(runs["fp32"].stylize(rgb, budget_bytes=runs["fp32"].min_bytes(*rgb.shape[:2])), ref))
            print(f"  {style:10s} {label:18s} " + " ".join(f"{v:7.1f}" for v in got[:3]) + f" {got[3]:18.1f}",
                  flush=True)
    print()


def speed(tmp: Path, styles: list[str], runs: int) -> None:
    src = tmp / "speed"
    src.mkdir(exist_ok=True)
    inputs = [make_jpeg(name, size, src / (Path(name).stem + ".jpg")) for name, size in SPEED_SET]
    print(f"speed: {len(inputs)} ~1 MP JPEGs, native size, no faces; whole processes, {runs} runs each, alternating")
    for style in styles:
        naive = [sys.executable, str(Path(__file__).with_name("naive.py")), *map(str, inputs), "-o",
                 str(tmp / "naive-out"), "--style", style]
        ours = [*cli(), "convert", *map(str, inputs), "-o", str(tmp / f"out-{style}"), "--max-side", "0",
                "--no-face-enhance", "--overwrite", "--quiet", "--style", style]
        t = {"naive": [], "anime-cli": []}
        for _ in range(runs):
            for name, cmd in (("naive", naive), ("anime-cli", ours)):
                t[name].append(measure(cmd).seconds)
        n, o = statistics.median(t["naive"]), statistics.median(t["anime-cli"])
        print(f"  {style:10s} naive {n:6.1f} s  anime-cli {o:6.1f} s  {n / o:5.2f}x", flush=True)
    print()


GOAL_MB = 700  # every style's 12 MP default true peak (decimal MB, as the CLI prints), in every precision it runs


def memory(tmp: Path, styles: list[str], precisions: list[str], max_side_0: bool) -> None:
    photo = make_jpeg("astronaut.png", (4000, 3000), tmp / "photo12.jpg")
    print(f"memory: a 12 MP JPEG (4000x3000, a face in it), whole-process peak sampled from outside "
          f"(goal at the defaults: <= {GOAL_MB} MB)")
    cases = [("defaults", [])] + ([("--max-side 0", ["--max-side", "0"])] if max_side_0 else [])
    from anime_cli.weights import catalog

    for style in styles:
        for precision in [p for p in precisions if p != "int8" or catalog.int8_table(style)]:
            for label, opts in cases:
                log = tmp / f"{style}-{precision}-{len(opts)}.jsonl"
                r = measure([*cli(), "convert", str(photo), "-o", str(tmp / f"mem-{style}-{precision}-{len(opts)}"),
                             "--overwrite", "--quiet", "--style", style, "--precision", precision,
                             "--log-file", str(log), *opts], log)
                plan = r.log[0].get("plan") if r.log else None
                over = "  OVER" if not opts and r.peak > GOAL_MB * 1e6 else ""
                print(f"  {style:10s} {precision:5s} {label:13s} peak {mb(r.peak)} ({r.peak / 1e6:.0f} MB){over}"
                      f"  {r.seconds:6.1f} s  plan {plan}", flush=True)
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description="anime-cli styles: fidelity, speed, memory (not a test)")
    ap.add_argument("--styles", default=",".join(STYLES))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-fidelity", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--precisions", default=None, help="memory: bf16,int8,fp32 (default: each that runs here)")
    ap.add_argument("--skip-max-side-0", action="store_true", help="memory: only the defaults")
    args = ap.parse_args()
    from anime_cli.engine import bf16_works

    default = (["bf16"] if bf16_works() else []) + ["int8", "fp32"]
    precisions = args.precisions.split(",") if args.precisions else default
    styles = args.styles.split(",")
    with tempfile.TemporaryDirectory(prefix="anime-bench-styles-") as tmp:
        if not args.skip_fidelity:
            fidelity(styles, precisions)
        if not args.skip_speed:
            speed(Path(tmp), [s for s in styles if s in ("shinkai", "paprika")] or styles, args.runs)
        if not args.skip_memory:
            memory(Path(tmp), styles, precisions, not args.skip_max_side_0)


if __name__ == "__main__":
    main()
