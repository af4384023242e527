"""The AnimeGANv2 generator, in plain PyTorch.

Module names follow the widely used PyTorch port of AnimeGANv2 so that its
state dicts (face_paint_512_v2.pt, paprika.pt, celeba_distill.pt and our
animeganv2_hayao.pt) load key for key:

    block_a  3 -> 64, full and half resolution (7x7 conv, a stride-2 conv)
    block_b  64 -> 128, down to quarter resolution
    block_c  128 -> 256 -> 128 at quarter resolution (four inverted residuals)
    block_d  128, half resolution (after the first bilinear x2)
    block_e  128 -> 32, full resolution (after the second bilinear x2)
    out_layer  1x1 conv to RGB and tanh

Every convolution is preceded by reflection padding and followed by
GroupNorm(1, C) (a layer norm over C, H, W with a per-channel affine) and
LeakyReLU(0.2), except the last. Input and output are RGB in [-1, 1], NCHW.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from anime_cli.engine.layers import Layer


class ConvNormLReLU(nn.Sequential):
    """pad -> conv -> GroupNorm(1) -> LeakyReLU. Indices 1 and 2 are the port's keys."""

    def __init__(self, in_ch, out_ch, kernel_size=3, stride=1, padding=1, groups=1, bias=False):
        super().__init__(
            nn.ReflectionPad2d(padding),
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, groups=groups, bias=bias),
            nn.GroupNorm(1, out_ch),
            nn.LeakyReLU(0.2, inplace=True),
        )


def down(in_ch, out_ch):
    # TensorFlow's "SAME" padding for a stride-2 3x3 conv on an even size pads
    # only right and bottom; (left, right, top, bottom) = (0, 1, 0, 1).
    return ConvNormLReLU(in_ch, out_ch, stride=2, padding=(0, 1, 0, 1))


class InvertedResBlock(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, residual when shapes match."""

    def __init__(self, in_ch, out_ch, expansion=2):
        super().__init__()
        hidden = in_ch * expansion
        self.residual = in_ch == out_ch
        self.layers = nn.Sequential(
            ConvNormLReLU(in_ch, hidden, kernel_size=1, padding=0),
            ConvNormLReLU(hidden, hidden, groups=hidden, bias=True),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.GroupNorm(1, out_ch),
        )

    def forward(self, x):
        out = self.layers(x)
        return x + out if self.residual else out


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, 32, kernel_size=7, padding=3),
            down(32, 64),
            ConvNormLReLU(64, 64),
        )
        self.block_b = nn.Sequential(
            down(64, 128),
            ConvNormLReLU(128, 128),
        )
        self.block_c = nn.Sequential(
            ConvNormLReLU(128, 128),
            InvertedResBlock(128, 256),
            InvertedResBlock(256, 256),
            InvertedResBlock(256, 256),
            InvertedResBlock(256, 256),
            ConvNormLReLU(256, 128),
        )
        self.block_d = nn.Sequential(
            ConvNormLReLU(128, 128),
            ConvNormLReLU(128, 128),
        )
        self.block_e = nn.Sequential(
            ConvNormLReLU(128, 64),
            ConvNormLReLU(64, 64),
            ConvNormLReLU(64, 32, kernel_size=7, padding=3),
        )
        self.out_layer = nn.Sequential(
            nn.Conv2d(32, 3, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x):
        """x: (N, 3, H, W) in [-1, 1]. H and W should be multiples of 4 so that
        each bilinear x2 lands exactly on the size of the layer it mirrors."""
        full = x.shape[-2:]
        x = self.block_a(x)
        half = x.shape[-2:]
        x = self.block_b(x)
        x = self.block_c(x)
        x = F.interpolate(x, size=half, mode="bilinear", align_corners=False)
        x = self.block_d(x)
        x = F.interpolate(x, size=full, mode="bilinear", align_corners=False)
        x = self.block_e(x)
        return self.out_layer(x)


def load_generator(state_dict) -> Generator:
    """A Generator in eval mode with `state_dict` loaded strictly (every key, every
    shape). RuntimeError, one line, for a state dict that is not one."""
    g = Generator()
    mismatch = misfit(state_dict, g)
    if mismatch:
        raise RuntimeError(mismatch)
    g.load_state_dict(state_dict, strict=True)
    g.eval().requires_grad_(False)
    return g


def misfit(state_dict, module: nn.Module) -> str | None:
    """What keeps `state_dict` from being `module`'s, in a few words, or None:
    a key missing or unexpected, a tensor of another shape (the module's own are
    the reference, so every family is checked the same way), or one that is no
    dense real tensor (a complex one would be cast with a warning, a sparse or a
    meta one fail in the first picture)."""
    want = module.state_dict()
    missing = [k for k in want if k not in state_dict]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"missing {missing[0]}{more}"
    extra = [k for k in state_dict if k not in want]
    if extra:
        return f"unexpected key {str(extra[0])[:60]}"
    for k, ref in want.items():
        t = state_dict[k]
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type != "cpu" \
                or not t.is_floating_point():
            kind = f"{t.dtype}, {t.layout}, {t.device.type}" if isinstance(t, torch.Tensor) else type(t).__name__
            return f"{k} is no dense real tensor ({kind})"
        if t.shape != ref.shape:
            return f"{k} has shape {list(t.shape)} where the network's is {list(ref.shape)}"
        if not bool(torch.isfinite(t).all()):  # every picture would come out black or noise
            return f"{k} holds NaN or infinite values"
    return None


def flatten(g: Generator) -> list[Layer]:
    """The generator's layers in execution order (index -1 is the image)."""
    layers: list[Layer] = []

    def add(name, conv, gn, pad=(0, 0, 0, 0), lrelu=True, **kw):
        layers.append(Layer(
            name=name, weight=conv.weight.detach(),
            bias=None if conv.bias is None else conv.bias.detach(),
            kernel=conv.kernel_size[0], stride=conv.stride[0], pad=tuple(pad), groups=conv.groups,
            gamma=None if gn is None else gn.weight.detach(),
            beta=None if gn is None else gn.bias.detach(),
            eps=1e-5 if gn is None else gn.eps, lrelu=lrelu, **kw,
        ))

    def cnl(name, seq, **kw):  # ConvNormLReLU: pad, conv, norm, LeakyReLU
        pad, conv, gn, _ = seq
        add(name, conv, gn, pad.padding if isinstance(pad, nn.ReflectionPad2d) else (0, 0, 0, 0), **kw)

    def blocks(prefix, seq, upsample_first=False):
        for i, m in enumerate(seq):
            name = f"{prefix}.{i}"
            if isinstance(m, InvertedResBlock):
                block_input = len(layers) - 1
                expand, dw, proj, gn = m.layers
                cnl(name + ".expand", expand)
                cnl(name + ".dw", dw)
                add(name + ".project", proj, gn, lrelu=False, residual=block_input if m.residual else None)
            else:
                cnl(name, m, upsample="torch" if upsample_first and i == 0 else None)

    blocks("a", g.block_a)
    blocks("b", g.block_b)
    blocks("c", g.block_c)
    blocks("d", g.block_d, upsample_first=True)
    blocks("e", g.block_e, upsample_first=True)
    conv, _ = g.out_layer
    add("out", conv, None, lrelu=False, tanh=True, norm=None)
    return layers


def layers(state_dict) -> list[Layer]:
    """The engine's layer list for an AnimeGANv2 state dict."""
    return flatten(load_generator(state_dict))
