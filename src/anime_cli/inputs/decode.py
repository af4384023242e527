"""Decode an opened image straight to the working size, as RGB (+ alpha).

JPEG is decoded reduced: Pillow's draft mode makes libjpeg scale by 1/2, 1/4
or 1/8 in the DCT, picking the smallest scale still at least the target, so a
12 MP photo bound for 1280 px never exists at full size in memory. An exact
Lanczos resize then gives the target size. Orientation is applied last, on
the small image (a TIFF comes upright from Pillow 13, which turns it as it
loads; the probe then says orientation 1).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms

from . import pngscan
from anime_cli.errors import InputError
from .probe import Probe

# EXIF orientation -> the transpose that shows the picture upright.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SRGB = ImageCms.createProfile("sRGB")
DRAFTABLE = ("JPEG", "MPO")  # MPO: a JPEG with extra pictures appended; draft works the same


@dataclass
class Decoded:
    rgb: np.ndarray  # (H, W, 3) uint8, upright, sRGB, at the working size
    alpha: np.ndarray | None  # (H, W) uint8, or None when the input is opaque
    decode_size: tuple[int, int]  # what the decoder actually produced (upright), before the resize
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Fit within max_side on the longest side, never upscaling; 0 keeps the size."""
    w, h = size
    if max_side <= 0 or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def decode(im: Image.Image, probe: Probe, max_side: int, name: str) -> Decoded:
    tw, th = target_size(probe.oriented_size, max_side)
    stored_target = (th, tw) if probe.oriented_size != probe.size else (tw, th)
    notes = list(probe.notes)
    try:
        if im.format in DRAFTABLE:
            im.draft(None, stored_target)
        if im.format == "PNG":
            _whole_png(im, name)
        im.load()
        decode_size = im.size
        im, more = to_rgb_or_rgba(im)
        notes += more
        if im.size != stored_target:
            im = _resize(im, stored_target)
        im = upright(im, probe.orientation)
        if probe.orientation in (5, 6, 7, 8):
            decode_size = decode_size[::-1]
        arr = np.asarray(im)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{name}: not enough memory to decode", "out of memory") from None
    except Exception as e:  # a decoder fed hostile bytes can raise nearly anything
        raise InputError(f"{name}: truncated or corrupt image data ({_short(e)})", "corrupt data") from None
    if arr.shape[2] == 4:
        rgb, alpha = over_white(arr), np.ascontiguousarray(arr[:, :, 3])
    else:
        rgb, alpha = np.ascontiguousarray(arr), None
    return Decoded(rgb=rgb, alpha=alpha, decode_size=decode_size, notes=notes)


def _whole_png(im: Image.Image, name: str) -> None:
    """Pillow decodes a PNG whose zlib stream ends cleanly after part of the rows
    without a word, the rest black; so the stream is inflated once first (no
    pixels kept) and such a file is refused before its buffer exists."""
    short = pngscan.short_stream(im.fp)
    if short is not None:
        got, need = short
        raise InputError(f"{name}: truncated data (the image data ends after {100 * got // need}% "
                         "of its rows)", "truncated data")


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """The picture as it should be shown, for EXIF orientation 1..8."""
    return im.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else im


def to_rgb_or_rgba(im: Image.Image) -> tuple[Image.Image, list[str]]:
    """Any Pillow mode to 8-bit sRGB, keeping transparency as RGBA."""
    notes = []
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        im = _high_bit_depth_to_l(im)
        notes.append(f"{mode} scaled to 8 bits")
    icc = im.info.get("icc_profile")
    transparent = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info)
    want = "RGBA" if transparent else "RGB"
    if icc and im.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if im.mode == "L":
                im = im.convert("RGB")  # a gray profile would not map to sRGB's RGB
            elif im.mode == "RGBA" and not transparent:
                im = im.convert("RGB")
            out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
            converted = ImageCms.profileToProfile(im, src, _SRGB, outputMode=out_mode)
            if converted is not None:
                im = converted
                notes.append("ICC profile converted to sRGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            notes.append("ICC profile unreadable, ignored")
    if im.mode != want:
        im = im.convert(want)
    return im, notes


def _high_bit_depth_to_l(im: Image.Image) -> Image.Image:
    a = np.asarray(im)
    if im.mode == "F":
        a = np.nan_to_num(a.astype(np.float64))
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        a = a * scale
    elif im.mode.startswith("I;16") or a.max(initial=0) > 255:
        a = a.astype(np.float64) / 257.0  # 16-bit range -> 8-bit range
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    if im.mode == "RGBA":
        # Resample with premultiplied alpha so transparent pixels' colours don't bleed.
        return im.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")
    return im.resize(size, Image.Resampling.LANCZOS)


def over_white(rgba: np.ndarray) -> np.ndarray:
    """What the network sees of a transparent picture: the colours over white.
    (The output gets the original alpha back where its format can hold it.)"""
    a = rgba[:, :, 3:4].astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:120] if text else type(e).__name__

