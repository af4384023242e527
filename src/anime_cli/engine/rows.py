"""Memory for rows of layers: blocks mapped from the system and reused
(BlockPool), a layer's rows in such blocks (Pages), and each worker's scratch
for a strip's temporaries (Scratch).

Stored rows live for a pass or more while strip temporaries come and go
around them; in the C heap that mix fragmented, and the process held ~1.5x
what was alive. So stored layers and streaming windows live in blocks of
their own, and temporaries in one reused buffer per worker.
"""

from __future__ import annotations

import mmap
import threading

import torch

from .geometry import Shape

CL = torch.channels_last


def flat_rows(t: torch.Tensor) -> torch.Tensor:
    """A channels_last 4-D tensor as a 1-D view (NHWC memory is contiguous)."""
    return t.permute(0, 2, 3, 1).reshape(-1)


def empty_rows(c: int, h: int, w: int, dtype) -> torch.Tensor:
    return torch.empty((1, c, h, w), dtype=dtype, memory_format=CL)


class BlockPool:
    """Memory for stored layers and streaming windows: blocks mapped from the
    system, reused (by size) from layer to layer, unmapped when the run ends.

    Stored rows live for a pass or more while strip temporaries come and go
    around them; in the C heap that mix fragments, and the process held ~1.5x
    what was alive. In blocks of their own, what is kept is what is resident.
    """

    def __init__(self):
        self.free: dict[int, list[torch.Tensor]] = {}  # block size -> free blocks
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> torch.Tensor:
        with self.lock:
            free = self.free.get(nbytes)
            if free:
                return free.pop()
        return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=torch.uint8)

    def give(self, block: torch.Tensor) -> None:
        with self.lock:
            self.free.setdefault(block.numel(), []).append(block)

    def close(self) -> None:
        with self.lock:
            self.free = {}


class Pages:
    """Rows of one layer in pool blocks, block j holding rows [j*R, (j+1)*R):
    any worker may write any strip, and a block goes back to the pool as soon
    as no reader needs its rows."""

    def __init__(self, pool: BlockPool, shape: Shape, dtype, index: int, block_bytes: int):
        self.pool, self.shape, self.dtype, self.index = pool, shape, dtype, index
        self.row_bytes = shape.w * shape.c * dtype.itemsize
        self.per_block = max(1, block_bytes // self.row_bytes)
        # One block size for every layer, so that blocks freed by one layer serve
        # the next (rows bigger than a block make a size of their own).
        self.block_bytes = max(block_bytes, self.row_bytes)
        self.blocks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # j -> (block, rows view)
        self.lock = threading.Lock()

    def pieces(self, a: int, b: int, create: bool = False):
        """(lo, hi, view of rows lo..hi) covering rows [a, b), split at block boundaries."""
        R, s = self.per_block, self.shape
        for j in range(a // R, -(-b // R)):
            lo, hi = max(a, j * R), min(b, (j + 1) * R)
            entry = self.blocks.get(j)
            if entry is None:
                if not create:
                    raise RuntimeError(f"engine: rows {lo}..{hi} of layer {self.index} are not held (freed too early?)")
                rows = min(R, s.h - j * R)
                block = self.pool.take(self.block_bytes)
                view = block[: rows * self.row_bytes].view(self.dtype).view(1, rows, s.w, s.c).permute(0, 3, 1, 2)
                with self.lock:
                    entry = self.blocks.setdefault(j, (block, view))
            yield lo, hi, entry[1][:, :, lo - j * R : hi - j * R]

    def write(self, r0: int, y: torch.Tensor) -> None:
        for lo, hi, view in self.pieces(r0, r0 + y.shape[2], create=True):
            view.copy_(y[:, :, lo - r0 : hi - r0])

    def read(self, a: int, b: int, out: torch.Tensor, apply=None) -> None:
        """Rows [a, b) into `out`, through apply(rows, out rows, first row) if given."""
        for lo, hi, view in self.pieces(a, b):
            dst = out[:, :, lo - a : hi - a]
            if apply is None:
                dst.copy_(view)
            else:
                apply(view, dst, lo)

    def drop(self, live) -> None:
        """Free the blocks that no live interval (lo, hi) touches."""
        R = self.per_block
        with self.lock:
            dead = [j for j in self.blocks if not any(j * R < hi and (j + 1) * R > lo for lo, hi in live)]
            for j in dead:
                self.pool.give(self.blocks.pop(j)[0])

    def drop_below(self, row: int) -> None:
        self.drop([(row, self.shape.h)])

    def free(self) -> None:
        self.drop([])


class Scratch:
    """One worker's memory for a strip's temporaries (padded input, upsampling,
    float32 copy, skip), taken and given back in stack order, strip after
    strip: the same pages every time instead of heap churn."""

    def __init__(self, nbytes: int):
        self.buf = torch.empty(nbytes, dtype=torch.uint8)
        self.top = 0

    def take(self, c: int, h: int, w: int, dtype) -> torch.Tensor:
        """An uninitialised (1, c, h, w) channels_last tensor."""
        n = c * h * w * dtype.itemsize
        start = -(-self.top // 64) * 64
        if start + n > self.buf.numel():  # the memory model fell short: correct, just not counted
            return empty_rows(c, h, w, dtype)
        self.top = start + n
        return self.buf[start : start + n].view(dtype).view(1, h, w, c).permute(0, 3, 1, 2)

    def mark(self) -> int:
        return self.top

    def reset(self, mark: int) -> None:
        self.top = mark
