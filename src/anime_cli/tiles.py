"""The compute engine: the AnimeGANv2 generator in horizontal strips, exactly,
within a memory budget.

Why strips. Every convolution is followed by GroupNorm(1, C), whose mean and
variance run over the whole image, so tiles normalised on their own leave
seams. Everything else in the network is local (convolutions, the x2
upsamplings), so the engine computes one layer at a time in strips of rows: a
strip of layer k needs only a few rows of layer k-1 (the halo), and GroupNorm
needs only two numbers from layer k, its sum and its sum of squares,
accumulated strip by strip. Once a layer is complete its normalisation is known
and is applied, with the LeakyReLU, the reflection padding and the upsampling,
when the next layer reads its rows: the glue runs on strips that are still in
cache, and the result equals the untiled network up to float rounding.

Which layers are kept whole is the plan (plan.py):

  "strips"  every layer is stored (raw convolution outputs, in row chunks) and
            freed chunk by chunk while the next layer consumes it. One pass of
            compute; the peak is about one full-size activation of the widest
            layer (64 channels at full resolution: 128 bytes a pixel in bf16).
  "stream"  when that does not fit the budget, only some layers are stored
            (checkpoints) and the others are recomputed from the last
            checkpoint, streaming windows of rows through the chain, once for
            every GroupNorm whose statistics are still unknown. Still exact;
            it costs several passes. The checkpoints are chosen by a small
            dynamic programme: the least recomputation that fits the budget.

Where it saves passes, the stored layers are kept in 8 bits (each row and
channel over its own range: ~60 dB from float32, half the memory of bfloat16).

Threads: each worker thread runs torch single-threaded on its own strips (or,
when layers stream, its own band of rows). No OpenMP team waits at a barrier
for a core that another process holds: on a busy 2-core machine two OpenMP
threads made thousands of small operations up to 10x slower.

Memory: stored layers and streaming windows live in blocks mapped for the run
and reused (BlockPool), strip temporaries in one scratch buffer per worker: in
the C heap the mix fragmented and the process held ~1.5x what was alive. The
planner's memory model counts both (see Engine for what a budget covers).

Precision. "bf16" (the default where the CPU has native bfloat16 dot products)
runs the convolutions in bfloat16 with float32 accumulation, and keeps the
statistics and the output layer in float32: about twice the speed of float32
for 53-56 dB PSNR against the float32 network on photos. "fp32" is exact up to
float rounding.
"""

from __future__ import annotations

import copy
import ctypes
import math
import mmap
import os
import threading
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .model import Generator
from .plan import (BLOCK_BYTES, MIN_SIZE, WINDOW_BYTES, Geometry, Plan, Shape, best_plan, flatten, layer_dtype,
                   padded_size)

LEAK = 0.2
CL = torch.channels_last


