"""One worker's share of a pass (Band) and the layers it computes in it
(LayerNode, LeafView), strip by strip: gather the padded (and upsampled)
input rows, convolve, then collect statistics, store, stream or emit."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import conv
from .geometry import WINDOW_BYTES, skip_key
from .rows import Pages
from .norms import LEAK, norm_rows, strip_statistics
from .stored import Stored
from .state import RunState



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

    def __init__(self, run: RunState, index: int, band: "Band"):
        geo = self.geo = run.geo
        self.run, self.index, self.band = run, index, band
        self.L = run.layers[index]
        self.shape, self.in_shape = geo.shapes[index], geo.in_shapes[index]
        self.src_shape = geo.src_shape(index)
        self.dtype, self.store = geo.dtypes[index], geo.store[index]
        self.strip = geo.stream_strip[index]  # the pass's target takes big strips (Band)
        self.window = Pages(run.pool, self.shape, self.store, index, WINDOW_BYTES)
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

    # -- computing --------------------------------------------------------------
    def _produce(self, r0, r1):
        self.run.check()  # a streaming band can take seconds: look at every strip
        src, scratch = self.band.nodes[self.geo.src[self.index]], self.band.scratch
        a, b = self.geo.input_rows(self.index, r0, r1)
        va, vb = max(a, 0), min(b, self.in_shape.h)
        s0, s1 = self.geo.source_rows(self.index, va, vb)
        src.ensure(s1)  # before taking our scratch: upstream strips use it and give it back
        mark = scratch.mark()
        x = self._gather(src, a, b, va, vb, s0, s1)
        if r1 < self.limit:
            src.release(self.index, self.geo.needs(self.index, r1, r1 + 1)[0])
        if self.index in self.run.observe:
            self.run.observe[self.index](self.index, x)
        qconv = self.run.int8.get(self.index)
        if qconv is not None:
            y = qconv(x, scratch.take(x.shape[1], x.shape[2], x.shape[3], torch.uint8))
        else:
            w, bias = self.run.weights[self.index]
            y = conv(x, w, bias, stride=self.L.stride, groups=self.L.groups)
        y32 = None
        if self.kind != "stream" and self.L.norm is not None:
            y32 = self._accumulate(y)
        if self.kind == "emit":
            self.band.sink(r0, r1, torch.tanh(y.float()) if self.L.tanh else y)
        elif self.kind == "store":
            self.run.stored[self.index].write(r0, y, y32)
        elif self.kind == "stream":
            self.window.write(r0, self._normalise(y, r0, r1))
        scratch.reset(mark)
        if self.kind != "stream":
            self.run.advance(r1 - r0)

    def _gather(self, src, a, b, va, vb, s0, s1) -> torch.Tensor:
        """The padded input block [a, b) (rows [va, vb) real, the rest
        reflected), activated and upsampled (or halved) as the layer reads it."""
        L, ins, scratch = self.L, self.in_shape, self.band.scratch
        pl, pr = L.pad[0], L.pad[1]
        x = scratch.take(ins.c, b - a, ins.w + pl + pr, self.dtype)
        inner = x[:, :, va - a : vb - a, pl : pl + ins.w]
        if L.upsample:
            t = scratch.take(ins.c, s1 - s0, self.src_shape.w, self.dtype)
            src.read(s0, s1, t)
            up = scratch.take(ins.c, 2 * (s1 - s0), ins.w, self.dtype)
            if L.upsample == "tf":
                tf_legacy_x2(t, up)
            else:
                torch._C._nn.upsample_bilinear2d(t, [up.shape[2], up.shape[3]], False, 2.0, 2.0, out=up)
            inner.copy_(up[:, :, va - 2 * s0 : vb - 2 * s0])
        elif L.half:  # TensorFlow's legacy x0.5 of an even side: rows and columns 0, 2, 4 ...
            t = scratch.take(ins.c, s1 - s0, self.src_shape.w, self.dtype)
            src.read(s0, s1, t)
            inner.copy_(t[:, :, ::2, ::2])
        else:
            src.read(va, vb, inner)
        _reflect_rows(x, va - a, vb - a)
        _reflect_cols(x, pl, pl + ins.w)
        return x

    def _accumulate(self, y) -> torch.Tensor:
        """Add the strip to the statistics; returns its float32 copy (scratch),
        or y itself where it is float32 (nothing reads y after its writer)."""
        y32 = y
        if y.dtype != torch.float32:
            y32 = self.band.scratch.take(y.shape[1], y.shape[2], y.shape[3], torch.float32).copy_(y)
        s, sq = strip_statistics(self.L, y32, self.run.lade.get(self.index))
        self.sum += s
        self.sumsq += sq
        return y32

    def _normalise(self, y, r0, r1):
        """Norm, activation and skip of freshly computed rows."""
        L = self.L
        y = norm_rows(y.to(self.store), self.run.affine[self.index], L.lrelu and not L.act_after_skip)
        if L.residual is not None:
            res = self.band.nodes[L.residual]
            s = self.band.scratch.take(y.shape[1], r1 - r0, y.shape[3], y.dtype)
            res.read(r0, r1, s)
            res.release(skip_key(self.index), r1)
            y.add_(s)
            if L.lrelu and L.act_after_skip:
                F.leaky_relu_(y, LEAK)
        return y


def tf_legacy_x2(t: torch.Tensor, out: torch.Tensor) -> None:
    """TensorFlow 1's legacy bilinear x2 (align_corners and half-pixel centres
    off) of rows t into out (twice the rows and columns): output 2i is input
    i, output 2i+1 the mean of inputs i and i+1 (the last input repeated at
    the edge). At a strip's last row the edge is repeated too: the caller
    reads one source row more than it keeps (plan.source_rows)."""
    pairs = out.unflatten(2, (t.shape[2], 2))  # (N, C, H, 2, 2W): rows 2i and 2i+1
    even, odd = pairs[:, :, :, 0], pairs[:, :, :, 1]
    even[..., 0::2].copy_(t)
    if t.shape[3] > 1:
        torch.add(t[..., :-1], t[..., 1:], out=even[..., 1:-1:2]).mul_(0.5)
    even[..., -1].copy_(t[..., -1])
    if t.shape[2] > 1:
        torch.add(even[:, :, :-1], even[:, :, 1:], out=odd[:, :, :-1]).mul_(0.5)
    odd[:, :, -1].copy_(even[:, :, -1])


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


class Band:
    """One worker's share of a pass: target rows [t0, t1), with private nodes
    for the layers that stream and views of the stored ones."""

    def __init__(self, run: RunState, number: int, target: int, kind: str, chain, leaves, rows, tracker, sink,
                 scratch):
        geo = run.geo
        self.geo, self.number, self.tracker, self.sink = geo, number, tracker, sink
        self.scratch = scratch
        self.nodes: dict[int, object] = {d: LeafView(run.stored[d], self) for d in leaves}
        for j in chain:
            self.nodes[j] = LayerNode(run, j, self)
        self.need = geo.band_needs(target, rows, chain)
        for j in chain:
            node = self.nodes[j]
            node.start = node.hi = self.need[j][0]
            node.limit = self.need[j][1]
            node.readers = {k: node.start for k in geo.readers(j, chain, target)}
        self.target = self.nodes[target]
        self.target.kind = kind
        self.target.strip = geo.strip[target]

    def leaf_readers(self, leaves, chain) -> dict:
        target = self.target.index
        return {(d, k): self.need[d][0] for d in leaves if d >= 0 for k in self.geo.readers(d, chain, target)}

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
