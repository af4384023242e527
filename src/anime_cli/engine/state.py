"""What a pass's workers see of the picture they compute: the one surface
bands.Band and stored.Stored read and write (engine.Run is it). Kept apart so
that the workers never import the engine that drives them."""

from __future__ import annotations

from typing import Protocol

import torch

from .layers import Layer
from .geometry import Geometry
from .rows import BlockPool


class RunState(Protocol):
    geo: Geometry  # rows, strips and storage dtypes of this picture
    layers: list[Layer]
    weights: list[tuple[torch.Tensor, torch.Tensor | None]]  # each layer's, in its dtype
    lade: dict[int, torch.Tensor]  # LADE's 1x1 convs, float32
    int8: dict  # layer index -> int8.QConv: the layers that run in int8
    observe: dict  # layer index -> observe(index, padded input block): calibration
    stored: dict  # layer index -> stored.Stored: the layers kept whole (-1: the picture)
    affine: dict[int, tuple[torch.Tensor, torch.Tensor] | None]  # each norm's learnt scale and shift
    pool: BlockPool  # the memory stored layers and windows live in

    def check(self) -> None:
        """Raise Cancelled once the caller asked to stop."""

    def advance(self, rows: int) -> None:
        """Rows of the pass's target are done (progress)."""
