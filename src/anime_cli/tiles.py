"""Compatibility: the strip engine is the package anime_cli.engine now.
Only the names the pipeline imports from here are kept."""

from .engine import Cancelled, trim_malloc

__all__ = ["Cancelled", "trim_malloc"]
