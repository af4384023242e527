"""int8 convolutions for the engine's layers (a prototype, not yet a
precision the engine offers).

The route is oneDNN through torch.ops.onednn: qconv_prepack and
qconv2d_pointwise are the ops torch.compile's x86 inductor quantizer (PT2E)
lowers quantized convolutions to. They take plain uint8 / int8 tensors, so
nothing here uses the quantized-tensor type (torch.quantize_per_tensor,
torch.ao.nn.quantized) that torch 2.13 deprecates, and they ship inside torch:
no new dependency. oneDNN picks the kernel for the CPU: AMX or VNNI where
there is one, plain AVX2 (vpmaddubsw) elsewhere.

Activations are uint8 with one scale and zero point per layer, fixed by
calibration on real photos, so a strip's output never depends on where the
strip starts: the int8 products are summed exactly, and strips stay exact as
in float32. Weights are int8 with a scale per output channel. The
convolution writes float32 (the dequantize is fused into it), which is what
the norm's statistics are taken from.

`Network` runs the AnimeGANv2 layers whole, layer by layer: the reference
the calibration and the fidelity and speed measurements use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layers import Layer, conv

CL = torch.channels_last


@dataclass(eq=False)
class Packed:
    """One layer's int8 weights, prepacked for oneDNN at its input scale."""

    weight: torch.Tensor  # oneDNN's opaque prepacked tensor
    w_scales: torch.Tensor  # float32, per output channel
    w_zps: torch.Tensor  # zeros (symmetric weights)
    bias: torch.Tensor | None  # float32
    stride: int
    groups: int


def quantize(x: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    """float32 NHWC -> uint8 NHWC, round(x / scale) + zp, saturated. In place
    on one temporary: torch's out-of-place chain made four."""
    y = torch.mul(x, 1.0 / scale)
    y.add_(zp).round_().clamp_(0, 255)
    return y.to(torch.uint8)


def weight_scales(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel scales: max |w| maps to 127."""
    return (weight.float().abs().amax(dim=(1, 2, 3)) / 127).clamp_min(1e-12)


def pack(weight: torch.Tensor, bias: torch.Tensor | None, x_scale: float, x_zp: int, stride: int,
         groups: int) -> Packed:
    scales = weight_scales(weight)
    qw = torch.round(weight.float() / scales[:, None, None, None]).clamp_(-127, 127).to(torch.int8)
    packed = torch.ops.onednn.qconv_prepack(qw, scales, x_scale, x_zp, [stride, stride], [0, 0], [1, 1], groups, None)
    zps = torch.zeros(weight.shape[0], dtype=torch.long)
    return Packed(packed, scales, zps, None if bias is None else bias.float(), stride, groups)


def qconv(qx: torch.Tensor, x_scale: float, x_zp: int, p: Packed) -> torch.Tensor:
    """An unpadded int8 convolution of one block (uint8 NHWC), float32 NHWC out."""
    return torch.ops.onednn.qconv2d_pointwise(
        qx, x_scale, x_zp, p.weight, p.w_scales, p.w_zps, p.bias, [p.stride, p.stride], [0, 0], [1, 1], p.groups,
        1.0, 0, torch.float32, "none", [], "")


@dataclass
class Range:
    """What calibration saw at a layer's convolution input."""

    lo: float
    hi: float

    def params(self) -> tuple[float, int]:
        """Asymmetric uint8: [lo, hi] (widened to hold 0) onto 0..255."""
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        scale = max(hi - lo, 1e-8) / 255
        return scale, int(round(-lo / scale))


def _check(layers: list[Layer]) -> None:
    for L in layers:
        if L.norm not in ("group", None) or L.lade is not None or L.half or L.source is not None \
                or L.act_after_skip or L.upsample not in (None, "torch"):
            raise ValueError(f"int8 prototype: layer {L.name} is not an AnimeGANv2 layer")


class Network:
    """The layers whole, one after another: float32, or int8 for the layers
    in `ranges` (the rest float32)."""

    def __init__(self, layers: list[Layer]):
        _check(layers)
        self.layers = layers
        self.weights = [L.weight.float().contiguous(memory_format=CL) for L in layers]
        self.biases = [None if L.bias is None else L.bias.float() for L in layers]
        self.int8: dict[int, tuple[float, int, Packed]] = {}

    def quantize_layers(self, ranges: dict[int, Range]) -> None:
        self.int8 = {}
        for i, r in ranges.items():
            L = self.layers[i]
            scale, zp = r.params()
            self.int8[i] = (scale, zp, pack(L.weight, L.bias, scale, zp, L.stride, L.groups))

    def forward(self, x: torch.Tensor, observe=None) -> torch.Tensor:
        """x: (1, 3, H, W) in [-1, 1], H and W multiples of 4. observe(i, t):
        called with each layer's padded convolution input (calibration)."""
        outs: list[torch.Tensor] = []
        y = x.contiguous(memory_format=CL)
        for i, L in enumerate(self.layers):
            if L.upsample:
                y = F.interpolate(y, size=(2 * y.shape[2], 2 * y.shape[3]), mode="bilinear", align_corners=False)
            if any(L.pad):
                y = F.pad(y, L.pad, mode="reflect")
            y = y.contiguous(memory_format=CL)
            if observe is not None:
                observe(i, y)
            if i in self.int8:
                scale, zp, p = self.int8[i]
                y = qconv(quantize(y, scale, zp), scale, zp, p)
            else:
                y = conv(y, self.weights[i], self.biases[i], L.stride, L.groups)
            if L.norm == "group":
                y = F.group_norm(y, 1, L.gamma, L.beta, L.eps)
            if L.residual is not None:
                y = y + outs[L.residual]
            if L.lrelu:
                y = F.leaky_relu(y, 0.2)
            if L.tanh:
                y = torch.tanh(y)
            outs.append(y)
        return y

    def calibrate(self, pictures, percentile: float | None = None) -> dict[int, Range]:
        """Each layer's input range over float32 runs of `pictures` ((1, 3, H,
        W) tensors): min and max, or the `percentile` and its mirror (outliers
        clipped, the rest resolved finer)."""
        seen: dict[int, Range] = {}
        saved = self.int8
        self.int8 = {}

        def observe(i, t):
            if percentile is None:
                lo, hi = float(t.min()), float(t.max())
            else:
                flat = t.reshape(-1)
                sample = flat[torch.randint(flat.numel(), (min(flat.numel(), 1 << 20),),
                                            generator=torch.Generator().manual_seed(i))]
                lo, hi = (float(v) for v in torch.quantile(sample, torch.tensor([1 - percentile, percentile])))
            r = seen.get(i)
            seen[i] = Range(lo, hi) if r is None else Range(min(r.lo, lo), max(r.hi, hi))

        try:
            with torch.no_grad():
                for x in pictures:
                    self.forward(x, observe)
        finally:
            self.int8 = saved
        return seen
