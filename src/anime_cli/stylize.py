"""The style session: one loaded generator that turns RGB pictures into anime.

A `Stylizer` loads its weights once; `stylize` takes and gives HxWx3 uint8
arrays of the same size, so the rest of the pipeline never sees tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import weights
from .model import Generator, load_generator


class Stylizer:
    def __init__(self, generator: Generator, name: str):
        self.name = name
        self.generator = generator.to(memory_format=torch.channels_last)

    @classmethod
    def from_style(cls, name: str = "hayao", threads: int | None = None) -> "Stylizer":
        return cls(load_generator(weights.load(name)), name)

    @classmethod
    def from_weights(cls, path: str | Path, threads: int | None = None) -> "Stylizer":
        sd = weights.load_state_dict(Path(path))
        try:
            return cls(load_generator(sd), Path(path).stem)
        except RuntimeError as e:  # wrong keys or shapes
            raise weights.WeightsError(
                f"{path}: not an AnimeGANv2 generator in the PyTorch-port layout ({str(e).splitlines()[0]})"
            ) from None

    @torch.inference_mode()
    def stylize(self, rgb: np.ndarray, budget_bytes: int | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB -> HxWx3 uint8 RGB, same size."""
        h, w = rgb.shape[:2]
        x = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).unsqueeze(0)
        x = x.float().div_(127.5).sub_(1.0)
        x = pad_to_multiple(x, 4)
        y = self.generator(x.contiguous(memory_format=torch.channels_last))
        y = y[0, :, :h, :w].add_(1.0).mul_(127.5).round_().clamp_(0, 255)
        return y.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pad right and bottom so H and W are multiples of m (the network halves
    twice). Reflection keeps the border continuous; the padding is cropped off."""
    h, w = x.shape[-2:]
    ph, pw = -h % m, -w % m
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
