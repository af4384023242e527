"""MTCNN face detection (Zhang et al., 2016) in plain PyTorch.

Three small networks run as a cascade, each looking at fewer, better candidates:

    P-Net  slides a 12x12 window (stride 2) over an image pyramid: many candidates
    R-Net  re-scores each candidate from a 24x24 crop and refines its box
    O-Net  re-scores from a 48x48 crop, refines the box and places 5 landmarks

The weights are facenet-pytorch's (see weights/manifest.json); the module and
parameter names below match their state dicts key for key. Conventions those
weights expect (from the weights README): RGB scaled as (x - 127.5) / 128;
features flattened in Caffe order, permute(0, 3, 2, 1), before the first dense
layer; box outputs are offsets of the four edges in units of the box's
width/height; landmarks are 5 x's then 5 y's as fractions of the box.

Coordinates here are continuous pixel coordinates: pixel (i, j) covers
[j, j+1) x [i, i+1), so a box (x0, y0, x1, y1) is x1 - x0 pixels wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# the three networks


class PNet(nn.Module):
    """Fully convolutional: any input size, one output per 12x12 window at stride 2."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        """x (N, 3, H, W) scaled -> face probability (N, H', W'), box offsets (N, 4, H', W')."""
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        prob = F.softmax(self.conv4_1(x), dim=1)[:, 1]
        return prob, self.conv4_2(x)


class RNet(nn.Module):
    """24x24 crops -> face probability (N,), box offsets (N, 4)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        x = caffe_flatten(x)
        x = self.prelu4(self.dense4(x))
        prob = F.softmax(self.dense5_1(x), dim=1)[:, 1]
        return prob, self.dense5_2(x)


