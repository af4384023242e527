"""The engine's plan: which layers are stored whole and which are
recomputed, for a memory budget (the sizes and the memory model are
geometry.py's).

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

from .geometry import BLOCK_BYTES, Geometry

OVERHEAD = 40 << 20  # what the memory model leaves out: oneDNN, the allocator, Python objects
# What 8-bit storage costs, per value, in convolution FLOPs of the same time (measured):
ENCODE_FLOPS = 200  # once, when a layer is stored
DECODE_FLOPS = 150  # each pass that reads it, beyond the plain normalisation


@dataclass(frozen=True)
class Plan:
    name: str  # "strips" (every layer stored) or "stream"
    stored: frozenset[int]  # layer indices kept whole; the others are recomputed
    bytes: int  # the memory model's peak (engine memory only)
    passes: float  # compute, in units of one pass of the whole network
    fits: bool  # whether `bytes` is within the budget asked for
    compact: bool = False  # stored layers in 8 bits (see Stored)
    precision: str = ""  # the arithmetic it runs in (cpu.resolve_precision)

    def describe(self) -> str:
        extra = "" if self.name == "strips" else f", {len(self.stored)} layers stored, {self.passes:.2f} passes"
        extra += ", 8-bit storage" if self.compact else ""
        extra += f", {self.precision}" if self.precision else ""
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
        return Plan(best.name, best.stored, best.bytes, best.passes, fits=False, compact=self.compact,
                    precision=best.precision)

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
        return Plan(name, frozenset(path), int(peak), cost / self.total, fits=True, compact=self.compact,
                    precision=self.geo.precision)


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
