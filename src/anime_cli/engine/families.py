"""Layer lists: each generator family as the flat list of layers the engine
runs (see layers.Layer). A family is its module (models/) plus a function here.

AnimeGANv2 is layers.flatten (from the Generator module). The others are read
from their state dicts, layer by layer as ../shared/weights/README.md gives them.
"""

from __future__ import annotations

import torch

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


def v3_tiny_keys(layers: list[Layer]) -> set[str]:
    keys = {L.name + ".weight" for L in layers} | {L.name + ".bias" for L in layers if L.bias is not None}
    return keys | {"main.11.weight"}


def layers_for(network) -> list[Layer]:
    """The engine's layers for a network: a list of layers as it is, an
    AnimeGANv2 Generator, or a module or state dict of another family the
    engine runs (recognised from its keys). ValueError for anything else."""
    from ..model import Generator

    if isinstance(network, list):
        return network
    if isinstance(network, Generator):
        return flatten(network)
    sd = network.state_dict() if isinstance(network, torch.nn.Module) else network
    if "main.12.weight" in sd:
        layers = v3_tiny_layers(sd)
        extra = set(sd) - v3_tiny_keys(layers)
        if extra:
            raise ValueError(f"not an AnimeGANv3 tiny generator: unexpected keys {sorted(extra)[:3]}")
        return layers
    raise ValueError(f"{type(network).__name__}: not a generator family the strip engine runs")
