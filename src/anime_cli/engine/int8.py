"""int8 convolutions: the engine's "int8" precision.

The route is oneDNN through torch.ops.onednn: qconv_prepack and
qconv2d_pointwise are the ops torch.compile's x86 inductor quantizer (PT2E)
lowers quantized convolutions to. They take plain uint8 / int8 tensors, so
nothing here uses the quantized-tensor type (torch.quantize_per_tensor,
torch.ao.nn.quantized) that torch 2.13 deprecates, and they ship inside torch:
no new dependency (OpenVINO with NNCF or onnxruntime's QDQ would each add a
runtime of its own beside torch, and neither runs a strip of rows exactly as
the engine needs). oneDNN picks the kernel for the CPU: VNNI (AVX512-VNNI,
AVX-VNNI) or AMX where there is one, plain AVX2 (vpmaddubsw) elsewhere.

Activations are uint8 with one scale and zero point per layer, fixed by
calibration on real photos (a style's table in the weights manifest), so a
strip's codes never depend on where the strip starts: the int8 products are
summed exactly, and strips stay exact as in float32. Weights are int8 with a
scale per output channel. The convolution writes float32 (the dequantize is
fused into it), which is what the norm's statistics are taken from; every
other step of the network stays in float32.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .cpu import NO_INT8_TABLE
from .layers import Layer


def quantized(i: int, L: Layer) -> bool:
    """Whether layer i runs in int8: a dense convolution of an activation.
    The first layer (the picture's 3 channels: little work, on the picture's
    own 8 bits), depthwise convolutions (oneDNN's int8 depthwise
    kernels ran at 0.3-0.6x float32 on every CPU measured), the output layer
    (3 channels, rounded to the picture's 8 bits next) and attention logits
    (exp() magnifies any rounding) stay in float32."""
    return L.groups == 1 and L.cin > 3 and not L.tanh and not L.exact


@lru_cache(maxsize=1)
def works() -> bool:
    """Whether this torch has oneDNN's int8 convolutions and they run here."""
    try:
        x = torch.zeros((1, 4, 1, 1)).contiguous(memory_format=torch.channels_last)
        conv = QConv(torch.ones((1, 4, 1, 1)), None, (0.0, 1.0))
        y = conv(x, torch.empty((1, 4, 1, 1), dtype=torch.uint8, memory_format=torch.channels_last))
        return y.shape == (1, 1, 1, 1)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def missing(table: dict | None) -> str | None:
    """Why a network with this calibration table cannot run in int8 here; None where it can."""
    if not table:
        return NO_INT8_TABLE
    if not works():
        return "this build of torch has no oneDNN int8 convolutions"
    return None


def params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric uint8 for values in [lo, hi] (widened to hold 0): scale, zero point."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255
    return scale, int(round(-lo / scale))


class QConv:
    """A layer's int8 convolution of one padded float32 block: symmetric int8
    weights per output channel (max |w| maps to 127), prepacked for oneDNN at
    the scale of the input's range `span`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, span: tuple[float, float], stride: int = 1,
                 groups: int = 1):
        self.scale, self.zp = params(*span)
        # The code is round(x / scale) + zp, saturated: made as x / scale + zp + 0.5 held to
        # [0.5, 255.5] and truncated by the uint8 copy, three passes over the block instead of five.
        self.half_up = torch.tensor(self.zp + 0.5)
        self.w_scales = (weight.float().abs().amax(dim=(1, 2, 3)) / 127).clamp_min(1e-12)
        qw = torch.round(weight.float() / self.w_scales[:, None, None, None]).clamp_(-127, 127).to(torch.int8)
        self.weight = torch.ops.onednn.qconv_prepack(qw, self.w_scales, self.scale, self.zp, [stride, stride], [0, 0],
                                                     [1, 1], groups, None)
        self.w_zps = torch.zeros(weight.shape[0], dtype=torch.long)  # symmetric weights
        self.bias = None if bias is None else bias.float()
        self.stride, self.groups = stride, groups

    def __call__(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """x: the padded input block (float32 NHWC, spoilt: the codes are made
        in it); codes: uint8 NHWC of x's shape. Returns float32 NHWC."""
        torch.add(self.half_up, x, alpha=1.0 / self.scale, out=x).clamp_(0.5, 255.5)
        codes.copy_(x)
        return torch.ops.onednn.qconv2d_pointwise(
            codes, self.scale, self.zp, self.weight, self.w_scales, self.w_zps, self.bias, [self.stride, self.stride],
            [0, 0], [1, 1], self.groups, 1.0, 0, torch.float32, "none", [], "")


def convs(layers: list[Layer], table: dict[str, list[float]]) -> dict[int, QConv]:
    """Each int8 layer's convolution from a style's calibration table (layer
    name -> the [low, high] its input took on the calibration photos)."""
    absent = [L.name for i, L in enumerate(layers) if quantized(i, L) and L.name not in table]
    if absent:
        raise ValueError(f"the int8 table has no range for layers {', '.join(absent[:4])}")
    return {i: QConv(L.weight, L.bias, tuple(table[L.name]), L.stride) for i, L in enumerate(layers) if quantized(i, L)}
