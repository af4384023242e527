"""The style session: one loaded network that turns RGB pictures into anime.

A `Stylizer` loads its weights once; `render` and `stylize` take and give
HxWx3 uint8 arrays of the same size, so the rest of the pipeline never sees
tensors. The network runs in the strip engine (anime_cli.engine): the same
result as the untiled network, within a memory budget, on all the cores the
process may use. Calls from several threads run at once, each its own run of
the one engine, sharing the cores (see engine.Cores).

`StyleModel` is what the pipeline may call on a style: anything with these
methods (a new family's Stylizer, a test's stand-in) can convert a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from anime_cli import models
from anime_cli.weights import catalog as weights
from anime_cli.options import DEFAULT_STYLE
from anime_cli.engine import Cores, Engine, Rendered

Progress = Callable[[int], None]


class StyleModel(Protocol):
    """What the pipeline may call on a style model.

    budget_bytes: memory one call may add to the process, its output array
    included; None for the fastest way whatever it costs. A budget under
    min_bytes() is exceeded (the least-memory plan runs), not refused.
    cancel: anything with is_set(); once set, the call raises
    engine.Cancelled within a strip's time. progress: called from worker
    threads with work units as they complete; a call's units add up to
    work(h, w, budget_bytes).
    """

    name: str
    cores: Cores  # cores.busy(): a context manager marking a file in flight

    @property
    def threads(self) -> int: ...

    def render(self, rgb: np.ndarray, budget_bytes: int | None = None, cancel=None,
               progress: Progress | None = None) -> Rendered: ...

    def stylize(self, rgb: np.ndarray, budget_bytes: int | None = None, cancel=None,
                progress: Progress | None = None) -> np.ndarray: ...

    def fastest_bytes(self, h: int, w: int) -> int: ...

    def min_bytes(self, h: int, w: int) -> int: ...

    def work(self, h: int, w: int, budget_bytes: int | None = None) -> int: ...

    def plan(self, h: int, w: int, budget_bytes: int | None = None) -> str: ...


class Stylizer:
    """threads: worker threads for the network (default: the cores this
    process may use). precision: "auto" (bfloat16 where the CPU has native
    bfloat16, ~55 dB from float32, about twice as fast; elsewhere int8 where
    the style has a calibration, 43-49 dB, 1.3-2.2x), "bf16", "int8" or
    "fp32" (exact). int8: the style's calibration table (WeightFile.int8)."""

    def __init__(self, network, name: str, threads: int | None = None, precision: str = "auto",
                 int8: dict[str, list[float]] | None = None):
        """network: a generator module of a known family, its state dict, or
        its layer list (models.layers_for)."""
        self.name = name
        self.layers = network if isinstance(network, list) else models.layers_for(network)
        self.cores = Cores(threads)
        self.engine = Engine(self.layers, precision=precision, cores=self.cores, int8=int8)
        self._bytes: dict[tuple[int, int, int | None], int] = {}  # (h, w, None or 0) -> engine bytes of that plan

    @classmethod
    def from_style(cls, name: str = DEFAULT_STYLE, threads: int | None = None, precision: str = "auto") -> "Stylizer":
        return cls(_network(weights.load(name), name), name, threads=threads, precision=precision,
                   int8=weights.int8_table(name))

    @classmethod
    def from_weights(cls, path: str | Path, threads: int | None = None, precision: str = "auto") -> "Stylizer":
        network = _network(weights.load_state_dict(Path(path)), str(path))
        return cls(network, Path(path).stem, threads=threads, precision=precision,
                   int8=weights.int8_table("", path))

    @property
    def threads(self) -> int:
        return self.cores.total

    def render(self, rgb: np.ndarray, budget_bytes: int | None = None, cancel=None,
               progress: Progress | None = None) -> Rendered:
        """HxWx3 uint8 RGB -> Rendered(HxWx3 uint8 RGB, the plan it ran); see StyleModel."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB array, got shape {rgb.shape}")
        if rgb.dtype != np.uint8:
            rgb = rgb.astype(np.uint8)
        return self.engine.render(rgb, budget_bytes, cancel, progress)

    def stylize(self, rgb: np.ndarray, budget_bytes: int | None = None, cancel=None,
                progress: Progress | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB -> HxWx3 uint8 RGB, same size; see StyleModel."""
        return self.render(rgb, budget_bytes, cancel, progress).image

    def _plan_bytes(self, h: int, w: int, budget: int | None) -> int:
        """Engine bytes of the plan for a budget (asked for every file, and for
        the face size every time: the planner runs once a size)."""
        key = (h, w, budget)
        if key not in self._bytes:
            self._bytes[key] = self.engine.make_plan(*self.engine.padded(h, w), budget).bytes
        return self._bytes[key]

    def plan(self, h: int, w: int, budget_bytes: int | None = None) -> str:
        """How a call for an h x w picture would run within budget_bytes (a dry run's plan)."""
        return self.engine.picture_plan(h, w, budget_bytes).describe()

    def planned_bytes(self, h: int, w: int, budget_bytes: int | None = None) -> int:
        """What a call for an h x w picture adds within budget_bytes: the memory
        of the plan it takes and the output array (a dry run's estimate)."""
        if budget_bytes is None:
            return self.fastest_bytes(h, w)
        key = (h, w, -budget_bytes - 1)  # apart from _plan_bytes' engine budgets
        if key not in self._bytes:
            self._bytes[key] = self.engine.picture_plan(h, w, budget_bytes).bytes + 3 * h * w
        return self._bytes[key]

    def fastest_bytes(self, h: int, w: int) -> int:
        """What stylize() adds to the process for an h x w picture when nothing
        holds it back: the memory of the plan it then takes (the fastest, or one
        nearly as fast for much less: engine.plan.best_plan) and the output array."""
        return self._plan_bytes(h, w, None) + 3 * h * w

    def min_bytes(self, h: int, w: int) -> int:
        """The least stylize() can add for an h x w picture: the least-memory
        plan's memory and the output array. A budget below it is exceeded."""
        return self._plan_bytes(h, w, 0) + 3 * h * w

    def work(self, h: int, w: int, budget_bytes: int | None = None) -> int:
        """Work units a call on an h x w picture with this budget reports to `progress`."""
        return self.engine.work(h, w, budget_bytes)


def _network(sd: dict, source: str) -> list:
    """The engine's layer list for a state dict of any known family."""
    try:
        return models.layers_for(sd)
    except weights.WeightsError as e:
        raise weights.WeightsError(f"{source}: {e}") from None
