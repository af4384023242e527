"""Layer lists: each generator family as the flat list of layers the engine
runs (see layers.Layer). A family is its module (models/) plus a function here.

AnimeGANv2 is layers.flatten (from the Generator module). The others are read
from their state dicts, layer by layer as ../shared/weights/README.md gives them.
"""

from __future__ import annotations

import torch

from anime_cli.errors import WeightsError
from .layers import Layer, flatten


def _same(k: int, s: int) -> tuple[int, int, int, int]:
    """TensorFlow's reflection padding (left, right, top, bottom): the odd pixel on the top and left."""
    total = max(k - s, 0)
    before, after = -(-total // 2), total // 2
    return before, after, before, after


def _conv(sd, key, stride=1, **kw) -> Layer:
    w = sd[key + ".weight"]
    k = w.shape[-1]
    kw.setdefault("norm", None)
    kw.setdefault("lrelu", True)
    return Layer(name=key, weight=w, bias=sd.get(key + ".bias"), kernel=k, stride=stride, pad=_same(k, stride),
                 groups=1, gamma=None, beta=None, eps=1e-5, **kw)


def v3_tiny_layers(sd: dict[str, torch.Tensor]) -> list[Layer]:
    """AnimeGANv3 tiny (animeganv3_tiny_cute.pt): an encoder to 1/16 with two
    residual blocks, a decoder back up through the legacy x2 with a skip at
    every resolution, and one LADE (main.10, its statistics' conv main.11)."""
    enc_strides = [1, 2, 1, 2, 1, 2, 1, 2, 1]  # base.0 .. base.8; x0, x1, x2, x3 are base.0, 2, 4, 6
    layers = [_conv(sd, f"base.{i}", s) for i, s in enumerate(enc_strides)]
    for block in (9, 12):  # x4 = L(c(k+2)(L(c(k+1)(L(ck(x4))))) + x4)
        skip = block - 1 if block == 9 else 11
        layers += [_conv(sd, f"base.{block}"), _conv(sd, f"base.{block + 1}"),
                   _conv(sd, f"base.{block + 2}", residual=skip, act_after_skip=True)]
    for m, skip in ((0, 6), (3, 4), (6, 2), (9, 0)):  # y = L(m(up(y))) + x, then two more convs (none after m9)
        layers.append(_conv(sd, f"main.{m}", upsample="tf", residual=skip))
        if m < 9:
            layers += [_conv(sd, f"main.{m + 1}"), _conv(sd, f"main.{m + 2}")]
    layers.append(_conv(sd, "main.10", norm="lade", lade=sd["main.11.weight"]))
    layers.append(_conv(sd, "main.12", lrelu=False, tanh=True))
    return layers


V3_KEYS = ({f"{b}.{part}.weight" for b in [f"b{i}" for i in range(7)] + [f"d{i}" for i in range(6)] for part in ("conv", "lade")}
           | {f"ea.{n}.weight" for n in ("conv_in", "mk", "mv", "conv_out")} | {"ea.conv_out.bias", "out.weight"})


def v3_tiny_keys(layers: list[Layer]) -> set[str]:
    keys = {L.name + ".weight" for L in layers} | {L.name + ".bias" for L in layers if L.bias is not None}
    return keys | {"main.11.weight"}


# keys only AnimeGANv3 tiny's, AnimeGANv3's, AnimeGAN (v1)'s state dicts have
def layers_for(network) -> list[Layer]:
    """The engine's layers for a network: a list of layers as it is, an
    AnimeGANv2 Generator, or a module or state dict of another family the
    engine runs (recognised from its keys, as models.family_of does).
    ValueError for anything else."""
    from anime_cli.models.animeganv2 import Generator
    from anime_cli.models import FAMILIES, check, family_of

    if isinstance(network, list):
        return network
    if isinstance(network, Generator):
        return flatten(network)
    sd = network.state_dict() if isinstance(network, torch.nn.Module) else network
    try:
        family = family_of(sd)
    except WeightsError:
        family = None
    if family not in _LAYERS:
        raise ValueError(f"{type(network).__name__}: not a generator family the strip engine runs")
    try:  # every key and shape, as the family's module has them: a wrong one would fail every picture
        check(sd, family)
    except WeightsError as e:
        raise ValueError(str(e)) from None
    build, keys = _LAYERS[family]
    layers = build(sd)
    extra = set(sd) - keys(sd, layers)
    if extra:
        raise ValueError(f"not an {FAMILIES[family].title} generator: unexpected keys {sorted(extra)[:3]}")
    return layers


def _lade(sd, key, stride=1, **kw) -> Layer:
    """ConvLADE: pad, conv (no bias), LADE with the 1x1 conv `lade`, LeakyReLU."""
    layer = _conv(sd, key + ".conv", stride, norm="lade", lade=sd[key + ".lade.weight"], **kw)
    layer.name = key
    return layer


def v3_layers(sd: dict[str, torch.Tensor]) -> list[Layer]:
    """AnimeGANv3 (hayao-v3, shinkai): ConvLADE down to 1/8, external
    attention, ConvLADE back up through the legacy x2 with a skip at each
    resolution, a 7x7 output conv. The attention is four 1x1 layers; the
    softmax over all positions is mk's norm."""
    layers = [_lade(sd, f"b{i}", s) for i, s in enumerate([1, 2, 1, 2, 1, 2, 1])]  # x0, x1, x2, x3: b0, b2, b4, b6
    # the attention, in float32: conv_in; mk, whose output (the logits) the softmax normalises; mv; conv_out
    # with the skip from x3 and the activation. (mk and conv_in folded into one conv were ~2 dB further
    # from the eager network in float32: the softmax's exp() magnifies the logits' rounding.)
    layers += [_conv(sd, "ea.conv_in", lrelu=False, exact=True),
               _conv(sd, "ea.mk", lrelu=False, norm="softmax", exact=True),
               _conv(sd, "ea.mv", lrelu=False, exact=True),
               _conv(sd, "ea.conv_out", residual=6, act_after_skip=True, exact=True)]
    for d, skip in ((0, 4), (2, 2), (4, 0)):  # m = d(k+1)(dk(up(m)) + x)
        layers += [_lade(sd, f"d{d}", upsample="tf", residual=skip), _lade(sd, f"d{d + 1}")]
    layers.append(_conv(sd, "out", lrelu=False, tanh=True))
    return layers


# -- AnimeGAN (v1) -----------------------------------------------------------------------

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


def v1_layers(sd: dict[str, torch.Tensor]) -> list[Layer]:
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
    layers.append(_conv(sd, "out", lrelu=False, tanh=True))
    return layers


class _Reading(dict):
    """A state dict that notes the keys a layer list reads: what is left over is not the family's."""

    def __init__(self, sd):
        super().__init__(sd)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def v1_keys(sd) -> set[str]:
    reading = _Reading(sd)
    v1_layers(reading)
    return reading.read


# family (models.FAMILIES) -> (its layer list, the keys that list reads)
_LAYERS = {
    "animeganv3": (v3_layers, lambda sd, layers: V3_KEYS),
    "animeganv3-tiny": (v3_tiny_layers, lambda sd, layers: v3_tiny_keys(layers)),
    "animeganv1": (v1_layers, lambda sd, layers: v1_keys(sd)),
}
