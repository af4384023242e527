"""Would int8 convolutions pay here? One worker, strip-sized convolutions of
the generator's shapes, in float32, bfloat16 and int8 (torch's quantized
Conv2d, fbgemm, VNNI), the int8 time including the quantize and dequantize a
strip would need. A measurement behind a decision in the README, not a test.

    .venv/bin/python bench/int8.py
"""

from __future__ import annotations

import time
import warnings

import torch
import torch.nn.functional as F

# (in channels, out channels, rows, columns, groups): a strip of a full-resolution
# 3x3, a half-resolution one, a depthwise 3x3 and a quarter-resolution 3x3
SHAPES = [(64, 128, 34, 640, 1), (128, 128, 34, 320, 1), (256, 256, 18, 320, 256), (256, 128, 18, 320, 1)]


def seconds(fn, n: int = 10) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main() -> None:
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "fbgemm"
    warnings.filterwarnings("ignore", message=".*quantize.*deprecated")
    print("one worker, ms per strip:  float32  bfloat16  int8 (with quantize/dequantize)")
    for cin, cout, h, w, groups in SHAPES:
        x = torch.randn(1, cin, h, w).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(cout, cin // groups, 3, 3)
        xb, wb = x.bfloat16(), weight.bfloat16().contiguous(memory_format=torch.channels_last)
        conv = torch.ao.nn.quantized.Conv2d(cin, cout, 3, groups=groups)
        qweight = torch.quantize_per_channel(weight, torch.full((cout,), 0.01), torch.zeros(cout, dtype=torch.long),
                                             0, torch.qint8)
        conv.set_weight_bias(qweight, None)
        conv.scale, conv.zero_point = 0.05, 64
        t32 = seconds(lambda: F.conv2d(x, weight, None, 1, 0, 1, groups))
        t16 = seconds(lambda: F.conv2d(xb, wb, None, 1, 0, 1, groups))
        t8 = seconds(lambda: conv(torch.quantize_per_tensor(x, 0.05, 64, torch.quint8)).dequantize())
        kind = "depthwise" if groups > 1 else "dense"
        print(f"  {cin:3d}->{cout:3d} {kind:9s} {h}x{w}: {t32 * 1e3:7.1f} {t16 * 1e3:9.1f} {t8 * 1e3:9.1f}")


if __name__ == "__main__":
    main()