def default_threads() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Cores:
    """Worker threads shared by the engines of the files in flight. A batch
    marks each file it is working on as busy (decoding, in the network, or
    writing); each pass of an engine then runs on total // busy workers, at
    least one. Two files on two cores run one worker each, so one file's
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


from .errors import Cancelled  # noqa: E402  (the pipeline's signal, raised here)


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
# Image sources and sinks


class TensorSource:
    """Rows of a (1, 3, H, W) float tensor in [-1, 1]."""

    def __init__(self, x: torch.Tensor):
        self.x, self.h, self.w = x, x.shape[2], x.shape[3]

    def read(self, a: int, b: int, out: torch.Tensor) -> None:
        out.copy_(self.x[:, :, a:b, :])


class ArraySource:
    """Rows of an h x w x 3 uint8 RGB array as [-1, 1] floats, padded (without
    copying the array) to the network's size, on the right and at the bottom:
    reflection, or replication where the picture is too small to reflect."""

    def __init__(self, rgb: np.ndarray):
        self.rgb = rgb
        self.ih, self.iw = rgb.shape[:2]
        self.h, self.w = padded_size(self.ih, self.iw)
        ph, pw = self.h - self.ih, self.w - self.iw
        self.reflect = ph < self.ih and pw < self.iw
        self.cols = None if pw == 0 else self._index(np.arange(self.w), self.iw)

    def _index(self, idx, n):
        if self.reflect:
            return np.where(idx < n, idx, 2 * (n - 1) - idx)
        return np.minimum(idx, n - 1)

    def read(self, a, b, out):
        if b <= self.ih:
            block = self.rgb[a:b]
        else:
            block = self.rgb[self._index(np.arange(a, b), self.ih)]
        if self.cols is not None:
            block = block[:, self.cols]
        block = np.array(block, copy=True)  # a strip; torch wants a writable array
        t = torch.from_numpy(block).permute(2, 0, 1).unsqueeze(0)
        out.copy_(t)  # uint8 -> float, as x.float() does
        out.div_(127.5).sub_(1.0)


class ArraySink:
    """Writes output rows, cropped to the picture, into an h x w x 3 uint8 array."""

    def __init__(self, out: np.ndarray):
        self.out = out
        self.h, self.w = out.shape[:2]

    def __call__(self, r0, r1, y):
        r1 = min(r1, self.h)
        if r0 >= r1:
            return
        y = y[0, :, : r1 - r0, : self.w].add(1.0).mul_(127.5).round_().clamp_(0, 255)
        self.out[r0:r1] = y.to(torch.uint8).permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------
# Rows of a layer


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A channels_last 4-D tensor as a 1-D view (NHWC memory is contiguous)."""
    return t.permute(0, 2, 3, 1).reshape(-1)


def _empty(c: int, h: int, w: int, dtype) -> torch.Tensor:
    return torch.empty((1, c, h, w), dtype=dtype, memory_format=CL)


