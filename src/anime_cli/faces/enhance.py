"""Face enhancement ("face2paint"): re-render each face on its own, larger.

AnimeGANv2 draws with strokes of a fixed size in pixels, so a face that is
only 40 px wide in the picture comes out as a few smudges. Here each face
found by MTCNN is cut out with a generous margin (hair, chin), stylized again
at `face_size` px, scaled back down and blended into the stylized picture
under a feathered round mask. The crop's pixels come from the best resolution
available (the pipeline's `source` re-decodes the original file), so a face
gets detail the working image never had.

The generator normalises by its input's own statistics, so a crop rendered
alone comes out a little lighter or darker than the same face in the whole
picture; the render's per-channel mean and standard deviation are matched to
the stylized picture's under the mask before blending.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from anime_cli.inputs.decode import DRAFTABLE, over_white, to_rgb_or_rgba, upright
from .mtcnn import MTCNN, Face
from anime_cli.options import DEFAULT_FACE_SIZE
from anime_cli.logs.telemetry import KEPT_LARGE, KEPT_OUTSIDE

__all__ = ["DEFAULT_MIN_FACE", "DETECT_SIDE", "CropSource", "FileSource", "Face", "FaceDetector", "FaceReport",
           "enhance_faces", "crop_box", "file_identity"]

# Faces narrower than this (px in the working image) are left as they are.
# MTCNN finds faces from 20 px with no false positives on the sample photos,
# and the re-render helps even there (a 20 px face goes from a blank oval to
# eyes and a smile). But every face costs a full face_size render (~2-5 s on
# 2 CPU cores), whatever its size, and the faces under ~24 px in a picture are
# the background crowd: skipping them keeps a group photo from costing minutes.
DEFAULT_MIN_FACE = 24
# Faces are found on a copy whose longest side is at most this: MTCNN finds
# them reliably there, and its pyramid over a 24 MP original held ~1 GB for
# 9 s. Boxes are mapped back to the working image; min_face scales along.
DETECT_SIDE = 1280

CROP_SCALE = 2.0  # crop side / face box side: room for hair, ears and chin
CROP_LIFT = 0.15  # move the crop up by this fraction of the face box: hair is above, not below
MASK_INNER = 0.70  # mask is 1 within this fraction of the crop's half side...
MASK_OUTER = 0.97  # ...and falls smoothly to 0 at this one


class CropSource:
    """Face pixels cut from an in-memory HxWx3 uint8 array (the working image)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def region(self, box: tuple[float, float, float, float], size: int) -> np.ndarray:
        """The box (x0, y0, x1, y1, float pixel coords, may extend past the edges,
        which are mirrored) resampled to size x size x 3 uint8."""
        x0, y0, x1, y1 = box
        # cut the whole pixels the box touches, plus a few for the filter's reach
        ix0, iy0 = math.floor(x0) - 2, math.floor(y0) - 2
        ix1, iy1 = math.ceil(x1) + 2, math.ceil(y1) + 2
        h, w = self.array.shape[:2]
        rows = reflect(np.arange(iy0, iy1), h)
        cols = reflect(np.arange(ix0, ix1), w)
        patch = self.array[rows[:, None], cols[None, :]]
        im = Image.fromarray(np.ascontiguousarray(patch))
        resized = im.resize((size, size), Image.Resampling.LANCZOS, box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
        return np.asarray(resized)


class FileSource:
    """Face pixels from the best resolution the original file offers.

    The working image may be a downscale of the original: a face 60 px wide
    there can be 400 px in the file. `region` re-decodes the file once (a JPEG
    again DCT-scaled, just enough for the crop to reach `size`), then cuts the
    square out of that like CropSource does. `identity`: the file as it was
    probed (file_identity); a file replaced since is not re-read (its face
    would be another picture's), the working image serves instead."""

    def __init__(self, reopen, probe, working: np.ndarray, max_decode_pixels: int, identity=None, path=None):
        self._reopen = reopen  # () -> a fresh, lazily opened PIL image of the same file
        self._identity, self._path = identity, path
        self._probe = probe
        self._working = working
        self._max_pixels = max_decode_pixels
        self._cache: np.ndarray | None = None

    def region(self, box: tuple[float, float, float, float], size: int) -> np.ndarray:
        x0, y0, x1, y1 = box
        work_w = self._working.shape[1]
        scale = self._probe.oriented_size[0] / work_w
        want = min(1.0, size / max(1e-6, (x1 - x0) * scale))  # the fraction of full size the crop needs
        arr = self._decoded(want) if scale > 1.05 else self._working
        s = arr.shape[1] / work_w
        return CropSource(arr).region((x0 * s, y0 * s, x1 * s, y1 * s), size)

    def _decoded(self, fraction: float) -> np.ndarray:
        ow, oh = self._probe.oriented_size
        if self._cache is not None and self._cache.shape[1] >= ow * fraction * 0.999:
            return self._cache
        if ow * oh * fraction**2 > self._max_pixels:
            return self._working
        target = (max(1, round(ow * fraction)), max(1, round(oh * fraction)))
        if self._path is not None and file_identity(self._path) != self._identity:
            return self._working
        try:
            with self._reopen() as im:
                stored = target[::-1] if self._probe.orientation in (5, 6, 7, 8) else target
                if im.format in DRAFTABLE:
                    im.draft(None, stored)
                im.load()
                im, _ = to_rgb_or_rgba(im)
                arr = np.asarray(upright(im, self._probe.orientation))
        except Exception:  # the file changed or vanished since: the working image still serves
            return self._working
        self._cache = over_white(arr) if arr.shape[2] == 4 else arr
        return self._cache


def file_identity(path) -> tuple | None:
    """What tells a file from its replacement: device, inode, size, mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored into [0, n) without repeating the edge pixel (numpy's 'reflect')."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx < n, idx, period - idx)


class FaceDetector:
    def __init__(self, mtcnn: MTCNN):
        self.mtcnn = mtcnn

    @classmethod
    def load(cls) -> "FaceDetector":
        return cls(MTCNN.load())

    def detect(self, rgb: np.ndarray, min_face: int = 20) -> list[Face]:
        """Faces of `rgb` at least about `min_face` px wide, in its pixel
        coordinates, found on a copy no larger than DETECT_SIDE."""
        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_SIDE / max(h, w))
        if scale >= 1.0:
            return self._detect(rgb, min_face)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
        sx, sy = w / size[0], h / size[1]
        faces = self._detect(small, max(12, round(min_face * scale)))
        return [Face((f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy), f.score,
                     f.landmarks * np.array([sx, sy], dtype=np.float32)) for f in faces]

    def _detect(self, rgb: np.ndarray, min_face: int) -> list[Face]:
        # MTCNN is hundreds of tiny convolutions: OpenMP's fork/join costs more
        # than it saves. One thread took 0.25-0.31 s on a 1280x854 photo where
        # two took 2.3 s with the other core busy.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.mtcnn.detect(rgb, min_face=min_face)
        finally:
            torch.set_num_threads(threads)


def crop_box(face: Face) -> tuple[int, int, int, int]:
    """The square, whole-pixel region re-rendered for `face` (may pass the image edges)."""
    x0, y0, x1, y1 = face.box
    side = max(x1 - x0, y1 - y0)
    crop = max(1, round(CROP_SCALE * side))
    cx = (x0 + x1) / 2
    cy = (y0 + y1) / 2 - CROP_LIFT * side
    left, top = round(cx - crop / 2), round(cy - crop / 2)
    return left, top, left + crop, top + crop


def feather_mask(side: int) -> np.ndarray:
    """side x side weights: 1 in a central disc, easing to exactly 0 before the crop's edge."""
    r = (np.arange(side) + 0.5) / side * 2 - 1  # -1..1 across the crop
    dist = np.hypot(r[:, None], r[None, :])
    t = np.clip((MASK_OUTER - dist) / (MASK_OUTER - MASK_INNER), 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep: no visible ring at either end


def match_tone(render: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Shift and scale each channel of `render` so that its weighted mean and
    standard deviation equal `target`'s over the same pixels."""
    wsum = weight.sum()
    out = render.astype(np.float32)
    if wsum <= 0:
        return out
    wt = weight[..., None] / wsum
    t = target.astype(np.float32)
    mu_r, mu_t = (out * wt).sum((0, 1)), (t * wt).sum((0, 1))
    sd_r = np.sqrt(((out - mu_r) ** 2 * wt).sum((0, 1)))
    sd_t = np.sqrt(((t - mu_t) ** 2 * wt).sum((0, 1)))
    gain = np.clip(sd_t / np.maximum(sd_r, 1e-3), 0.5, 2.0)  # a flat crop must not explode
    return (out - mu_r) * gain + mu_t


@dataclass
class FaceReport:
    found: int = 0  # faces at least min_face wide
    enhanced: int = 0  # of those, re-rendered
    kept: dict[str, int] = field(default_factory=dict)  # why the others were left as they were -> count


def enhance_faces(
    stylizer,
    working: np.ndarray,
    stylized: np.ndarray,
    detector: FaceDetector,
    source=None,
    *,
    min_face: int = DEFAULT_MIN_FACE,
    face_size: int = DEFAULT_FACE_SIZE,
    cancel=None,
) -> tuple[np.ndarray, FaceReport]:
    """Re-render every face of `working` at least `min_face` px wide into a copy of
    `stylized` (the stylizer's output for `working`). Faces come from
    `source.region(box, face_size)` when a source is given (box in working-image
    coords), else from `working`. A face whose crop is already face_size px or
    more is kept as it is: the re-render would be coarser than the picture.
    Returns (new stylized array, report). Pixels outside every face's crop
    (see `crop_box`) are exactly those of `stylized`. `cancel`: passed on to
    stylizer.stylize."""
    if stylized.shape != working.shape:
        raise ValueError(f"stylized {stylized.shape} and working {working.shape} differ in size")
    source = source if source is not None else CropSource(working)
    out = stylized.copy()
    h, w = out.shape[:2]
    report = FaceReport()
    for face in detector.detect(working, min_face=min_face):
        if face.width < min_face:
            continue
        report.found += 1
        left, top, right, bottom = crop_box(face)
        side = right - left
        # only the part of the crop inside the picture is pasted
        cx0, cy0, cx1, cy1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
        why = (KEPT_LARGE if side >= face_size  # pasting it would only blur it
               else KEPT_OUTSIDE if cx1 <= cx0 or cy1 <= cy0 else None)
        if why:
            report.kept[why] = report.kept.get(why, 0) + 1
            continue
        render = stylizer.stylize(source.region((left, top, right, bottom), face_size), cancel=cancel)
        render = np.asarray(Image.fromarray(render).resize((side, side), Image.Resampling.LANCZOS))
        inner = (slice(cy0 - top, cy1 - top), slice(cx0 - left, cx1 - left))
        region = (slice(cy0, cy1), slice(cx0, cx1))
        mask = feather_mask(side)[inner]
        render = match_tone(render[inner], out[region], mask)
        base = out[region].astype(np.float32)
        blended = base + mask[..., None] * (render - base)
        blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        out[region] = np.where(mask[..., None] > 0, blended, out[region])
        report.enhanced += 1
    return out, report
