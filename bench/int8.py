"""Would int8 convolutions pay here? One worker, one strip of every layer of
the AnimeGANv2 generator (hayao) as the engine plans it for a 1024x768
picture (the plan's strip rows, the padded input block, NHWC), in float32
(the engine's call, torch.mkldnn_convolution), bfloat16, and int8 through
torch.ops.onednn.qconv2d_pointwise (the op torch.compile's x86 inductor
quantizer lowers to; plain uint8/int8 tensors, no deprecated quantized-tensor
type): per-tensor uint8 activations, per-channel int8 weights prepacked once,
float32 out (the dequantize fused), the quantize of the strip's input
included. A measurement behind a decision in the README, not a test.

    .venv/bin/python bench/int8.py [--emulate-avx2 [--isa AVX2_VNNI]]
    .venv/bin/python bench/int8.py --network [--emulate-avx2] [--percentile P] [--keep first,depthwise,out]

--emulate-avx2 caps oneDNN at AVX2 (no VNNI, as on AMD Zen 2/3) and ATen at
avx2; the kernel oneDNN picks for each column is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def seconds(*fns, n: int = 7) -> list[float]:
    """The best of n calls of each, taken in turn, in this thread's CPU time:
    on one thread oneDNN computes in the calling thread, and a shared
    machine's load moves CPU time far less than wall time."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()
    for _ in range(n):
        for k, fn in enumerate(fns):
            t = time.thread_time()
            fn()
            best[k] = min(best[k], time.thread_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulate-avx2", action="store_true")
    ap.add_argument("--isa", default="AVX2", help="the cap --emulate-avx2 puts on oneDNN: AVX2 or AVX2_VNNI")
    ap.add_argument("--size", default="1024x768", help="picture WxH whose plan gives the strips")
    ap.add_argument("--style", default="hayao")
    ap.add_argument("--network", action="store_true",
                    help="instead: calibrate on real photos, then fidelity and speed of the whole network")
    ap.add_argument("--percentile", type=float, default=None, help="calibrate to this percentile (default min/max)")
    ap.add_argument("--no-speed", action="store_true", help="--network: fidelity only")
    ap.add_argument("--keep", default="first,depthwise,out",
                    help="layers kept in float32: first, depthwise, out, or layer names (comma-separated)")
    args = ap.parse_args()
    if args.emulate_avx2:
        os.environ.update(AVX2_ENV, ONEDNN_MAX_CPU_ISA=args.isa, DNNL_MAX_CPU_ISA=args.isa)
    import torch

    if args.network:
        return network(args)

    from anime_cli.engine import cpu
    from anime_cli.engine.int8 import pack, qconv, quantize
    from anime_cli.models import layers_for
    from anime_cli.weights import catalog as weights
    from anime_cli.engine.layers import conv
    from anime_cli.engine.geometry import Sizes

    torch.set_num_threads(1)
    w, h = map(int, args.size.split("x"))
    layers = layers_for(weights.load_module(args.style))
    sizes = Sizes(layers, h, w, "fp32")
    bf16 = "avx512_bf16" in cpu.cpu_flags() and not args.emulate_avx2
    print(f"one worker, one strip of each layer at {w}x{h} ({args.style}), ms of CPU time, best of 7; int8 includes the quantize;"
          f" {'oneDNN capped at ' + args.isa if args.emulate_avx2 else 'native'}, ATen {torch.backends.cpu.get_cpu_capability()}")
    print(f"  {'layer':12s} {'kind':9s} {'cin':>4s} {'cout':>4s} {'k':>2s} {'input block':>12s}"
          f" {'fp32':>7s} {'bf16':>7s} {'int8':>7s} {'fp32/int8':>9s}")
    tot = {"fp32": 0.0, "int8": 0.0, "best": 0.0}
    for i, L in enumerate(layers):
        s, si = sizes.shapes[i], sizes.in_shapes[i]
        rows = sizes.strip[i]
        in_rows = (rows - 1) * L.stride + L.kernel
        cols = si.w + L.pad[0] + L.pad[1]
        x = torch.randn(1, L.cin, in_rows, cols).contiguous(memory_format=torch.channels_last)
        wt = L.weight.float().contiguous(memory_format=torch.channels_last)
        bias = None if L.bias is None else L.bias.float()
        scale, zp = float(x.abs().max()) / 127, 128
        packed = pack(L.weight, L.bias, scale, zp, L.stride, L.groups)
        fns = [lambda: conv(x, wt, bias, L.stride, L.groups), lambda: qconv(quantize(x, scale, zp), scale, zp, packed)]
        if bf16:
            xb, wb = x.bfloat16(), wt.bfloat16()
            bb = None if bias is None else bias.bfloat16()
            fns.append(lambda: conv(xb, wb, bb, L.stride, L.groups))
        t32, t8, *t16 = seconds(*fns)
        t16 = t16[0] if t16 else float("nan")
        # the strips of the whole layer, for the whole-network shares
        strips = s.h / rows
        tot["fp32"] += t32 * strips
        tot["int8"] += t8 * strips
        tot["best"] += min(t8, t32) * strips
        kind = "depthwise" if L.groups > 1 else "dense"
        print(f"  {L.name:12s} {kind:9s} {L.cin:4d} {L.cout:4d} {L.kernel:2d} {in_rows:4d}x{cols:<7d}"
              f" {t32 * 1e3:7.2f} {t16 * 1e3:7.2f} {t8 * 1e3:7.2f} {t32 / t8:8.2f}x", flush=True)
    print(f"\n  convolutions of the whole picture on one worker (strip time x strips): fp32 {tot['fp32']:.2f} s,"
          f" int8 everywhere {tot['int8']:.2f} s ({tot['fp32'] / tot['int8']:.2f}x),"
          f" int8 where faster {tot['best']:.2f} s ({tot['fp32'] / tot['best']:.2f}x)")


def photo(path, w: int, h: int):
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.LANCZOS))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_u8(y):
    import torch

    return ((y + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def psnr(a, b) -> float:
    import math

    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def network(args) -> None:
    """Per-layer calibration on three of the shared photos (512x384), then the
    whole network at --size on all four (the fourth, rocket, held out): PSNR of
    int8 against float32 (the uint8 pictures), and the time of each, layer by
    layer and untiled, on one thread, alternating, medians of 3."""
    import statistics
    from pathlib import Path

    import torch

    from anime_cli.weights import catalog as weights
    from anime_cli.models import layers_for
    from anime_cli.engine import int8
    from anime_cli.engine.int8 import Network

    # the convolutions' share of each run (the quantize counted with int8)
    spent = {"conv": 0.0}

    def clocked(fn):
        def call(*a, **k):
            t = time.thread_time()
            out = fn(*a, **k)
            spent["conv"] += time.thread_time() - t
            return out
        return call

    int8.conv, int8.qconv, int8.quantize = clocked(int8.conv), clocked(int8.qconv), clocked(int8.quantize)

    shared = Path(os.environ.get("ANIME_CLI_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "photos"
    calib, held = ["coffee.png", "astronaut.png", "chelsea.png"], ["rocket.jpg"]
    w, h = map(int, args.size.split("x"))
    layers = layers_for(weights.load_module(args.style))
    net = Network(layers)
    keep = set(args.keep.split(",")) if args.keep else set()
    chosen = [i for i, L in enumerate(layers)
              if not ("first" in keep and i == 0) and not ("out" in keep and L.tanh)
              and not ("depthwise" in keep and L.groups > 1) and L.name not in keep]
    ranges = net.calibrate([photo(shared / n, 512, 384) for n in calib], args.percentile)
    print(f"{args.style}: int8 for {len(chosen)} of {len(layers)} layers (float32: {args.keep or 'none'});"
          f" calibration {'min/max' if args.percentile is None else f'percentile {args.percentile}'} on"
          f" {', '.join(calib)} at 512x384; ATen {torch.backends.cpu.get_cpu_capability()}"
          f"{', oneDNN capped at ' + args.isa if args.emulate_avx2 else ''}")
    with torch.no_grad():
        for n in calib + held:
            x = photo(shared / n, w, h)
            net.quantize_layers({})
            ref = to_u8(net.forward(x))
            net.quantize_layers({i: ranges[i] for i in chosen})
            q = to_u8(net.forward(x))
            print(f"  {n:14s} {w}x{h}: PSNR {psnr(ref, q):5.1f} dB{'  (held out)' if n in held else ''}", flush=True)
        if args.no_speed:
            return
        torch.set_num_threads(1)
        x = photo(shared / held[0], w, h)
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        convs: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(3):
            for kind in times:
                net.quantize_layers({} if kind == "fp32" else {i: ranges[i] for i in chosen})
                spent["conv"] = 0.0
                t = time.thread_time()
                net.forward(x)
                times[kind].append(time.thread_time() - t)
                convs[kind].append(spent["conv"])
        t32, t8 = statistics.median(times["fp32"]), statistics.median(times["int8"])
        c32, c8 = statistics.median(convs["fp32"]), statistics.median(convs["int8"])
        print(f"  whole network, one thread, CPU time, {w}x{h}: fp32 {t32:.2f} s, int8 {t8:.2f} s: {t32 / t8:.2f}x"
              f" (medians of 3, alternating)")
        print(f"  of which convolutions: fp32 {c32:.2f} s, int8 {c8:.2f} s (quantize included): {c32 / c8:.2f}x;"
              f" the rest (pads, norms, activations, upsampling in this reference) {t32 - c32:.2f} s"
              f" and {t8 - c8:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
