"""int8 calibration of the styles (engine/int8.py): the range each int8
layer's input takes on real photos, kept in the weights manifest.

    python -m anime_cli.stylize.calibrate PHOTOS_FOLDER [--write]

The calibration photos run through each style in float32 at CALIBRATION_SIDE;
then every photo of the folder (the others held out) is rendered in int8 and
in float32 at CHECK_SIDE. A style gets a table only where every photo is at
least MIN_DB from float32: the others keep no int8 (paprika's decoder, whose
layers alone cost 31-47 dB in int8, has none), and `auto` runs them in fp32
where bfloat16 is not native.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anime_cli import models
from anime_cli.engine import Engine
from anime_cli.weights import catalog

CALIBRATION = ("astronaut.png", "chelsea.png", "coffee.png")
CALIBRATION_SIDE = 512
CHECK_SIDE = 1024
MIN_DB = 43.0  # the goal is 40 dB on any photo: 3 dB of margin for photos unlike these


def photo(path: Path, side: int) -> np.ndarray:
    """A photo with its longer side at `side` (Lanczos), RGB uint8."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = side / max(im.size)
        return np.asarray(im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS))


def calibrate(layers: list, pictures: list[np.ndarray]) -> dict[str, list[float]]:
    """The int8 table of a layer list: every int8 layer's input range over
    float32 runs of `pictures`."""
    engine = Engine(layers, threads=torch.get_num_threads(), precision="fp32")
    table: dict[str, list[float]] = {}
    for rgb in pictures:
        engine.calibrate(rgb, table)
    return {name: [float(f"{lo:.6g}"), float(f"{hi:.6g}")] for name, (lo, hi) in table.items()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def fidelity(layers: list, table: dict, pictures: list[np.ndarray]) -> list[float]:
    """PSNR of int8 against float32 for each picture."""
    threads = torch.get_num_threads()
    exact = Engine(layers, threads=threads, precision="fp32")
    fast = Engine(layers, threads=threads, precision="int8", int8=table)
    return [psnr(exact.stylize(rgb), fast.stylize(rgb)) for rgb in pictures]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", type=Path, help="a folder holding the calibration photos and any held-out ones")
    ap.add_argument("--styles", default="", help="comma-separated (default: every style)")
    ap.add_argument("--write", action="store_true", help="store the tables in the weights manifest")
    args = ap.parse_args(argv)
    names = [n for n in args.styles.split(",") if n] or [e.name for e in catalog.styles()]
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    calib = [photo(args.photos / n, CALIBRATION_SIDE) for n in CALIBRATION]
    check = [photo(p, CHECK_SIDE) for p in files]
    tables = {}
    for name in names:
        layers = models.layers_for(catalog.load(name))
        table = calibrate(layers, calib)
        db = fidelity(layers, table, check)
        ok = min(db) >= MIN_DB
        tables[name] = table if ok else None
        shown = ", ".join(f"{p.name} {d:.1f}" + ("" if p.name in CALIBRATION else " (held out)") for p, d in zip(files, db))
        print(f"{name}: {len(table)} int8 layers; int8 vs fp32 at {CHECK_SIDE} px: {shown} dB:"
              f" {'kept' if ok else f'under {MIN_DB} dB, no int8'}", flush=True)
    if args.write:
        doc = json.loads(catalog.MANIFEST.read_text())
        for entry in doc["files"]:
            if entry["name"] in tables:
                entry.pop("int8", None)
                if tables[entry["name"]]:
                    entry["int8"] = tables[entry["name"]]
        text = json.dumps(doc, indent=2, ensure_ascii=False)
        text = re.sub(r"\[\s+(\S+),\s+(\S+)\s+\]", r"[\1, \2]", text)  # a range on one line
        catalog.MANIFEST.write_text(text + "\n")
        print(f"written: {catalog.MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
