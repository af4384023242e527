"""The naive pipeline, as public AnimeGAN scripts run it: the baseline of
`make bench`.

For each photo, one after another: decode it whole with PIL, make an NCHW
float32 tensor, run the style's eager module on it (reflect-padded right and
bottom to the family's multiple, torch's default threads), and write the
result. No reduced decoding, no tiling, no memory bound.

    python bench/naive.py IN... -o OUTDIR [--style NAME | --weights PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from anime_cli import models
from anime_cli.weights import catalog as weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--style", default="hayao", help="an installed style (default: hayao)")
    ap.add_argument("--weights", type=Path, help="a state dict of a known family (overrides --style)")
    args = ap.parse_args()

    module = weights.load_module_file(args.weights) if args.weights else weights.load_module(args.style)
    args.output.mkdir(parents=True, exist_ok=True)
    for path in args.inputs:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(models.render_rgb(module, rgb)).save(args.output / (path.stem + ".jpg"), quality=95)


if __name__ == "__main__":
    main()
