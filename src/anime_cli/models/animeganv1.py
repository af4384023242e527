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

from anime_cli.engine.layers import Layer

from .tf_ops import conv_layer, lrelu, resize_legacy, up2


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


# -- the engine's layer list ------------------------------------------------------------

P1, P0 = (1, 1, 1, 1), (0, 0, 0, 0)


def _in(sd, key, norm_key, pad, depthwise=False, eps=1e-5, **kw) -> Layer:
    """A bias-free conv, instance norm (the affine `norm_key`), and LeakyReLU unless lrelu=False."""
    w = sd[key + ".weight"]
    kw.setdefault("lrelu", True)
    return Layer(name=key, weight=w, bias=None, kernel=w.shape[-1], stride=1, pad=pad,
                 groups=w.shape[0] if depthwise else 1, gamma=sd[norm_key + ".weight"],
                 beta=sd[norm_key + ".bias"], eps=eps, norm="instance", **kw)


def _sep(sd, key, stride=1, upsample=None, source=None, half=False, residual=None) -> list[Layer]:
    """SepConvIN: the depthwise 3x3 (no norm: no pass of its own), then the
    pointwise 1x1 with instance norm (eps 1e-6) and LeakyReLU. Stride 2 pads
    only the right and bottom (unlike TensorFlow's other convs here)."""
    w = sd[key + ".dw.weight"]
    dw = Layer(name=key + ".dw", weight=w, bias=None, kernel=3, stride=stride,
               pad=P1 if stride == 1 else (0, 1, 0, 1), groups=w.shape[0], gamma=None, beta=None, eps=1e-5,
               lrelu=False, norm=None, upsample=upsample, source=source, half=half)
    return [dw, _in(sd, key + ".pw", key + ".norm", P0, eps=1e-6, residual=residual)]


def layers(sd: dict[str, torch.Tensor]) -> list[Layer]:
    """AnimeGAN v1 (paprika): instance norm after every conv but the
    depthwise halves of the separable ones; two Down blocks (a stride-2
    separable conv, plus a stride-1 one over every second pixel of the same
    input: a branch, and a skip adding the two after their activations);
    eight inverted residual blocks at 1/4; back up through the legacy x2."""
    layers: list[Layer] = []

    def down(key):  # sep_s2(x) + sep_ds(x's every second pixel), x being the last layer so far
        x = len(layers) - 1
        layers.extend(_sep(sd, key + ".sep_s2", stride=2))
        layers.extend(_sep(sd, key + ".sep_ds", source=x, half=True, residual=len(layers) - 1))

    layers += [_in(sd, "b1.0.conv", "b1.0.norm", P1), _in(sd, "b1.1.conv", "b1.1.norm", P1)]
    down("b1.2")
    layers += [_in(sd, "b2.0.conv", "b2.0.norm", P1), *_sep(sd, "b2.1")]
    down("b2.2")
    layers.append(_in(sd, "m.0.conv", "m.0.norm", P1))
    for b in range(1, 9):  # InvRes: expand 1x1, depthwise 3x3, project 1x1 plus the block's input, no activation
        x = len(layers) - 1
        layers += [_in(sd, f"m.{b}.expand.conv", f"m.{b}.expand.norm", P0),
                   _in(sd, f"m.{b}.dw", f"m.{b}.dw_norm", P1, depthwise=True),
                   _in(sd, f"m.{b}.project", f"m.{b}.project_norm", P0, lrelu=False, residual=x)]
    layers.append(_in(sd, "m.9.conv", "m.9.norm", P1))
    layers += [*_sep(sd, "u2.0", upsample="tf"), *_sep(sd, "u2.1"), _in(sd, "u2.2.conv", "u2.2.norm", P1)]
    # u1.2 is not stored in 8 bits: the 1x1 output conv hands its rounding straight to the picture
    # (in 8 bits it alone took coffee.png from 56 to 48 dB; a 12 MP render at 1 GiB then costs 1.43
    # passes instead of 1.37)
    layers += [*_sep(sd, "u1.0", upsample="tf"), _in(sd, "u1.1.conv", "u1.1.norm", P1),
               _in(sd, "u1.2.conv", "u1.2.norm", P1, eight_bit=False)]
    layers.append(conv_layer(sd, "out", lrelu=False, tanh=True))
    return layers
