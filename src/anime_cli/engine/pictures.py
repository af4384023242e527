"""Where a run's rows come from and go to: a float tensor, or an RGB uint8
picture padded on the fly to the network's size, and an RGB uint8 output
cropped back to the picture."""

from __future__ import annotations

import numpy as np
import torch

from .geometry import padded_size


class TensorSource:
    """Rows of a (1, 3, H, W) float tensor in [-1, 1]."""

    def __init__(self, x: torch.Tensor):
        self.x, self.h, self.w = x, x.shape[2], x.shape[3]
        self.pixels = self.h * self.w

    def read(self, a: int, b: int, out: torch.Tensor) -> None:
        out.copy_(self.x[:, :, a:b, :])


class PictureSource:
    """Rows of an h x w x 3 uint8 RGB array as [-1, 1] floats, padded (without
    copying the array) to the network's size, on the right and at the bottom:
    reflection, or replication where the picture is too small to reflect."""

    def __init__(self, rgb: np.ndarray, size: tuple[int, int] | None = None):
        self.rgb = rgb
        self.ih, self.iw = rgb.shape[:2]
        self.h, self.w = size or padded_size(self.ih, self.iw)
        self.pixels = self.ih * self.iw  # the picture's, not the padded size: progress counts these
        ph, pw = self.h - self.ih, self.w - self.iw
        self.reflect = ph < self.ih and pw < self.iw
        self.cols = None if pw == 0 else self._index(np.arange(self.w), self.iw)

    def _index(self, idx, n):
        if self.reflect:
            return np.where(idx < n, idx, 2 * (n - 1) - idx)
        return np.minimum(idx, n - 1)

    def read(self, a, b, out):
        if b <= self.ih:
            block = self.rgb[a:b]
        else:
            block = self.rgb[self._index(np.arange(a, b), self.ih)]
        if self.cols is not None:
            block = block[:, self.cols]
        block = np.array(block, copy=True)  # a strip; torch wants a writable array
        t = torch.from_numpy(block).permute(2, 0, 1).unsqueeze(0)
        out.copy_(t)  # uint8 -> float, as x.float() does
        out.div_(127.5).sub_(1.0)


class PictureSink:
    """Writes output rows, cropped to the picture, into an h x w x 3 uint8 array."""

    def __init__(self, out: np.ndarray):
        self.out = out
        self.h, self.w = out.shape[:2]

    def __call__(self, r0, r1, y):
        r1 = min(r1, self.h)
        if r0 >= r1:
            return
        y = y[0, :, : r1 - r0, : self.w].add(1.0).mul_(127.5).round_().clamp_(0, 255)
        self.out[r0:r1] = y.to(torch.uint8).permute(1, 2, 0).numpy()
