"""The AnimeGAN (v1) generator, in plain PyTorch.

Layer lists, key names and conventions are those of ../shared/weights/README.md
(the style paprika). Every conv is bias-free and followed by instance norm
(per-channel mean and variance over H x W, then a per-channel affine):

    b1   3 -> 64 -> 128, down to 1/2 (two 3x3 convs, then Down)
    b2   128 -> 256, down to 1/4 (a 3x3 conv, a separable conv, then Down)
    m    256 at 1/4: a 3x3 conv, 8 inverted residual blocks, a 3x3 conv
    u2   up x2, 256 -> 128 at 1/2
    u1   up x2, 128 -> 64 at full resolution
    out  1x1 conv to RGB and tanh

Down adds a stride-2 separable conv to a stride-1 one run on the picture
resized to half (every second pixel, TensorFlow's legacy bilinear x0.5).
Input and output are RGB in [-1, 1], NCHW; H and W multiples of 4.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tf_ops import lrelu, resize_legacy, up2


class ConvIN(nn.Module):
    """pad (k3: 1 all round) -> conv -> instance norm (eps 1e-5) -> LeakyReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__()
        self.pad = k // 2
        self.conv = nn.Conv2d(cin, cout, k, bias=False)
        self.norm = nn.InstanceNorm2d(cout, eps=1e-5, affine=True)

    def forward(self, x):
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return lrelu(self.norm(self.conv(x)))


class SepConvIN(nn.Module):
    """pad -> depthwise 3x3 stride s -> pointwise 1x1 -> instance norm (eps 1e-6)
    -> LeakyReLU. Stride 2 pads only right and bottom, unlike every other conv."""

    def __init__(self, cin: int, cout: int, s: int = 1):
        super().__init__()
        self.padding = (1, 1, 1, 1) if s == 1 else (0, 1, 0, 1)  # (left, right, top, bottom)
        self.dw = nn.Conv2d(cin, cin, 3, stride=s, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.norm = nn.InstanceNorm2d(cout, eps=1e-6, affine=True)

    def forward(self, x):
        x = self.dw(F.pad(x, self.padding, mode="reflect"))
        return lrelu(self.norm(self.pw(x)))


class Down(nn.Module):
    """Half resolution two ways, added: a stride-2 separable conv, and a stride-1
    one over every second pixel of the input."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.sep_s2 = SepConvIN(cin, cout, 2)
        self.sep_ds = SepConvIN(cin, cout, 1)

    def forward(self, x):  # (N, cin, H, W) -> (N, cout, H/2, W/2)
        half = resize_legacy(x, (x.shape[-2] // 2, x.shape[-1] // 2))
        return self.sep_s2(x) + self.sep_ds(half)


class InvRes(nn.Module):
    """MobileNetV2 block, 256 -> 512 -> 256, residual, no activation after projecting."""

    def __init__(self, c: int = 256, hidden: int = 512):
        super().__init__()
        self.expand = ConvIN(c, hidden, k=1)
        self.dw = nn.Conv2d(hidden, hidden, 3, groups=hidden, bias=False)
        self.dw_norm = nn.InstanceNorm2d(hidden, eps=1e-5, affine=True)
        self.project = nn.Conv2d(hidden, c, 1, bias=False)
        self.project_norm = nn.InstanceNorm2d(c, eps=1e-5, affine=True)

    def forward(self, x):
        y = self.expand(x)
        y = lrelu(self.dw_norm(self.dw(F.pad(y, (1, 1, 1, 1), mode="reflect"))))
        return x + self.project_norm(self.project(y))


class Generator(nn.Module):
    family = "animeganv1"
    multiple = 4  # two halvings
    min_size = 8  # the 1/4 layers need 2 pixels to reflect

    def __init__(self):
        super().__init__()
        self.b1 = nn.Sequential(ConvIN(3, 64), ConvIN(64, 64), Down(64, 128))
        self.b2 = nn.Sequential(ConvIN(128, 128), SepConvIN(128, 128), Down(128, 256))
        self.m = nn.Sequential(ConvIN(256, 256), *(InvRes() for _ in range(8)), ConvIN(256, 256))
        self.u2 = nn.Sequential(SepConvIN(256, 128), SepConvIN(128, 128), ConvIN(128, 128))
        self.u1 = nn.Sequential(SepConvIN(128, 128), ConvIN(128, 64), ConvIN(64, 64))
        self.out = nn.Conv2d(64, 3, 1, bias=False)

    def forward(self, x):  # (N, 3, H, W)
        x = self.b1(x)  # (N, 128, H/2, W/2)
        x = self.b2(x)  # (N, 256, H/4, W/4)
        x = self.m(x)  # (N, 256, H/4, W/4)
        x = self.u2(up2(x))  # (N, 128, H/2, W/2)
        x = self.u1(up2(x))  # (N, 64, H, W)
        return torch.tanh(self.out(x))  # (N, 3, H, W)
