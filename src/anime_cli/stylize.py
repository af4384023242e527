"""The style session: one loaded generator that turns RGB pictures into anime.

A `Stylizer` loads its weights once; `stylize` takes and gives HxWx3 uint8
arrays of the same size, so the rest of the pipeline never sees tensors. The
network runs in the strip engine (tiles.py): the same result as the untiled
generator, within a memory budget, on all the cores the process may use.
Calls from several threads run at once, each on its own engine, sharing the
cores (see tiles.Cores).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from . import weights
from .model import Generator, load_generator
from .plan import padded_size
from .tiles import Cores, Engine


class Stylizer:
    """threads: worker threads for the network (default: the cores this
    process may use). precision: "auto" (bfloat16 convolutions where the CPU
    has native bfloat16, ~50 dB from float32, about twice as fast), "bf16" or
    "fp32" (exact)."""

    def __init__(self, generator: Generator, name: str, threads: int | None = None, precision: str = "auto"):
        self.name = name
        self.generator = generator
        self.cores = Cores(threads)
        self.engine = Engine(generator, precision=precision, cores=self.cores)
        self._idle = [self.engine]  # engines not running a picture now
        self._lock = threading.Lock()
        self._local = threading.local()
        self._fastest: dict[tuple[int, int], int] = {}

    @classmethod
    def from_style(cls, name: str = "hayao", threads: int | None = None, precision: str = "auto") -> "Stylizer":
        return cls(load_generator(weights.load(name)), name, threads=threads, precision=precision)

    @classmethod
    def from_weights(cls, path: str | Path, threads: int | None = None, precision: str = "auto") -> "Stylizer":
        sd = weights.load_state_dict(Path(path))
        try:
            generator = load_generator(sd)
        except RuntimeError as e:  # wrong keys or shapes
            raise weights.WeightsError(
                f"{path}: not an AnimeGANv2 generator in the PyTorch-port layout ({str(e).splitlines()[0]})"
            ) from None
        return cls(generator, Path(path).stem, threads=threads, precision=precision)

    @property
    def threads(self) -> int:
        return self.cores.total

    def stylize(self, rgb: np.ndarray, budget_bytes: int | None = None, cancel=None) -> np.ndarray:
        """HxWx3 uint8 RGB -> HxWx3 uint8 RGB, same size.

        budget_bytes: memory this call may add to the process (the output
        array included); None for the fastest way whatever it costs. A
        budget too small for even the leanest plan is exceeded rather than
        refused (the engine then uses its least-memory plan).
        cancel: anything with is_set(); once set, the call raises
        tiles.Cancelled soon after."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB array, got shape {rgb.shape}")
        if rgb.dtype != np.uint8:
            rgb = rgb.astype(np.uint8)
        with self._lock:
            engine = self._idle.pop() if self._idle else self.engine.clone()
        try:
            out = engine.stylize(rgb, budget_bytes, cancel)
            self._local.plan = engine.last_plan
            return out
        finally:
            with self._lock:  # the first engine goes last, so that a lone call runs on self.engine
                self._idle.insert(len(self._idle) if engine is self.engine else 0, engine)

    @property
    def last_plan(self) -> str | None:
        """How this thread's last stylize() call ran (see plan.Plan.describe)."""
        plan = getattr(self._local, "plan", None)
        return plan.describe() if plan is not None else None

    def min_bytes(self, h: int, w: int) -> int:  # TEMP until the engine branch lands
        return self.engine.make_plan(*padded_size(h, w), 1).bytes + 3 * h * w

    def plan(self, h: int, w: int, budget_bytes: int | None = None) -> str:  # TEMP until the engine branch lands
        return self.engine.make_plan(*padded_size(h, w), budget_bytes).describe()

    def fastest_bytes(self, h: int, w: int) -> int:
        """What stylize() adds to the process for an h x w picture when nothing
        holds it back: the fastest plan's memory and the output array. (Asked
        once a file, and for the face size every time: the planner runs once a size.)"""
        if (h, w) not in self._fastest:
            self._fastest[h, w] = self.engine.make_plan(*padded_size(h, w), None).bytes + 3 * h * w
        return self._fastest[h, w]