def _norm(t: torch.Tensor, affine, lrelu: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """GroupNorm with its statistics folded into (scale, shift), then the
    LeakyReLU where the layer has one: into `out` (default: in place)."""
    scale, shift = affine
    out = t if out is None else out
    torch.addcmul(shift.to(out.dtype), t, scale.to(out.dtype), out=out)
    if lrelu:
        F.leaky_relu_(out, LEAK)
    return out


def _skip_key(index: int) -> int:
    """Reader key of residual layer `index` reading its skip input (a conv read uses the index)."""
    return -2 - index


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
        self.mapped = 0  # bytes mapped so far: the high-water mark

    def take(self, nbytes: int) -> torch.Tensor:
        with self.lock:
            free = self.free.get(nbytes)
            if free:
                return free.pop()
            self.mapped += nbytes
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


class Stored:
    """A layer kept whole, shared by the workers of the passes that use it.

    Its pages hold raw convolution outputs: the statistics are only known once
    the layer is complete, so readers apply the norm and the activation to the
    rows they read, in their own strip (still in cache). A residual layer is
    instead folded once, in place (norm plus skip).
    """

    def __init__(self, engine: "Engine", index: int, compact: bool = False):
        self.engine, self.index = engine, index
        self.layer = engine.layers[index]
        shape = engine.geo.shapes[index]
        self.pages = Pages(engine.pool, shape, torch.uint8 if compact else engine.geo.store[index], index, BLOCK_BYTES)
        self.compact = compact
        if compact:  # per row and channel: the lowest value, and the step of the 8-bit code
            self.low = torch.empty((1, shape.c, shape.h, 1))
            self.step = torch.empty((1, shape.c, shape.h, 1))
        self.raw = True
        self.keep = True  # hold every row: false only during this layer's last pass

    def write(self, r0: int, y: torch.Tensor, y32: torch.Tensor | None = None) -> None:
        """Rows r0.. of the layer; y32, a float32 copy of y the writer may spoil, saves a conversion."""
        if self.compact:
            y = self._encode(r0, y, y32 if y32 is not None else y.float())
        self.pages.write(r0, y)

    def read(self, a, b, out):
        if self.compact:
            self.pages.read(a, b, out, self._decode)
        else:
            self.pages.read(a, b, out, self._normalise if self.raw else None)

    def _encode(self, r0: int, y: torch.Tensor, y32: torch.Tensor) -> torch.Tensor:
        """8-bit codes of rows r0.. of y, made in y32: each row and channel
        spans its own range in 255 steps (~60 dB from float32 on photos,
        against ~55 for bfloat16 arithmetic). The statistics were taken from y
        itself."""
        rows = y.shape[2]
        nhwc = y.permute(0, 2, 3, 1)  # reducing over W: the fast way round in channels_last memory
        low = nhwc.amin(dim=2).float().permute(0, 2, 1).unsqueeze(3)
        step = nhwc.amax(dim=2).float().permute(0, 2, 1).unsqueeze(3).sub_(low).clamp_min_(1e-30).div_(255)
        self.low[:, :, r0 : r0 + rows] = low
        self.step[:, :, r0 : r0 + rows] = step
        return y32.sub_(low).div_(step).round_().clamp_(0, 255)

    def _decode(self, codes, out, r0: int) -> None:
        """Rows r0.. back from their codes, normalised and activated."""
        rows = codes.shape[2]
        scale, shift = self.engine.affine[self.index]
        low, step = self.low[:, :, r0 : r0 + rows], self.step[:, :, r0 : r0 + rows]
        t = codes.float()
        torch.addcmul(low * scale + shift, t, step * scale, out=t)
        if self.layer.lrelu:
            F.leaky_relu_(t, LEAK)
        out.copy_(t)

    def _normalise(self, t, out, r0=None):
        if t.dtype != out.dtype:
            out.copy_(t)
            t = out
        _norm(t, self.engine.affine[self.index], self.layer.lrelu, out=out)

    def drop(self, live) -> None:
        self.pages.drop(live)

    def free(self) -> None:
        self.pages.free()

    def fold(self, skip: "Stored") -> None:
        """Norm plus skip, in place, once the statistics are known (residual layers)."""
        for lo, hi, t in self.pages.pieces(0, self.pages.shape.h):
            _norm(t, self.engine.affine[self.index], False, out=t)
            s = _empty(t.shape[1], hi - lo, t.shape[3], t.dtype)
            skip.read(lo, hi, s)
            t.add_(s)
        self.raw = False


class Image(Stored):
    """The input picture, as a stored layer (index -1) that nobody frees."""

    def __init__(self, engine, src):
        self.engine, self.index, self.src = engine, -1, src
        self.keep, self.raw = True, False

    def read(self, a, b, out):
        self.src.read(a, b, out)

    def drop(self, live):
        pass

    def free(self):
        pass


class Tracker:
    """Frees the rows of stored layers during their last pass, as soon as no
    band of the pass (running or waiting) needs them any more."""

    def __init__(self, bands: list[dict[int, tuple[int, int]]]):
        self.lock = threading.Lock()
        self.needs = bands  # per band: stored layer -> rows (lo, hi) it reads
        self.state = ["waiting"] * len(bands)
        self.marks: list[dict] = [{} for _ in bands]  # per band: (layer, reader) -> lowest row still needed

    def start(self, b: int, readers: dict) -> None:
        with self.lock:
            self.state[b] = "running"
            self.marks[b] = dict(readers)

    def release(self, stored: Stored, b: int, key: int, row: int) -> None:
        if stored.keep or stored.index < 0:
            return
        with self.lock:
            self.marks[b][stored.index, key] = row
            self._sweep(stored)

    def finish(self, b: int, stored: list[Stored]) -> None:
        with self.lock:
            self.state[b] = "done"
            for s in stored:
                if not s.keep and s.index >= 0:
                    self._sweep(s)

    def _sweep(self, stored: Stored) -> None:
        live, waiting = [], None
        for b, need in enumerate(self.needs):
            if stored.index not in need or self.state[b] == "done":
                continue
            lo, hi = need[stored.index]
            if self.state[b] == "running":
                marks = [r for (i, _), r in self.marks[b].items() if i == stored.index]
                live.append((max(lo, min(marks)) if marks else lo, hi))
            else:  # waiting bands are claimed in order: one hull covers them
                waiting = (lo, hi) if waiting is None else (min(waiting[0], lo), max(waiting[1], hi))
        if waiting is not None:
            live.append(waiting)
        stored.drop(live)


class LeafView:
    """A stored layer as one band sees it: reads go through, releases are
    reported to the pass's tracker under the band's number."""

    def __init__(self, stored: Stored, band: "Band"):
        self.stored, self.band = stored, band

    def ensure(self, row):
        pass

    def read(self, a, b, out):
        self.stored.read(a, b, out)

    def release(self, key, row):
        self.band.tracker.release(self.stored, self.band.number, key, row)


class LayerNode:
    """Rows of one layer computed inside a band, strip by strip.

    A streaming layer's rows are normalised as they are produced and dropped
    once the band's readers have gone past them. The pass's target instead
    collects statistics and keeps (kind "store"), drops ("stats") or hands
    out ("emit") its raw rows.
    """

    def __init__(self, engine: "Engine", index: int, band: "Band"):
        geo = engine.geo
        self.engine, self.index, self.band = engine, index, band
        self.L = engine.layers[index]
        self.shape, self.in_shape = geo.shapes[index], geo.in_shapes[index]
        self.src_shape = geo.shapes[index - 1] if index > 0 else Shape(geo.h, geo.w, 3)
        self.dtype, self.store = geo.dtypes[index], geo.store[index]
        self.strip = geo.stream_strip[index]  # the pass's target takes big strips (Band)
        self.window = Pages(engine.pool, self.shape, self.store, index, WINDOW_BYTES)
        self.start = self.hi = 0
        self.limit = self.shape.h
        self.readers: dict[int, int] = {}
        self.kind = "stream"  # or "stats", "store", "emit"
        self.sum = self.sumsq = 0.0

    # -- as a source for the band's other layers ------------------------------
    def read(self, a, b, out):
        self.ensure(b)
        self.window.read(a, b, out)

    def release(self, key, row):
        self.readers[key] = row
        low = min(self.readers.values())
        self.window.drop_below(low)

    def ensure(self, row):
        if row > self.limit:
            raise RuntimeError(f"engine: layer {self.index} asked for row {row} beyond its band ({self.limit})")
        while self.hi < row:
            r1 = min(self.hi + self.strip, self.limit)
            self._produce(self.hi, r1)
            self.hi = r1

    # -- geometry -------------------------------------------------------------
    def input_rows(self, r0: int, r1: int) -> tuple[int, int]:
        """Rows [a, b) of the (upsampled, unpadded) input read by output rows
        [r0, r1); a < 0 or b > height where the padding reflects."""
        L = self.L
        return r0 * L.stride - L.pad[2], (r1 - 1) * L.stride + L.kernel - L.pad[2]

    def source_rows(self, va: int, vb: int) -> tuple[int, int]:
        """Source rows behind input rows [va, vb): the same, or for the x2
        upsampling one more source row on each side (bilinear blends rows
        floor(u/2)-1 .. floor(u/2)+1; at the image's edges interpolate's
        clamping is the true behaviour)."""
        if not self.L.upsample:
            return va, vb
        return max(va // 2 - 1, 0), min((vb - 1) // 2 + 2, self.src_shape.h)

    def needs(self, r0: int, r1: int) -> tuple[int, int]:
        """Source rows that output rows [r0, r1) read."""
        a, b = self.input_rows(r0, r1)
        return self.source_rows(max(a, 0), min(b, self.in_shape.h))

    # -- computing --------------------------------------------------------------
    def _produce(self, r0, r1):
        cancel = self.engine._cancel
        if cancel is not None and cancel.is_set():  # a streaming band can take seconds: look at every strip
            raise Cancelled()
        src, scratch = self.band.nodes[self.index - 1], self.band.scratch
        a, b = self.input_rows(r0, r1)
        va, vb = max(a, 0), min(b, self.in_shape.h)
        s0, s1 = self.source_rows(va, vb)
        src.ensure(s1)  # before taking our scratch: upstream strips use it and give it back
        mark = scratch.mark()
        x = self._gather(src, a, b, va, vb, s0, s1)
        if r1 < self.limit:
            src.release(self.index, self.needs(r1, r1 + 1)[0])
        w, bias = self.engine.weights[self.index]
        y = F.conv2d(x, w, bias, stride=self.L.stride, groups=self.L.groups)
        y32 = None
        if self.kind != "stream" and self.L.gamma is not None:
            y32 = self._accumulate(y)
        if self.kind == "emit":
            self.band.sink(r0, r1, torch.tanh(y.float()) if self.L.tanh else y)
        elif self.kind == "store":
            self.engine.stored[self.index].write(r0, y, y32)
        elif self.kind == "stream":
            self.window.write(r0, self._normalise(y, r0, r1))
        scratch.reset(mark)

    def _gather(self, src, a, b, va, vb, s0, s1) -> torch.Tensor:
        """The padded input block [a, b) (rows [va, vb) real, the rest
        reflected), activated and upsampled as the layer reads it."""
        L, ins, scratch = self.L, self.in_shape, self.band.scratch
        pl, pr = L.pad[0], L.pad[1]
        x = scratch.take(ins.c, b - a, ins.w + pl + pr, self.dtype)
        inner = x[:, :, va - a : vb - a, pl : pl + ins.w]
        if L.upsample:
            t = scratch.take(ins.c, s1 - s0, self.src_shape.w, self.dtype)
            src.read(s0, s1, t)
            up = scratch.take(ins.c, 2 * (s1 - s0), ins.w, self.dtype)
            torch._C._nn.upsample_bilinear2d(t, [up.shape[2], up.shape[3]], False, 2.0, 2.0, out=up)
            inner.copy_(up[:, :, va - 2 * s0 : vb - 2 * s0])
        else:
            src.read(va, vb, inner)
        _reflect_rows(x, va - a, vb - a)
        _reflect_cols(x, pl, pl + ins.w)
        return x

    def _accumulate(self, y) -> torch.Tensor:
        """Add the strip to the statistics; returns its float32 copy (scratch)."""
        # Per strip in float32 (torch sums blockwise); across strips in float64.
        y32 = self.band.scratch.take(y.shape[1], y.shape[2], y.shape[3], torch.float32).copy_(y)
        v = _flat(y32)
        self.sum += float(v.sum())
        self.sumsq += float(torch.dot(v, v))
        return y32

    def _normalise(self, y, r0, r1):
        """Norm, activation and skip of freshly computed rows."""
        if self.L.gamma is None:
            return y
        y = _norm(y.to(self.store), self.engine.affine[self.index], self.L.lrelu)
        if self.L.residual is not None:
            res = self.band.nodes[self.L.residual]
            s = self.band.scratch.take(y.shape[1], r1 - r0, y.shape[3], y.dtype)
            res.read(r0, r1, s)
            res.release(_skip_key(self.index), r1)
            y.add_(s)
        return y


def _reflect_rows(x: torch.Tensor, top: int, bottom: int) -> None:
    """Fill rows [0, top) and [bottom, end) by reflection about rows top and bottom - 1."""
    for j in range(top):
        x[:, :, j].copy_(x[:, :, 2 * top - j])
    for j in range(bottom, x.shape[2]):
        x[:, :, j].copy_(x[:, :, 2 * (bottom - 1) - j])


def _reflect_cols(x: torch.Tensor, left: int, right: int) -> None:
    for j in range(left):
        x[:, :, :, j].copy_(x[:, :, :, 2 * left - j])
    for j in range(right, x.shape[3]):
        x[:, :, :, j].copy_(x[:, :, :, 2 * (right - 1) - j])


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
            return _empty(c, h, w, dtype)
        self.top = start + n
        return self.buf[start : start + n].view(dtype).view(1, h, w, c).permute(0, 3, 1, 2)

    def mark(self) -> int:
        return self.top

    def reset(self, mark: int) -> None:
        self.top = mark


class Band:
    """One worker's share of a pass: target rows [t0, t1), with private nodes
    for the layers that stream and views of the stored ones."""

    def __init__(self, engine: "Engine", number: int, target: int, chain, leaves, rows, tracker, sink, scratch):
        self.engine, self.number, self.tracker, self.sink = engine, number, tracker, sink
        self.scratch = scratch
        self.nodes: dict[int, object] = {d: LeafView(engine.stored[d], self) for d in leaves}
        for j in chain:
            self.nodes[j] = LayerNode(engine, j, self)
        self.need = engine.band_needs(target, rows, chain)
        for j in chain:
            node = self.nodes[j]
            node.start = node.hi = self.need[j][0]
            node.limit = self.need[j][1]
            node.readers = {k: node.start for k in engine.readers(j, chain, target)}
        self.target = self.nodes[target]
        self.target.kind = engine.pass_kind
        self.target.strip = engine.geo.strip[target]

    def leaf_readers(self, leaves, chain) -> dict:
        target = self.target.index
        return {(d, k): self.need[d][0] for d in leaves if d >= 0 for k in self.engine.readers(d, chain, target)}

    def run(self):
        """Compute the band; returns the target's (sum, sum of squares)."""
        target = self.target
        try:
            target.ensure(target.limit)
            return target.sum, target.sumsq
        finally:  # nodes and band refer to each other: drop everything now, not at the next gc
            for node in self.nodes.values():
                if isinstance(node, LayerNode):
                    node.window.free()
                    node.band = None
            self.nodes.clear()


# --------------------------------------------------------------------------
# The engine


class Engine:
    """Runs a Generator in strips, within a memory budget, faithful to the
    untiled network (exact up to float rounding in "fp32").

    threads: worker threads (default: the cores this process may use). Each
    runs torch single-threaded on its own strips, so no OpenMP team waits at
    a barrier for a core that another process holds. Or `cores`, a Cores
    shared with other engines: each pass then takes its share of them.
    precision: "auto" (bf16 where the CPU has native bfloat16), "bf16" or "fp32".

    budget_bytes, in run() and stream(): the memory the engine may allocate on
    top of what the process already holds: stored activations, streaming
    windows and per-strip temporaries. It does not include the input and the
    output arrays (the caller's; run() allocates a (1, 3, H, W) float32 output,
    12 bytes a pixel, on top), nor the torch runtime and the weights. A caller
    with a limit on its whole RSS passes limit - current RSS - outputs - safety.
    None: the fastest plan, whatever its memory.
    """

    def __init__(self, generator: Generator, threads: int | None = None, precision: str = "auto",
                 cores: Cores | None = None):
        self.precision = resolve_precision(precision)
        self.cores = cores or Cores(threads)
        self.layers = flatten(generator)
        self.weights = []
        for i, L in enumerate(self.layers):
            dt = layer_dtype(self.precision, i, L)
            w = L.weight.to(dt).contiguous(memory_format=CL)
            self.weights.append((w, None if L.bias is None else L.bias.to(dt)))
        self.last_plan: Plan | None = None
        self._cancel = None
        self._running = threading.Lock()  # one picture at a time: a run's state lives on the engine

    @property
    def threads(self) -> int:
        """The most workers a pass may use (memory is planned for that many)."""
        return self.cores.total

    def clone(self) -> "Engine":
        """Another engine on the same weights and cores, to run a second picture at once."""
        twin = copy.copy(self)
        twin._running, twin.last_plan = threading.Lock(), None
        return twin

    def make_plan(self, h: int, w: int, budget_bytes: int | None) -> Plan:
        return best_plan(Geometry(self.layers, h, w, self.precision, self.threads), budget_bytes)

    def run(self, x: torch.Tensor, budget_bytes: int | None = None, plan: Plan | None = None) -> torch.Tensor:
        """x: (1, 3, H, W) float32 in [-1, 1], H and W multiples of 4 (at
        least 8). Returns generator(x) as a new (1, 3, H, W) float32 tensor."""
        n, c, h, w = x.shape
        if n != 1 or c != 3 or h % 4 or w % 4 or h < MIN_SIZE or w < MIN_SIZE:
            raise ValueError(f"expected (1, 3, H, W) with H, W multiples of 4 and >= {MIN_SIZE}; got {tuple(x.shape)}")
        out = torch.empty((1, 3, h, w), dtype=torch.float32)

        def sink(r0, r1, y):
            out[:, :, r0:r1].copy_(y)

        self.stream(TensorSource(x), sink, budget_bytes, plan)
        return out

    def stylize(self, rgb: np.ndarray, budget_bytes: int | None = None, cancel=None) -> np.ndarray:
        """h x w x 3 uint8 -> h x w x 3 uint8, without whole-image float copies.
        Any size: the network runs on the picture padded to multiples of 4
        (at least MIN_SIZE), and the padding is cropped off. The budget
        includes the output array."""
        out = np.empty(rgb.shape, dtype=np.uint8)
        if budget_bytes is not None:
            budget_bytes = max(0, budget_bytes - out.nbytes)
        self.stream(ArraySource(rgb), ArraySink(out), budget_bytes, cancel=cancel)
        return out

    def stream(self, src, sink, budget_bytes: int | None = None, plan: Plan | None = None, cancel=None) -> None:
        """Run the network on `src` (src.h, src.w, src.read(a, b, out)) and
        hand every output row once to sink(r0, r1, y), y (1, 3, rows, W)
        float32 in [-1, 1]. Rows come in no fixed order, from worker threads.
        cancel: anything with is_set(); once set, the run raises Cancelled
        within a strip's time."""
        with self._running:
            self._cancel = cancel
            self._stream(src, sink, budget_bytes, plan)

    def _stream(self, src, sink, budget_bytes, plan) -> None:
        self.geo = Geometry(self.layers, src.h, src.w, self.precision, self.threads)
        plan = plan or best_plan(self.geo, budget_bytes)
        self.last_plan = plan
        self.stored: dict[int, Stored] = {-1: Image(self, src)}
        self.pool = BlockPool()
        self.scratches: list[Scratch] = []
        self.affine: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                self._execute(plan, sink)
        finally:
            torch.set_num_threads(threads)
            for st in self.stored.values():
                st.free()
            self.stored, self.scratches = {}, []
            self.pool.close()
            trim_malloc()

    # -- the passes ----------------------------------------------------------
    def reads(self, j: int, target: int) -> list[int]:
        """Layers whose rows layer j reads in the pass for `target`: its input,
        and its skip unless j is the target (the target's statistics are taken
        before the skip is added; a stored target adds it in its fold)."""
        r = self.layers[j].residual
        return [j - 1] + ([r] if r is not None and j != target else [])

    def readers(self, node: int, chain, target: int) -> list[int]:
        """Reader keys of `node` among the layers computed in a pass."""
        keys = []
        for j in chain:
            if j == node + 1:
                keys.append(j)
            if self.layers[j].residual == node and j != target:
                keys.append(_skip_key(j))
        return keys

    def pass_layers(self, target: int, stored) -> tuple[list[int], list[int]]:
        """Layers computed in the pass for `target`, and the stored ones it reads."""
        chain, leaves, todo = set(), set(), [target]
        while todo:
            i = todo.pop()
            if i not in chain:
                chain.add(i)
                for d in self.reads(i, target):
                    if d == -1 or d in stored:
                        leaves.add(d)
                    else:
                        todo.append(d)
        return sorted(chain), sorted(leaves)

    def band_needs(self, target: int, rows, chain) -> dict[int, tuple[int, int]]:
        """Rows each layer must provide so that the target can compute `rows`."""
        need = {target: tuple(rows)}
        for j in sorted(chain, reverse=True):
            lo, hi = need[j]
            node = LayerNode(self, j, None)  # for its geometry
            ranges = [node.needs(lo, hi), (lo, hi)]  # the input's rows, then the skip's
            for d, (a, b) in zip(self.reads(j, target), ranges):
                old = need.get(d)
                need[d] = (a, b) if old is None else (min(old[0], a), max(old[1], b))
        return need

    def bands(self, target: int, chain, workers: int) -> list[tuple[int, int]]:
        h = self.geo.shapes[target].h
        if len(chain) == 1:  # every input is stored: strips are independent, hand them out one by one
            step = self.geo.strip[target]
        else:  # streaming chains recompute their halo at every band edge: one band per worker
            step = -(-h // workers)
        return [(r, min(r + step, h)) for r in range(0, h, step)]

    def _execute(self, plan: Plan, sink):
        n, stored = len(self.layers), plan.stored
        passes = [self.pass_layers(i, stored) for i in range(n)]
        last_use = {}
        for i, (chain, leaves) in enumerate(passes):
            for s in leaves:
                last_use[s] = i
            if i in stored and self.layers[i].residual is not None:
                last_use[self.layers[i].residual] = i  # the fold reads the skip
        for i, (chain, leaves) in enumerate(passes):
            folds = i in stored and self.layers[i].residual is not None
            for s, st in self.stored.items():  # a stored residual layer's skip must outlive the pass, for the fold
                st.keep = s < 0 or last_use[s] > i or (folds and self.layers[i].residual == s)
            self.pass_kind = "emit" if i == n - 1 else ("store" if i in stored else "stats")
            if i in stored:
                compact = plan.compact and self.geo.compactable(i)
                self.stored[i] = Stored(self, i, compact)  # the pass writes into it
            total, total_sq = self._run_pass(i, chain, leaves, sink)
            if i < n - 1:
                self._finish_stats(i, total, total_sq)
            if folds:
                self.stored[i].fold(self.stored[self.layers[i].residual])
            for s in [s for s in self.stored if s >= 0 and last_use[s] == i]:
                self.stored.pop(s).free()

    def _run_pass(self, target, chain, leaves, sink):
        workers = min(self.cores.share(), self.threads)
        rows = self.bands(target, chain, workers)
        needs = [self.band_needs(target, r, chain) for r in rows]
        tracker = Tracker([{d: need[d] for d in leaves if d >= 0} for need in needs])
        results: list = [None] * len(rows)
        claim, lock, errors = iter(range(len(rows))), threading.Lock(), []

        def work(k):
            torch.set_num_threads(1)  # per thread: OpenMP's setting is thread-local
            scratch = self._scratch(k)
            with torch.inference_mode():
                while not errors:
                    if self._cancel is not None and self._cancel.is_set():
                        errors.append(Cancelled())
                        return
                    with lock:
                        b = next(claim, None)
                    if b is None:
                        return
                    try:
                        band = Band(self, b, target, chain, leaves, rows[b], tracker, sink, scratch)
                        tracker.start(b, band.leaf_readers(leaves, chain))
                        results[b] = band.run()
                        tracker.finish(b, [self.stored[d] for d in leaves])
                    except BaseException as e:  # re-raised in the caller's thread
                        errors.append(e)
                        return

        n = min(workers, len(rows))
        workers = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(1, n)]
        for t in workers:
            t.start()
        work(0)
        for t in workers:
            t.join()
        if errors:
            raise errors[0]
        # In band order, so the float64 sums do not depend on thread timing.
        return sum(r[0] for r in results), sum(r[1] for r in results)

    def _scratch(self, k: int) -> Scratch:
        """Worker k's scratch, made once a run, big enough for any layer's strip."""
        while len(self.scratches) <= k:
            self.scratches.append(Scratch(max(self.geo.scratch(i) for i in range(len(self.layers)))))
        return self.scratches[k]

    def _finish_stats(self, i, total, total_sq):
        L, s = self.layers[i], self.geo.shapes[i]
        count = s.h * s.w * s.c
        mean = total / count
        var = max(total_sq / count - mean * mean, 0.0)
        inv = 1.0 / math.sqrt(var + L.eps)
        g, b = L.gamma.double(), L.beta.double()
        self.affine[i] = ((g * inv).float().view(1, -1, 1, 1), (b - mean * inv * g).float().view(1, -1, 1, 1))


# --------------------------------------------------------------------------
# The C allocator

_libc = None


def _glibc():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim  # noqa: B018 (glibc only)
        except (OSError, AttributeError):
            _libc = False
    return _libc


def trim_malloc() -> None:
    """Give the freed activations back to the system after a run: glibc keeps
    freed heap memory for reuse, which would count against the next image's
    memory budget in a long batch."""
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)
