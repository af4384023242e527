"""The engine (what lasts: the layers and their weights, the cores, the
precision, the planning) and its runs (one picture each: the plan, the
stored layers, the memory, the statistics, cancel and progress).

An Engine holds nothing of a picture, so any number of threads may run
pictures on one engine at once; each call makes its own Run.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np
import torch

from anime_cli.errors import Cancelled  # the batch's signal: the engine raises it
from .bands import Band
from .cpu import Cores, bound_malloc, resolve_precision, split, trim_malloc
from .geometry import Geometry, padded_size
from .int8 import convs as int8_convs, missing as int8_missing, quantized
from .layers import Layer, layer_dtype
from .norms import norm_affine
from .pictures import PictureSink, PictureSource, TensorSource
from .plan import Plan, best_plan, pass_units
from .rows import CL, BlockPool, Scratch
from .stored import Image, Stored, Tracker


class Rendered(NamedTuple):
    """A picture out of the network, and how the network ran for it."""

    image: np.ndarray  # h x w x 3 uint8
    plan: Plan

    @property
    def plan_text(self) -> str:
        return self.plan.describe()


class Engine:
    """Runs a network, given as its flat list of layers (models.layers_for), in
    strips, within a memory budget, faithful to the untiled network (exact up
    to float rounding in "fp32"). It knows no model.

    threads: CPU threads (default: the cores this process may use). A pass
    runs at most cpu.MAX_WORKERS band workers, each a Python thread with
    its own strips and a oneDNN (OpenMP) team of its share of the threads
    (cpu.split: 2 -> one thread each, 16 -> eight each), so the memory
    planned, which grows with the workers, stays flat from 2 cores to 64.
    Or `cores`, a Cores shared with other engines: each pass then takes its
    share of them.
    precision: "auto" (bf16 where the CPU has native bfloat16, else int8 where
    it can run, else fp32), "bf16", "int8" or "fp32".
    int8: the network's calibration table (layer name -> [low, high] of its
    input on real photos: a style's, in the weights manifest), without which
    int8 cannot run.

    budget_bytes: the memory a run may allocate on top of what the process
    already holds: stored activations, streaming windows and per-strip
    temporaries. It does not include the input, nor the torch runtime and
    the weights; stylize() and render() count their output array in it, run()
    does not (it allocates a (1, 3, H, W) float32 output, 12 bytes a pixel,
    on top). None: no limit (the fastest plan, or one nearly as fast for much less memory).

    progress: a callable given work units as they complete, from worker
    threads: units are picture pixels times passes of the network (a pass
    counted by its share of the network's FLOPs), so a run's units add up to
    work(h, w, budget_bytes) exactly.
    """

    def __init__(self, layers: list[Layer], threads: int | None = None, precision: str = "auto",
                 cores: Cores | None = None, int8: dict[str, list[float]] | None = None):
        if not isinstance(layers, list):
            raise TypeError(f"an Engine runs a layer list (models.layers_for), not a {type(layers).__name__}")
        bound_malloc()
        self.precision = resolve_precision(precision, int8_missing(int8))
        self.int8 = int8_convs(layers, int8) if self.precision == "int8" else {}
        self.cores = cores or Cores(threads)
        self.layers = layers
        self.weights = []
        for i, L in enumerate(self.layers):
            if i in self.int8:
                self.weights.append(None)
                continue
            dt = layer_dtype(self.precision, i, L)
            w = L.weight.to(dt).contiguous(memory_format=CL)
            self.weights.append((w, None if L.bias is None else L.bias.to(dt)))
        # LADE's 1x1 conv runs on the float32 copy the statistics are taken from
        self.multiple = math.prod(L.stride for L in self.layers)
        self.min_size = 2 * self.multiple  # two rows at the lowest resolution, for its reflection padding
        self.lade = {i: L.lade.float().contiguous(memory_format=CL) for i, L in enumerate(self.layers) if L.lade is not None}

    @property
    def threads(self) -> int:
        """The most threads a pass may use."""
        return self.cores.total

    @property
    def workers(self) -> int:
        """The most band workers a pass runs (memory is planned for that many)."""
        return self.cores.workers

    def geometry(self, h: int, w: int) -> Geometry:
        """Sizes for an h x w network input (multiples of 4, at least MIN_SIZE)."""
        return Geometry(self.layers, h, w, self.precision, self.workers)

    def make_plan(self, h: int, w: int, budget_bytes: int | None) -> Plan:
        """The plan for an h x w network input (see geometry) and a budget of engine memory."""
        return best_plan(self.geometry(h, w), budget_bytes)

    def padded(self, h: int, w: int) -> tuple[int, int]:
        """The size the network runs an h x w picture at (padded at the right and bottom)."""
        return padded_size(h, w, self.multiple, self.min_size)

    def picture_plan(self, h: int, w: int, budget_bytes: int | None) -> Plan:
        """The plan stylize() uses for an h x w picture (its budget includes the output array)."""
        if budget_bytes is not None:
            budget_bytes = max(0, budget_bytes - 3 * h * w)
        return self.make_plan(*self.padded(h, w), budget_bytes)

    def work(self, h: int, w: int, budget_bytes: int | None = None) -> int:
        """The work units stylize() of an h x w picture reports for this budget."""
        ph, pw = self.padded(h, w)
        return sum(pass_units(self.geometry(ph, pw), self.picture_plan(h, w, budget_bytes), h * w))

    def run(self, x: torch.Tensor, budget_bytes: int | None = None, plan: Plan | None = None) -> torch.Tensor:
        """x: (1, 3, H, W) float32 in [-1, 1], H and W multiples of
        self.multiple, at least self.min_size (AnimeGANv2: 4 and 8). Returns
        network(x) as a new (1, 3, H, W) float32 tensor."""
        n, c, h, w = x.shape
        m, least = self.multiple, self.min_size
        if n != 1 or c != 3 or h % m or w % m or h < least or w < least:
            raise ValueError(f"expected (1, 3, H, W) with H, W multiples of {m} and >= {least}; got {tuple(x.shape)}")
        out = torch.empty((1, 3, h, w), dtype=torch.float32)

        def sink(r0, r1, y):
            out[:, :, r0:r1].copy_(y)

        self.stream(TensorSource(x), sink, budget_bytes, plan)
        return out

    def calibrate(self, rgb: np.ndarray, seen: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
        """The [low, high] every int8 layer's input takes when the network runs
        an h x w x 3 uint8 picture (padded as render() pads it) in float32,
        merged into `seen`: an int8 calibration table (int8.py)."""
        if self.precision != "fp32":
            raise ValueError("calibrate a float32 engine: the table describes the float32 network")
        seen = {} if seen is None else seen
        lock = threading.Lock()

        def observe(i, block):
            name = self.layers[i].name
            lo, hi = float(block.amin()), float(block.amax())
            with lock:
                old = seen.get(name, [lo, hi])
                seen[name] = [min(old[0], lo), max(old[1], hi)]

        src = PictureSource(rgb, self.padded(rgb.shape[0], rgb.shape[1]))
        geo = self.geometry(src.h, src.w)
        run = Run(self, geo, src, best_plan(geo, None))
        run.observe = {i: observe for i, L in enumerate(self.layers) if quantized(i, L)}
        run.execute(lambda r0, r1, y: None)
        return seen

    def render(self, rgb: np.ndarray, budget_bytes: int | None = None, cancel=None, progress=None) -> Rendered:
        """h x w x 3 uint8 -> h x w x 3 uint8 and the plan it ran, without
        whole-image float copies. Any size: the network runs on the picture
        padded to multiples of 4 (at least MIN_SIZE), and the padding is
        cropped off. The budget includes the output array."""
        out = np.empty(rgb.shape, dtype=np.uint8)
        plan = self.picture_plan(rgb.shape[0], rgb.shape[1], budget_bytes)
        src = PictureSource(rgb, self.padded(rgb.shape[0], rgb.shape[1]))
        self.stream(src, PictureSink(out), plan=plan, cancel=cancel, progress=progress)
        return Rendered(out, plan)

    def stylize(self, rgb: np.ndarray, budget_bytes: int | None = None, cancel=None, progress=None) -> np.ndarray:
        return self.render(rgb, budget_bytes, cancel, progress).image

    def stream(self, src, sink, budget_bytes: int | None = None, plan: Plan | None = None, cancel=None,
               progress=None) -> Plan:
        """Run the network on `src` (src.h, src.w, src.pixels, src.read(a, b,
        out)) and hand every output row once to sink(r0, r1, y), y (1, 3,
        rows, W) float32 in [-1, 1]. Rows come in no fixed order, from worker
        threads. cancel: anything with is_set(); once set, the run raises
        Cancelled within a strip's time. Returns the plan it ran."""
        geo = self.geometry(src.h, src.w)
        plan = plan or best_plan(geo, budget_bytes)
        Run(self, geo, src, plan, cancel, progress).execute(sink)
        return plan


class Run:
    """One picture through an engine: the plan's passes, one per layer, each
    split in bands among the workers; the layers stored between passes, the
    memory they live in, and the statistics learnt so far."""

    def __init__(self, engine: Engine, geo: Geometry, src, plan: Plan, cancel=None, progress=None):
        self.engine, self.geo, self.plan = engine, geo, plan
        self.layers, self.weights, self.int8 = engine.layers, engine.weights, engine.int8
        self.observe: dict = {}  # layer index -> observe(index, padded input block) (calibration)
        self.cancel, self.progress = cancel, progress
        self.stored: dict[int, Stored] = {-1: Image(self, src)}
        self.pool = BlockPool()
        self.scratches: list[Scratch] = []
        self.affine: dict[int, tuple[torch.Tensor, torch.Tensor] | None] = {
            i: None for i, L in enumerate(self.layers) if L.norm is None}
        self.lade = engine.lade
        self.units = pass_units(geo, plan, src.pixels)  # per pass
        self._progress_lock = threading.Lock()
        self._pass = (0, 1, 0, 0)  # units of the current pass, its target's height, rows done, units given

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def advance(self, rows: int) -> None:
        """Rows of the current pass's target are done: hand the caller their units."""
        if self.progress is None:
            return
        with self._progress_lock:
            units, height, done, given = self._pass
            done += rows
            now = units * min(done, height) // height
            self._pass = (units, height, done, now)
        if now > given:
            self.progress(now - given)

    def execute(self, sink) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                self._passes(sink)
        finally:
            torch.set_num_threads(threads)
            for st in self.stored.values():
                st.free()
            self.stored, self.scratches = {}, []
            self.pool.close()
            trim_malloc()

    def _passes(self, sink) -> None:
        n, stored, geo = len(self.layers), self.plan.stored, self.geo
        passes, last_use = geo.passes(stored)
        for i, (chain, leaves) in passes.items():
            skip = self.layers[i].residual
            folds = i in stored and skip is not None
            for s, st in self.stored.items():  # a stored residual layer's skip must outlive the pass, for the fold
                st.keep = s < 0 or last_use[s] > i or (folds and skip == s)
            kind = "emit" if i == n - 1 else ("store" if i in stored else "stats")
            if i in stored:
                self.stored[i] = Stored(self, i, self.plan.compact and geo.compactable(i))  # the pass writes into it
            self._pass = (self.units[i], geo.shapes[i].h, 0, 0)
            total, total_sq = self._run_pass(i, kind, chain, leaves, sink)
            if self.layers[i].norm is not None:
                s = geo.shapes[i]
                count = s.h * s.w * (s.c if self.layers[i].norm == "group" else 1)
                self.affine[i] = norm_affine(self.layers[i], count, total, total_sq)
            if folds:
                self.stored[i].fold(self.stored[skip])
            for s in [s for s in self.stored if s >= 0 and last_use[s] == i]:
                self.stored.pop(s).free()
            trim_malloc()  # what the pass's strips freed goes back now, not at the end of the run (cpu.bound_malloc)

    def _run_pass(self, target, kind, chain, leaves, sink):
        teams = split(min(self.engine.cores.share(), self.engine.threads))
        workers = len(teams)
        rows = self.geo.bands(target, chain, workers)
        needs = [self.geo.band_needs(target, r, chain) for r in rows]
        tracker = Tracker([{d: need[d] for d in leaves if d >= 0} for need in needs])
        results: list = [None] * len(rows)
        claims = Claims(len(rows), ahead=2 * self.engine.workers)
        errors: list[BaseException] = []

        def work(k):
            # OpenMP's team size is a per-thread setting; asking for it first
            # makes torch's lazy per-thread set-up happen now, so it cannot
            # later overwrite the team size with the last one any thread set.
            torch.get_num_threads()
            torch.set_num_threads(teams[k])
            scratch = self._scratch(k)
            with torch.inference_mode():
                while not errors:
                    try:
                        self.check()
                        b = claims.next(errors)
                        if b is None:
                            return
                        band = Band(self, b, target, kind, chain, leaves, rows[b], tracker, sink, scratch)
                        tracker.start(b, band.leaf_readers(leaves, chain))
                        results[b] = band.run()
                        tracker.finish(b, [self.stored[d] for d in leaves])
                        claims.done(b)
                    except BaseException as e:  # re-raised in the caller's thread
                        errors.append(e)
                        claims.wake()
                        return

        n = min(workers, len(rows))
        pool = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(1, n)]
        for t in pool:
            t.start()
        work(0)
        for t in pool:
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



class Claims:
    """Hands out a pass's bands in order, never more than `ahead` past the
    lowest one still running.

    The planner counts a pass's rows in flight as a few strips a worker. A
    worker that the system deschedules mid-band keeps the rows its band
    reads alive; without a bound the others ran on through the layer, and
    the input rows behind the stalled band and all the output rows written
    past it were held at once (the memory model gave way under CPU load).
    """

    def __init__(self, count: int, ahead: int):
        self.count, self.ahead = count, max(1, ahead)
        self.next_band = 0
        self.finished = [False] * count
        self.low = 0  # the lowest band not finished
        self.cond = threading.Condition()

    def next(self, errors) -> int | None:
        with self.cond:
            while not errors and self.next_band < self.count and self.next_band >= self.low + self.ahead:
                self.cond.wait()
            if errors or self.next_band >= self.count:
                return None
            self.next_band += 1
            return self.next_band - 1

    def done(self, b: int) -> None:
        with self.cond:
            self.finished[b] = True
            while self.low < self.count and self.finished[self.low]:
                self.low += 1
            self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()
