"""The generator families anime-cli runs, and how to tell them apart.

A family is a plain PyTorch module (one file each, with the engine's layer
list for its state dicts: `layers`) plus the two facts about
picture sizes the runner needs: `multiple` (H and W must be multiples of it:
the network halves that many times over) and `min_size` (the smallest side
whose deepest layer still has 2 pixels to reflect). A state dict's family is
recognised from its keys, so `--weights FILE` needs no family option.

    family            module                         multiple  styles
    animeganv2        animeganv2.Generator           4         hayao
    animeganv3        animeganv3.Generator           8         hayao-v3, shinkai
    animeganv3-tiny   animeganv3.TinyGenerator       16        cute
    animeganv1        animeganv1.Generator           4         paprika
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from anime_cli.errors import WeightsError
from .animeganv2 import Generator as _V2Generator
from .animeganv2 import misfit
from . import animeganv1, animeganv2, animeganv3


@dataclass(frozen=True)
class Family:
    name: str
    title: str  # for messages
    build: Callable[[], nn.Module]
    multiple: int
    min_size: int
    marker: str  # a key only this family's state dicts have
    layers: Callable[[dict], list]  # the engine's layer list (engine.layers.Layer) for a state dict


FAMILIES = {
    f.name: f
    for f in (
        Family("animeganv2", "AnimeGANv2", _V2Generator, 4, 8, "block_a.0.1.weight", animeganv2.layers),
        Family("animeganv3", "AnimeGANv3", animeganv3.Generator, 8, 16, "ea.mk.weight", animeganv3.layers),
        Family("animeganv3-tiny", "AnimeGANv3 tiny", animeganv3.TinyGenerator, 16, 32, "main.12.weight",
               animeganv3.tiny_layers),
        Family("animeganv1", "AnimeGAN (v1)", animeganv1.Generator, 4, 8, "b1.2.sep_s2.dw.weight", animeganv1.layers),
    )
}


def family_of(state_dict: dict) -> str:
    """The family whose marker key the state dict holds; WeightsError if none."""
    for f in FAMILIES.values():
        if f.marker in state_dict:
            return f.name
    sample = ", ".join(f"'{k}'" for k in list(state_dict)[:2]) or "none"
    raise WeightsError(
        "not an AnimeGANv2 generator, nor AnimeGANv3, AnimeGANv3 tiny or AnimeGAN (v1) "
        f"(keys such as {sample})"
    )


def load(state_dict: dict, family: str | None = None) -> nn.Module:
    """The family's module in eval mode with `state_dict` loaded strictly (every
    key, every shape). family: checked against the keys when given."""
    found = family_of(state_dict)
    if family is not None and family != found:
        raise WeightsError(f"the weights are an {FAMILIES[found].title} generator, not {FAMILIES[family].title}")
    f = FAMILIES[found]
    module = f.build()
    check(state_dict, found, module)
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:  # what check() does not know of
        detail = " ".join(str(e).split())[:160]
        raise WeightsError(f"not a complete {f.title} generator ({detail})") from None
    return module.eval().requires_grad_(False)


def check(state_dict: dict, family: str, module: nn.Module | None = None) -> None:
    """WeightsError, one line, unless `state_dict` has exactly the keys of
    `family`'s module with its shapes (model.misfit): at load, so that bad
    --weights never reach the first picture. The module is built on the meta
    device when not given: shapes only, nothing allocated."""
    f = FAMILIES[family]
    if module is None:
        with torch.device("meta"):
            module = f.build()
    mismatch = misfit(state_dict, module)
    if mismatch:
        what = "a complete" if mismatch.startswith("missing") else "an"
        raise WeightsError(f"not {what} {f.title} generator ({mismatch})")


def layers_for(network) -> list:
    """The engine's layer list for a module or a state dict of any family: the
    one place a network's family is decided (from its keys), every key and
    shape checked first. WeightsError, one line, for anything else."""
    if isinstance(network, _V2Generator):
        return animeganv2.flatten(network)
    sd = network.state_dict() if isinstance(network, nn.Module) else network
    family = family_of(sd)
    check(sd, family)
    return FAMILIES[family].layers(sd)


def family_for(module: nn.Module) -> Family:
    for f in FAMILIES.values():
        if type(module) is f.build:
            return f
    raise TypeError(f"{type(module).__name__} is not a known generator family")


def padded_size(h: int, w: int, family: str) -> tuple[int, int]:
    """The size `family` runs a picture of h x w at: multiples of its `multiple`, at least `min_size`."""
    f = FAMILIES[family]
    up = lambda n: max(f.min_size, -(-n // f.multiple) * f.multiple)  # noqa: E731
    return up(h), up(w)


def pad_right_bottom(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """NCHW `x` padded to h x w at the right and bottom only: padding on the top
    or left would shift the stride-2 sampling grid and change the picture.
    Reflection, or replication where the picture is too small to reflect (as
    the strip engine's ArraySource does)."""
    ih, iw = x.shape[-2:]
    ph, pw = h - ih, w - iw
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < ih and pw < iw else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def render(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The whole picture in one eager pass: NCHW in [-1, 1] -> the same size,
    padded right/bottom to the family's size for the pass and cropped back."""
    ih, iw = x.shape[-2:]
    h, w = padded_size(ih, iw, family_for(module).name)
    with torch.inference_mode():
        y = module(pad_right_bottom(x, h, w))
    return y[..., :ih, :iw]


def render_rgb(module: nn.Module, rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxWx3 uint8 RGB through `render` in float32 (the
    reference every faster path is measured against)."""
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 127.5 - 1
    y = render(module, x)[0].permute(1, 2, 0)
    return ((y + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
