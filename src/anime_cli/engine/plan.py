"""The engine's plan: the network as a flat list of layers, the sizes and the
memory model of one run, and the planner that decides which layers are stored
whole and which are recomputed, for a memory budget.

The engine (engine.py) computes one layer at a time in strips; the plan is its
only choice. "strips" stores every layer: one pass of compute, the most memory.
"stream" stores some layers (checkpoints) and recomputes the others from the
last checkpoint, once for every GroupNorm whose statistics are still unknown:
less memory, more passes. Geometry prices both (bytes held at the peak, FLOPs
of every pass) and Planner finds the cheapest set of checkpoints that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layers import layer_dtype, sources

STRIP_BYTES = 4 << 20  # target size of a pass's strips (input or output block): cache-sized
STREAM_BYTES = 1 << 20  # the same for layers that stream: their windows add up along a chain
BLOCK_BYTES = 2 << 20  # stored layers are kept in blocks of about this size (BlockPool)
WINDOW_BYTES = 256 << 10  # ... and streaming windows in blocks of about this size
OVERHEAD = 40 << 20  # what the memory model leaves out: oneDNN, the allocator, Python objects
# What 8-bit storage costs, per value, in convolution FLOPs of the same time (measured):
ENCODE_FLOPS = 200  # once, when a layer is stored
DECODE_FLOPS = 150  # each pass that reads it, beyond the plain normalisation
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
        self.layers, self.h, self.w, self.workers = layers, h, w, workers
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
        self.strip = [self._strip_rows(i, STRIP_BYTES) for i in range(len(layers))]
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
        total = in_rows * (si.w + L.pad[0] + L.pad[1]) * si.c * item  # padded input block
        if L.upsample:  # source rows, and their x2
            src_rows = min(in_rows // 2 + 4, si.h // 2)
            total += src_rows * (si.w // 2) * si.c * item + 2 * src_rows * si.w * si.c * item
        if L.half:  # source rows, every second one kept
            total += min(2 * in_rows, 2 * si.h) * (2 * si.w) * si.c * item
        out = rows * s.w * s.c
        total += out * 4  # float32 copy for the statistics
        if L.residual is not None:
            total += out * self.store[i].itemsize
        return total + 5 * 64

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


# --------------------------------------------------------------------------
# The plan: which layers are stored whole


@dataclass(frozen=True)
class Plan:
    name: str  # "strips" (every layer stored) or "stream"
    stored: frozenset[int]  # layer indices kept whole; the others are recomputed
    bytes: int  # the memory model's peak (engine memory only)
    passes: float  # compute, in units of one pass of the whole network
    fits: bool  # whether `bytes` is within the budget asked for
    compact: bool = False  # stored layers in 8 bits (see Stored)

    def describe(self) -> str:
        extra = "" if self.name == "strips" else f", {len(self.stored)} layers stored, {self.passes:.2f} passes"
        extra += ", 8-bit storage" if self.compact else ""
        return f"{self.name} (~{self.bytes / 2**20:.0f} MiB{extra})"


class Planner:
    """Chooses the stored layers for a budget (shortest path over checkpoints).

    Between two stored layers c < k, every layer i in (c, k] needs a pass that
    streams c+1..i (to learn layer i's statistics), so that segment costs
    sum_i flops(c+1..i); the last segment ends at the output layer. A residual
    block's skip input must be stored if any layer inside the block is (its
    fold and its readers need the skip's rows after they have streamed by).
    A branch (a layer j reading an earlier layer s than j-1) is such a block
    too: storing a layer in (s, j] means storing s, which j reads later.
    """

    def __init__(self, geo: Geometry, compact: bool = False):
        self.geo, self.compact = geo, compact
        layers = geo.layers
        self.n = len(layers)
        self.size = [geo.size(i, compact) for i in range(self.n)] + [0]  # size[-1]: the image
        # values held in 8 bits, per layer (what encoding and decoding cost scales with)
        self.values = [s.h * s.w * s.c if compact and geo.compactable(i) else 0 for i, s in enumerate(geo.shapes)] + [0]
        self.blocks = [(L.residual, j) for j, L in enumerate(layers) if L.residual is not None]
        self.blocks += [(s, j) for j, s in enumerate(geo.src) if s != j - 1]
        self.src = geo.src
        cum = np.concatenate([[0.0], np.cumsum([geo.flops(i) for i in range(self.n)])])
        self.cum = cum  # cum[i + 1] = flops of layers 0..i
        self.total = cum[-1]
        self.work = [geo.work(i) for i in range(self.n)]
        self.stream_work = [geo.work(i, target=False) for i in range(self.n)]
        self.scratch = geo.workers * max(geo.scratch(i) for i in range(self.n))  # made once a run
        window = self.window = [geo.window(i) for i in range(self.n)] + [0]
        # the window of each layer's source when that layer is a pass's target (its big strips)
        self.feeder = [geo.window(s, target=i) if s >= 0 else 0 for i, s in enumerate(geo.src)]
        self.windows = np.concatenate([[0], np.cumsum(window)])  # windows[j] = sum of window[:j]
        self.slack = [2 * geo.strip[i] * geo.row_bytes(i) for i in range(self.n)]
        self.segments = {
            (c, k): self.segment(c, k)
            for c in range(-1, self.n - 1)
            for k in list(range(c + 1, self.n - 1)) + [None]
            if k is None or self.allowed(c, k)
        }

    def _chain_flops(self, c, i):
        return self.cum[i + 1] - self.cum[c + 1]

    def segment(self, c: int, k: int | None):
        """(cost, bytes) of the passes after stored c up to storing k (None: to the end)."""
        geo, end = self.geo, (self.n - 1 if k is None else k)
        passes = [i for i in range(c + 1, end + 1) if i == end or self.geo.layers[i].norm is not None]
        cost = sum(self._chain_flops(c, i) for i in passes)
        if self.compact:  # 8-bit codes: made once, read by every pass of the segment
            cost += DECODE_FLOPS * self.values[c] * len(passes) + (0 if k is None else ENCODE_FLOPS * self.values[k])
        # Pass i streams layers c+1 .. i-1 (at most: a branch skips some), its source
        # feeding the target i; every worker has its own windows and temporaries.
        kept = 0
        for i in passes:
            s = self.src[i]
            windows = self.windows[i] - self.windows[c + 1] if i > c + 1 else 0
            if s > c:
                windows += self.feeder[i] - self.window[s]
            temps = max([self.work[i]] + [self.stream_work[j] for j in range(c + 1, i)])
            kept = max(kept, geo.workers * int(windows + temps))
        target = 0 if k is None else self.size[k]
        skip = None
        for r, j in self.blocks:
            if r < c < j:  # c is inside a residual block: its skip input is alive
                kept += self.size[r]
            if c == r and k is not None and k <= j:
                skip = r  # c stays alive after this segment: no freeing as we go
        held = self.size[c] + target if skip is not None else max(self.size[c], target)
        slack = geo.workers * max(self.slack[i] for i in range(max(c, 0), end + 1))
        decode = geo.workers * 4 * BLOCK_BYTES if self.compact else 0  # float32 rows decoded from 8 bits
        return cost, held + kept + slack + decode + self.scratch + OVERHEAD

    def allowed(self, c: int, k: int) -> bool:
        return all(c >= r for r, j in self.blocks if r < k <= j)

    def plan(self, budget: int | None) -> Plan:
        if budget is None:
            return self._best(math.inf)
        plan = self._best(budget)
        if plan is not None:
            return plan
        # Nothing fits: the least memory we can do, at the least cost.
        lo, hi = budget, max(budget, 1 << 20)
        while self._best(hi) is None:
            hi *= 2
        while hi - lo > max(hi // 64, 1 << 20):
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self._best(mid) is not None else (mid, hi)
        best = self._best(hi)
        return Plan(best.name, best.stored, best.bytes, best.passes, fits=False, compact=self.compact)

    def _best(self, budget) -> Plan | None:
        n = self.n
        best: dict[int, tuple[float, int, tuple[int, ...]]] = {-1: (0.0, 0, ())}
        for k in range(n - 1):  # candidate stored layers, in order
            options = []
            for c, (cost, peak, path) in best.items():
                if (c, k) in self.segments:
                    seg_cost, seg_bytes = self.segments[c, k]
                    if seg_bytes <= budget:
                        options.append((cost + seg_cost, max(peak, seg_bytes), path + (k,)))
            if options:
                best[k] = min(options)
        finals = []
        for c, (cost, peak, path) in best.items():
            seg_cost, seg_bytes = self.segments[c, None]
            if seg_bytes <= budget:
                finals.append((cost + seg_cost, max(peak, seg_bytes), path))
        if not finals:
            return None
        cost, peak, path = min(finals)
        name = "strips" if len(path) == n - 1 else "stream"
        return Plan(name, frozenset(path), int(peak), cost / self.total, fits=True, compact=self.compact)


def best_plan(geo: Geometry, budget: int | None) -> Plan:
    """The plan that fits with the least compute, memory priced in: stored
    layers in their own precision, or in 8 bits where that saves passes (half
    the memory, ~60 dB from the float32 network); then a leaner plan where the
    memory it saves is worth its extra passes (see PASS_BYTES). Nothing fits:
    the least memory."""
    planners = [Planner(geo, compact) for compact in (False, True)]
    best = _fastest(planners, budget)
    if not best.fits:
        return best
    # Leaner and leaner plans, as long as they are nearly as fast; in the
    # fastest plan's storage, so that memory alone never buys 8 bits.
    lean, step, most = planners[best.compact], best, best.passes * (1 + LEAN_PASSES)
    while True:
        step = lean.plan(int(step.bytes * 0.97))
        if not step.fits or step.passes > most:
            return best
        if _price(step) < _price(best):
            best = step


# What memory is worth in compute: a pass of the whole network for 2 GiB, so a
# plan may take 5% more passes to hold 100 MiB less (small pictures, whose
# plans differ by a few MiB, keep their fastest plan); and at most 10% more
# passes, whatever it saves: a budget, not the price, decides larger trades.
# A lean plan leaves room for the other file in flight and keeps the process small.
PASS_BYTES = 2 << 30
LEAN_PASSES = 0.10


def _price(plan: Plan) -> float:
    return plan.passes + plan.bytes / PASS_BYTES


def _fastest(planners: list[Planner], budget: int | None) -> Plan:
    plans = [p.plan(budget) for p in planners]
    fitting = [p for p in plans if p.fits]
    if fitting:
        return min(fitting, key=lambda p: (round(p.passes, 6), p.compact))
    return min(plans, key=lambda p: p.bytes)


def pass_units(geo: Geometry, plan: Plan, pixels: int) -> list[int]:
    """Progress units of each pass of `plan`: the picture's pixels times the
    share of the network's FLOPs the pass computes (so a plan of 1.0 passes
    is about `pixels` units, a stream plan more)."""
    total = sum(geo.flops(i) for i in range(len(geo.layers)))
    units = []
    for i in range(len(geo.layers)):
        chain, _ = geo.pass_layers(i, plan.stored)
        units.append(round(pixels * sum(geo.flops(j) for j in chain) / total) if geo.has_pass(i, plan.stored) else 0)
    return units


def padded_size(h: int, w: int, multiple: int = 4, least: int = MIN_SIZE) -> tuple[int, int]:
    """The size a network runs at: multiples of `multiple` (the product of its
    strides; AnimeGANv2 halves twice), at least `least`."""
    return max(least, -(-h // multiple) * multiple), max(least, -(-w // multiple) * multiple)