class ONet(nn.Module):
    """48x48 crops -> face probability (N,), box offsets (N, 4), landmarks (N, 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))
        x = caffe_flatten(x)
        x = self.prelu5(self.dense5(x))
        prob = F.softmax(self.dense6_1(x), dim=1)[:, 1]
        return prob, self.dense6_2(x), self.dense6_3(x)


def caffe_flatten(x):
    # The dense weights were converted from Caffe, which saw the feature maps
    # transposed (W before H) and channels last; flatten in that same order.
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


def scale_pixels(x):
    """uint8-valued float tensor -> the input range the weights were trained on."""
    return (x - 127.5) * (1.0 / 128.0)


# -----------------------------------------------------------------------------
# the cascade


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the image's pixel coords
    score: float
    landmarks: np.ndarray  # (5, 2) x, y: left eye, right eye, nose, left and right mouth corner

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


THRESHOLDS = (0.6, 0.7, 0.7)  # face probability needed to pass P-Net, R-Net, O-Net
PYRAMID_FACTOR = 0.709  # ~1/sqrt(2): each pyramid level halves the area
MIN_FACE = 20  # smallest face (px) searched for by default


class MTCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()

    @classmethod
    def load(cls) -> "MTCNN":
        """The three networks with their sha256-verified weights, strictly loaded."""
        from anime_cli.weights import catalog as weights  # here, so the networks above import without the weights machinery

        m = cls()
        m.pnet.load_state_dict(weights.load("mtcnn-pnet"), strict=True)
        m.rnet.load_state_dict(weights.load("mtcnn-rnet"), strict=True)
        m.onet.load_state_dict(weights.load("mtcnn-onet"), strict=True)
        return m.eval().requires_grad_(False)

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray, min_face: int = MIN_FACE) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB image, best first. The search starts at
        faces `min_face` px wide; somewhat smaller ones can still be found."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB array, got shape {rgb.shape}")
        img = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)

        boxes, scores = self.propose(img, max(12, min_face))
        if len(boxes):
            boxes, scores = self.refine(img, boxes)
        if not len(boxes):
            return []
        boxes, scores, landmarks = self.output(img, boxes)
        return [Face(tuple(float(v) for v in b), float(s), lm) for b, s, lm in zip(boxes, scores, landmarks)]

    def propose(self, img, min_face):
        """Stage 1: P-Net over the pyramid; square candidate boxes (n, 4) and scores."""
        h, w = img.shape[-2:]
        all_windows, all_scores, all_offsets = [], [], []
        # Scale so that a min_face face fills P-Net's 12 px window, then keep
        # shrinking until the image itself is smaller than the window.
        scale = 12.0 / min_face
        while min(h, w) * scale >= 12:
            hs, ws = math.ceil(h * scale), math.ceil(w * scale)
            level = F.interpolate(img, size=(hs, ws), mode="area")
            prob, reg = self.pnet(scale_pixels(level))
            ys, xs = torch.nonzero(prob[0] >= THRESHOLDS[0], as_tuple=True)
            if len(ys):
                # cell (y, x) saw the 12x12 window at (2x, 2y) of this level
                sx, sy = ws / w, hs / h
                x0, y0 = 2 * xs / sx, 2 * ys / sy
                windows = torch.stack([x0, y0, x0 + 12 / sx, y0 + 12 / sy], dim=1)
                score, offsets = prob[0, ys, xs], reg[0, :, ys, xs].T
                keep = nms(windows, score, 0.5)
                all_windows.append(windows[keep])
                all_scores.append(score[keep])
                all_offsets.append(offsets[keep])
            scale *= PYRAMID_FACTOR
        if not all_windows:
            return torch.zeros(0, 4), torch.zeros(0)
        windows, scores, offsets = torch.cat(all_windows), torch.cat(all_scores), torch.cat(all_offsets)
        # like the reference, suppress on the windows and only then apply the offsets
        keep = nms(windows, scores, 0.7)
        return square(apply_offsets(windows[keep], offsets[keep])), scores[keep]

    def refine(self, img, boxes):
        """Stage 2: R-Net re-scores 24x24 crops and refines the boxes."""
        prob, reg = self.rnet(crops(img, boxes, 24))
        ok = prob > THRESHOLDS[1]
        boxes, prob, reg = boxes[ok], prob[ok], reg[ok]
        keep = nms(boxes, prob, 0.7)
        return square(apply_offsets(boxes[keep], reg[keep])), prob[keep]

    def output(self, img, boxes):
        """Stage 3: O-Net re-scores 48x48 crops, refines the boxes, places landmarks."""
        prob, reg, marks = self.onet(crops(img, boxes, 48))
        ok = prob > THRESHOLDS[2]
        boxes, prob, reg, marks = boxes[ok], prob[ok], reg[ok], marks[ok]
        # landmarks are fractions of the box O-Net was shown, not of the refined one
        size = (boxes[:, 2:] - boxes[:, :2]).unsqueeze(1)
        landmarks = boxes[:, :2].unsqueeze(1) + torch.stack([marks[:, :5], marks[:, 5:]], dim=2) * size
        boxes = apply_offsets(boxes, reg)
        # "min" overlap: also drop a small box lying inside a bigger, better one
        keep = nms(boxes, prob, 0.7, over_smaller=True)
        return boxes[keep].numpy(), prob[keep].numpy(), landmarks[keep].numpy()


# -----------------------------------------------------------------------------
# box helpers


def apply_offsets(boxes, offsets):
    """Move each edge by its offset, in units of the box's width / height."""
    size = boxes[:, 2:] - boxes[:, :2]
    return boxes + offsets * torch.cat([size, size], dim=1)


def square(boxes):
    """The square with the same centre and the longer side of each box."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], dim=1)


def nms(boxes, scores, threshold, over_smaller=False):
    """Greedy non-maximum suppression: indices of the kept boxes, best first.
    A box is dropped when its overlap with a better kept box exceeds `threshold`;
    overlap is intersection over union, or over the smaller box's area."""
    b = boxes.numpy().astype(np.float64)
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    order = np.argsort(-scores.numpy(), kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0])
        ih = np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        if over_smaller:
            denom = np.minimum(areas[i], areas[rest])
        else:
            denom = areas[i] + areas[rest] - inter
        order = rest[inter <= threshold * np.maximum(denom, 1e-9)]
    return torch.as_tensor(np.array(keep, dtype=np.int64))


def crops(img, boxes, size):
    """size x size network inputs cut from `img` (1, 3, H, W) at each box.
    Parts of a box outside the image are black, as in the reference MTCNN."""
    h, w = img.shape[-2:]
    out = torch.empty(len(boxes), 3, size, size)
    for k, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if ix1 <= ix0 or iy1 <= iy0:  # wholly outside the image
            out[k] = 0
            continue
        patch = F.pad(img[..., iy0:iy1, ix0:ix1], (ix0 - x0, x1 - ix1, iy0 - y0, y1 - iy1))  # zeros: black
        out[k] = F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return scale_pixels(out)
