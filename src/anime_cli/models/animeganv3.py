"""The AnimeGANv3 generator and its tiny variant, in plain PyTorch.

Layer lists, key names and conventions are those of ../shared/weights/README.md
(the styles hayao-v3 and shinkai use `Generator`, cute uses `TinyGenerator`).
Input and output are RGB in [-1, 1], NCHW. H and W must be multiples of
`multiple` (the encoder halves three or four times and the decoder's x2
resizes must land on the skip connections): `models.render` pads the picture
at the right and bottom, runs and crops.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from anime_cli.engine.layers import Layer

from .tf_ops import conv_layer, lade, lrelu, pad_same, up2


class ConvLADE(nn.Module):
    """pad -> conv (no bias) -> LADE against a 1x1 conv of itself -> LeakyReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1):
        super().__init__()
        self.k, self.s = k, s
        self.conv = nn.Conv2d(cin, cout, k, stride=s, bias=False)
        self.lade = nn.Conv2d(cout, cout, 1, bias=False)

    def forward(self, x):
        x = self.conv(pad_same(x, self.k, self.s))
        return lrelu(lade(x, self.lade(x)))


class ExternalAttention(nn.Module):
    """External attention over 128 memory units (`mk`, `mv`): a softmax over all
    positions for each unit, then each position's weights normalised over units."""

    def __init__(self, c: int = 128, units: int = 128):
        super().__init__()
        self.conv_in = nn.Conv2d(c, c, 1, bias=False)
        self.mk = nn.Conv2d(c, units, 1, bias=False)
        self.mv = nn.Conv2d(units, c, 1, bias=False)
        self.conv_out = nn.Conv2d(c, c, 1, bias=True)  # an inference BatchNorm folded in

    def forward(self, x):  # (N, 128, H/8, W/8)
        a = self.mk(self.conv_in(x))  # (N, units, H/8, W/8)
        a = torch.softmax(a.flatten(2), dim=2).view_as(a)  # over the positions, per unit
        a = a / (1e-9 + a.sum(dim=1, keepdim=True))  # per position, over the units
        y = self.conv_out(self.mv(a))
        return lrelu(y + x)


class Generator(nn.Module):
    family = "animeganv3"
    multiple = 8  # three stride-2 convs
    min_size = 16  # the 1/8 layers need 2 pixels to reflect

    def __init__(self):
        super().__init__()
        self.b0 = ConvLADE(3, 32, k=7)
        self.b1 = ConvLADE(32, 32, s=2)
        self.b2 = ConvLADE(32, 64)
        self.b3 = ConvLADE(64, 64, s=2)
        self.b4 = ConvLADE(64, 128)
        self.b5 = ConvLADE(128, 128, s=2)
        self.b6 = ConvLADE(128, 128)
        self.ea = ExternalAttention(128, 128)
        self.d0 = ConvLADE(128, 128)
        self.d1 = ConvLADE(128, 128)
        self.d2 = ConvLADE(128, 64)
        self.d3 = ConvLADE(64, 64)
        self.d4 = ConvLADE(64, 32)
        self.d5 = ConvLADE(32, 32)
        self.out = nn.Conv2d(32, 3, 7, bias=False)

    def forward(self, x):  # (N, 3, H, W)
        x0 = self.b0(x)  # (N, 32, H, W)
        x1 = self.b2(self.b1(x0))  # (N, 64, H/2, W/2)
        x2 = self.b4(self.b3(x1))  # (N, 128, H/4, W/4)
        x3 = self.b6(self.b5(x2))  # (N, 128, H/8, W/8)
        m = self.ea(x3)
        m = self.d1(self.d0(up2(m)) + x2)  # (N, 128, H/4, W/4)
        m = self.d3(self.d2(up2(m)) + x1)  # (N, 64, H/2, W/2)
        m = self.d5(self.d4(up2(m)) + x0)  # (N, 32, H, W)
        return torch.tanh(self.out(pad_same(m, 7)))  # (N, 3, H, W)


# (cin, cout, k, s) of each conv, in key order; the README's list.
_BASE = [(3, 16, 7, 1), (16, 16, 3, 2), (16, 16, 3, 1), (16, 32, 3, 2), (32, 32, 3, 1), (32, 64, 3, 2),
         (64, 64, 3, 1), (64, 128, 3, 2), (128, 128, 3, 1), (128, 64, 1, 1), (64, 64, 3, 1),
         (64, 128, 1, 1), (128, 64, 1, 1), (64, 64, 3, 1), (64, 128, 1, 1)]
_MAIN = [(128, 64, 3, 1), (64, 64, 3, 1), (64, 64, 3, 1), (64, 32, 3, 1), (32, 32, 3, 1), (32, 32, 3, 1),
         (32, 16, 3, 1), (16, 16, 3, 1), (16, 16, 3, 1), (16, 16, 3, 1), (16, 16, 3, 1), (16, 16, 1, 1),
         (16, 3, 7, 1)]
# Convs without a bias (no BatchNorm was folded into them).
_BASE_NO_BIAS, _MAIN_NO_BIAS = {11, 14}, {10, 11, 12}


def _convs(spec, no_bias) -> nn.ModuleList:
    return nn.ModuleList(nn.Conv2d(ci, co, k, stride=s, bias=i not in no_bias)
                         for i, (ci, co, k, s) in enumerate(spec))


