"""The naive pipeline, as public AnimeGANv2 scripts run it: the baseline of
`make bench`.

For each photo, one after another: decode it whole with PIL, make an NCHW
float32 tensor, run the eager generator on it (torch's default threads), and
write the result. No reduced decoding, no tiling, no memory bound.

    python bench/naive.py IN... -o OUTDIR [--weights PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anime_cli.model import load_generator
from anime_cli.weights import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--weights", type=Path, help="state dict (default: the installed hayao style)")
    args = ap.parse_args()

    sd = torch.load(args.weights, map_location="cpu", weights_only=True) if args.weights else load("hayao")
    model = load_generator(sd)
    args.output.mkdir(parents=True, exist_ok=True)
    for path in args.inputs:
        image = Image.open(path).convert("RGB")
        x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1.0
        with torch.no_grad():
            y = model(x)
        out = ((y[0].permute(1, 2, 0) + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()
        Image.fromarray(out).save(args.output / (path.stem + ".jpg"), quality=95)


if __name__ == "__main__":
    main()
