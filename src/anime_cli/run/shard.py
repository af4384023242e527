"""`--shard K/N`: split a batch between N independent processes, no coordinator.

A file belongs to shard K (1-based: 1..N, as Slurm array indices and GNU
parallel's {%} usually count; `--shard $((SLURM_ARRAY_TASK_ID))/N`) when a
stable hash of its path relative to its input root, taken modulo N, is K-1.
The hash is blake2b of the path's bytes: the same on every machine, every
Python (not `hash()`, which is salted per process), and independent of the
file's position, so adding files to a folder moves only the new ones. The
relative path, not the absolute one, so that machines mounting the same
folder at different places agree.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Iterable, TypeVar

T = TypeVar("T")
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
MAX_SHARDS = 1_000_000


class ShardError(ValueError):
    """A --shard value a user typed wrong: the message is one line."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, rel: str | os.PathLike) -> bool:
        return shard_of(rel, self.count) == self.index

    def select(self, items: Iterable[T], rel=lambda job: job.rel) -> list[T]:
        """The items of this shard, in their order; `rel(item)`: its path relative to its input root."""
        return [it for it in items if self.holds(rel(it))]


def parse(text: str) -> Shard:
    """'2/4' -> Shard(2, 4). K in 1..N."""
    m = _SPEC.match(text or "")
    if not m:
        raise ShardError(f"--shard must be K/N, like 1/4 (got '{text}')")
    k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= n <= MAX_SHARDS:
        raise ShardError(f"--shard {text}: N must be between 1 and {MAX_SHARDS}")
    if not 1 <= k <= n:
        raise ShardError(f"--shard {text}: K counts from 1 to N ({n})")
    return Shard(k, n)


def shard_of(rel: str | os.PathLike, count: int) -> int:
    """The 1-based shard of a file whose path relative to its input root is `rel`.
    '/'-separated bytes whatever the OS, so Windows and Linux agree; non-UTF-8
    names hash by their bytes."""
    data = os.fsencode(os.fspath(rel)).replace(os.sep.encode(), b"/")
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") % count + 1
