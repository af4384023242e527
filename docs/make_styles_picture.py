"""Render docs/styles.jpg: one photo in all five styles, each through its eager
float32 module (models.render_rgb), with the style's name under it.

    PYTHONPATH=src python docs/make_styles_picture.py [PHOTO] [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from anime_cli import models
from anime_cli.weights import catalog as weights

ROOT = Path(__file__).resolve().parents[1]
PHOTO = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "photos" / "astronaut.png"
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "styles.jpg"
SIDE, LABEL = 300, 26  # each panel, and the strip of text under it

with Image.open(PHOTO) as im:
    im = im.convert("RGB")
    im.thumbnail((512, 512))  # rendered at 512, shown at 300
    rgb = np.asarray(im)

panels = [("photo", rgb)]
for style in weights.styles():
    panels.append((f"{style.name} ({style.family})", models.render_rgb(weights.load_module(style.name), rgb)))

font = ImageFont.load_default(size=17)
sheet = Image.new("RGB", (3 * SIDE, 2 * (SIDE + LABEL)), "white")
for i, (label, pixels) in enumerate(panels):
    x, y = (i % 3) * SIDE, (i // 3) * (SIDE + LABEL)
    panel = Image.fromarray(pixels)
    panel.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    sheet.paste(panel, (x + (SIDE - panel.width) // 2, y))
    ImageDraw.Draw(sheet).text((x + SIDE // 2, y + SIDE + LABEL // 2), label, fill="black", font=font, anchor="mm")
sheet.save(OUT, quality=85, optimize=True)
print(f"{OUT}: {OUT.stat().st_size // 1024} KB")
