"""Layers kept whole during a run (Stored), the input picture as one of
them (Image), and the tracker that frees their rows during their last pass."""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from .geometry import BLOCK_BYTES
from .norms import LEAK, norm_rows
from .rows import Pages, empty_rows
from .state import RunState


class Stored:
    """A layer kept whole, shared by the workers of the passes that use it.

    Its pages hold raw convolution outputs: the statistics are only known once
    the layer is complete, so readers apply the norm and the activation to the
    rows they read, in their own strip (still in cache). A residual layer is
    instead folded once, in place (norm plus skip).
    """

    def __init__(self, run: RunState, index: int, compact: bool = False):
        self.run, self.index = run, index
        self.layer = run.layers[index]
        shape = run.geo.shapes[index]
        self.pages = Pages(run.pool, shape, torch.uint8 if compact else run.geo.store[index], index, BLOCK_BYTES)
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
        low, step = self.low[:, :, r0 : r0 + rows], self.step[:, :, r0 : r0 + rows]
        t = codes.float()
        affine = self.run.affine[self.index]
        if affine is None:
            torch.addcmul(low, t, step, out=t)
        else:
            scale, shift = affine
            torch.addcmul(low * scale + shift, t, step * scale, out=t)
        if self.layer.lrelu:
            F.leaky_relu_(t, LEAK)
        out.copy_(t)

    def _normalise(self, t, out, r0=None):
        if t.dtype != out.dtype:
            out.copy_(t)
            t = out
        norm_rows(t, self.run.affine[self.index], self.layer.lrelu, out=out)

    def drop(self, live) -> None:
        self.pages.drop(live)

    def free(self) -> None:
        self.pages.free()

    def fold(self, skip: "Stored") -> None:
        """Norm plus skip, in place, once the statistics are known (residual layers)."""
        L = self.layer
        for lo, hi, t in self.pages.pieces(0, self.pages.shape.h):
            norm_rows(t, self.run.affine[self.index], L.lrelu and not L.act_after_skip, out=t)
            s = empty_rows(t.shape[1], hi - lo, t.shape[3], t.dtype)
            skip.read(lo, hi, s)
            t.add_(s)
            if L.lrelu and L.act_after_skip:
                F.leaky_relu_(t, LEAK)
        self.raw = False


class Image(Stored):
    """The input picture, as a stored layer (index -1) that nobody frees."""

    def __init__(self, run, src):
        self.run, self.index, self.src = run, -1, src
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
