"""What the engine needs to know about the CPU and the C allocator: the cores
this process may use and how files in flight share them, whether bfloat16 is
native, and how freed memory goes back to the system."""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager
from functools import lru_cache

from anime_cli.options import PRECISIONS


def default_threads() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# A pass runs at most this many band workers; the threads beyond them go to
# each worker's oneDNN (OpenMP) team. Every worker holds its own strips,
# windows and scratch, so memory grows with the workers, never with the cores:
# 16 one-thread workers planned ~580 MiB where 2 plan ~390 (1280 px), and 16
# Python threads dispatching small convolutions contended for the GIL.
MAX_WORKERS = 2


def split(threads: int) -> list[int]:
    """The intra-op threads of each band worker for `threads` threads: at
    most MAX_WORKERS workers, the threads dealt out as evenly as they go
    (5 -> [3, 2]); one thread a worker up to MAX_WORKERS cores."""
    threads = max(1, threads)
    workers = min(threads, MAX_WORKERS)
    return [threads // workers + (k < threads % workers) for k in range(workers)]


class Cores:
    """Threads shared by the runs of the files in flight. A batch marks each
    file it is working on as busy (decoding, in the network, or writing);
    each pass of a run then takes total // busy threads, at least one, as
    split() deals them to its band workers. Two files on two cores run one
    one-thread worker each, so one file's single-threaded steps never wait
    for a core the other file's network holds; the last file of a batch gets
    every core from its next pass on."""

    def __init__(self, total: int | None = None):
        self.total = max(1, total or default_threads())
        self._busy = 0
        self._lock = threading.Lock()

    def share(self) -> int:
        return max(1, self.total // max(1, self._busy))

    @property
    def workers(self) -> int:
        """The most band workers a pass runs (what memory is planned for)."""
        return len(split(self.total))

    @contextmanager
    def busy(self):
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1


NO_BF16 = "ANIME_CLI_NO_BF16"  # =1: behave as on a CPU without bfloat16 (tests and CI cover that path anywhere)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    return frozenset(_cpuinfo("flags").split())


def cpu_model() -> str:
    """The CPU's model name, for every figure a benchmark prints."""
    import platform

    return _cpuinfo("model name") or platform.processor() or "unknown CPU"


def _cpuinfo(key: str) -> str:
    """The first CPU's `key` in /proc/cpuinfo; '' where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _switched_off() -> bool:
    return os.environ.get(NO_BF16, "").strip() not in ("", "0")


@lru_cache(maxsize=1)
def bf16_works() -> bool:
    """Whether torch can run bfloat16 convolutions here at all: oneDNN's own
    check (AVX-512 BW/VL/DQ or AVX-NE-CONVERT), which is what raises
    "bf16 path needs the cpu support ..." mid-network where it fails. The
    NO_BF16 switch says no on any machine."""
    if _switched_off():
        return False
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the check: trust the flags
        return bool({"avx512bw", "avx512vl", "avx512dq"} <= cpu_flags() or "avx_ne_convert" in cpu_flags())


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether the CPU has bfloat16 dot products (AVX512-BF16 or AMX) and
    torch can use them: there oneDNN runs bfloat16 convolutions at about
    twice the float32 rate. With only AVX-512 BW bfloat16 is emulated, and
    slower than float32; without it, it does not run (bf16_works)."""
    return bf16_works() and bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def bf16_missing() -> str:
    """Why bfloat16 cannot run here, one line for a usage error."""
    if _switched_off():
        return f"bfloat16 is switched off ({NO_BF16}=1)"
    return "this CPU has no bfloat16 support torch can use (it needs AVX-512 BW/VL/DQ, AVX512-BF16 or AMX)"


NO_INT8_TABLE = "these weights have no int8 calibration"


def resolve_precision(precision: str, int8_missing: str | None = NO_INT8_TABLE) -> str:
    """The precision a network runs at. int8_missing: why int8 cannot run
    for this network here (int8.missing), None where it can.
    "auto": bfloat16 where it is native; elsewhere int8 where it can run
    (faster than float32 on every x86 CPU measured, 43-48 dB from it); else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16() else ("fp32" if int8_missing else "int8")
    if precision == "bf16" and not bf16_works():
        raise ValueError(f"precision bf16: {bf16_missing()}; use fp32 or auto")
    if precision == "int8" and int8_missing:
        raise ValueError(f"precision int8: {int8_missing}; use fp32 or auto")
    return precision


# --------------------------------------------------------------------------
# The C allocator (glibc)

M_ARENA_MAX = -8  # mallopt's parameter number
ARENAS = 2


@lru_cache(maxsize=1)
def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def trim_malloc() -> None:
    """Give freed heap memory back to the system: glibc keeps it for reuse,
    and it would count against the next pass or the next picture."""
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


@lru_cache(maxsize=1)
def bound_malloc() -> None:
    """At most ARENAS glibc arenas in this process (process-wide; the first
    Engine sets it).

    A strip's temporaries (the convolution's output, a float32 copy: a few
    MB) come from the C heap, and glibc gives a thread that finds the arenas
    busy an arena of its own, up to 8 a core. Each arena keeps what was
    freed in it, and a pass's new worker threads land in new arenas more
    often when the workers are descheduled at random moments: under CPU load
    a tight --memory-limit gave way (460 MB logged against 450). With two
    arenas, and the heap trimmed after every pass (Run), that run stays at
    ~410-425 MB under the same load. (Mapping every big block instead, a
    fixed M_MMAP_THRESHOLD, held ~410 MB but cost a page fault a page: +20 %
    CPU time a picture.)"""
    libc = _glibc()
    if libc:
        libc.mallopt(M_ARENA_MAX, ARENAS)