class TinyGenerator(nn.Module):
    family = "animeganv3-tiny"
    multiple = 16  # four stride-2 convs
    min_size = 32  # the 1/16 layers need 2 pixels to reflect

    def __init__(self):
        super().__init__()
        self.base = _convs(_BASE, _BASE_NO_BIAS)
        self.main = _convs(_MAIN, _MAIN_NO_BIAS)

    def forward(self, x):  # (N, 3, H, W)
        b, m = self._b, self._m
        x0 = lrelu(b(0, x))  # (N, 16, H, W)
        x1 = lrelu(b(2, lrelu(b(1, x0))))  # (N, 16, H/2, W/2)
        x2 = lrelu(b(4, lrelu(b(3, x1))))  # (N, 32, H/4, W/4)
        x3 = lrelu(b(6, lrelu(b(5, x2))))  # (N, 64, H/8, W/8)
        x4 = lrelu(b(8, lrelu(b(7, x3))))  # (N, 128, H/16, W/16)
        x4 = lrelu(b(11, lrelu(b(10, lrelu(b(9, x4))))) + x4)  # two residual blocks
        x4 = lrelu(b(14, lrelu(b(13, lrelu(b(12, x4))))) + x4)
        y = lrelu(m(0, up2(x4))) + x3  # (N, 64, H/8, W/8)
        y = lrelu(m(2, lrelu(m(1, y))))
        y = lrelu(m(3, up2(y))) + x2  # (N, 32, H/4, W/4)
        y = lrelu(m(5, lrelu(m(4, y))))
        y = lrelu(m(6, up2(y))) + x1  # (N, 16, H/2, W/2)
        y = lrelu(m(8, lrelu(m(7, y))))
        y = lrelu(m(9, up2(y))) + x0  # (N, 16, H, W)
        y = m(10, y)
        y = lrelu(lade(y, m(11, y)))  # the network's only whole-picture operation
        return torch.tanh(m(12, y))  # (N, 3, H, W)

    def _b(self, i: int, x):
        return _padded_conv(self.base[i], x)

    def _m(self, i: int, x):
        return _padded_conv(self.main[i], x)


def _padded_conv(conv: nn.Conv2d, x):
    return conv(pad_same(x, conv.kernel_size[0], conv.stride[0]))


# -- the engine's layer lists -----------------------------------------------------------

def _lade(sd, key, stride=1, **kw) -> Layer:
    """ConvLADE: pad, conv (no bias), LADE with the 1x1 conv `lade`, LeakyReLU."""
    layer = conv_layer(sd, key + ".conv", stride, norm="lade", lade=sd[key + ".lade.weight"], **kw)
    layer.name = key
    return layer


def layers(sd: dict[str, torch.Tensor]) -> list[Layer]:
    """AnimeGANv3 (hayao-v3, shinkai): ConvLADE down to 1/8, external
    attention, ConvLADE back up through the legacy x2 with a skip at each
    resolution, a 7x7 output conv. The attention is four 1x1 layers; the
    softmax over all positions is mk's norm."""
    layers = [_lade(sd, f"b{i}", s) for i, s in enumerate([1, 2, 1, 2, 1, 2, 1])]  # x0, x1, x2, x3: b0, b2, b4, b6
    # the attention, in float32: conv_in; mk, whose output (the logits) the softmax normalises; mv; conv_out
    # with the skip from x3 and the activation. (mk and conv_in folded into one conv were ~2 dB further
    # from the eager network in float32: the softmax's exp() magnifies the logits' rounding.)
    layers += [conv_layer(sd, "ea.conv_in", lrelu=False, exact=True),
               conv_layer(sd, "ea.mk", lrelu=False, norm="softmax", exact=True),
               conv_layer(sd, "ea.mv", lrelu=False, exact=True),
               conv_layer(sd, "ea.conv_out", residual=6, act_after_skip=True, exact=True)]
    for d, skip in ((0, 4), (2, 2), (4, 0)):  # m = d(k+1)(dk(up(m)) + x)
        layers += [_lade(sd, f"d{d}", upsample="tf", residual=skip), _lade(sd, f"d{d + 1}")]
    layers.append(conv_layer(sd, "out", lrelu=False, tanh=True))
    return layers


def tiny_layers(sd: dict[str, torch.Tensor]) -> list[Layer]:
    """AnimeGANv3 tiny (animeganv3_tiny_cute.pt): an encoder to 1/16 with two
    residual blocks, a decoder back up through the legacy x2 with a skip at
    every resolution, and one LADE (main.10, its statistics' conv main.11)."""
    enc_strides = [1, 2, 1, 2, 1, 2, 1, 2, 1]  # base.0 .. base.8; x0, x1, x2, x3 are base.0, 2, 4, 6
    layers = [conv_layer(sd, f"base.{i}", s) for i, s in enumerate(enc_strides)]
    for block in (9, 12):  # x4 = L(c(k+2)(L(c(k+1)(L(ck(x4))))) + x4)
        skip = block - 1 if block == 9 else 11
        layers += [conv_layer(sd, f"base.{block}"), conv_layer(sd, f"base.{block + 1}"),
                   conv_layer(sd, f"base.{block + 2}", residual=skip, act_after_skip=True)]
    for m, skip in ((0, 6), (3, 4), (6, 2), (9, 0)):  # y = L(m(up(y))) + x, then two more convs (none after m9)
        layers.append(conv_layer(sd, f"main.{m}", upsample="tf", residual=skip))
        if m < 9:
            layers += [conv_layer(sd, f"main.{m + 1}"), conv_layer(sd, f"main.{m + 2}")]
    layers.append(conv_layer(sd, "main.10", norm="lade", lade=sd["main.11.weight"]))
    layers.append(conv_layer(sd, "main.12", lrelu=False, tanh=True))
    return layers
