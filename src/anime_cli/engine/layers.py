"""The network as the engine sees it: a flat list of layers, each one
convolution and what follows it up to the next convolution."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


_ONEDNN = torch.backends.mkldnn.is_available()


def conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
         groups: int = 1) -> torch.Tensor:
    """F.conv2d of one unpadded block, always through oneDNN where torch has it.
    For a 1x1 float32 convolution of one picture on one thread, torch otherwise
    takes its reference path, which copies the input into a fresh buffer every
    strip: 1.7x slower, and those buffers fragmented the heap (a paprika render
    in float32 held up to 1.9x its planned memory, under 1.0x through oneDNN)."""
    if _ONEDNN:
        return torch.mkldnn_convolution(x, weight, bias, [0, 0], [stride, stride], [1, 1], groups)
    return F.conv2d(x, weight, bias, stride=stride, groups=groups)


@dataclass(eq=False)
class Layer:
    """One convolution and what follows it, up to the next convolution."""

    name: str
    weight: torch.Tensor  # float32 OIHW, as in the model
    bias: torch.Tensor | None
    kernel: int
    stride: int
    pad: tuple[int, int, int, int]  # reflection padding: left, right, top, bottom
    groups: int
    gamma: torch.Tensor | None  # the norm's per-channel affine; None: no norm (the output layer)
    beta: torch.Tensor | None
    eps: float
    lrelu: bool
    upsample: str | None = None  # the input is the x2 of the previous output: "torch" bilinear, or "tf" legacy
    residual: int | None = None  # layer whose output is added after the norm
    tanh: bool = False
    # The norm after the conv: "group" (GroupNorm(1, C): statistics over C, H and W), "instance" (per
    # channel over H and W), "lade" (per channel, with the statistics of a 1x1 conv `lade` of the output
    # as the affine), "softmax" (external attention: a softmax over all positions per channel, then
    # each position divided by its sum over channels), or None (bias and activation only: no
    # statistics, no pass of its own).
    norm: str | None = "group"
    lade: torch.Tensor | None = None  # LADE's 1x1 conv, OIHW
    act_after_skip: bool = False  # add the skip between the norm and the activation
    exact: bool = False  # float32 whatever the precision (attention logits: exp() magnifies rounding)
    # The layer whose output this one reads (None: the previous one). A branch (AnimeGAN v1's Down: two
    # convs of one input) reads an earlier layer; readers always come after what they read.
    source: int | None = None
    half: bool = False  # the input is every second row and column of the source (TF's legacy x0.5)
    eight_bit: bool = True  # may be stored in 8 bits (geometry.Sizes.compactable)

    @property
    def cin(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def cout(self) -> int:
        return self.weight.shape[0]


def sources(layers: list[Layer]) -> list[int]:
    """The index of the layer each layer reads (-1: the image)."""
    return [j - 1 if L.source is None else L.source for j, L in enumerate(layers)]


def layer_dtype(precision: str, i: int, L: Layer):
    # The output layer (3 channels, 0.02 % of the work) stays in float32 so that
    # the picture is not rounded to bfloat16 before it is rounded to 8 bits.
    # (The first layer in float32 bought nothing measurable: +-1 dB, 6 % slower.)
    # int8 runs on float32: its convolutions take float32 blocks and give float32 (int8.py).
    if precision in ("fp32", "int8") or L.tanh or L.exact:
        return torch.float32
    return torch.bfloat16
