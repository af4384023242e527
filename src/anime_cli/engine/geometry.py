"""The engine's geometry: the network as a flat list of layers at one input
size, its shapes and strip heights, the memory each layer takes stored,
streamed or computed, and which rows of which layers each computation reads.
The planner (plan.py) prices plans with it; the engine runs them with it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .int8 import quantized
from .layers import layer_dtype, sources

# Target size of a pass's strips (input or output block): cache-sized. Float32 strips take half
# as many bytes: a float32 strip of 2 MiB ran within 1 % of the time of one of 4 MiB (hayao at
# 1280x960), and a plan holds several strips a worker (its scratch, its slack): 25-40 MiB less
# for two workers, which keeps the 12 MP default under 700 MB in float32 and int8.
STRIP_BYTES = 4 << 20
STREAM_BYTES = 1 << 20  # the same for layers that stream: their windows add up along a chain
BLOCK_BYTES = 2 << 20  # stored layers are kept in blocks of about this size (BlockPool)
WINDOW_BYTES = 256 << 10  # ... and streaming windows in blocks of about this size
MIN_SIZE = 8  # the quarter-resolution layers need 2 pixels for reflection padding


@dataclass
class Shape:
    h: int
    w: int
    c: int


class Sizes:
    """Sizes of everything for one input size and precision: shapes, strip
    heights, and the memory model the planner uses."""

    def __init__(self, layers, h: int, w: int, precision: str, workers: int = 1):
        self.layers, self.h, self.w, self.workers, self.precision = layers, h, w, workers, precision
        self.int8 = [precision == "int8" and quantized(i, L) for i, L in enumerate(layers)]
        self.dtypes = [layer_dtype(precision, i, L) for i, L in enumerate(layers)]
        # rows are kept (stored or streamed) in the layer's own precision
        self.store = list(self.dtypes)
        self.src = sources(layers)  # the layer each layer reads (-1: the image)
        self.shapes, self.in_shapes = [], []
        for j, L in enumerate(layers):
            prev = self.shapes[self.src[j]] if self.src[j] >= 0 else Shape(h, w, 3)
            if L.upsample:
                ih, iw = prev.h * 2, prev.w * 2
            elif L.half:  # every second row and column from 0 (the network's multiple keeps the source even)
                ih, iw = prev.h // 2, prev.w // 2
            else:
                ih, iw = prev.h, prev.w
            pl, pr, pt, pb = L.pad
            out = Shape((ih + pt + pb - L.kernel) // L.stride + 1, (iw + pl + pr - L.kernel) // L.stride + 1, L.cout)
            self.in_shapes.append(Shape(ih, iw, L.cin))
            self.shapes.append(out)
        self.strip = [self._strip_rows(i, STRIP_BYTES // (2 if self.dtypes[i].itemsize == 4 else 1))
                      for i in range(len(layers))]
        self.stream_strip = [self._strip_rows(i, STREAM_BYTES) for i in range(len(layers))]

    def _strip_rows(self, i, nbytes) -> int:
        s, si, L = self.shapes[i], self.in_shapes[i], self.layers[i]
        item = self.dtypes[i].itemsize
        per_row = max(s.w * s.c, L.stride * si.w * si.c * (4 if L.half else 1)) * item
        return max(1, min(s.h, nbytes // per_row))

    def flops(self, i) -> float:
        L, s = self.layers[i], self.shapes[i]
        lade = 0 if L.lade is None else s.c  # its 1x1 conv, in the passes that take statistics
        return 2.0 * s.h * s.w * s.c * ((L.cin // L.groups) * L.kernel**2 + lade)

    def has_pass(self, i: int, stored) -> bool:
        """Whether layer i has a pass of its own: to learn its statistics, to be stored, or to be emitted."""
        return self.layers[i].norm is not None or i in stored or i == len(self.layers) - 1

    def size(self, i, compact: bool = False) -> int:
        """Bytes of layer i stored whole (0 for the image: the caller owns it)."""
        if i < 0:
            return 0
        s = self.shapes[i]
        if compact and self.compactable(i):  # a byte a value, and a float32 range per row and channel
            row, extra = s.w * s.c, 2 * 4 * s.h * s.c
        else:
            row, extra = self.row_bytes(i), 0
        per_block = max(1, BLOCK_BYTES // row)
        return -(-s.h // per_block) * max(BLOCK_BYTES, row) + extra  # whole blocks (Pages)

    def compactable(self, i) -> bool:
        """Whether layer i may be stored in 8 bits: not a residual layer (its
        fold adds the skip in place), the output, attention logits, nor a layer
        its family keeps in its precision."""
        L = self.layers[i]
        return L.eight_bit and L.residual is None and not L.tanh and L.norm != "softmax"

    def row_bytes(self, i) -> int:
        s = self.shapes[i]
        return s.w * s.c * self.store[i].itemsize

    def in_rows(self, i, rows) -> int:
        """Rows of layer i's source that one strip of `rows` rows of layer i reads."""
        L = self.layers[i]
        n = (rows - 1) * L.stride + L.kernel
        if L.upsample:
            return n // 2 + 3
        return 2 * n if L.half else n

    def window(self, i, target: int | None = None) -> int:
        """Bytes a streaming layer keeps: the rows its readers' next strips
        read (big strips for a reader that is the pass's `target`), one strip
        of its own made ahead, and for a block's input the rows between the
        block's first layer and the skip that reads them last."""
        readers = [j for j, s in enumerate(self.src) if s == i]
        if not readers:  # the output layer: its rows go straight to the sink
            return 0
        rows = self.stream_strip[i] - 1
        for j in readers:  # a branch's readers each hold their own rows (summed: they need not be in step)
            rows += self.in_rows(j, self.strip[j] if j == target else self.stream_strip[j])
        for j, L in enumerate(self.layers):
            if L.residual == i:
                rows += sum(self._lag(i, k) for k in range(i + 1, j + 1))
        row = self.row_bytes(i)
        per_block = max(1, WINDOW_BYTES // row)
        return (rows // per_block + 1) * max(WINDOW_BYTES, row)  # whole blocks (Pages)

    def _lag(self, i: int, k: int) -> int:
        """Rows of layer i that layer k's strip and halo hold back, in layer
        i's rows: a row of a layer at 1/16 of the resolution stands for 16 of a
        full-resolution skip (a U-Net's skip waits for the whole way down and up)."""
        scale = self.shapes[i].h / self.shapes[k].h
        if scale == 1:
            return self.stream_strip[k]
        return math.ceil((self.stream_strip[k] + self.layers[k].kernel) * scale)

    def scratch(self, i) -> int:
        """A worker's scratch for one strip of layer i (see Scratch)."""
        L, s, si = self.layers[i], self.shapes[i], self.in_shapes[i]
        item, rows = self.dtypes[i].itemsize, self.strip[i]
        in_rows = (rows - 1) * L.stride + L.kernel
        block = in_rows * (si.w + L.pad[0] + L.pad[1]) * si.c
        total = block * (item + self.int8[i])  # padded input block (and its uint8 codes)
        if L.upsample:  # source rows, and their x2
            src_rows = min(in_rows // 2 + 4, si.h // 2)
            total += src_rows * (si.w // 2) * si.c * item + 2 * src_rows * si.w * si.c * item
        if L.half:  # source rows, every second one kept
            total += min(2 * in_rows, 2 * si.h) * (2 * si.w) * si.c * item
        out = rows * s.w * s.c
        if item != 4:
            total += out * 4  # float32 copy for the statistics
        if L.residual is not None:
            total += out * self.store[i].itemsize
        return total + 6 * 64

    def work(self, i, target: bool = True) -> int:
        """Heap temporaries while one strip of layer i is computed: the
        convolution's output (and its normalised copy when it streams)."""
        s, rows = self.shapes[i], self.strip[i] if target else self.stream_strip[i]
        return rows * s.w * s.c * (self.dtypes[i].itemsize + self.store[i].itemsize)


class Geometry(Sizes):
    """Sizes, and which rows of which layers each computation reads: the
    layers a pass computes, the rows each band of it needs."""
    def src_shape(self, j: int) -> Shape:
        """The shape of what layer j reads: its source layer's output, or the image."""
        s = self.src[j]
        return self.shapes[s] if s >= 0 else Shape(self.h, self.w, 3)

    def input_rows(self, j: int, r0: int, r1: int) -> tuple[int, int]:
        """Rows [a, b) of layer j's (upsampled, unpadded) input read by its
        output rows [r0, r1); a < 0 or b > height where the padding reflects."""
        L = self.layers[j]
        return r0 * L.stride - L.pad[2], (r1 - 1) * L.stride + L.kernel - L.pad[2]

    def source_rows(self, j: int, va: int, vb: int) -> tuple[int, int]:
        """Source rows behind input rows [va, vb): the same; for a half input
        (every second row) rows 2*va .. 2*(vb-1); or for the x2 upsampling
        one more source row on each side (torch's bilinear blends
        rows floor(u/2)-1 .. floor(u/2)+1; at the image's edges interpolate's
        clamping is the true behaviour)."""
        up = self.layers[j].upsample
        if self.layers[j].half:  # input row u is source row 2u
            return 2 * va, 2 * vb - 1
        if not up:
            return va, vb
        # TensorFlow's legacy x2 reads source rows floor(u/2) and the one after
        return max(va // 2 - (up != "tf"), 0), min((vb - 1) // 2 + 2, self.src_shape(j).h)

    def needs(self, j: int, r0: int, r1: int) -> tuple[int, int]:
        """Source rows that output rows [r0, r1) of layer j read."""
        a, b = self.input_rows(j, r0, r1)
        return self.source_rows(j, max(a, 0), min(b, self.in_shapes[j].h))

    def reads(self, j: int, target: int) -> list[int]:
        """Layers whose rows layer j reads in the pass for `target`: its input,
        and its skip unless j is the target (the target's statistics are taken
        before the skip is added; a stored target adds it in its fold)."""
        r = self.layers[j].residual
        return [self.src[j]] + ([r] if r is not None and j != target else [])

    def readers(self, node: int, chain, target: int) -> list[int]:
        """Reader keys of `node` among the layers computed in a pass (see skip_key)."""
        keys = []
        for j in chain:
            if self.src[j] == node:
                keys.append(j)
            if self.layers[j].residual == node and j != target:
                keys.append(skip_key(j))
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

    def passes(self, stored) -> tuple[dict[int, tuple[list[int], list[int]]], dict[int, int]]:
        """The passes of a plan storing `stored`, by target: (layers computed,
        stored layers read); and the last pass that reads each stored layer.
        A layer without statistics has a pass only to be stored (or emitted)."""
        passes = {i: self.pass_layers(i, stored) for i in range(len(self.layers)) if self.has_pass(i, stored)}
        last_use = {}
        for i, (chain, leaves) in passes.items():
            for s in leaves:
                last_use[s] = i
            if i in stored and self.layers[i].residual is not None:
                last_use[self.layers[i].residual] = i  # the fold reads the skip
        return passes, last_use

    def band_needs(self, target: int, rows, chain) -> dict[int, tuple[int, int]]:
        """Rows each layer must provide so that the target can compute `rows`."""
        need = {target: tuple(rows)}
        for j in sorted(chain, reverse=True):
            lo, hi = need[j]
            ranges = [self.needs(j, lo, hi), (lo, hi)]  # the input's rows, then the skip's
            for d, (a, b) in zip(self.reads(j, target), ranges):
                old = need.get(d)
                need[d] = (a, b) if old is None else (min(old[0], a), max(old[1], b))
        return need

    def bands(self, target: int, chain, workers: int) -> list[tuple[int, int]]:
        """The target rows of a pass's bands, in the order they are handed out."""
        h = self.shapes[target].h
        if len(chain) == 1:  # every input is stored: strips are independent, hand them out one by one
            step = self.strip[target]
        else:  # streaming chains recompute their halo at every band edge: one band per worker
            step = -(-h // workers)
        return [(r, min(r + step, h)) for r in range(0, h, step)]


def skip_key(index: int) -> int:
    """Reader key of residual layer `index` reading its skip input (a conv read uses the index)."""
    return -2 - index



def padded_size(h: int, w: int, multiple: int = 4, least: int = MIN_SIZE) -> tuple[int, int]:
    """The size a network runs at: multiples of `multiple` (the product of its
    strides; AnimeGANv2 halves twice), at least `least`."""
    return max(least, -(-h // multiple) * multiple), max(least, -(-w // multiple) * multiple)
