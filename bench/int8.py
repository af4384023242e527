"""Would int8 convolutions pay here? One worker, one strip of every layer of
the AnimeGANv2 generator (hayao) as the engine plans it for a 1024x768
picture (the plan's strip rows, the padded input block, NHWC), in float32
(the engine's call, torch.mkldnn_convolution), bfloat16, and int8 through
torch.ops.onednn.qconv2d_pointwise (the op torch.compile's x86 inductor
quantizer lowers to; plain uint8/int8 tensors, no deprecated quantized-tensor
type): per-tensor uint8 activations, per-channel int8 weights prepacked once,
float32 out (the dequantize fused), the quantize of the strip's input
included. With --network: the whole network in the engine, every style that
has an int8 table, int8 against fp32 (and bf16). A measurement behind a
decision in the README, not a test.

    .venv/bin/python bench/int8.py [--emulate-avx2 [--isa AVX2_VNNI]]
    .venv/bin/python bench/int8.py --network [--style all] [--emulate-avx2] [--size 1024x768]

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
    ap.add_argument("--style", default="hayao", help="the style (--network: a style or all)")
    ap.add_argument("--network", action="store_true",
                    help="instead: the whole network in the engine, fidelity and speed, fp32 / int8 / bf16")
    ap.add_argument("--no-speed", action="store_true", help="--network: fidelity only")
    args = ap.parse_args()
    if args.emulate_avx2:
        os.environ.update(AVX2_ENV, ONEDNN_MAX_CPU_ISA=args.isa, DNNL_MAX_CPU_ISA=args.isa)
    import torch

    if args.network:
        return network(args)

    from anime_cli.engine import cpu
    from anime_cli.engine.int8 import QConv
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
        span = (-float(x.abs().max()), float(x.abs().max()))
        qconv = QConv(L.weight, L.bias, span, L.stride, L.groups)
        codes = torch.empty_like(x, dtype=torch.uint8)
        spoilt = torch.empty_like(x)  # QConv makes the codes in its input: a copy per call, as the engine's block

        def int8_call():
            spoilt.copy_(x)
            return qconv(spoilt, codes)

        fns = [lambda: conv(x, wt, bias, L.stride, L.groups), int8_call]
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


def network(args) -> None:
    """Every style with an int8 table (the weights manifest): the engine in
    fp32, int8 (and bf16 where it runs) on the four shared photos at --size
    (rocket.jpg held out of the calibration): PSNR against fp32, and the
    CPU time of one thread for the held-out photo, alternating, medians of 3."""
    import statistics
    from pathlib import Path

    import torch

    from anime_cli import models
    from anime_cli.engine import Engine, cpu
    from anime_cli.stylize import calibrate
    from anime_cli.weights import catalog

    shared = Path(os.environ.get("ANIME_CLI_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "photos"
    side = max(map(int, args.size.split("x")))
    files = sorted(p for p in shared.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    pictures = {p.name: calibrate.photo(p, side) for p in files}
    torch.set_num_threads(1)
    print(f"{cpu.cpu_model()}; ATen {torch.backends.cpu.get_cpu_capability()}"
          f"{', oneDNN capped at ' + args.isa if args.emulate_avx2 else ''}; longer side {side} px, one thread")
    for entry in catalog.styles():
        if not entry.int8 or (args.style != "all" and entry.name != args.style):
            continue
        layers = models.layers_for(catalog.load(entry.name))
        engines = {"fp32": Engine(layers, threads=1, precision="fp32"),
                   "int8": Engine(layers, threads=1, precision="int8", int8=entry.int8)}
        if cpu.bf16_works() and not args.emulate_avx2:
            engines["bf16"] = Engine(layers, threads=1, precision="bf16")
        ref = {n: engines["fp32"].stylize(rgb) for n, rgb in pictures.items()}
        for kind in [k for k in engines if k != "fp32"]:
            db = ", ".join(f"{n} {calibrate.psnr(engines[kind].stylize(rgb), ref[n]):.1f}"
                           + ("" if n in calibrate.CALIBRATION else " (held out)") for n, rgb in pictures.items())
            print(f"  {entry.name} {kind} vs fp32: {db} dB", flush=True)
        if args.no_speed:
            continue
        held = next(rgb for n, rgb in pictures.items() if n not in calibrate.CALIBRATION)
        times: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(3):
            for kind, engine in engines.items():
                t = time.thread_time()
                engine.stylize(held)
                times[kind].append(time.thread_time() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"  {entry.name} CPU time a picture: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items())
              + f"; int8 {med['fp32'] / med['int8']:.2f}x fp32" + (f", {med['bf16'] / med['int8']:.2f}x bf16" if "bf16" in med else ""),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
