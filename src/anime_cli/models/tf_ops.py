"""The TensorFlow conventions the AnimeGANv3 and AnimeGAN (v1) weights were
trained with, in PyTorch. Both families come from TensorFlow 1; run with
PyTorch's own padding or resize they give a visibly different picture.

- `pad_same`: reflection padding before a k x k, stride-s convolution. When
  k - s is odd the extra pixel goes on the top and left (the AnimeGANv3 code
  pads explicitly that way; TF's "SAME" would put it bottom/right).
- `resize_legacy`: tf.compat.v1.image.resize_bilinear with align_corners=False
  and half_pixel_centers=False: output index i samples input position
  i * in / out, which matches neither of PyTorch's bilinear modes.
- `channel_stats`: the per-channel mean and biased variance over H x W, the
  only whole-picture operation these networks have besides the attention's
  softmax (the strip engine accumulates the same statistics strip by strip).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anime_cli.engine.layers import Layer


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def same_padding(k: int, s: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) reflection padding for a k x k stride-s conv."""
    total = max(k - s, 0)
    before, after = -(-total // 2), total // 2  # the odd pixel on top and left
    return before, after, before, after


def pad_same(x: torch.Tensor, k: int, s: int = 1) -> torch.Tensor:
    pad = same_padding(k, s)
    return F.pad(x, pad, mode="reflect") if any(pad) else x


def _axis(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices i0, i1 and weights f of the legacy resize along one axis."""
    pos = torch.arange(n_out, dtype=torch.float64, device=device) * (n_in / n_out)
    i0 = pos.floor().long()
    i1 = torch.clamp(i0 + 1, max=n_in - 1)
    return i0, i1, (pos - i0)


def resize_legacy(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of NCHW `x` to `size` = (H, W), TensorFlow-1 legacy style.
    For x2: even outputs copy input i/2, odd ones average (i-1)/2 and (i+1)/2
    (the last one repeats the edge). For x0.5: every second pixel from 0."""
    (h, w), (oh, ow) = x.shape[-2:], size
    r0, r1, fr = _axis(h, oh, x.device)
    c0, c1, fc = _axis(w, ow, x.device)
    fr = fr.to(x.dtype).view(-1, 1)
    fc = fc.to(x.dtype)
    top, bottom = x[..., r0, :], x[..., r1, :]  # (N, C, oh, w)
    rows = top + (bottom - top) * fr
    left, right = rows[..., c0], rows[..., c1]  # (N, C, oh, ow)
    return left + (right - left) * fc


def up2(x: torch.Tensor) -> torch.Tensor:
    return resize_legacy(x, (2 * x.shape[-2], 2 * x.shape[-1]))


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over H x W, shaped (N, C, 1, 1)."""
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    return mean, var


def lade(x: torch.Tensor, tx: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LADE: x normalised per channel, then given the per-channel mean and
    standard deviation of `tx` (a 1x1 conv of x). No affine parameters."""
    mx, vx = channel_stats(x)
    mt, vt = channel_stats(tx)
    return (x - mx) * torch.rsqrt(vx + eps) * torch.sqrt(vt + eps) + mt


def conv_layer(sd, key, stride=1, **kw) -> Layer:
    """The engine's layer for conv `key` of a state dict, with TensorFlow's padding
    (no norm, LeakyReLU unless lrelu=False)."""
    w = sd[key + ".weight"]
    k = w.shape[-1]
    kw.setdefault("norm", None)
    kw.setdefault("lrelu", True)
    return Layer(name=key, weight=w, bias=sd.get(key + ".bias"), kernel=k, stride=stride, pad=same_padding(k, stride),
                 groups=1, gamma=None, beta=None, eps=1e-5, **kw)
