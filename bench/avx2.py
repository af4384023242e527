"""Is anime-cli 2.5x the naive way on an AVX2-only CPU? The whole process on 3
~1 MP JPEGs at native size (`anime-cli convert ... --max-side 0
--no-face-enhance` at --precision auto, which is int8 there, or the one
given, against bench/naive.py), alternating,
medians; and, in the same run, the machine's fp32 convolution limit (a
256-channel 3x3 convolution, channels-last, all cores) and the network's
share of it (0.80 MFLOP a pixel, from a --sequential run's logged stylize
time).

Mode "avx2" caps oneDNN at AVX2 (ONEDNN_MAX_CPU_ISA, and DNNL_MAX_CPU_ISA
for older builds) and ATen's own kernels (ATEN_CPU_CAPABILITY) in every
child, and the convolution kernel oneDNN really picks (ONEDNN_VERBOSE) is
printed, so that an AVX-512 machine measures as an AVX2 one would (same
cores, same clock; no AVX2_VNNI, like AMD Zen 2/3), and switches bfloat16
off (ANIME_CLI_NO_BF16: an AVX2 CPU has none). Both modes alternate in
one run, so that the machine's load falls on both. A benchmark, not a test;
the load moves the times, the ratio less, and each process's CPU time least.

    .venv/bin/python bench/avx2.py [--modes native,avx2] [--runs 3] [--precision auto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anime_cli.engine import cpu

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
            cpu.NO_BF16: "1"}
PHOTOS3 = [("coffee.png", (1248, 832)), ("rocket.jpg", (1248, 832)), ("chelsea.png", (1248, 832))]
FLOP_PER_PIXEL = 0.80e6

# One convolution under ONEDNN_VERBOSE, in a child: the kernel oneDNN picks for
# fp32 and for int8 (the engine's QConv) under the environment this bench runs with.
PROBE = r"""
import torch
from anime_cli.engine.int8 import QConv
x = torch.randn(1, 256, 18, 66).contiguous(memory_format=torch.channels_last)
w = torch.randn(256, 256, 3, 3)
torch.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1)
QConv(w, None, (-4.0, 4.0))(x.clone(), torch.empty_like(x, dtype=torch.uint8))
print("aten", torch.backends.cpu.get_cpu_capability())
"""


def kernels(env: dict) -> str:
    env = dict(env, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    convs = [ln for ln in out.splitlines() if ",exec,cpu,convolution," in ln]
    fp32 = sorted({ln.split(",")[6] for ln in convs if "src:f32" in ln})
    int8 = sorted({ln.split(",")[6] for ln in convs if "src:u8" in ln})
    aten = [ln.split()[1] for ln in out.splitlines() if ln.startswith("aten ")]
    return (f"oneDNN convolution kernels fp32 {', '.join(fp32)}, int8 {', '.join(int8)};"
            f" ATen CPU capability {', '.join(aten)}")


LIMIT = r"""
import time, torch
x = torch.randn(1, 256, 66, 258).contiguous(memory_format=torch.channels_last)
w = torch.randn(256, 256, 3, 3).contiguous(memory_format=torch.channels_last)
flop = 2.0 * 64 * 256 * 256 * 256 * 9
for _ in range(3):
    torch.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1)
best, t_end = 0.0, time.perf_counter() + 3
while time.perf_counter() < t_end:
    t = time.perf_counter()
    torch.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1)
    best = max(best, flop / (time.perf_counter() - t))
print(best / 1e9)
torch.set_num_threads(1)
best = 0.0
for _ in range(5):  # one thread's CPU time: what the load moves least
    t = time.thread_time()
    torch.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1)
    best = max(best, flop / (time.thread_time() - t))
