"""The norms a layer may have, as the engine learns them strip by strip and
applies them: the statistics a strip adds (strip_statistics), what they make
once the layer is complete (norm_affine), and applying that to rows (norm_rows)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layers import conv
from .rows import flat_rows

LEAK = 0.2


def channel_moments(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of v (positions x channels, float32): the sum and the sum of
    squares, float64. The squares are summed about the strip's own mean, in
    float32, and shifted back in float64: summed raw, a channel whose mean is
    large against its spread lost its variance to float32 rounding (a LADE
    render was 6e-5 from the float64 network, 40 times the eager float32 run)."""
    n = v.shape[0]
    mean = v.mean(dim=0)
    spread = torch.linalg.vector_norm(v - mean, dim=0).double().square()
    mean = mean.double()
    return mean * n, spread + mean.square() * n


def strip_statistics(L, y32: torch.Tensor, lade: torch.Tensor | None):
    """What one strip of layer L (y32: its float32 rows) adds to the layer's
    statistics: (sum, sum of squares): numbers for GroupNorm(1), per-channel
    float64 tensors otherwise (LADE: the conv's channels, then its 1x1 conv's;
    softmax: the sums of exp(), and no squares)."""
    if L.norm == "softmax":  # sum of exp(a), as sum of exp(a - strip max) * exp(strip max)
        v = y32.permute(0, 2, 3, 1).reshape(-1, y32.shape[1])
        top = v.amax(dim=0)
        return (v - top).exp_().sum(dim=0).double() * top.double().exp(), 0.0
    if L.norm in ("instance", "lade"):  # per channel: over the rows and columns of NHWC memory
        parts = [y32] if lade is None else [y32, conv(y32, lade)]
        moments = [channel_moments(p.permute(0, 2, 3, 1).reshape(-1, p.shape[1])) for p in parts]
        return torch.cat([m[0] for m in moments]), torch.cat([m[1] for m in moments])
    # GroupNorm(1): per strip in float32 (torch sums blockwise); across strips in float64
    v = flat_rows(y32)
    return float(v.sum()), float(torch.dot(v, v))


def norm_affine(L, count: int, total, total_sq) -> tuple[torch.Tensor, torch.Tensor]:
    """The norm's (scale, shift) per channel, from the sum and the sum of
    squares (float64, summed strip by strip) of a layer's `count` values:
    numbers for GroupNorm(1), per-channel tensors for an instance norm."""
    if L.norm == "softmax":  # total: per channel, the sum of exp(a) over all positions
        return Softmax(-torch.log(total).float().view(1, -1, 1, 1))
    mean = total / count
    if L.norm == "lade":  # normalise with the output's statistics, scale and shift by those of its 1x1 conv
        c = mean.numel() // 2
        var = (total_sq / count - mean * mean).clamp_min(0.0)
        scale = torch.sqrt(var[c:] + L.eps) / torch.sqrt(var[:c] + L.eps)
        return scale.float().view(1, -1, 1, 1), (mean[c:] - mean[:c] * scale).float().view(1, -1, 1, 1)
    g, b = L.gamma.double(), L.beta.double()
    if L.norm == "instance":
        inv = torch.rsqrt((total_sq / count - mean * mean).clamp_min(0.0) + L.eps)
    else:
        inv = 1.0 / math.sqrt(max(total_sq / count - mean * mean, 0.0) + L.eps)
    return (g * inv).float().view(1, -1, 1, 1), (b - mean * inv * g).float().view(1, -1, 1, 1)


class Softmax:
    """External attention's normalisation, once the sums of exp() over all
    positions are known: exp(a - log sum) per channel, then each position
    divided by (1e-9 + its sum over the channels)."""

    def __init__(self, shift: torch.Tensor):
        self.shift = shift  # (1, C, 1, 1): minus the log of each channel's sum

    def apply(self, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        torch.add(t, self.shift.to(t.dtype), out=out).exp_()
        return out.div_(out.sum(dim=1, keepdim=True).add_(1e-9))


def norm_rows(t: torch.Tensor, affine, lrelu: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """The norm with its statistics folded into (scale, shift) (None: a layer
    without a norm), then the LeakyReLU where the layer has one: into `out`
    (default: in place)."""
    out = t if out is None else out
    if isinstance(affine, Softmax):
        return affine.apply(t, out)
    if affine is not None:
        scale, shift = affine
        torch.addcmul(shift.to(out.dtype), t, scale.to(out.dtype), out=out)
    elif out is not t:
        out.copy_(t)
    if lrelu:
        F.leaky_relu_(out, LEAK)
    return out
