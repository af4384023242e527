"""What the engine needs to know about the CPU and the C allocator: the cores
this process may use and how files in flight share them, whether bfloat16 is
native, and how freed memory goes back to the system."""

from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager
from functools import lru_cache


def default_threads() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Cores:
    """Worker threads shared by the runs of the files in flight. A batch
    marks each file it is working on as busy (decoding, in the network, or
    writing); each pass of a run then takes total // busy workers, at least
    one. Two files on two cores run one worker each, so one file's
    single-threaded steps never wait for a core the other file's network holds;
    the last file of a batch gets every core from its next pass on."""

    def __init__(self, total: int | None = None):
        self.total = max(1, total or default_threads())
        self._busy = 0
        self._lock = threading.Lock()

    def share(self) -> int:
        return max(1, self.total // max(1, self._busy))

    @contextmanager
    def busy(self):
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether the CPU has bfloat16 dot products (AVX512-BF16 or AMX): there
    oneDNN runs bfloat16 convolutions at about twice the float32 rate. Without
    them bfloat16 is emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', not {precision!r}")
    return precision


# --------------------------------------------------------------------------
# The C allocator (glibc)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 1 << 20  # heap blocks at least this big are mapped, and unmapped when freed


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
    """Give freed heap memory back to the system after a run: glibc keeps it
    for reuse, and it would count against the next picture's budget."""
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


@lru_cache(maxsize=1)
def bound_malloc() -> None:
    """Make freed strip temporaries go back to the system, whatever the scheduling.

    glibc gives each thread that allocates at once its own arena (up to 8 a
    core), and a freed block stays in its arena; and after a large mapped
    block is freed it raises its mapping threshold to that size, so that the
    next strips' convolution outputs (a few MB) come from the arenas too.
    When workers are descheduled mid-strip, more threads allocate at the
    same moments, more arenas fill, and the process held ~10 MB a worker
    more than the planner's model (a tight --memory-limit gave way under CPU
    load). With two arenas and a fixed threshold, big temporaries are mapped
    and unmapped (a page fault per page: ~1 % of a convolution's time), and
    the heap holds only small objects. Process-wide and idempotent; the
    first Engine sets it."""
    libc = _glibc()
    if libc:
        libc.mallopt(M_ARENA_MAX, 2)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # fixed: no dynamic raising
        libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