print(best / 1e9)
"""


def conv_limit(env: dict) -> tuple[float, float]:
    """fp32 GFLOP/s of a 256-channel 3x3 convolution, channels-last (the
    engine's own call, torch.mkldnn_convolution): on all the cores, the best
    of 3 s of wall time; and on one thread, the best of 5 in CPU time."""
    out = subprocess.run([sys.executable, "-c", LIMIT], env=env, capture_output=True, text=True, check=True).stdout
    wall, core = (float(v) for v in out.split()[-2:])
    return wall, core


class Timed:
    def __init__(self, wall: float, cpu: float, net: float):
        self.wall, self.cpu, self.net = wall, cpu, net


def timed(cmd: list[str], env: dict, log: Path | None = None) -> Timed:
    """Wall and CPU seconds of a whole process (the CPU time moves less with
    the machine's load), and the network's logged time when `log` is given."""
    if log is not None and log.exists():
        log.unlink()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err.decode(errors='replace')[-2000:]}")
    net = 0.0
    if log is not None:
        net = sum(json.loads(ln)["timings"].get("stylize", 0.0) for ln in log.read_text().splitlines())
    return Timed(wall, ru.ru_utime + ru.ru_stime, net)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="native,avx2", help="native, avx2 (emulated) or both, alternating")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--precision", default="auto", help="anime-cli's --precision (default auto: int8 on AVX2)")
    ap.add_argument("--limit-only", action="store_true", help="only the convolution limit of each mode")
    args = ap.parse_args()
    modes = args.modes.split(",")
    envs = {m: dict(os.environ, **(AVX2_ENV if m == "avx2" else {})) for m in modes}
    for k in AVX2_ENV:  # native means native even when the caller's environment caps the ISA
        for m in modes:
            if m == "native":
                envs[m].pop(k, None)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import cli, make_jpeg  # bench/bench.py

    print(f"CPU: {cpu.cpu_model()}, {len(os.sched_getaffinity(0))} cores; load average {os.getloadavg()[0]:.1f} at start")
    for m in modes:
        print(f"  {m:6s}: {kernels(envs[m])}")
    if args.limit_only:
        for m in modes:
            wall, core = conv_limit(envs[m])
            print(f"  {m:6s}: fp32 256-channel 3x3 convolution {wall:.1f} GFLOP/s on all cores (wall),"
                  f" {core:.1f} GFLOP/s on one thread (CPU time)")
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        inputs = [make_jpeg(n, size, tmp / (Path(n).stem + ".jpg")) for n, size in PHOTOS3]
        mp = sum(w * h for _, (w, h) in PHOTOS3) / 1e6
        naive = [sys.executable, str(Path(__file__).with_name("naive.py")), *map(str, inputs), "-o", str(tmp / "n")]
        ours = [*cli(), "convert", *map(str, inputs), "-o", str(tmp / "c"), "--max-side", "0", "--no-face-enhance",
                "--precision", args.precision, "--overwrite", "--quiet"]
        log = tmp / "seq.jsonl"
        seq = [*ours, "--sequential", "--log-file", str(log)]
        print(f"  {len(inputs)} JPEGs, {mp:.2f} MP, native size; anime-cli --precision {args.precision};"
              f" {args.runs} runs each, alternating (modes too)")
        res = {m: {"limit": [], "naive": [], "anime-cli": [], "seq": []} for m in modes}
        for i in range(args.runs):
            for m in modes:
                res[m]["limit"].append(conv_limit(envs[m])[0])
                line = [f"  run {i + 1} {m:6s} limit {res[m]['limit'][-1]:5.1f} GFLOP/s"]
                for name, cmd in (("naive", naive), ("anime-cli", ours), ("seq", seq)):
                    r = timed(cmd, envs[m], log if name == "seq" else None)
                    res[m][name].append(r)
                    line.append(f"{name} {r.wall:5.1f} s ({r.cpu:5.1f} s CPU"
                                + (f", network {r.net:5.1f} s)" if name == "seq" else ")"))
                print(", ".join(line), flush=True)
        print()
        for m in modes:
            r = res[m]
            med = statistics.median
            t_naive, t_ours = med(x.wall for x in r["naive"]), med(x.wall for x in r["anime-cli"])
            c_naive, c_ours = med(x.cpu for x in r["naive"]), med(x.cpu for x in r["anime-cli"])
            t_net, limit = med(x.net for x in r["seq"]), med(r["limit"])
            gflops = mp * 1e6 * FLOP_PER_PIXEL / t_net / 1e9
            print(f"  {m}: naive {t_naive:.1f} s, anime-cli {t_ours:.1f} s: {t_naive / t_ours:.2f}x"
                  f" (CPU time {c_naive:.1f} s vs {c_ours:.1f} s: {c_naive / c_ours:.2f}x; medians)")
            print(f"  {m}: network (--sequential, logged stylize) {t_net:.1f} s, {gflops:.0f} GFLOP/s:"
                  f" {gflops / limit:.0%} of the fp32 convolution limit ({limit:.0f} GFLOP/s, median)")
            # the network's share of a --sequential run, applied to the pipelined one (whose files overlap)
            share = min(1.0, t_net / med(x.wall for x in r["seq"]))
            rest = t_ours * (1 - share)
            need = t_naive / 2.5 - rest
            print(f"  {m}: 2.5x is the whole run in {t_naive / 2.5:.1f} s; the network is {share:.0%} of a --sequential"
                  f" run, so it must be {t_ours * share / need:.2f}x faster" if need > 0 else
                  f"  {m}: 2.5x is the whole run in {t_naive / 2.5:.1f} s: less than the rest alone ({rest:.1f} s)")


if __name__ == "__main__":
    main()
